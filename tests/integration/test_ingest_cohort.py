"""Ingest against the built-in cohort's ground truth: every defect caught, nothing clean lost, nothing leaked."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.codes import IIN_SYSTEM


def _quarantine(interim: Path, name: str = "fhir") -> list[dict]:
    lines = (interim / "quarantine" / f"{name}.ndjson").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


def _manifest(raw: Path) -> list[dict[str, str]]:
    with (raw / "manifest" / "dirty.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# Injected defects that are data-quality findings (docs/raw-data.md): the resource is kept and the finding recorded.
FINDINGS = {"dangling_reference", "implausible_date"}


def test_every_manifest_defect_is_quarantined_or_found_and_nothing_clean(tiny_cohort: Path) -> None:
    raw, interim = tiny_cohort / "data" / "raw", tiny_cohort / "data" / "interim"
    manifest = _manifest(raw)
    records = _quarantine(interim)
    findings = {rec["resource_id"]: rec for rec in _quarantine(interim, "findings")}
    report = json.loads((interim / "ingest_report.json").read_text())

    fhir_defects = [m for m in manifest if m["resource_type"] != "DICOM" and m["defect"] != "duplicate"]
    errors = [m for m in fhir_defects if m["defect"] not in FINDINGS]
    found = [m for m in fhir_defects if m["defect"] in FINDINGS]
    assert errors and found, "the tiny cohort should carry FHIR defects of both kinds"
    quarantined = {}
    for rec in records:
        key = (rec["source"], rec["location"]["line"]) if rec["defect"] == "invalid_json" else rec["resource_id"]
        quarantined[key] = rec
    for m in errors:
        key = (m["file"], int(m["location"])) if m["defect"] == "invalid_json" else m["resource_id"]
        assert key in quarantined, f"{m['defect']} {m['resource_type']}/{m['resource_id']} was not quarantined"
        rec = quarantined[key]
        assert rec["defect"] == m["defect"], (m, rec["outcome"])
        issue = rec["outcome"]["issue"][0]
        assert issue["diagnostics"], "the reason must be said in plain words"
        if m["field"] and m["defect"] in ("missing_required_field", "invalid_code", "invalid_date"):
            assert any(m["field"] in e for e in issue.get("expression", [])), (m, issue)
    for m in found:
        assert m["resource_id"] in findings, f"{m['defect']} {m['resource_type']}/{m['resource_id']} has no finding"
        issues = findings[m["resource_id"]]["outcome"]["issue"]
        ours = [i for i in issues if i["details"]["coding"][0]["code"] == m["defect"]]
        assert ours and ours[0]["severity"] == "warning" and ours[0]["diagnostics"], (m, issues)
    # Nothing else: no clean resource is quarantined, and no clean one has a finding.
    assert len(records) == len(errors)
    assert set(findings) == {m["resource_id"] for m in found}

    duplicates = sum(1 for m in manifest if m["defect"] == "duplicate")
    fhir = report["fhir"]
    assert fhir["resources"]["duplicates_merged"] == duplicates
    assert fhir["resources"]["quarantined"] == len(errors)
    assert fhir["resources"]["accepted_with_findings"] == len(found)
    assert fhir["resources"]["superseded"] == 0
    for rtype, c in fhir["by_resource_type"].items():
        assert c["read"] == c["accepted"] + c["quarantined"] + c["duplicates_merged"] + c["superseded"], rtype
    assert fhir["reconciles"] is True

    dicom_defects = {m["resource_id"]: m["defect"] for m in manifest if m["resource_type"] == "DICOM"}
    dicom_q = [json.loads(x) for x in (interim / "quarantine" / "dicom.ndjson").read_text().splitlines() if x]
    assert {Path(q["source"]).stem: q["reason"] for q in dicom_q} == dicom_defects


def _identifiers(raw: Path) -> tuple[set[str], set[str], set[str]]:
    """IINs, name parts (4+ letters) and phone numbers of every patient in the raw export."""
    iins, names, phones = set(), set(), set()
    for line in (raw / "fhir" / "Patient.ndjson").read_text(encoding="utf-8").splitlines():
        try:
            patient = json.loads(line)
        except json.JSONDecodeError:
            continue
        iins |= {i["value"] for i in patient.get("identifier", []) if i.get("system") == IIN_SYSTEM}
        for name in patient.get("name", []):
            names |= {n for n in [name.get("family", ""), *name.get("given", [])] if len(n) >= 4}
        phones |= {t["value"] for t in patient.get("telecom", []) if t.get("system") == "phone"}
    return iins, names, phones


def _texts_written_by_ingest(interim: Path) -> list[tuple[str, str]]:
    """(where, text) for every table cell, image manifest row and kept DICOM header; quarantine excluded.

    The quarantine holds rejected records unchanged by design (it is the evidence of what was rejected), so it
    is the one place allowed to keep raw data; it is never read downstream.
    """
    out = []
    for table in sorted((interim / "tables").glob("*.parquet")):
        for row in pq.read_table(table).to_pylist():
            out.append((table.name, json.dumps(row, default=str, ensure_ascii=False)))
    for header in sorted((interim / "images").rglob("*.json")):
        out.append((header.name, header.read_text(encoding="utf-8")))
    out.append(("ingest_report.json", (interim / "ingest_report.json").read_text(encoding="utf-8")))
    return out


def test_no_iin_name_or_phone_after_ingest(tiny_cohort: Path, tmp_path: Path) -> None:
    raw = tiny_cohort / "data" / "raw"
    iins, names, phones = _identifiers(raw)
    assert len(iins) > 100 and len(names) > 50 and len(phones) > 50
    # Run ingest again as a user would, capturing every log line it writes.
    env = {**os.environ, "SHIPA_LOG_LEVEL": "DEBUG"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "ingest", "--input", str(raw), "--out", str(tmp_path / "out"),
         "--workers", "2", "--no-progress"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    texts = [*_texts_written_by_ingest(tmp_path / "out"), ("log", proc.stdout + proc.stderr)]
    digits = re.compile(r"\d{12}")
    name_pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(names)) + r")\b")
    for where, text in texts:
        leaked_iins = set(digits.findall(text)) & iins
        assert not leaked_iins, f"an IIN reached {where}"
        assert not name_pattern.search(text), f"a patient name reached {where}: {name_pattern.search(text)}"
        assert not any(p in text for p in phones), f"a phone number reached {where}"


@pytest.mark.parametrize("table", ["patients", "claims", "imaging_studies"])
def test_tables_join_on_pseudonyms(tiny_cohort: Path, table: str) -> None:
    tables = tiny_cohort / "data" / "interim" / "tables"
    patients = set(pq.read_table(tables / "patients.parquet").column("patient_id").to_pylist())
    ids = pq.read_table(tables / f"{table}.parquet").column("patient_id").to_pylist()
    assert ids and set(ids) <= patients
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
