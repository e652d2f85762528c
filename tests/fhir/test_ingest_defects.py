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

QUARANTINED, FINDING = "quarantined", "finding"


def _dirty_dataset(fx: SimpleNamespace, root: Path) -> dict[str, tuple[str, str, str]]:
    """Write the dataset; return resource id -> (expected fate, defect, expression)."""
    expected: dict[str, tuple[str, str, str]] = {}
    clean = fx.clean_resources()
    lines: list[dict[str, Any] | bytes] = list(clean)

    def add(resource: dict[str, Any], fate: str, defect: str, expression: str) -> None:
        lines.append(resource)
        expected[resource["id"]] = (fate, defect, expression)

    obs = fx.observation("bad-missing", "p1", "e1")
    del obs["status"]
    add(obs, QUARANTINED, "missing_required_field", "Observation.status")
    add(fx.condition("bad-code", "p1", "e1", code="J18.9.9"), QUARANTINED, "invalid_code", "Condition.code.coding[0]")
    add(
        fx.observation("bad-date", "p1", "e1", when="2023-02-30"),
        QUARANTINED,
        "invalid_date",
        "Observation.effectiveDateTime",
    )
    add(
        fx.observation("bad-before-birth", "p1", "e1", when="1970-01-01T10:00:00+05:00"),
        FINDING,
        "implausible_date",
        "Observation.effective[x]",
    )
    add(
        fx.patient("bad-dead-before-born", "1990-01-01", deceasedDateTime="1989-01-01"),
        FINDING,
        "implausible_date",
        "Patient.deceasedDateTime",
    )
    bad_iin = fx.patient("bad-iin", "1970-03-03", "female")
    value = bad_iin["identifier"][0]["value"]
    bad_iin["identifier"][0]["value"] = value[:11] + str((int(value[11]) + 3) % 10)
    add(bad_iin, QUARANTINED, "iin_checksum", "Patient.identifier[0].value")
    mismatch = fx.patient("bad-mismatch", "1970-03-03", "female")
    mismatch["gender"] = "male"
    add(mismatch, QUARANTINED, "iin_mismatch", "Patient.identifier[0].value")
    add(
        fx.observation("bad-dangling", "p1", "no-such-encounter"),
        FINDING,
        "dangling_reference",
        "Observation.encounter",
    )
    orphan = fx.encounter("bad-cond-ref", "p2")
    orphan["serviceProvider"] = {"reference": f"Organization?identifier={codes.ORG_ID_SYSTEM}|NO-SUCH-ORG"}
    add(orphan, FINDING, "dangling_reference", "Encounter.serviceProvider")
    add(fx.observation("bad-to-quarantined", "bad-iin", "e1"), FINDING, "dangling_reference", "Observation.subject")
    conflict = copy.deepcopy(clean[3])  # same id as o1, different content, no versionId: input order decides
    conflict["valueQuantity"]["value"] = 36.6
    lines.append(conflict)
    lines.append(clean[3])  # o1 again, last in the input: kept, and the first o1 (identical) merged
    lines.append(b'{"resourceType": "Observation", "id": "broken", "status": "fin')
    expected["#invalid-json"] = (QUARANTINED, "invalid_json", "")
    fx.write_ndjson(root / "fhir" / "all.ndjson", lines)

    # a gzipped file that breaks off: its complete lines are kept
    extra = [fx.observation(f"gz{i}", "p2", "e2") for i in range(60)]
    data = gzip.compress(b"".join(orjson.dumps(o) + b"\n" for o in extra), mtime=0)
    (root / "fhir" / "extra.ndjson.gz").write_bytes(data[: int(len(data) * 0.6)])
    expected["#truncated-gzip"] = (QUARANTINED, "invalid_json", "")

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
    (root / "fhir" / "bundle.json").write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    expected["#broken-entry"] = (QUARANTINED, "invalid_json", "")
    expected["ob"] = (FINDING, "dangling_reference", "Observation.subject")
    return expected


@pytest.fixture
def dirty(fx: SimpleNamespace, tmp_path: Path) -> tuple[Path, dict[str, tuple[str, str, str]]]:
    root = tmp_path / "in"
    return root, _dirty_dataset(fx, root)


def _by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec["resource_id"] is not None:
            by_id[rec["resource_id"]] = rec
        elif rec["source"] == "fhir/all.ndjson":
            by_id["#invalid-json"] = rec
        elif rec["source"] == "fhir/extra.ndjson.gz":
            by_id["#truncated-gzip"] = rec
        elif rec["source"] == "fhir/bundle.json":
            by_id["#broken-entry"] = rec
    return by_id


