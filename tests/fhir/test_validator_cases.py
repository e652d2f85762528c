"""Valid FHIR R4 from the reference validator's test suite is kept: each case ingested alone quarantines nothing.

The cases are the committed subset of ``tests/data/fhir-test-cases`` (see its README and ``cases.json``): files the
Java reference validator accepts with no profile, package or supporting file. The one documented exception is JSON
with comments, which is not JSON: it is quarantined as ``invalid_json`` with its raw text kept.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.fhir import defects

DATA = Path(__file__).resolve().parents[1] / "data" / "fhir-test-cases"
LISTING = json.loads((DATA / "cases.json").read_text(encoding="utf-8"))
VALID = [
    case
    for case in LISTING["cases"]
    if case["expected"] == "valid"
    and "duplicate_of" not in case
    and not case["json_with_comments"]
    and str(case.get("subset", "")).startswith("valid/")
]
WITH_COMMENTS = [
    case
    for case in LISTING["cases"]
    if case["expected"] == "valid"
    and case["json_with_comments"]
    and str(case.get("subset", "")).startswith("comments/")
]


def _ingest_alone(fx: SimpleNamespace, case: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], Path]:
    source = DATA / case["subset"]
    (tmp_path / "in" / "fhir").mkdir(parents=True)
    shutil.copyfile(source, tmp_path / "in" / "fhir" / source.name)
    report = fx.run_ingest(tmp_path / "in", tmp_path / "out", workers=1)
    return report, tmp_path / "out"


def _blob_id(data: bytes) -> str:
    """Git's blob id, as recorded in cases.json for the upstream file at the pinned commit."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_the_committed_subset_is_large_and_byte_exact() -> None:
    assert len(VALID) >= 12
    assert len(WITH_COMMENTS) == 1
    for case in [*VALID, *WITH_COMMENTS]:
        assert _blob_id((DATA / case["subset"]).read_bytes()) == case["blob"], case["subset"]


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_a_valid_case_is_kept_whole(fx: SimpleNamespace, case: dict[str, Any], tmp_path: Path) -> None:
    report, out = _ingest_alone(fx, case, tmp_path)
    fhir = report["fhir"]
    quarantine = (out / "quarantine" / "fhir.ndjson").read_text(encoding="utf-8")
    assert fhir["resources"]["quarantined"] == 0, quarantine[:2000]
    assert quarantine.strip() == ""
    assert fhir["resources"]["read"] >= 1
    assert fhir["resources"]["accepted"] >= 1
    assert fhir["reconciles"] is True
    assert report["quarantined_total"] == 0


@pytest.mark.parametrize("case", WITH_COMMENTS, ids=[c["name"] for c in WITH_COMMENTS])
def test_json_with_comments_is_quarantined_with_its_raw_text(
    fx: SimpleNamespace, case: dict[str, Any], tmp_path: Path
) -> None:
    report, out = _ingest_alone(fx, case, tmp_path)
    assert report["fhir"]["resources"]["quarantined"] == 1
    assert report["fhir"]["resources"]["accepted"] == 0
    assert report["fhir"]["reconciles"] is True
    [record] = fx.quarantine_records(out)
    assert record["defect"] == defects.INVALID_JSON
    assert "not valid JSON" in record["outcome"]["issue"][0]["diagnostics"]
    # the input kept exactly, CRLF line ends included, on one line of the quarantine file
    assert record["raw"] == (DATA / case["subset"]).read_bytes().decode("utf-8")
    assert len((out / "quarantine" / "fhir.ndjson").read_bytes().splitlines()) == 1
