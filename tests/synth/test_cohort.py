"""The generated cohort honours docs/raw-data.md: valid clean FHIR, resolvable references, matching DICOM, and
every injected defect listed in the manifest and really present."""

from __future__ import annotations

import datetime as dt
import gzip
import re
from collections import Counter
from pathlib import Path

import orjson
import pydicom
import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydicom.errors import InvalidDicomError

from pipelines import codes
from pipelines.iin import IINError, agreement_problem, parse_iin

from .reader import Entry, Resolver, read_csv, read_fhir, references

COHORTS = ["ndjson_cohort", "bundle_gz_cohort", "ndjson_gz_cohort"]
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def _split(root: Path) -> tuple[list[Entry], list[Entry], list[dict[str, str]]]:
    entries = read_fhir(root)
    dirty = read_csv(root / "manifest" / "dirty.csv")
    places = {(r["file"], int(r["location"])) for r in dirty if r["resource_type"] != "DICOM"}
    clean = [e for e in entries if (e.file, e.location) not in places]
    bad = [e for e in entries if (e.file, e.location) in places]
    return clean, bad, dirty


def _validate(entry: Entry) -> str | None:
    try:
        get_fhir_model_class(entry.rtype).model_validate(entry.body)
    except Exception as exc:  # pydantic ValidationError or a model's own ValueError
        return str(exc)
    return None


def _parses_as_date(text: str) -> bool:
    m = _DATE.match(text)
    if not m:
        return False
    try:
        dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("cohort", COHORTS)
