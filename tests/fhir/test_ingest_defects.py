"""End-to-end FHIR ingest of a tiny dataset holding one example of every defect.

Each defect must be quarantined with the right code and a diagnostic naming the field, the rest ingested, the
report must reconcile, and reruns (with one or two workers) must write byte-identical tables.
"""

from __future__ import annotations

import copy
import gzip
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from pipelines import codes


def _dirty_dataset(fx: SimpleNamespace, root: Path) -> dict[str, tuple[str, str]]:
    """Write the dataset; return resource id -> (expected defect, expected expression)."""
    expected: dict[str, tuple[str, str]] = {}
    clean = fx.clean_resources()
    lines: list[dict[str, Any] | bytes] = list(clean)

    def add(resource: dict[str, Any], defect: str, expression: str) -> None:
        lines.append(resource)
        expected[resource["id"]] = (defect, expression)

    obs = fx.observation("bad-missing", "p1", "e1")
    del obs["status"]
    add(obs, "missing_required_field", "Observation.status")
    add(fx.condition("bad-code", "p1", "e1", code="J18.9.9"), "invalid_code", "Condition.code.coding[0]")
    add(fx.observation("bad-date", "p1", "e1", when="2023-02-30"), "invalid_date", "Observation.effectiveDateTime")
    add(
        fx.observation("bad-before-birth", "p1", "e1", when="1970-01-01T10:00:00+05:00"),
        "implausible_date",
        "Observation.effective[x]",
    )
    add(
        fx.patient("bad-dead-before-born", "1990-01-01", deceasedDateTime="1989-01-01"),
        "implausible_date",
        "Patient.deceasedDateTime",
    )
    bad_iin = fx.patient("bad-iin", "1970-03-03", "female")
    value = bad_iin["identifier"][0]["value"]
    bad_iin["identifier"][0]["value"] = value[:11] + str((int(value[11]) + 3) % 10)
    add(bad_iin, "iin_checksum", "Patient.identifier[0].value")
    mismatch = fx.patient("bad-mismatch", "1970-03-03", "female")
    mismatch["gender"] = "male"
    add(mismatch, "iin_mismatch", "Patient.identifier[0].value")
    add(fx.observation("bad-dangling", "p1", "no-such-encounter"), "dangling_reference", "Observation.encounter")
    orphan = fx.encounter("bad-cond-ref", "p2")
    orphan["serviceProvider"] = {"reference": f"Organization?identifier={codes.ORG_ID_SYSTEM}|NO-SUCH-ORG"}
    add(orphan, "dangling_reference", "Encounter.serviceProvider")
    add(fx.observation("bad-to-quarantined", "bad-iin", "e1"), "dangling_reference", "Observation.subject")
    conflict = copy.deepcopy(clean[3])  # same id as o1, different content
    conflict["valueQuantity"]["value"] = 36.6
    lines.append(conflict)
    expected["o1#conflict"] = ("duplicate_id", "Observation.id")
    lines.append(clean[3])  # exact duplicate of o1: merged
    lines.append(b'{"resourceType": "Observation", "id": "broken", "status": "fin')
    expected["#invalid-json"] = ("invalid_json", "")
    fx.write_ndjson(root / "fhir" / "all.ndjson", lines)

    # a gzipped file that breaks off: its complete lines are kept
    extra = [fx.observation(f"gz{i}", "p2", "e2") for i in range(60)]
    data = gzip.compress(b"".join(orjson.dumps(o) + b"\n" for o in extra), mtime=0)
    (root / "fhir" / "extra.ndjson.gz").write_bytes(data[: int(len(data) * 0.6)])
    expected["#truncated-gzip"] = ("invalid_json", "")

    # a transaction Bundle: urn:uuid references, a conditional reference, a broken entry, an unknown urn
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:pb",
                "resource": {k: v for k, v in fx.patient("x", "2001-07-07").items() if k != "id"},
            },
            {
                "fullUrl": "urn:uuid:eb",
                "resource": {**fx.encounter("eb", "x"), "subject": {"reference": "urn:uuid:pb"}},
            },
            {"fullUrl": "urn:uuid:broken", "resource": "not a resource"},
            {
                "fullUrl": "urn:uuid:ob",
                "resource": {**fx.observation("ob", "x", "x"), "subject": {"reference": "urn:uuid:unknown"}},
            },
        ],
    }
    (root / "fhir" / "bundle.json").write_bytes(orjson.dumps(bundle))
    expected["#broken-entry"] = ("invalid_json", "")
    expected["ob"] = ("dangling_reference", "Observation.subject")
    return expected


