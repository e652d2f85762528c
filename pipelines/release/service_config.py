"""The service settings a release carries: every non-secret ``SHIPA_SERVICE_*`` setting, as an env file.

Secrets never go in a bundle: the token pepper and the audit key (``SecretStr`` fields) stay on the hospital's
server, and so does the database URL (it may hold a password) and the MLflow store (the release serves its own).
The file is ``KEY=value`` lines, readable by ``shipa serve --release`` (the environment wins over it), by
systemd's ``EnvironmentFile=`` and by a container runtime's ``--env-file``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import SecretStr

from pipelines.service.settings import ENV_PREFIX, ServiceSettings

# Not secret-typed but never carried: a URL may hold a password (every ``*_url`` / ``*_uri`` setting is left out);
# the checkpoints and the claims history are the server's own files.
LOCAL_ONLY = frozenset({"database_url", "tracking_uri", "audit_checkpoints", "fraud_history"})
_URL_SUFFIXES = ("_url", "_uri")
# Named like a secret: left out even when not typed SecretStr.
_SECRET_SUFFIXES = ("_key", "_password", "_token", "_pepper", "_secret")


def _is_secret_type(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret_type(arg) for arg in get_args(annotation))


def _local_only(name: str, annotation: Any) -> bool:
    secret_name = name.endswith(_SECRET_SUFFIXES) and "_per_" not in name  # max_concurrent_per_token is a limit
    return _is_secret_type(annotation) or name in LOCAL_ONLY or name.endswith(_URL_SUFFIXES) or secret_name


SERVICE_ENV = "config/service.env"
# Read by the service outside the SHIPA_SERVICE_ prefix (pipelines.service.assemble.pseudonym_key).
PSEUDONYM_KEY_ENV = "SHIPA_PSEUDONYM_KEY"


def secret_settings() -> list[str]:
    """The environment names of the settings that must be set on the server (secrets and local-only ones)."""
    out = []
    for name, field in ServiceSettings.model_fields.items():
        if _local_only(name, field.annotation):
            out.append(f"{ENV_PREFIX}{name.upper()}")
    return sorted(out)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def service_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``SHIPA_SERVICE_<NAME> -> value`` of every non-secret setting: its default, or ``overrides[name]``.

    Raises:
        KeyError: an override names no setting, or a secret / local-only one.
    """
    allowed = {
        name: field for name, field in ServiceSettings.model_fields.items() if not _local_only(name, field.annotation)
    }
    for name in overrides or {}:
        if name not in allowed:
            raise KeyError(name)
    out = {}
    for name, field in sorted(allowed.items()):
        value = (overrides or {}).get(name, field.get_default(call_default_factory=True))
        if value is None:
            continue
        out[f"{ENV_PREFIX}{name.upper()}"] = _text(value)
    return out


def env_text(settings: Mapping[str, str], release: str) -> str:
    """The env file: a header naming the settings to set on the server, then ``KEY=value`` lines."""
    lines = [
        f"# Shipa service settings of release {release}: non-secret values only.",
        "# Set these on the server itself, never in a bundle:",
        *(f"#   {name}" for name in secret_settings()),
        f"#   {PSEUDONYM_KEY_ENV} (the ingest's pseudonymisation key: the service's pseudonyms equal the tables')",
        "# The environment wins over this file (shipa serve --release reads it as defaults).",
    ]
    lines += [f"{k}={v}" for k, v in sorted(settings.items())]
    return "\n".join(lines) + "\n"


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY -> value`` of an env file's ``KEY=value`` lines (comments and blank lines skipped)."""
    out = {}
    lines: Iterable[str] = Path(path).read_text(encoding="utf-8").splitlines()
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        out[key.strip()] = value.strip()
    return out
