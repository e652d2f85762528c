"""The PACS's recent studies a clinician may pick from: one QIDO-RS search per modality, newest first.

Each study is shown by what a radiology worklist shows (date, time, accession number, description, modalities) and
its StudyInstanceUID, which the clinicians' page sends back to score it. No patient name or identifier is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.pacs.client import PacsClient
from pipelines.pacs.watch import DEFAULT_MODALITIES

FIELDS = ("StudyDate", "StudyTime", "AccessionNumber", "StudyDescription", "ModalitiesInStudy")


@dataclass(frozen=True)
class StudySummary:
    """One study of the PACS list."""

    study_uid: str
    date: str
    time: str
    accession: str
    description: str
    modalities: tuple[str, ...]


def recent_studies(
    client: PacsClient, *, modalities: Sequence[str] = DEFAULT_MODALITIES, limit: int = 50
) -> list[StudySummary]:
    """The newest ``limit`` studies holding any of ``modalities`` (by StudyDate and StudyTime).

    Raises:
        PacsUnavailable, PacsRefused, PacsError: the search failed.
    """
    found: dict[str, StudySummary] = {}
    for modality in modalities:
        for item in client.search_studies({"ModalitiesInStudy": modality}, fields=FIELDS, limit=limit):
            uid = str(item.get("StudyInstanceUID") or "")
            if not uid or uid in found:
                continue
            kinds = item.get("ModalitiesInStudy") or ()
            found[uid] = StudySummary(
                study_uid=uid,
                date=str(item.get("StudyDate") or ""),
                time=str(item.get("StudyTime") or "")[:6],
                accession=str(item.get("AccessionNumber") or ""),
                description=str(item.get("StudyDescription") or "")[:64],
                modalities=tuple(str(k) for k in ([kinds] if isinstance(kinds, str) else kinds)),
            )
    newest = sorted(found.values(), key=lambda s: (s.date, s.time, s.study_uid), reverse=True)
    return newest[:limit]
