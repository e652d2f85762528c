"""Writes each imaging episode's chest radiograph (and any defective extra file) through ``synth.dicom``."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipelines.synth.chart import Chart
from pipelines.synth.dicom import RadiographSpec, write_defective_dicom, write_radiograph
from pipelines.synth.episodes import Event, Radiograph
from pipelines.synth.spec import DICOM_DEFECTS


class RadiographWriter:
    """Callable that writes ``dicom/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` for an imaging episode.

    The image's randomness comes from its own stream ``[seed, patient index, k]``, so drawing pixels never shifts
    the patient's clinical draws. Defective files (DICOM defects, at their rates) go into the same study folder
    under a new series and instance UID that no ImagingStudy lists, so quarantining them orphans nothing.

    Args:
        root: the cohort folder (``dicom/`` is created inside).
        seed: the cohort seed.
        size: image side in pixels.
        defect_rates: share of radiographs that get each extra defective file.
    """

    def __init__(self, root: Path, *, seed: int, size: int, defect_rates: Mapping[str, float]) -> None:
        self.root = root
        self.seed = seed
        self.size = size
        self.defect_rates = {k: defect_rates.get(k, 0.0) for k in DICOM_DEFECTS}

    def __call__(
        self, chart: Chart, ev: Event, study_uid: str, series_uid: str, sop_uid: str, accession: str
    ) -> Radiograph:
        """Write the radiograph and return the modality and SOP class it was written with."""
        p = chart.person
        rel = f"dicom/{study_uid}/{sop_uid}.dcm"
        path = self.root / rel
        spec = RadiographSpec(
            size=self.size,
            pneumonia=ev.pneumonia,
            severity=ev.severity,
            iin=p.iin,
            patient_name=p.name.dicom(),
            birth_date=dt.date.fromordinal(p.birth),
            sex=p.sex,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            study_date=dt.date.fromordinal(ev.day),
            accession=accession,
            institution=ev.org.name_latin,
        )
        written = write_radiograph(path, spec, rng=np.random.default_rng([self.seed, p.index, 1]))
        chart.images.append(rel)
        for k, defect in enumerate(DICOM_DEFECTS):
            if chart.d.chance(self.defect_rates[defect]):
                bad_series, bad_sop = chart.ids.uid(), chart.ids.uid()
                bad_rel = f"dicom/{study_uid}/{bad_sop}.dcm"
                write_defective_dicom(
                    self.root / bad_rel,
                    defect,
                    dataclasses.replace(spec, series_uid=bad_series, sop_uid=bad_sop),
                    rng=np.random.default_rng([self.seed, p.index, 2 + k]),
                )
                chart.dicom_defects.append(
                    (defect, bad_sop, bad_rel, "PixelData" if defect == "dicom_no_pixels" else "")
                )
        return Radiograph(modality=written.modality, sop_class=written.sop_class_uid)
