"""The way back from a claim pseudonym to the Fund's claim, checked against what ingest really made of an export."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipelines import codes
from pipelines.config import DEMO_PSEUDONYM_KEY, IngestParams
from pipelines.errors import InputError
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fraud.reveal import reveal_claims
from pipelines.stages import ingest

DEMO = Pseudonymizer(DEMO_PSEUDONYM_KEY)


@pytest.fixture(scope="module")
def reshaped(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny cohort's FHIR export with its claims spread over every input form ingest reads, then ingested.

    Claims 0-2 go into a Bundle (0 keeps its id; 1 and 2 lose it and keep only a ``urn:uuid`` fullUrl), 3-5 into a
    gzipped NDJSON file, 6 into a single-resource JSON document, 7 loses its id in NDJSON (ingest gives it a
    content-derived id); the rest stay in Claim.ndjson.
    """
    src = tiny_cohort / "data" / "raw"
    root = tmp_path_factory.mktemp("reveal")
    raw = root / "raw"
    shutil.copytree(src / "fhir", raw / "fhir", ignore=shutil.ignore_patterns("Claim.ndjson"))
    shutil.copy(src / "COHORT.json", raw / "COHORT.json")  # the demo key is for the built-in cohort only
    claims = [json.loads(line) for line in (src / "fhir" / "Claim.ndjson").read_text().splitlines() if line.strip()]
    ids = [c["id"] for c in claims]
    entries = []
    for i, claim in enumerate(claims[:3]):
        resource = dict(claim) if i == 0 else {k: v for k, v in claim.items() if k != "id"}
        entries.append({"fullUrl": f"urn:uuid:{claim['id']}", "resource": resource})
    (raw / "fhir" / "batch" / "nested").mkdir(parents=True)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    (raw / "fhir" / "batch" / "nested" / "claims-bundle.json").write_text(json.dumps(bundle))
    with gzip.open(raw / "fhir" / "batch" / "claims-more.ndjson.gz", "wt") as fh:
        fh.write("".join(json.dumps(c) + "\n" for c in claims[3:6]))
    (raw / "fhir" / "batch" / "one-claim.json").write_text(json.dumps(claims[6]))
    no_id = {k: v for k, v in claims[7].items() if k != "id"}
    rest = [no_id, *claims[8:]]
    (raw / "fhir" / "Claim.ndjson").write_text("".join(json.dumps(c) + "\n" for c in rest))
    interim = root / "interim"
    ingest.run(IngestParams(workers=1, image_size=32), raw, interim, key=None, progress=False)
    table = pl.read_parquet(interim / "tables" / "claims.parquet", columns=["claim_id"])
    return {"raw": raw, "ids": ids, "claim_ids": table["claim_id"].to_list(), "no_id": no_id}


def test_every_ingested_claim_is_revealed_from_whatever_form_it_came_in(reshaped: dict[str, Any]) -> None:
    ids: list[str] = reshaped["ids"]
    found = reveal_claims(reshaped["raw"], reshaped["claim_ids"], DEMO)
    assert reshaped["claim_ids"], "ingest kept claims"
    missing = [p for p, matches in found.items() if not matches]
    assert missing == [], "every claim pseudonym in the ingest's table is found in the raw export"
    by_source = {m.claim_id: (m.source, m.location) for matches in found.values() for m in matches}
    assert by_source[ids[0]] == ("fhir/batch/nested/claims-bundle.json", "entry 0")
    assert by_source[ids[1]] == ("fhir/batch/nested/claims-bundle.json", "entry 1")  # id from the fullUrl
    assert by_source[ids[2]] == ("fhir/batch/nested/claims-bundle.json", "entry 2")
    assert by_source[ids[4]] == ("fhir/batch/claims-more.ndjson.gz", "line 2")
    assert by_source[ids[6]] == ("fhir/batch/one-claim.json", "document")
    assert by_source[ids[8]] == ("fhir/Claim.ndjson", "line 2")
    content_ids = [c for c in by_source if c.startswith("content-")]
    assert len(content_ids) == 1 and by_source[content_ids[0]] == ("fhir/Claim.ndjson", "line 1")
    # The pseudonym is exactly the one ingest made, and the Fund's claim number comes with it.
    for pseudonym, matches in found.items():
        for m in matches:
            assert DEMO.id("Claim", m.claim_id) == pseudonym == m.pseudonym
    number = {i["system"]: i["value"] for i in reshaped["no_id"]["identifier"]}[codes.CLAIM_ID_SYSTEM]
    assert found[DEMO.id("Claim", content_ids[0])][0].claim_numbers == (number,)


def test_an_unknown_pseudonym_or_another_key_finds_nothing(reshaped: dict[str, Any]) -> None:
    known = reshaped["claim_ids"][0]
    found = reveal_claims(reshaped["raw"], ["0" * 32, known], DEMO)
    assert found["0" * 32] == []
    assert len(found[known]) == 1
    other = reveal_claims(reshaped["raw"], [known], Pseudonymizer("another-key-of-16-bytes-or-more"))
    assert other == {known: []}


def test_a_missing_or_empty_raw_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="raw export folder not found"):
        reveal_claims(tmp_path / "nope", ["0" * 32], DEMO)
    with pytest.raises(InputError, match="no FHIR files"):
        reveal_claims(tmp_path, ["0" * 32], DEMO)
