"""Online equals batch: single test-month Claims sent to the service get the features and scores of the worklist.

A cohort of 1,200 patients (enough for 1,000 test-month claims) is synthesized, ingested, featurised, trained and
registered by the real stages; the service (``build_app`` with the MLflow provider and the ingest tables as the
Fund's history) runs behind uvicorn on 127.0.0.1. Each claim is sent alone as the Fund's system would send it: the
raw FHIR Claim, nothing else. The answer's probability (six decimals) must equal the batch score; the records the
service built for it (the same call the route makes, on the served model's history) must equal the features stage's
row exactly for integers, categories and dates and to 1e-12 for floats, and their score the batch score to 1e-9.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import polars as pl
import pytest

from pipelines.config import (
    DEMO_PSEUDONYM_KEY,
    EvaluateParams,
    FraudFeaturesParams,
    FraudRegisterParams,
    FraudTrainParams,
    GateParams,
    IngestParams,
    SynthesizeParams,
)
from pipelines.features.fraud import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.modeling.fraud_model import load_fraud_model, score
from pipelines.predictionlog.roles import Role
from pipelines.service.assemble import build_app
from pipelines.service.fraud_case import build_claim_records
from pipelines.service.fraud_history import HistorySource
from pipelines.service.mlflow_source import MlflowModelSource
from pipelines.service.settings import ServiceSettings
from pipelines.stages import ingest, synthesize
from pipelines.stages.evaluate import fraud as evaluate_fr
from pipelines.stages.features import fraud as features_fr
from pipelines.stages.register import fraud as register_fr
from pipelines.stages.train import fraud as train_fr
from pipelines.synth.writers import read_resources

from .helpers import PEPPER, auth, served

N_CLAIMS = 1000
EXACT = ("claim_id", "provider_id", "patient_id", "created", "asof", *CATEGORICAL_FEATURES)


@dataclass
class Online:
    """The served cohort: base URL, app, investigator token, batch records and scores, raw claims by pseudonym."""

    base: str
    app: Any
    token: str
    batch: pl.DataFrame
    scores: dict[str, float]
    claims: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Online]:
    work = tmp_path_factory.mktemp("fraud-online")
    raw, interim = work / "data" / "raw", work / "data" / "interim"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    processed, models = work / "processed" / "fraud", work / "models" / "fraud"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        synthesize.run(SynthesizeParams(n_patients=1200, image_size=32, imaging_rate=0.0, seed=11), raw, progress=False)
        ingest.run(IngestParams(workers=1, image_size=32), raw, interim, key=None, progress=False)
        features_fr.run(FraudFeaturesParams(), interim, processed)
        train_fr.run(FraudTrainParams(epochs=2), processed, models / "train")
        evaluate_fr.run(
            EvaluateParams(n_boot=20, min_group_size=5, fraud_k=50), processed, models / "train", models / "eval",
            models / "metrics.json", raw=raw, tables=interim / "tables",
        )  # fmt: skip
        lenient = FraudRegisterParams(
            gate=GateParams(primary_metric="auprc", min_primary_low=0.0, max_ece=None, max_subgroup_gap=None)
        )
        options = FraudFeaturesParams().model_dump(mode="json", exclude={"split"})
        record = register_fr.run(lenient, processed, models, feature_options=options)
        assert record["champion"] == record["version"], record["gate"]
    dataset = pl.read_parquet(processed / "dataset.parquet")
    test = dataset.filter(pl.col("split") == "test")
    assert test.height >= N_CLAIMS, f"the cohort has only {test.height} test-month claims"
    # The batch scores, as the worklist computes them: the whole test split in one call.
    scores = score(load_fraud_model(models / "train" / "model"), test)
    pseudonymizer = Pseudonymizer(DEMO_PSEUDONYM_KEY)
    claims = {pseudonymizer.id("Claim", c["id"]): c for c in read_resources(raw, "Claim", without_defects=False)}
    state = work / "service-state"
    settings = ServiceSettings(
        demo_mode=True,
        token_pepper=PEPPER,
        state_dir=state,
        database_url=f"sqlite:///{state / 'service.db'}",
        tracking_uri=uri,
        rate_per_s=1e6,
        burst=1_000_000,
    )
    provider = MlflowModelSource(
        tracking_uri=uri, cache_dir=state / "models", histories=HistorySource(interim / "tables")
    )
    app = build_app(settings, provider=provider, key=DEMO_PSEUDONYM_KEY)
    token = app.state.tokens.add("investigator-1", Role.investigator)
    with served(app, settings) as base:
        yield Online(base, app, token, test, dict(zip(test["claim_id"], scores.tolist(), strict=True)), claims)


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b)))


def test_single_claims_get_the_batch_features_and_scores(online: Online) -> None:
    model = online.app.state.provider.snapshot().fraud
    assert model is not None and len(model.history) > 0
    chosen = online.batch.filter(pl.col("claim_id").is_in(list(online.claims))).head(N_CLAIMS)
    assert chosen.height == N_CLAIMS
    numeric = [c for c in chosen.columns if c in NUMERIC_FEATURES or chosen.schema[c] == pl.Float64]
    mismatches: list[str] = []
    with httpx.Client(base_url=online.base, timeout=60) as client:
        for want in chosen.iter_rows(named=True):
            claim = online.claims[want["claim_id"]]
            response = client.post("/fraud/score?format=json", json=claim, headers=auth(online.token))
            assert response.status_code == 200, response.text
            (result,) = response.json()["results"]
            batch_score = online.scores[want["claim_id"]]
            assert result["probability"] == pytest.approx(batch_score, abs=1e-6)  # the answer carries 6 decimals
            # The same call the route made, on the served model's history: the records themselves.
            records = build_claim_records(
                claim, pseudonymizer=online.app.state.pseudonymizer, history=model.history, max_claims=1
            ).records
            (got,) = records.iter_rows(named=True)
            for column in EXACT:
                if got[column] != want[column]:
                    mismatches.append(f"{claim['id']} {column}: {got[column]!r} != {want[column]!r}")
            for column in numeric:
                if not _close(got[column], want[column]):
                    mismatches.append(f"{claim['id']} {column}: {got[column]!r} != {want[column]!r}")
            (online_score,) = model.score(records).probabilities
            if abs(online_score - batch_score) > 1e-9:
                mismatches.append(f"{claim['id']} score: {online_score!r} != {batch_score!r}")
    assert not mismatches, f"{len(mismatches)} differences, first: {mismatches[:5]}"


def test_scoring_does_not_add_the_claim_to_the_history(online: Online) -> None:
    """The same claim sent twice gets the same answer: it never becomes its own near-duplicate."""
    row = online.batch.row(0, named=True)
    claim = online.claims[row["claim_id"]]
    model = online.app.state.provider.snapshot().fraud
    assert model is not None
    size = len(model.history)
    with httpx.Client(base_url=online.base, timeout=60) as client:
        first, second = (
            client.post("/fraud/score?format=json", json=claim, headers=auth(online.token)).json() for _ in range(2)
        )
    assert first["results"] == second["results"]
    assert len(model.history) == size
    records = build_claim_records(
        claim, pseudonymizer=online.app.state.pseudonymizer, history=model.history, max_claims=1
    ).records
    assert records["dup_prior_same_service"].to_list() == [row["dup_prior_same_service"]]
    assert records["dup_prior_same_encounter"].to_list() == [row["dup_prior_same_encounter"]]


def test_a_claim_after_the_history_is_scored_against_it(online: Online) -> None:
    """A new claim (a copy of a history claim, a new id, a day after the history ends) sees the copied claim as an
    earlier claim of the same patient with the same services: a near-duplicate the request alone could not show."""
    last = online.batch.filter(pl.col("has_encounter") == 1).sort("created").row(-1, named=True)
    claim = dict(online.claims[last["claim_id"]])
    created = online.batch["created"].max()
    assert created is not None
    assert isinstance(created, dt.datetime)
    claim.update(id="new-claim-after-history", created=(created + dt.timedelta(days=2)).date().isoformat())
    model = online.app.state.provider.snapshot().fraud
    assert model is not None
    pseudonymizer = online.app.state.pseudonymizer
    with_history = build_claim_records(claim, pseudonymizer=pseudonymizer, history=model.history, max_claims=1)
    alone = build_claim_records(
        claim, pseudonymizer=pseudonymizer, history=type(model.history).empty(model.options), max_claims=1
    )
    assert with_history.records["dup_prior_same_encounter"].item() >= 1
    assert alone.records["dup_prior_same_encounter"].item() == 0
