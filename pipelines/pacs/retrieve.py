"""One study from the PACS, as a model reads it: the first of its instances inside the model's input domain.

The headers are read first (QIDO-RS lists at most ``max_instances`` instances; WADO-RS metadata gives each one's
header without its pixels), checked against the model's :class:`~pipelines.imaging.domain.InputDomain`, and only
the first instance that passes is retrieved whole (WADO-RS). A CT series of hundreds of slices is thus refused
from its headers, and the bytes received stay within the client's bound (:class:`~pipelines.pacs.client.PacsClient`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from pipelines.imaging.domain import InputDomain
from pipelines.pacs.client import PacsClient
from pipelines.pacs.errors import NoUsableInstance, StudyNotFound

DEFAULT_MAX_INSTANCES = 64


@dataclass(frozen=True)
class StudyInstance:
    """The instance of a study a model will read.

    Attributes:
        study_uid: its StudyInstanceUID.
        series_uid: its SeriesInstanceUID.
        sop_uid: its SOPInstanceUID.
        sop_class_uid: its SOPClassUID.
        header: its header as the PACS's metadata gave it (no pixel data).
        dicom: the instance as a DICOM file.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    header: Dataset
    dicom: bytes


def _order(item: Dataset) -> tuple[int, int, str, str]:
    """Series number, instance number, then the UIDs: the same "first" instance on every pass."""

    def number(keyword: str) -> int:
        try:
            return int(item.get(keyword) or 0)
        except (TypeError, ValueError):
            return 0

    return number("SeriesNumber"), number("InstanceNumber"), str(item.SeriesInstanceUID), str(item.SOPInstanceUID)


def retrieve_for_model(
    client: PacsClient,
    study_uid: str,
    domain: InputDomain | None,
    *,
    max_instances: int = DEFAULT_MAX_INSTANCES,
) -> StudyInstance:
    """The first instance of the study (by series and instance number) inside ``domain``, retrieved whole.

    Args:
        client: the PACS.
        study_uid: the StudyInstanceUID.
        domain: the model's input domain; None takes the first instance.
        max_instances: the most instances whose headers are read.

    Raises:
        StudyNotFound: the PACS holds no instance of the study.
        NoUsableInstance: none of the (first ``max_instances``) instances is inside the domain; the reason names the
            first one's attribute outside it, as the upload route's refusal does.
        StudyTooLarge: the answers exceed the client's byte bound.
        PacsUnavailable, PacsRefused, PacsError: the exchange failed.
    """
    listed = [item for item in client.search_instances(study_uid, limit=max_instances) if "SOPInstanceUID" in item]
    if not listed:
        raise StudyNotFound("the PACS holds no instance of this study")
    first_reason: str | None = None
    for item in sorted(listed, key=_order):
        series_uid, sop_uid = str(item.SeriesInstanceUID), str(item.SOPInstanceUID)
        header = client.instance_metadata(study_uid, series_uid, sop_uid)
        violation = domain.check(header) if domain is not None else None
        if violation is not None:
            first_reason = first_reason or violation.message
            continue
        dicom = client.retrieve_instance(study_uid, series_uid, sop_uid)
        sop_class = str(header.get("SOPClassUID") or item.get("SOPClassUID") or "")
        return StudyInstance(study_uid, series_uid, sop_uid, sop_class, header, dicom)
    more = " (the first ones)" if len(listed) >= max_instances else ""
    raise NoUsableInstance(
        f"none of the study's {len(listed)} instances{more} is inside this model's intended use; "
        f"the first: {first_reason}",
        len(listed),
    )