def test_every_defect_is_quarantined_or_kept_with_a_finding(fx: SimpleNamespace, dirty: tuple, tmp_path: Path) -> None:
    root, expected = dirty
    out = tmp_path / "out"
    report = fx.run_ingest(root, out)
    quarantined = _by_id(fx.quarantine_records(out))
    findings = _by_id(fx.quarantine_records(out, "findings"))
    assert set(quarantined) == {k for k, v in expected.items() if v[0] == QUARANTINED}
    for rid, (fate, defect, expression) in expected.items():
        rec = (quarantined if fate == QUARANTINED else findings)[rid]
        issue = next(i for i in rec["outcome"]["issue"] if i["details"]["coding"][0]["code"] == defect)
        assert issue["severity"] == ("error" if fate == QUARANTINED else "warning"), rid
        if fate == QUARANTINED:
            assert rec["defect"] == defect, rid
        else:
            assert "defect" not in rec, rid
        if expression:
            assert issue["expression"] == [expression], rid
            assert expression in issue["diagnostics"], rid
        assert issue["diagnostics"], rid

    dangling = {i["diagnostics"] for i in findings["bad-to-quarantined"]["outcome"]["issue"]}
    assert any(d.endswith("was quarantined") for d in dangling)
    assert "matches no Organization" in findings["bad-cond-ref"]["outcome"]["issue"][0]["diagnostics"]
    assert "urn: reference" in findings["ob"]["outcome"]["issue"][0]["diagnostics"]
    assert quarantined["#invalid-json"]["location"] == {"line": len(fx.clean_resources()) + 13}
    assert quarantined["#invalid-json"]["resource_type"] == "Observation"
    assert quarantined["#invalid-json"]["raw"] == '{"resourceType": "Observation", "id": "broken", "status": "fin'
    assert "truncated" in quarantined["#truncated-gzip"]["outcome"]["issue"][0]["diagnostics"]
    assert quarantined["#broken-entry"]["location"] == {"entry": 2}
    assert findings["ob"]["location"] == {"entry": 3}
    # the input is kept exactly, as a JSON string: an NDJSON line, or a Bundle entry as written (indented here)
    assert orjson.loads(quarantined["bad-code"]["raw"]) == fx.condition("bad-code", "p1", "e1", code="J18.9.9")
    bundle_text = (root / "fhir" / "bundle.json").read_text()
    assert findings["ob"]["raw"] in bundle_text and "\n" in findings["ob"]["raw"]
    for name in ("fhir", "findings", "history"):
        for line in (out / "quarantine" / f"{name}.ndjson").read_bytes().splitlines():
            assert isinstance(orjson.loads(line), dict)  # one record a line

    # versions: the last o1 is kept, the 36.6 version is in the history, the first o1 (identical) merged
    history = fx.quarantine_records(out, "history")
    assert [h["resource_id"] for h in history] == ["o1"]
    assert orjson.loads(history[0]["raw"])["valueQuantity"]["value"] == 36.6
    assert history[0]["location"] == {"line": len(fx.clean_resources()) + 11}
    assert history[0]["kept"] == {"source": "fhir/all.ndjson", "location": {"line": len(fx.clean_resources()) + 12}}
    assert findings["o1"]["outcome"]["issue"][0]["details"]["coding"][0]["code"] == "superseded_version"
    obs = pq.read_table(out / "tables" / "observations.parquet").to_pylist()
    history_rows = pq.read_table(out / "tables" / "history.parquet").to_pylist()
    assert len(history_rows) == 1 and history_rows[0]["resource_type"] == "Observation"
    kept_o1 = [o for o in obs if o["observation_id"] == history_rows[0]["resource_id"]]
    assert [o["value"] for o in kept_o1] == [fx.clean_resources()[3]["valueQuantity"]["value"]]

    fhir = report["fhir"]
    assert fhir["reconciles"] is True
    for counts in fhir["by_resource_type"].values():
        assert counts["read"] == (
            counts["accepted"] + counts["quarantined"] + counts["duplicates_merged"] + counts["superseded"]
        )
    assert fhir["by_resource_type"]["Observation"]["duplicates_merged"] == 1
    assert fhir["by_resource_type"]["Observation"]["superseded"] == 1
    assert fhir["resources"]["quarantined"] == len(quarantined)
    assert fhir["resources"]["accepted_with_findings"] == len(findings)
    assert fhir["findings"]["dangling_reference"] == 5  # ob has two: its urn subject and its encounter
    assert fhir["findings"]["implausible_date"] == 2
    assert "dangling_reference" not in fhir["defects"]
    assert fhir["top_reasons"][0]["count"] >= fhir["top_reasons"][-1]["count"]
    table = pq.read_table(out / "tables" / "findings.parquet").to_pylist()
    assert {r["defect"] for r in table} == {"implausible_date", "dangling_reference", "superseded_version"}
    assert all(r["severity"] in ("warning", "information") for r in table)

    # kept resources with findings are in the tables, with references to absent resources nulled
    assert len(obs) > 2
    by_pid = {o["observation_id"]: o for o in obs}
    dangling_row = [o for o in by_pid.values() if o["encounter_id"] is None and o["patient_id"] is not None]
    assert dangling_row, "bad-dangling is kept with a null encounter_id"
    encounters = pq.read_table(out / "tables" / "encounters.parquet").to_pylist()
    patients = {p["patient_id"]: p for p in pq.read_table(out / "tables" / "patients.parquet").to_pylist()}
    assert len(patients) == 4  # p1, p2, the bundle's patient (id from its fullUrl), bad-dead-before-born
    bundle_enc = [
        e for e in encounters if e["patient_id"] in patients and patients[e["patient_id"]]["birth_year"] == 2001
    ]
    assert len(bundle_enc) == 1 and bundle_enc[0]["organization_id"] is not None
    assert bundle_enc[0]["age_at_event"] == 21


