"""The interface between the service and whatever loads its models (``mlflow_source.MlflowModelSource``).

Called a model *source*, not a provider: in this project a provider is a healthcare provider (fraud).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ModelSource(Protocol):
    """Loads and holds the served models.

    ``ready()`` returns ``{"ready": bool, "models": [{"name", "version", "alias", ...}], "reason": str}``
    (``reason`` only when not ready, without paths or personal data); the service answers 503 when ``ready`` is
    false or the call raises. ``reload()`` loads the current champions again and returns the same shape.
    ``cards()`` returns one machine-readable model card (a JSON object) per served model.
    """

    def ready(self) -> dict[str, Any]:
        """Which models are loaded (names, versions, aliases) and whether the service can answer."""
        ...

    def reload(self) -> dict[str, Any]:
        """Load the models again (e.g. after a promotion) and return the new ``ready()`` state."""
        ...

    def cards(self) -> list[dict[str, Any]]:
        """The model cards of the served models."""
        ...
