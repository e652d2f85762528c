"""The Fund's claims history that the fraud route scores against: the ingest tables, loaded once per worker.

A claim is only suspicious against what came before it: its peers' prices, the patient's earlier claims, the
provider's day. The batch worklist computes those from the ingest tables (``data/interim/tables``); the service
loads the same tables into a :class:`~pipelines.features.fraud_engine.FraudHistory` and scores each request's
claims against it with the same code, so a claim scored online gets exactly the features the worklist gives it.
Scoring never adds a claim to the history (else a claim sent twice would be its own near-duplicate).

The history is keyed by the feature options (they come with the registered model) and by the tables' files
(name, size, modification time): ``POST /admin/reload`` picks up a new ingest, and a model whose options
changed gets a history built with its own. Without tables the request is its own history, as before, and the
service says so once in its log.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.service.errors import ServiceConfigError

if TYPE_CHECKING:
    from pipelines.features.fraud import FraudFeatureOptions
    from pipelines.features.fraud_engine import FraudHistory

log = logging.getLogger(__name__)

# Where `make run` writes the ingest tables, relative to the project root.
DEFAULT_TABLES = Path("data") / "interim" / "tables"

Fingerprint = tuple[tuple[str, int, int], ...]


def _fingerprint(tables: Path) -> Fingerprint:
    """Name, size and modification time of each Parquet table: a new ingest changes it."""
    return tuple(
        sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in tables.glob("*.parquet") if p.is_file())
    )


class HistorySource:
    """Loads the Fund's history from an ingest tables folder, at most once per (options, tables) pair.

    Args:
        tables: the ingest's ``tables`` folder; None: no history (each request is scored on its own).
    """

    def __init__(self, tables: Path | None) -> None:
        self.tables = Path(tables) if tables is not None else None
        self._lock = threading.Lock()
        self._key: tuple[FraudFeatureOptions, Fingerprint] | None = None
        self._history: FraudHistory | None = None

    @classmethod
    def configured(cls, tables: Path | None, root: Path) -> HistorySource:
        """The source a service uses: ``tables`` when set (it must exist), else the project's default folder under
        ``root`` when it exists, else none.

        Raises:
            ServiceConfigError: ``tables`` is set and is not a folder of claim tables.
        """
        if tables is not None:
            if not (Path(tables) / "claims.parquet").is_file():
                raise ServiceConfigError(
                    f"SHIPA_SERVICE_FRAUD_HISTORY: {tables} holds no claims.parquet (the ingest's tables folder)"
                )
            return cls(Path(tables))
        default = root / DEFAULT_TABLES
        if (default / "claims.parquet").is_file():
            return cls(default)
        log.warning(
            "no claims history (%s not found, SHIPA_SERVICE_FRAUD_HISTORY not set): fraud features see each "
            "request on its own",
            default,
        )
        return cls(None)

    def get(self, options: FraudFeatureOptions) -> FraudHistory:
        """The history for these feature options, reloaded when the tables changed on disk.

        Raises:
            InputError: the tables cannot be read.
        """
        from pipelines.features.fraud_engine import FraudHistory

        if self.tables is None:
            return FraudHistory.empty(options)
        key = (options, _fingerprint(self.tables))
        with self._lock:
            if self._key != key or self._history is None:
                history = FraudHistory.load(self.tables, options)
                log.info("fraud history: %d claims from %s", len(history), self.tables)
                self._key, self._history = key, history
            return self._history
