"""DICOM ingest end to end: images, manifest, quarantine, pseudonyms, no leaks, same result with a process pool."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydicom.dataset import Dataset

from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.imaging.ingest import MANIFEST_SCHEMA, ingest_dicom, load_image_array
from pipelines.synth.dicom import RadiographSpec, write_defective_dicom, write_radiograph

KEY = "test-key-0123456789abcdef"
PATIENTS = (
    ("850315300012", "Nurlan Abenov", dt.date(1985, 3, 15), "male"),
    ("920704450013", "Aigerim Saparova", dt.date(1992, 7, 4), "female"),
)
SECRETS = ("850315300012", "920704450013", "Abenov", "Nurlan", "Saparova", "Aigerim", "19850315", "19920704")
SECRETS += ("Astana City Hospital", "ACC0000")
DEFECTS = {1: "dicom_unreadable", 2: "dicom_not_dicom", 3: "dicom_no_pixels"}


def _study(i: int) -> str:
    return f"1.2.826.0.1.3680043.10.4.{i}"


def _raw_tree(root: Path, make_dataset: Callable[..., Dataset]) -> list[Path]:
    files = []
    for i in range(17):
        iin, name, born, sex = PATIENTS[i % 2]
        path = root / "dicom" / _study(i) / f"{_study(i)}.1.1.dcm"
        spec = RadiographSpec(
            size=48,
            pneumonia=i % 3 == 0,
            severity=0.6,
            iin=iin,
            patient_name=name,
            birth_date=born,
            sex=sex,
            study_uid=_study(i),
            series_uid=f"{_study(i)}.1",
            sop_uid=f"{_study(i)}.1.1",
            study_date=dt.date(2024, 1 + i % 12, 10),
            accession=f"ACC0000{i:02d}",
            institution="Astana City Hospital 1",
        )
        if i in DEFECTS:
            write_defective_dicom(path, DEFECTS[i], spec, rng=np.random.default_rng(i))
        else:
            write_radiograph(path, spec, rng=np.random.default_rng(i))
        files.append(path)
    # The same instance sent twice under another name.
    copy = root / "dicom" / _study(0) / "resent.dcm"
    shutil.copy(files[0], copy)
    files.append(copy)
    # A three-frame object of the first patient.
    frames = [np.full((6, 8), value, dtype=np.uint16) for value in (100, 2000, 4000)]
    multi = make_dataset(frames, window=("2048", "4096"))
    multi.PatientID, multi.PatientBirthDate, multi.StudyDate = PATIENTS[0][0], "19850315", "20240601"
    path = root / "dicom" / "multi.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    multi.save_as(path, enforce_file_format=True)
    files.append(path)
    return files


@pytest.fixture
def raw(tmp_path: Path, make_dataset: Callable[..., Dataset]) -> tuple[Path, list[Path]]:
    root = tmp_path / "raw"
    return root, _raw_tree(root, make_dataset)


def test_ingest_writes_images_manifest_and_quarantine(tmp_path: Path, raw: tuple[Path, list[Path]]) -> None:
    root, files = raw
    pseudonymizer = Pseudonymizer(KEY)
    out = tmp_path / "images"
    result = ingest_dicom(
        files, root=root, out_images=out, pseudonymizer=pseudonymizer, size=32, workers=1, progress=False
    )

    # Each defect is quarantined with its reason, and the run went on.
    reasons = {q.source: q.reason for q in result.quarantine}
    assert reasons == {f"dicom/{_study(i)}/{_study(i)}.1.1.dcm": reason for i, reason in DEFECTS.items()}
    assert all(q.diagnostics for q in result.quarantine)
    assert len(result.records) == 17 - 3 + 1  # good radiographs plus the multi-frame object
    assert result.duplicates == 1

    by_study = {r.study_uid: r for r in result.records}
    for i in set(range(17)) - set(DEFECTS):
        iin, _, _, sex = PATIENTS[i % 2]
        row = by_study[pseudonymizer.uid(_study(i))]
        assert row.patient_pseudo_id == pseudonymizer.id("iin", iin)
        assert row.series_uid == pseudonymizer.uid(f"{_study(i)}.1")
        assert row.sop_uid == pseudonymizer.uid(f"{_study(i)}.1.1")
        assert row.study_date == dt.date(2024, 1 + i % 12, 10)
        assert row.sex == sex
        assert row.age_years == {0: 38, 4: 39, 5: 31, 7: 32}.get(i, row.age_years)
        assert (row.rows, row.columns, row.frames) == (48, 48, 1)
        assert row.modality in ("CR", "DX") and row.view_position in ("PA", "AP")
        assert row.pixel_spacing_row and row.pixel_spacing_row > 0
        image = np.load(out / row.image_path)
        assert image.dtype == np.float16 and image.shape == (32, 32)
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert (out / row.header_path).is_file()

    multi = next(r for r in result.records if r.frames == 3)
    assert multi.patient_pseudo_id == pseudonymizer.id("iin", PATIENTS[0][0])
    first = load_image_array(out / multi.image_path)
    assert first.dtype == np.float32
    np.testing.assert_allclose(first[8:24, 4:28], (100 - 2047.5) / 4095 + 0.5, atol=2e-3)  # frame 0, not 1 or 2

    table = result.manifest_table()
    assert table.schema == MANIFEST_SCHEMA and table.num_rows == 15
    assert table.column("study_date").type == pa.date32()
    assert result.quarantine_table().num_rows == 3


def test_nothing_ingest_writes_identifies_anyone(tmp_path: Path, raw: tuple[Path, list[Path]]) -> None:
    root, files = raw
    out = tmp_path / "images"
    result = ingest_dicom(
        files, root=root, out_images=out, pseudonymizer=Pseudonymizer(KEY), size=16, workers=1, progress=False
    )
    written = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    assert len(written) == 2 * 15
    written.append(str(result.manifest_table().to_pylist()).encode())
    written.append(str(result.quarantine_table().to_pylist()).encode())
    for blob in written:
        for secret in SECRETS:
            assert secret.encode() not in blob, f"{secret!r} leaked"
    assert not list(out.glob("*.tmp"))


def test_process_pool_gives_the_same_result(tmp_path: Path, raw: tuple[Path, list[Path]]) -> None:
    root, files = raw
    pseudonymizer = Pseudonymizer(KEY)
    serial = ingest_dicom(
        files, root=root, out_images=tmp_path / "a", pseudonymizer=pseudonymizer, size=16, workers=1, progress=False
    )
    pooled = ingest_dicom(
        iter(files), root=root, out_images=tmp_path / "b", pseudonymizer=pseudonymizer, size=16, workers=2,
        progress=False,
    )  # fmt: skip
    assert pooled.manifest_table().equals(serial.manifest_table())
    assert pooled.quarantine == serial.quarantine and pooled.duplicates == serial.duplicates
    for row in serial.records:
        assert (tmp_path / "a" / row.image_path).read_bytes() == (tmp_path / "b" / row.image_path).read_bytes()
