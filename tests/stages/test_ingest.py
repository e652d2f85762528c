"""The ``ingest`` stage: key rules, user errors, atomic outputs, and the DICOM half wired in."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from pipelines import codes, iin
from pipelines.config import DEMO_PSEUDONYM_KEY, IngestParams
from pipelines.errors import ShipaError
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.stages import ingest

KEY = "stage-test-key-0123456789"
BIRTH = dt.date(1975, 6, 1)


def _iin() -> str:
    return next(v for s in range(100) if (v := iin.make_iin(BIRTH, "female", s)) is not None)


def _resources(n_extra: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": "p1",
            "identifier": [{"system": codes.IIN_SYSTEM, "value": _iin()}],
            "name": [{"family": "Смагулова", "given": ["Айгерим"]}],
            "gender": "female",
            "birthDate": BIRTH.isoformat(),
        },
        {
            "resourceType": "ImagingStudy",
            "id": "is1",
            "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.10.1.1"}],
            "subject": {"reference": "Patient/p1"},
            "started": "2023-04-05T10:00:00+05:00",
            "modality": [{"system": codes.DICOM_DCM, "code": "CR"}],
        },
    ]
    for i in range(n_extra):
        out.append(
            {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "code": {"coding": [{"system": codes.LOINC, "code": "8867-4"}]},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2023-04-05T10:00:00+05:00",
                "valueQuantity": {"value": 80 + i % 20, "unit": "/min"},
            }
        )
    return out


def _write_input(root: Path, n_extra: int = 0, *, cohort: bool = False) -> Path:
    (root / "fhir").mkdir(parents=True)
    (root / "fhir" / "all.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in _resources(n_extra)))
    if cohort:
        (root / "COHORT.json").write_bytes(orjson.dumps({"generator": "shipa-synthesize", "version": "1"}))
    return root


def _run(root: Path, out: Path, key: str | None = KEY, **params: Any) -> dict:
    return ingest.run(IngestParams(workers=1, **params), root, out, key=key, progress=False)


def test_demo_key_is_refused_without_the_cohort_marker(tmp_path: Path) -> None:
    root = _write_input(tmp_path / "raw")
    for key in (None, DEMO_PSEUDONYM_KEY):
        with pytest.raises(ingest.DemoKeyRefusedError, match=r"COHORT\.json") as err:
            _run(root, tmp_path / "out", key=key)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_demo_key_is_accepted_for_the_builtin_cohort(tmp_path: Path) -> None:
    root = _write_input(tmp_path / "raw", cohort=True)
    report = _run(root, tmp_path / "out", key=None)
    assert report["fhir"]["resources"]["accepted"] == 2
    patients = pq.read_table(tmp_path / "out" / "tables" / "patients.parquet").to_pylist()
    assert patients[0]["patient_pseudo_id"] == Pseudonymizer(DEMO_PSEUDONYM_KEY).id("iin", _iin())


def test_user_errors_are_named(tmp_path: Path) -> None:
    with pytest.raises(ingest.InputNotFoundError, match="not found"):
        _run(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ingest.InputNotFoundError, match="no FHIR"):
        _run(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ingest.PseudonymKeyError, match="16 bytes"):
        _run(_write_input(tmp_path / "raw"), tmp_path / "out", key="short")
    assert issubclass(ingest.DemoKeyRefusedError, ingest.IngestError)
    assert issubclass(ingest.IngestError, ShipaError)


def test_outputs_are_complete_and_temporary_files_gone(tmp_path: Path) -> None:
    root = _write_input(tmp_path / "raw", n_extra=3)
    out = tmp_path / "out"
    report = _run(root, out, chunk_size=2)
    assert sorted(p.name for p in out.iterdir()) == ["images", "ingest_report.json", "quarantine", "tables"]
    assert orjson.loads((out / "ingest_report.json").read_bytes()) == report
    assert report["fhir"]["tables"]["observations"] == 3
    tables = sorted(p.stem for p in (out / "tables").glob("*.parquet"))
    assert {"patients", "encounters", "claims", "claim_items", "imaging_studies", "observations"} <= set(tables)
    # a second run replaces the outputs in place
    _run(root, out, chunk_size=2)
    assert sorted(p.name for p in out.iterdir()) == ["images", "ingest_report.json", "quarantine", "tables"]


def test_a_killed_ingest_leaves_no_table_that_looks_complete(tmp_path: Path) -> None:
    root = _write_input(tmp_path / "raw", n_extra=6000)
    out = tmp_path / "out"
    code = (
        "import sys; from pathlib import Path; from pipelines.config import IngestParams; "
        "from pipelines.stages import ingest; "
        f"ingest.run(IngestParams(workers=1, chunk_size=200), Path({str(root)!r}), Path({str(out)!r}), "
        f"key={KEY!r}, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if list(out.glob(".ingest-tmp-*/work/*.meta.pkl")):
                break
            assert proc.poll() is None, "ingest finished before it could be interrupted"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (out / "tables").exists()
    assert not (out / "ingest_report.json").exists()
    # the next run cleans the leftovers and completes
    _run(_write_input(tmp_path / "raw2"), out)
    assert not list(out.glob(".ingest-tmp-*")) and (out / "ingest_report.json").exists()


def test_dicom_images_are_linked_to_their_imaging_study(tmp_path: Path) -> None:
    from pipelines.synth.dicom import RadiographSpec, write_radiograph

    root = _write_input(tmp_path / "raw")
    rng = np.random.default_rng(0)
    for n, study in enumerate(("1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2"), start=1):
        write_radiograph(
            root / "dicom" / study / f"{n}.dcm",
            RadiographSpec(
                size=64,
                pneumonia=False,
                severity=0.0,
                iin=_iin(),
                patient_name="Smagulova^Aigerim",
                birth_date=BIRTH,
                sex="female",
                study_uid=study,
                series_uid=f"{study}.1",
                sop_uid=f"{study}.1.1",
                study_date=dt.date(2023, 4, 5),
                accession=f"ACC{n}",
                institution="Polyclinic No. 1",
            ),
            rng=rng,
        )
    (root / "dicom" / "junk.dcm").write_bytes(b"not a dicom file")
    report = _run(root, tmp_path / "out", image_size=32)
    dicom = report["dicom"]
    assert (dicom["files"], dicom["images"], dicom["quarantined"]) == (3, 2, 1)
    assert (dicom["linked_to_imaging_study"], dicom["unlinked_images"]) == (1, 1)
    assert report["quarantined_total"] == 1
    tables = tmp_path / "out" / "tables"
    images = pq.read_table(tables / "images.parquet").to_pylist()
    studies = pq.read_table(tables / "imaging_studies.parquet").to_pylist()
    patients = pq.read_table(tables / "patients.parquet").to_pylist()
    linked = [i for i in images if i["imaging_study_id"] is not None]
    assert len(linked) == 1 and linked[0]["imaging_study_id"] == studies[0]["imaging_study_id"]
    assert studies[0]["image_count"] == 1 and studies[0]["age_at_event"] == 47
    assert linked[0]["patient_pseudo_id"] == patients[0]["patient_pseudo_id"]
    dicom_q = (tmp_path / "out" / "quarantine" / "dicom.ndjson").read_bytes().splitlines()
    assert [orjson.loads(line)["source"] for line in dicom_q] == ["dicom/junk.dcm"]