def test_strict_raises_chosen_findings_to_errors(fx: SimpleNamespace, dirty: tuple, tmp_path: Path) -> None:
    root, expected = dirty
    out = tmp_path / "out"
    report = fx.run_ingest(root, out, strict=("dangling_reference", "implausible_date"))
    quarantined = _by_id(fx.quarantine_records(out))
    findings = _by_id(fx.quarantine_records(out, "findings"))
    raised = {k for k, v in expected.items() if v[1] in ("dangling_reference", "implausible_date")}
    assert set(quarantined) == {k for k, v in expected.items() if v[0] == QUARANTINED} | raised
    for rid in raised:
        assert quarantined[rid]["defect"] == expected[rid][1], rid
        assert quarantined[rid]["outcome"]["issue"][0]["severity"] == "error"
    assert set(findings) == {"o1"}  # the superseded_version note stays a finding
    assert report["fhir"]["reconciles"] is True
    assert report["fhir"]["defects"]["dangling_reference"] == 4


def test_a_resource_without_id_or_fullurl_gets_a_stable_content_id(fx: SimpleNamespace, tmp_path: Path) -> None:
    anonymous = {k: v for k, v in fx.observation("x", "p1", "e1").items() if k != "id"}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (*fx.clean_resources(), anonymous, anonymous)],
    }
    root = tmp_path / "in"
    (root / "fhir").mkdir(parents=True)
    (root / "fhir" / "b.json").write_bytes(orjson.dumps(bundle))
    reports = [fx.run_ingest(root, tmp_path / f"out{i}") for i in range(2)]
    counts = reports[0]["fhir"]["by_resource_type"]["Observation"]
    assert counts["duplicates_merged"] == 1 and counts["quarantined"] == 0
    findings = fx.quarantine_records(tmp_path / "out0", "findings")
    assert len(findings) == 1 and findings[0]["resource_id"] is None
    assert findings[0]["outcome"]["issue"][0]["details"]["coding"][0]["code"] == "content_id"
    ids = [pq.read_table(tmp_path / f"out{i}" / "tables" / "findings.parquet")["resource_id"][0] for i in range(2)]
    assert ids[0] == ids[1]


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
    assert {"findings.parquet", "history.parquet"} <= set(names)
    for name in ("fhir", "findings", "history"):
        q = [(o / "quarantine" / f"{name}.ndjson").read_bytes() for o in outs]
        assert q[0] and all(x == q[0] for x in q), name


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