def test_clean_resources_validate_and_references_resolve(cohort: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(cohort)
    clean, _, _ = _split(root)
    resolver = Resolver(clean)
    types = Counter(e.rtype for e in clean)
    for needed in ("Patient", "Organization", "Practitioner", "PractitionerRole", "Coverage", "Encounter",
                   "Condition", "Observation", "Procedure", "MedicationRequest", "ImagingStudy",
                   "DiagnosticReport", "ServiceRequest", "Claim", "ClaimResponse"):  # fmt: skip
        assert types[needed] > 0, needed
    for e in clean:
        assert e.body is not None, (e.file, e.location)
        problem = _validate(e)
        assert problem is None, (e.rtype, e.rid, problem)
        for path, ref in references(e.body):
            target = resolver.resolve(e, ref)
            assert target is not None, (e.rtype, e.rid, path, ref)
    # Exactly one Fund organization; every claim is addressed to it.
    fund = [
        e for e in clean if e.rtype == "Organization" and e.body["identifier"][0]["value"] == codes.FSMS_ORG_IDENTIFIER
    ]
    assert len(fund) == 1
    for e in clean:
        if e.rtype == "Claim":
            assert resolver.resolve(e, e.body["insurer"]["reference"]) is fund[0]


@pytest.mark.parametrize("cohort", COHORTS)
def test_bundle_layout(cohort: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(cohort)
    names = {p.relative_to(root).as_posix() for p in (root / "fhir").rglob("*") if p.is_file()}
    if cohort.startswith("bundle"):
        assert "fhir/organizations.json.gz" in names
        directory = orjson.loads(_gunzip(root / "fhir" / "organizations.json.gz"))
        assert directory["type"] == "batch"
        assert {e["resource"]["resourceType"] for e in directory["entry"]} == {
            "Organization",
            "Practitioner",
            "PractitionerRole",
        }
        bundle = orjson.loads(_gunzip(root / "fhir" / "patients" / "0.json.gz"))
        assert bundle["type"] == "transaction"
        assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"
        for entry in bundle["entry"]:
            assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
            assert entry["request"] == {"method": "POST", "url": entry["resource"]["resourceType"]}
        assert "Organization?identifier=" in bundle["entry"][0]["resource"]["managingOrganization"]["reference"]
    else:
        suffix = ".ndjson.gz" if cohort.endswith("gz_cohort") else ".ndjson"
        assert f"fhir/Patient{suffix}" in names and f"fhir/Claim{suffix}" in names


def _gunzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def _check_defect(row: dict[str, str], e: Entry, everything: Resolver) -> None:
    defect, field = row["defect"], row["field"]
    body = e.body
    if defect == "invalid_json":
        assert body is None
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(e.raw)
        assert row["resource_id"].encode() in e.raw
        return
    assert body is not None and body["id"] == row["resource_id"] and e.rtype == row["resource_type"]
    if defect == "duplicate":
        twins = [x for x in everything.entries if x.rtype == e.rtype and x.rid == e.rid and x is not e]
        assert twins and all(
            orjson.dumps(x.body, option=orjson.OPT_SORT_KEYS) == orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
            for x in twins
        )
        assert _validate(e) is None
        return
    others = [x for x in everything.entries if x.rtype == e.rtype and x.rid == e.rid and x is not e]
    assert not others, "a defective record must have its own id"
    if defect == "missing_required_field":
        assert field not in body and _validate(e) is not None
    elif defect == "invalid_code":
        coding = body["code"]["coding"][0]
        pattern = codes.ICD10_PATTERN if e.rtype == "Condition" else codes.LOINC_PATTERN
        assert coding["system"] not in codes.EXPECTED_CODE_SYSTEMS[e.rtype] or not re.match(pattern, coding["code"])
    elif defect == "invalid_date":
        value = body["period"]["start"] if field == "period.start" else body[field]
        assert not _parses_as_date(value)
        assert _validate(e) is not None
    elif defect == "implausible_date":
        if e.rtype == "Patient":
            assert body["deceasedDateTime"][:10] < body["birthDate"]
        else:
            value = body["period"]["start"] if field == "period.start" else body[field]
            patient = everything.resolve(e, body["subject"]["reference"])
            assert patient is not None and value[:10] < patient.body["birthDate"]
        assert _validate(e) is None
    elif defect in ("iin_checksum", "iin_mismatch"):
        iin = body["identifier"][0]["value"]
        if defect == "iin_checksum":
            with pytest.raises(IINError, match="check digit"):
                parse_iin(iin)
        else:
            parse_iin(iin)  # the number itself is well formed
            assert agreement_problem(iin, dt.date.fromisoformat(body["birthDate"]), body["gender"]) is not None
    elif defect == "dangling_reference":
        ref = body[field]["reference"]
        assert everything.resolve(e, ref) is None
        assert _validate(e) is None
    else:
        raise AssertionError(f"unexpected defect {defect}")


@pytest.mark.parametrize("cohort", COHORTS)
def test_every_dirty_record_is_listed_and_has_its_defect(cohort: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(cohort)
    clean, bad, dirty = _split(root)
    everything = Resolver(clean + bad)
    at = {(e.file, e.location): e for e in bad}
    seen = Counter(r["defect"] for r in dirty)
    for defect in ("missing_required_field", "invalid_code", "invalid_date", "implausible_date", "iin_checksum",
                   "iin_mismatch", "dangling_reference", "duplicate", "invalid_json", "dicom_unreadable",
                   "dicom_not_dicom", "dicom_no_pixels"):  # fmt: skip
        assert seen[defect] > 0, defect
    ids = [r["resource_id"] for r in dirty if r["defect"] != "duplicate"]
    assert len(ids) == len(set(ids)), "defect ids must be unique"
    for row in dirty:
        if row["resource_type"] == "DICOM":
            _check_dicom_defect(root, row)
            continue
        e = at[(row["file"], int(row["location"]))]
        _check_defect(row, e, everything)
    # Dirty records are leaves: no clean record points at one.
    dirty_keys = {(e.rtype, e.rid) for e in bad if e.body is not None and not _is_duplicate(e, dirty)}
    clean_resolver = Resolver(clean)
    for e in clean:
        for _, ref in references(e.body):
            target = clean_resolver.resolve(e, ref)
            assert target is not None and (target.rtype, target.rid) not in dirty_keys


def _is_duplicate(e: Entry, dirty: list[dict[str, str]]) -> bool:
    return any(r["defect"] == "duplicate" and r["resource_id"] == e.rid for r in dirty)


def _check_dicom_defect(root: Path, row: dict[str, str]) -> None:
    path = root / row["file"]
    assert path.is_file() and path.stem == row["resource_id"]
    if row["defect"] == "dicom_not_dicom":
        with pytest.raises(InvalidDicomError):
            pydicom.dcmread(path)
    elif row["defect"] == "dicom_no_pixels":
        ds = pydicom.dcmread(path)
        assert "PixelData" not in ds and ds.SOPInstanceUID == row["resource_id"]
    else:
        with pytest.raises(Exception):  # noqa: B017 - truncated: header parses, pixels do not
            pydicom.dcmread(path).pixel_array  # noqa: B018


@pytest.mark.parametrize("cohort", COHORTS)
def test_iins_are_valid_unique_and_agree_with_the_patient(cohort: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(cohort)
    clean, _, _ = _split(root)
    patients = [e.body for e in clean if e.rtype == "Patient"]
    iins = []
    for p in patients:
        ident = p["identifier"][0]
        assert ident["system"] == codes.IIN_SYSTEM
        assert agreement_problem(ident["value"], dt.date.fromisoformat(p["birthDate"]), p["gender"]) is None
        iins.append(ident["value"])
        assert p["telecom"][0]["value"].startswith("+77")
        assert p["address"][0]["state"] in codes.REGIONS
        assert p["address"][0]["extension"][0] == {"url": codes.REGION_EXTENSION, "valueCode": p["address"][0]["state"]}
        cyrillic, latin = p["name"]
        assert re.search("[А-Яа-яӘәҒғҚқҢңӨөҰұҮүҺһІі]", cyrillic["family"]) and latin["family"].isascii()
    assert len(iins) == len(set(iins))


@pytest.mark.parametrize("cohort", COHORTS)
def test_radiographs_match_their_imaging_studies(cohort: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(cohort)
    clean, _, dirty = _split(root)
    resolver = Resolver(clean)
    listed = set()
    studies = [e for e in clean if e.rtype == "ImagingStudy"]
    assert studies
    for e in studies:
        study = e.body
        study_uid = study["identifier"][0]["value"].removeprefix("urn:oid:")
        assert study["identifier"][0]["system"] == "urn:dicom:uid"
        series = study["series"][0]
        instance = series["instance"][0]
        path = root / "dicom" / study_uid / f"{instance['uid']}.dcm"
        listed.add(path.relative_to(root).as_posix())
        ds = pydicom.dcmread(path)
        patient = resolver.resolve(e, study["subject"]["reference"])
        assert patient is not None
        assert ds.PatientID == patient.body["identifier"][0]["value"]
        assert ds.StudyInstanceUID == study_uid and ds.SeriesInstanceUID == series["uid"]
        assert ds.SOPInstanceUID == instance["uid"]
        assert ds.Modality == series["modality"]["code"] == study["modality"][0]["code"]
        assert instance["sopClass"]["code"] == f"urn:oid:{ds.SOPClassUID}"
        assert ds.pixel_array.shape == (32, 32)
    bad_files = {r["file"] for r in dirty if r["resource_type"] == "DICOM"}
    on_disk = {p.relative_to(root).as_posix() for p in (root / "dicom").rglob("*.dcm")}
    assert on_disk == listed | bad_files


def test_marker_and_datasheet_describe_the_cohort(ndjson_cohort: Path) -> None:
    marker = orjson.loads((ndjson_cohort / "COHORT.json").read_bytes())
    assert marker["generator"] == "shipa-synthesize" and marker["seed"] == 7 and len(marker["params_sha256"]) == 64
    entries = read_fhir(ndjson_cohort)
    dirty = read_csv(ndjson_cohort / "manifest" / "dirty.csv")
    fhir_dirty = sum(r["resource_type"] != "DICOM" for r in dirty)
    assert sum(marker["counts"]["resources"].values()) == len(entries) - fhir_dirty
    assert marker["counts"]["patients"] == 60
    sheet = (ndjson_cohort / "datasheet.md").read_text(encoding="utf-8")
    for heading in ("## Prevalences", "## Measurements", "## Fraud", "## Dirty data", "## How the signals"):
        assert heading in sheet
    for pattern in ("phantom_billing", "collusion_ring", "services_after_death"):
        assert pattern in sheet
