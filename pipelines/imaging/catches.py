"""Reporting the image OOD score's catches: which refused files count as another modality, and leaving out every
image whose content set the threshold. Used by ``benchmarks/ood_catches.py`` and the service's OOD tests, never by
a stage (the evaluation chooses the threshold with :func:`~pipelines.imaging.other_modality.calibration_images`).
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from pipelines.imaging.domain import InputDomain
from pipelines.imaging.other_modality import ContentIndex, calibration_images

# Header attributes that say an image shows something else than the model's images (not merely another size,
# spacing or age): what makes a refused file count as "another modality" when catches are reported.
OTHER_KIND = frozenset({"SOPClassUID", "Modality", "BodyPartExamined", "PhotometricInterpretation", "SamplesPerPixel"})


def shows_other_kind(domain: InputDomain, ds: Dataset) -> bool:
    """True when ``ds``'s header is outside ``domain`` by one of :data:`OTHER_KIND` (so a real chest radiograph
    refused only for its pixel spacing is not counted as another modality)."""
    violation = domain.check(ds)
    return violation is not None and violation.attribute in OTHER_KIND


def calibration_index() -> ContentIndex:
    """The calibration images' contents, to leave out of a report of catches (``read_folder``'s ``seen``)."""
    index = ContentIndex()
    for image in calibration_images():
        index.add_if_new(image.pixels)
    return index
