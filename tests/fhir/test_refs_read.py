"""References (forms, fast scan) and readers (layout, NDJSON line numbers, gzip that breaks off, chunks)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from pipelines.fhir import refs
from pipelines.fhir.read import FailedPart, LinesPart, discover, read_lines, work_units


def test_reference_forms() -> None:
    assert refs.parse_reference("Patient/p1") == refs.Ref(refs.LITERAL, type="Patient", id="p1")
    assert refs.parse_reference("https://x.kz/fhir/Patient/p1/_history/2").id == "p1"
    cond = refs.parse_reference("Organization?identifier=https://shipa.kz/fhir/sid/org|ORG%2D1")
    assert (cond.kind, cond.type, cond.system, cond.value) == (
        refs.CONDITIONAL,
        "Organization",
        "https://shipa.kz/fhir/sid/org",
        "ORG-1",
    )
    assert refs.parse_reference("urn:uuid:abc", {"urn:uuid:abc": "Encounter/e1"}).id == "e1"
    assert refs.parse_reference("urn:uuid:abc").kind == refs.UNRESOLVABLE
    assert refs.parse_reference("Organization?name=Clinic").kind == refs.UNRESOLVABLE
    assert refs.parse_reference("#contained").kind == refs.CONTAINED


def test_reference_scan_finds_keys_not_string_values() -> None:
    resource = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/p1"},
        "note": [{"text": 'he wrote "reference": "Patient/x" here'}],
        "hasMember": [{"reference": "Observation/o\\2"}],
    }
    assert refs.references_in_json(orjson.dumps(resource)) == ["Patient/p1", "Observation/o\\2"]


def test_discover_layout(tmp_path: Path) -> None:
    for name in ("fhir/Patient.ndjson", "fhir/b/x.json.gz", "fhir/notes.txt", "dicom/a.dcm", "COHORT.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"{}")
    assert [(f.rel, f.fmt, f.gz) for f in discover(tmp_path)] == [
        ("fhir/Patient.ndjson", "ndjson", False),
        ("fhir/b/x.json.gz", "json", True),
    ]
    flat = tmp_path / "flat"
    (flat / "dicom").mkdir(parents=True)
    (flat / "dicom" / "x.json").write_bytes(b"{}")
    (flat / "COHORT.json").write_bytes(b"{}")
    (flat / "bundle.json").write_bytes(b"{}")
    assert [f.rel for f in discover(flat)] == ["bundle.json"]


def test_ndjson_line_numbers_skip_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "fhir" / "x.ndjson"
    path.parent.mkdir()
    path.write_bytes(b'{"a":1}\n\n{"b":2}\n{"c":3}')
    [source] = discover(tmp_path)
    assert list(read_lines(source)) == [(1, b'{"a":1}'), (3, b'{"b":2}'), (4, b'{"c":3}')]


def test_truncated_gzip_keeps_complete_lines_and_reports_the_rest(tmp_path: Path) -> None:
    lines = [orjson.dumps({"resourceType": "Basic", "id": f"b{i}", "padding": "x" * 200}) for i in range(200)]
    data = gzip.compress(b"\n".join(lines) + b"\n", mtime=0)
    path = tmp_path / "fhir" / "Basic.ndjson.gz"
    path.parent.mkdir()
    path.write_bytes(data[: len(data) // 2])
    [source] = discover(tmp_path)
    items = list(read_lines(source))
    good, failed = items[:-1], items[-1]
    assert isinstance(failed, FailedPart)
    assert "truncated" in failed.diagnostics
    assert good and all(line == lines[n - 1] for n, line in good)  # every complete line is intact
    assert failed.line == len(good) + 1


def test_work_units_respect_chunk_size_and_order(tmp_path: Path) -> None:
    path = tmp_path / "fhir" / "x.ndjson"
    path.parent.mkdir()
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(10)))
    units = list(work_units(discover(tmp_path), chunk_size=4))
    assert [u.seq for u in units] == [0, 1, 2]
    numbers = [n for u in units for p in u.parts if isinstance(p, LinesPart) for n in p.line_numbers]
    assert numbers == list(range(1, 11))
    assert [sum(len(p.lines) for p in u.parts if isinstance(p, LinesPart)) for u in units] == [4, 4, 2]