@pytest.fixture
def dirty(fx: SimpleNamespace, tmp_path: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    root = tmp_path / "in"
    return root, _dirty_dataset(fx, root)


def test_every_defect_is_quarantined_with_its_reason(fx: SimpleNamespace, dirty: tuple, tmp_path: Path) -> None:
    root, expected = dirty
    report = fx.run_ingest(root, tmp_path / "out")
    records = fx.quarantine_records(tmp_path / "out")
    by_id: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec["resource_id"] == "o1":
            by_id["o1#conflict"] = rec
        elif rec["resource_id"] is not None:
            by_id[rec["resource_id"]] = rec
        elif rec["source"] == "fhir/all.ndjson":
            by_id["#invalid-json"] = rec
        elif rec["source"] == "fhir/extra.ndjson.gz":
            by_id["#truncated-gzip"] = rec
        elif rec["source"] == "fhir/bundle.json":
            by_id["#broken-entry"] = rec
    assert set(by_id) == set(expected)
    for rid, (defect, expression) in expected.items():
        rec = by_id[rid]
        assert rec["defect"] == defect, rid
        issue = rec["outcome"]["issue"][0]
        if expression:
            assert issue["expression"] == [expression], rid
            assert expression in issue["diagnostics"], rid
        assert issue["diagnostics"], rid

    assert by_id["bad-to-quarantined"]["outcome"]["issue"][0]["diagnostics"].endswith("was quarantined")
    assert "matches no Organization" in by_id["bad-cond-ref"]["outcome"]["issue"][0]["diagnostics"]
    assert by_id["#invalid-json"]["location"] == {"line": len(fx.clean_resources()) + 13}
    assert by_id["#invalid-json"]["resource_type"] == "Observation"
    assert "truncated" in by_id["#truncated-gzip"]["outcome"]["issue"][0]["diagnostics"]
    assert by_id["#broken-entry"]["location"] == {"entry": 2}
    assert by_id["ob"]["location"] == {"entry": 3}
    # the quarantined resource is kept unchanged
    assert by_id["bad-code"]["resource"] == fx.condition("bad-code", "p1", "e1", code="J18.9.9")

    fhir = report["fhir"]
    assert fhir["reconciles"] is True
    for counts in fhir["by_resource_type"].values():
        assert counts["read"] == counts["accepted"] + counts["quarantined"] + counts["duplicates_merged"]
    assert fhir["by_resource_type"]["Observation"]["duplicates_merged"] == 1
    assert fhir["resources"]["quarantined"] == len(records) == len(expected)
    assert fhir["defects"]["dangling_reference"] == 4
    assert fhir["top_reasons"][0]["count"] >= fhir["top_reasons"][-1]["count"]

    # rejected resources are not in the tables; the Bundle's resources are, with urn references resolved
    obs = pq.read_table(tmp_path / "out" / "tables" / "observations.parquet")
    gz_kept = fhir["by_resource_type"]["Observation"]["accepted"] - 2
    assert 0 < gz_kept < 60 and obs.num_rows == gz_kept + 2
    encounters = pq.read_table(tmp_path / "out" / "tables" / "encounters.parquet").to_pylist()
    patients = {p["patient_id"]: p for p in pq.read_table(tmp_path / "out" / "tables" / "patients.parquet").to_pylist()}
    assert len(patients) == 3
    bundle_enc = [
        e for e in encounters if e["patient_id"] in patients and patients[e["patient_id"]]["birth_year"] == 2001
    ]
    assert len(bundle_enc) == 1 and bundle_enc[0]["organization_id"] is not None
    assert bundle_enc[0]["age_at_event"] == 21


def test_reruns_workers_and_chunk_sizes_give_identical_outputs(
    fx: SimpleNamespace, dirty: tuple, tmp_path: Path
) -> None:
    root, _ = dirty
    runs = [(1, 5), (1, 5), (2, 5), (1, 3)]  # (workers, chunk_size)
    outs = [tmp_path / f"out{i}" for i in range(len(runs))]
    reports = [fx.run_ingest(root, out, workers=w, chunk_size=c) for out, (w, c) in zip(outs, runs, strict=True)]
    assert all(r == reports[0] for r in reports)
    names = sorted(p.name for p in (outs[0] / "tables").iterdir())
    assert "observations.parquet" in names
    for name in names:
        first = (outs[0] / "tables" / name).read_bytes()
        for out in outs[1:]:
            assert first == (out / "tables" / name).read_bytes(), (name, out.name)
    q = [(o / "quarantine" / "fhir.ndjson").read_bytes() for o in outs]
    assert all(x == q[0] for x in q)


def test_nothing_personal_reaches_the_tables(fx: SimpleNamespace, clean_dir: Path, tmp_path: Path) -> None:
    fx.run_ingest(clean_dir, tmp_path / "out")
    iins = [r["identifier"][0]["value"] for r in fx.clean_resources() if r["resourceType"] == "Patient"]
    secrets = [*iins, "Ахметов", "Akhmetov", "+77011234567", "Абая", "1980-05-17", "feverish", "CLM-cl1"]
    for table in (tmp_path / "out" / "tables").glob("*.parquet"):
        text = str(pq.read_table(table).to_pylist())
        for secret in secrets:
            assert secret not in text, (table.name, secret)
    report = (tmp_path / "out" / "ingest_report.json").read_text()
    assert not any(s in report for s in secrets)
