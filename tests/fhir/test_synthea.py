"""The real Synthea R4 sample (../shared/data/synthea-r4): transaction and batch Bundles, urn:uuid and conditional
references, US identifiers and codes.

Every resource is accepted and every reference resolves. The sample's survey Observations carry OpenMRS/CIEL
concept ids (``5089AAAA...``) under the LOINC system; the LOINC format check applies only to the observation
categories Shipa reads (vital signs, laboratory, imaging), so they are kept, while the cohort's malformed LOINC codes
on laboratory and vital-sign observations are still quarantined (tests/fhir/test_defects.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import orjson
import pyarrow.parquet as pq

CIEL_CONCEPT = re.compile(r"^[0-9]+A+$")


def test_synthea_ingests_with_every_reference_resolved(fx: SimpleNamespace, synthea_dir: Path, tmp_path: Path) -> None:
    report = fx.run_ingest(synthea_dir, tmp_path / "out", workers=2, chunk_size=1000)
    fhir = report["fhir"]
    assert fhir["reconciles"] is True
    assert fhir["files"] == 6
    assert fhir["resources"]["read"] == 6185
    assert fhir["references"]["conditional"] > 2000
    assert fhir["references"]["unresolved_in_tables"] == 0

    assert fx.quarantine_records(tmp_path / "out") == []
    assert fhir["defects"] == {}
    for rtype, counts in fhir["by_resource_type"].items():
        assert counts["accepted"] == counts["read"], rtype  # SNOMED Conditions, US identifiers, CIEL surveys: kept
    observations = pq.read_table(tmp_path / "out" / "tables" / "observations.parquet").to_pylist()
    assert any(o["code"] and CIEL_CONCEPT.match(o["code"]) for o in observations)

    tables = tmp_path / "out" / "tables"
    encounters = pq.read_table(tables / "encounters.parquet").to_pylist()
    assert len(encounters) == 153
    assert all(e["organization_id"] and e["practitioner_id"] and e["patient_id"] for e in encounters)
    claims = pq.read_table(tables / "claims.parquet").to_pylist()
    assert all(c["provider_id"] and c["patient_id"] and c["encounter_id"] for c in claims)
    orgs = {o["organization_id"] for o in pq.read_table(tables / "organizations.parquet").to_pylist()}
    assert {e["organization_id"] for e in encounters} <= orgs
    roles = pq.read_table(tables / "practitioner_roles.parquet").to_pylist()
    assert all(r["organization_id"] in orgs for r in roles)  # logical (identifier-only) references resolved
    conditions = pq.read_table(tables / "conditions.parquet").to_pylist()
    assert len(conditions) == 4 and all(c["icd10_code"] is None for c in conditions)


PUBLIC = Path(__file__).resolve().parents[1] / "data" / "synthea-public"
UTILIZATION = "http://synthetichealth.github.io/synthea/utilization-encounters-extension"


def test_synthea_with_repeated_organizations_keeps_every_record_as_versions(
    fx: SimpleNamespace, tmp_path: Path
) -> None:
    # A Synthea export whose patient Bundles repeat the Organizations and Practitioners of its hospital and
    # practitioner Bundles without their utilization extensions. (Ingested alone: Synthea's provider ids are the
    # same in every run, so two runs' exports in one folder are versions of each other too.)
    root = tmp_path / "in" / "fhir"
    root.mkdir(parents=True)
    for path in PUBLIC.glob("*.json"):
        (root / path.name).symlink_to(path)
    report = fx.run_ingest(tmp_path / "in", tmp_path / "out", workers=2, chunk_size=1000)
    fhir = report["fhir"]
    assert fhir["reconciles"] is True
    assert fhir["resources"]["quarantined"] == 0 and fx.quarantine_records(tmp_path / "out") == []
    assert fhir["resources"]["superseded"] == 8
    assert fhir["by_resource_type"]["Organization"]["superseded"] == 4
    assert fhir["by_resource_type"]["Practitioner"]["superseded"] == 4

    history = fx.quarantine_records(tmp_path / "out", "history")
    assert len(history) == 8
    for record in history:
        # the patient Bundle's copy is superseded by the later one (input order: no versionId or lastUpdated here)
        assert "Information" not in record["source"]
        assert record["kept"]["source"].startswith(("fhir/hospitalInformation", "fhir/practitionerInformation"))
        superseded = orjson.loads(record["raw"])
        assert superseded["id"] == record["resource_id"]
        assert UTILIZATION not in record["raw"]
        kept_bundle = orjson.loads((tmp_path / "in" / record["kept"]["source"]).read_bytes())
        kept = kept_bundle["entry"][record["kept"]["location"]["entry"]]["resource"]
        assert kept["id"] == superseded["id"] and UTILIZATION in orjson.dumps(kept).decode()
    rows = pq.read_table(tmp_path / "out" / "tables" / "history.parquet").to_pylist()
    assert sorted(r["resource_type"] for r in rows) == ["Organization"] * 4 + ["Practitioner"] * 4
    orgs = {
        o["organization_id"] for o in pq.read_table(tmp_path / "out" / "tables" / "organizations.parquet").to_pylist()
    }
    assert {r["resource_id"] for r in rows if r["resource_type"] == "Organization"} <= orgs
    text = str(rows)
    assert "fhir/" not in text and ".json" not in text  # file names (patient names) stay out of the tables