def test_a_composition_whose_entry_is_quarantined_is_kept_with_a_finding(fx: SimpleNamespace, tmp_path: Path) -> None:
    bad = fx.observation("o-bad", "p1", "e1")
    del bad["status"]  # a conformance error: quarantined
    composition = {
        "resourceType": "Composition",
        "id": "doc1",
        "status": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
        "subject": {"reference": "Patient/p1"},
        "date": "2023-03-01T10:00:00+05:00",
        "author": [{"reference": "Organization/org1"}],
        "title": "Consultation note",
        "section": [
            {"title": "Vitals", "entry": [{"reference": "Observation/o1"}, {"reference": "Observation/o-bad"}]}
        ],
    }
    fx.write_ndjson(tmp_path / "in" / "fhir" / "all.ndjson", [*fx.clean_resources(), bad, composition])
    report = fx.run_ingest(tmp_path / "in", tmp_path / "out")
    by_type = report["fhir"]["by_resource_type"]
    assert by_type["Composition"] == {
        "read": 1,
        "accepted": 1,
        "accepted_with_findings": 1,
        "quarantined": 0,
        "duplicates_merged": 0,
        "superseded": 0,
    }
    assert [r["resource_id"] for r in fx.quarantine_records(tmp_path / "out")] == ["o-bad"]
    [finding] = fx.quarantine_records(tmp_path / "out", "findings")
    assert finding["resource_id"] == "doc1"
    [issue] = finding["outcome"]["issue"]
    assert issue["severity"] == "warning"
    assert issue["expression"] == ["Composition.section[0].entry[1]"]
    assert issue["diagnostics"].endswith("refers to an Observation that was quarantined")
    assert orjson.loads(finding["raw"]) == composition


def test_the_latest_version_is_kept_by_version_id_then_last_updated_then_input_order(
    fx: SimpleNamespace, tmp_path: Path
) -> None:
    def version(rid: str, value: float, **meta: str) -> dict[str, Any]:
        obs = fx.observation(rid, "p1", "e1")
        obs["valueQuantity"]["value"] = value
        return {**obs, "meta": meta} if meta else obs

    lines = [
        *fx.clean_resources(),
        version("v", 2.0, versionId="2"),  # kept: the highest versionId, although read first
        version("v", 1.0, versionId="1"),
        version("v", 1.5, versionId="1", lastUpdated="2030-01-01T00:00:00Z"),  # versionId counts before lastUpdated
        version("u", 2.0, lastUpdated="2024-01-02T00:00:00+05:00"),  # 2024-01-01 19:00 UTC
        version("u", 1.0, lastUpdated="2024-01-01T23:00:00Z"),  # kept: later in UTC, though earlier as written
        version("w", 1.0, versionId="W1"),  # an opaque versionId does not count: input order decides
        version("w", 2.0, versionId="W0"),  # kept: last in the input
    ]
    fx.write_ndjson(tmp_path / "in" / "fhir" / "all.ndjson", lines)
    report = fx.run_ingest(tmp_path / "in", tmp_path / "out")
    assert report["fhir"]["by_resource_type"]["Observation"]["superseded"] == 4
    assert report["fhir"]["reconciles"] is True
    history = fx.quarantine_records(tmp_path / "out", "history")
    assert sorted((h["resource_id"], orjson.loads(h["raw"])["valueQuantity"]["value"]) for h in history) == [
        ("u", 2.0),
        ("v", 1.0),
        ("v", 1.5),
        ("w", 1.0),
    ]
    by_id = {h["resource_id"]: h for h in history}
    assert by_id["w"]["version_id"] == "W1" and by_id["u"]["last_updated"] == "2024-01-02T00:00:00+05:00"
    kept = {o["value"] for o in pq.read_table(tmp_path / "out" / "tables" / "observations.parquet").to_pylist()}
    assert {2.0, 1.0}.issubset(kept) and 1.5 not in kept


def test_a_quarantined_resource_is_kept_whole_however_large(fx: SimpleNamespace, tmp_path: Path) -> None:
    big = fx.observation("o-big", "p1", "e1")
    del big["status"]  # quarantined
    big["note"] = [{"text": "x" * (3 << 20)}]  # 3 MiB: more than unreadable input is kept (quarantine.MAX_RAW)
    line = orjson.dumps(big)
    (tmp_path / "in" / "fhir").mkdir(parents=True)
    (tmp_path / "in" / "fhir" / "all.ndjson").write_bytes(line + b"\n")
    fx.run_ingest(tmp_path / "in", tmp_path / "out")
    [record] = fx.quarantine_records(tmp_path / "out")
    assert record["raw"] == line.decode() and "raw_truncated" not in record
