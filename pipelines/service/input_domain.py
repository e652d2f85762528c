"""The service's header gate: a DICOM file outside the served model's intended input is refused before decoding.

:func:`require_in_domain` is called on the dataset :func:`~pipelines.imaging.dicom.read_dicom` returned, before
:func:`~pipelines.imaging.dicom.normalize_pixels`: it reads header attributes only, so a CT, an MR, a segmentation,
an RT dose grid, an ultrasound or a lateral, infant or hand radiograph is refused without a pixel being decoded
and without a probability. The answer is a 422 OperationOutcome (issue code ``not-supported``) whose diagnostics
name the attribute, its value and what the model accepts, e.g. ``Modality 'CT' is outside this model's intended
use (accepted: CR, DX)``.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from pipelines.imaging.domain import DomainViolation, InputDomain
from pipelines.service.errors import FhirHTTPError

STATUS = 422
ISSUE_CODE = "not-supported"


def out_of_domain_error(violation: DomainViolation) -> FhirHTTPError:
    """The 422 OperationOutcome error of a header outside the model's input domain."""
    return FhirHTTPError(STATUS, ISSUE_CODE, violation.message)


def require_in_domain(ds: Dataset, domain: InputDomain) -> None:
    """Refuse a DICOM dataset whose header is outside ``domain`` (header only: no pixel is read or decoded).

    Args:
        ds: the uploaded file as :func:`~pipelines.imaging.dicom.read_dicom` parsed it.
        domain: the served model's input domain (``DiagnosisModel.input_domain``).

    Raises:
        FhirHTTPError: 422, code ``not-supported``, diagnostics naming the attribute ("... is outside this model's
            intended use (accepted: ...)").
    """
    violation = domain.check(ds)
    if violation is not None:
        raise out_of_domain_error(violation)
