"""Polling the PACS for studies not yet scored: the QIDO-RS search and the file of studies already processed.

The state file names no study: each entry is the SHA-256 of a StudyInstanceUID with the HTTP status the service
answered and when. It is written atomically with mode 0600 (it is still the list of which studies were read).
A study the service answered (200) or refused for good (4xx other than 401, 403, 404, 429) is done; one that
failed for a reason that may pass (the service or the PACS down, no model loaded) is tried again next pass.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.pacs.client import PacsClient
from pipelines.pacs.errors import PacsError

STATE_VERSION = 1
DEFAULT_MODALITIES = ("CR", "DX")
PAGE = 100
# Statuses that will not change by asking again: the study is done (scored, or refused as outside the model).
FINAL_STATUSES = frozenset({200, 400, 413, 415, 422})


def study_key(study_uid: str) -> str:
    """The state file's name for a study: SHA-256 of its UID (the file names no study)."""
    return hashlib.sha256(study_uid.encode("ascii", "replace")).hexdigest()


@dataclass
class ProcessedStudies:
    """The studies already processed, kept in a JSON file (mode 0600).

    Attributes:
        path: the state file.
        entries: study key -> {"status": int, "at": ISO time}.
    """

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ProcessedStudies:
        """The state file at ``path`` (empty when it does not exist).

        Raises:
            PacsError: a file that is not a state file of this version.
        """
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION or not isinstance(data.get("studies"), dict):
                raise ValueError("not a state file of this version")
        except (OSError, ValueError, AttributeError) as exc:
            raise PacsError(
                f"{path}: unreadable watch state ({type(exc).__name__}); move it away to start over"
            ) from None
        return cls(path, dict(data["studies"]))

    def __contains__(self, study_uid: str) -> bool:
        return study_key(study_uid) in self.entries

    def mark(self, study_uid: str, status: int, when: dt.datetime | None = None) -> None:
        """Record the service's answer for the study (saved by :meth:`save`)."""
        moment = (when or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
        self.entries[study_key(study_uid)] = {"status": status, "at": moment}

    def save(self) -> None:
        """Write the file atomically, readable by its owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": STATE_VERSION, "studies": self.entries}, indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def date_range(since: dt.date | None, until: dt.date | None) -> str | None:
    """A QIDO-RS StudyDate range (``YYYYMMDD-YYYYMMDD``, either end open), or None for no bound."""
    if since is None and until is None:
        return None
    low = since.strftime("%Y%m%d") if since else ""
    high = until.strftime("%Y%m%d") if until else ""
    return f"{low}-{high}"


def new_studies(
    client: PacsClient,
    processed: ProcessedStudies,
    *,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    study_dates: str | None = None,
    limit: int = 1000,
) -> list[str]:
    """StudyInstanceUIDs of the PACS's studies with any of ``modalities`` not yet processed (oldest first, at most
    ``limit``).

    One QIDO-RS search per modality (servers differ in matching a list), paged.

    Raises:
        PacsUnavailable, PacsRefused, PacsError: the search failed.
    """
    found: dict[str, tuple[str, str]] = {}
    for modality in modalities:
        filters: dict[str, Any] = {"ModalitiesInStudy": modality}
        if study_dates:
            filters["StudyDate"] = study_dates
        for item in _pages(client, filters):
            uid = str(item.get("StudyInstanceUID") or "")
            if uid and uid not in processed and uid not in found:
                found[uid] = (str(item.get("StudyDate") or ""), str(item.get("StudyTime") or ""))
    return sorted(found, key=lambda uid: (*found[uid], uid))[:limit]


def _pages(client: PacsClient, filters: dict[str, Any]) -> Iterable[Any]:
    offset = 0
    while True:
        page = client.search_studies(filters, fields=("StudyDate", "StudyTime"), limit=PAGE, offset=offset)
        yield from page
        if len(page) < PAGE:
            return
        offset += len(page)
