"""The ``register`` stage on the tiny cohort: the registered pyfunc, the promotion gate and the version's lineage.

The models are trained once per module in a scratch project (git + DVC, so lineage is real); every test
registers into its own MLflow store, copying the variant it needs into ``models/diagnosis`` first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from pipelines.config import (
    DiagnosisFeaturesParams,
    DiagnosisRegisterParams,
    DiagnosisTrainParams,
    EvaluateParams,
    FraudFeaturesParams,
    FraudRegisterParams,
    FraudTrainParams,
    GateParams,
    GbmParams,
    RegisterParams,
    RiskBandsParams,
    mlflow_tracking_uri,
)
from pipelines.errors import InputError
from pipelines.features.fraud import FraudFeatureOptions
from pipelines.stages.evaluate import diagnosis as evaluate_dx
from pipelines.stages.evaluate import fraud as evaluate_fr
from pipelines.stages.features import diagnosis as features_dx
from pipelines.stages.features import fraud as features_fr
from pipelines.stages.register import diagnosis as register_dx
from pipelines.stages.register import fraud as register_fr
from pipelines.stages.train import diagnosis as train_dx
from pipelines.stages.train import fraud as train_fr
from pipelines.tracking import tags as names
from pipelines.tracking.client import tracking_uri_scope
from pipelines.tracking.registry import alias_version, get_version
from pipelines.tracking.reproduce import reproduction_plan

NAME = "shipa-diagnosis-pneumonia"
LENIENT = GateParams(min_primary_low=0.0, max_ece=None, max_subgroup_gap=None, champion_tolerance=0.0)

DVC_YAML = """\
stages:
  register:
    foreach: [diagnosis, fraud]
    do:
      cmd: shipa register ${item}
      deps:
        - data/processed/${item}
        - models/${item}/train
        - models/${item}/eval
        - models/${item}/metrics.json
      params:
        - register.${item}
      outs:
        - models/${item}/registered.json:
            cache: false
"""


def _git(root: Path, *args: str) -> str:
    cmd = ["git", "-C", str(root), "-c", "user.name=Test", "-c", "user.email=test@example.org", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def _invert_labels(src: Path, dst: Path) -> None:
    """A copy of the processed dataset with train and val labels inverted (test labels, so its md5, kept).

    Inverted rather than permuted: on the tiny cohort's few test studies a random permutation can happen to keep
    enough signal to score like the real model, while a model taught the opposite is always worse.
    """
    shutil.copytree(src, dst)
    df = pl.read_parquet(src / "dataset.parquet")
    fit = pl.col("split") != "test"
    label = pl.when(fit).then(1 - pl.col("label")).otherwise(pl.col("label")).cast(df["label"].dtype)
    df.with_columns(label.alias("label")).write_parquet(dst / "dataset.parquet")


@pytest.fixture(scope="module")
def project(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC project with the tiny cohort's features and two trained, evaluated variants.

    ``variants/good`` is trained on the real labels, ``variants/inverted`` on inverted ones; both were
    evaluated on the same (real) test split.
    """
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("register-project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # checkpoints and lineage look at the working directory
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'train-runs.db'}")
        _git(root, "init", "-q")
        (root / ".gitignore").write_text("/data/\n/models/\n/variants/\n/*.db\n/mlartifacts/\n")
        (root / "dvc.yaml").write_text(DVC_YAML)
        (root / "params.yaml").write_text("register:\n  diagnosis: {}\n")
        Repo.init(str(root)).close()
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", "project")

        processed = root / "data" / "processed" / "diagnosis"
        features_dx.run(DiagnosisFeaturesParams(), tiny_cohort / "data" / "interim", processed)
        _invert_labels(processed, root / "variants" / "inverted-processed")
        train_params = DiagnosisTrainParams(
            image_size=32, epochs=6, lr=0.005, batch_size=16, patience=10, modes=("fused",), num_threads=1
        )
        eval_params = EvaluateParams(n_boot=50, min_group_size=5)
        for variant, data in (("good", processed), ("inverted", root / "variants" / "inverted-processed")):
            out = root / "variants" / variant
            train_dx.run(train_params, data, out / "train", progress=False)
            evaluate_dx.run(eval_params, data, out / "train", out / "eval", out / "metrics.json")
    return root


def _install(project: Path, variant: str) -> Path:
    """Put a trained variant where the pipeline keeps the diagnosis model; returns ``models/diagnosis``."""
    target = project / "models" / "diagnosis"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(project / "variants" / variant, target)
    return target


def _uri() -> str:
    """This test's store, as the stage resolves it (MLflow's global URI may still point at an earlier test's)."""
    return mlflow_tracking_uri()


def _register(project: Path, gate: GateParams) -> dict[str, object]:
    params = RegisterParams(diagnosis=DiagnosisRegisterParams(gate=gate))
    return register_dx.run(
        params.diagnosis, project / "data" / "processed" / "diagnosis", project / "models" / "diagnosis"
    )


def _auroc(project: Path, variant: str) -> float:
    metrics = json.loads((project / "variants" / variant / "metrics.json").read_text())
    return float(metrics["metrics"]["auroc"]["value"])


def test_registered_pyfunc_reproduces_the_evaluation(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    models = _install(project, "good")
    record = _register(project, LENIENT)

    assert (record["name"], record["version"], record["model_uri"]) == (NAME, "1", f"models:/{NAME}/1")
    assert set(record["aliases"]) == {"challenger", "champion"}  # type: ignore[arg-type]
    assert json.loads((models / "registered.json").read_text()) == record

    dataset = pl.read_parquet(project / "data" / "processed" / "diagnosis" / "dataset.parquet")
    test = dataset.filter(pl.col("split") == "test")
    raw = [c for c in test.columns if c.startswith("raw_")]
    rows = test.select("study_id", "image_path", *raw).rename({c: c.removeprefix("raw_") for c in raw})
    assert rows.select(pl.any_horizontal(pl.all().is_null()).any()).item()  # some EHR values are missing

    with tracking_uri_scope(_uri()):
        loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    out = loaded.predict(rows.drop("study_id").to_pandas())
    expected = pl.read_parquet(models / "eval" / "predictions.parquet").select("study_id", "probability_fused")
    joined = (
        rows.select("study_id")
        .with_columns(pl.Series("served", out["probability"].to_numpy()))
        .join(expected, on="study_id")
    )
    assert joined.height == test.height
    assert joined["served"].std() > 0.05  # a model that tells studies apart, so equality means something
    np.testing.assert_allclose(joined["served"].to_numpy(), joined["probability_fused"].to_numpy(), atol=1e-5)
    blanked = rows.drop("study_id").with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in ("crp", "wbc"))
    assert np.abs(loaded.predict(blanked.to_pandas())["probability"] - out["probability"]).max() > 1e-3
    metadata = loaded.metadata.metadata  # what the service reads: the ingest side it resamples a DICOM to
    assert (metadata["ingest_image_size"], metadata["image_size"], metadata["mode"]) == (32, 32, "fused")
    # The input domain features@diagnosis fitted is recorded with the model: metadata, artifact, card, gate.
    recorded = json.loads((project / "data" / "processed" / "diagnosis" / "input_domain.json").read_text())
    assert metadata["input_domain"] == recorded and recorded["modalities"] == ["CR", "DX"]
    assert loaded.unwrap_python_model().predictor.input_domain.to_dict() == recorded
    reasons = record["gate"]["reasons"]  # type: ignore[index]
    assert any(r.startswith("pass: input domain recorded: SOPClassUID") and "Modality CR, DX" in r for r in reasons)
    threshold = json.loads((models / "eval" / "calibration.json").read_text())["fused"]["threshold"]
    assert out["positive"].tolist() == (out["probability"] >= threshold).tolist()

    # The same studies sent as pixel arrays (as the service does) score the same.
    arrays = rows.drop("study_id", "image_path").to_pandas()
    arrays["image"] = [np.load(p) for p in rows["image_path"]]
    np.testing.assert_allclose(loaded.predict(arrays)["probability"], out["probability"], atol=1e-6)

    card = json.loads((models / "model_card.json").read_text())
    summary = json.loads((project / "data" / "processed" / "diagnosis" / "summary.json").read_text())
    assert (card["name"], card["version"]) == (NAME, "1")
    assert card["training_data"]["regions"] == summary["regions"]
    assert card["training_data"]["train"]["prevalence"] == pytest.approx(summary["train"]["prevalence"])
    assert card["changelog"][0]["gate_decision"] == "promote"
    assert f"{NAME}" in (models / "model_card.md").read_text()
    assert card["intended_input"]["BodyPartExamined"] == "CHEST"
    assert "## Intended input" in (models / "model_card.md").read_text()


def test_gate_refuses_a_worse_model_and_promotes_a_better_one(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    good, inverted = _auroc(project, "good"), _auroc(project, "inverted")
    assert good > inverted + 0.1  # the premise: inverted labels teach the opposite

    _install(project, "inverted")
    first = _register(project, LENIENT)  # nothing to compare with: a weak first champion
    assert first["champion"] == "1"

    _install(project, "good")
    better = _register(project, LENIENT)
    assert better["gate"]["decision"] == "promote"  # type: ignore[index]
    assert better["champion"] == "2"
    assert any(r.startswith("pass: auroc") and "champion's" in r for r in better["gate"]["reasons"])  # type: ignore[index]

    _install(project, "inverted")
    worse = _register(project, LENIENT.model_copy(update={"min_primary_low": 0.6, "champion_tolerance": 0.02}))
    assert (worse["version"], worse["gate"]["decision"], worse["champion"]) == ("3", "refuse", "2")  # type: ignore[index]
    assert alias_version(NAME, "challenger", tracking_uri=_uri()) == "3"
    version = get_version(NAME, "3", tracking_uri=_uri())
    failures = [r for r in worse["gate"]["reasons"] if r.startswith("fail:")]  # type: ignore[index]
    assert any("champion's" in r for r in failures)
    assert any("lower 95% CI bound" in r for r in failures)
    assert version.tags[names.GATE_DECISION] == "refuse"
    assert all(r in version.tags[names.GATE_REASONS] for r in failures)
    assert "refused (champion unchanged)" in version.description
    assert all(r in version.description for r in failures)


def test_version_tags_lead_to_commit_and_data_hashes(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    models = _install(project, "good")
    record = _register(project, LENIENT)
    uri = _uri()

    version = get_version(NAME, str(record["version"]), tracking_uri=uri)
    run_tags = mlflow.MlflowClient(uri).get_run(str(version.run_id)).data.tags
    lineage = {k: v for k, v in run_tags.items() if k.startswith("shipa.") and k != names.RUN_KIND}
    assert {k: version.tags[k] for k in lineage} == lineage
    assert version.tags[names.GIT_COMMIT] == _git(project, "rev-parse", "HEAD")
    assert version.tags[names.GIT_DIRTY] == "false"
    assert version.tags[names.STAGE] == "register@diagnosis"
    assert version.tags[names.DATA_SOURCE] == "dvc"
    metrics_md5 = hashlib.md5((models / "metrics.json").read_bytes()).hexdigest()
    assert version.tags["shipa.data.models/diagnosis/metrics.json"] == metrics_md5
    assert version.tags["shipa.data.models/diagnosis/train"].endswith(".dir")

    plan = reproduction_plan(f"models:/{NAME}/{record['version']}", tracking_uri=uri)
    assert plan.commit == version.tags[names.GIT_COMMIT]
    assert plan.data["models/diagnosis/metrics.json"] == metrics_md5


@pytest.fixture(scope="module")
def fraud_models(project: Path, tiny_cohort: Path) -> Path:
    """The fraud model of the tiny cohort, trained small and evaluated, in the project's usual places."""
    interim = tiny_cohort / "data" / "interim"
    processed, models = project / "data" / "processed" / "fraud", project / "models" / "fraud"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'train-runs.db'}")
        features_fr.run(FraudFeaturesParams(), interim, processed)
        small = FraudTrainParams(epochs=2, iforest_trees=50, gbm=GbmParams(max_iter=30))
        train_fr.run(small, processed, models / "train")
        evaluate_fr.run(
            EvaluateParams(n_boot=50, fraud_k=30), processed, models / "train", models / "eval",
            models / "metrics.json", raw=tiny_cohort / "data" / "raw", tables=interim / "tables",
        )  # fmt: skip
    return models


def test_fraud_model_registers_with_its_scores_and_reasons(
    project: Path, fraud_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    gate = GateParams(primary_metric="auprc", min_primary_low=0.0, max_ece=None, max_subgroup_gap=None)
    options = FraudFeaturesParams(duplicate_days=5).model_dump(mode="json", exclude={"split"})
    record = register_fr.run(
        FraudRegisterParams(gate=gate, risk_bands=RiskBandsParams(moderate=0.2, high=0.6)),
        project / "data" / "processed" / "fraud",
        project / "models" / "fraud",
        feature_options=options,
    )
    assert (record["name"], record["version"], record["gate"]["decision"]) == ("shipa-fraud", "1", "promote")  # type: ignore[index]
    assert record["gate"]["reasons"][0].startswith("pass: auprc lower 95% CI bound")  # type: ignore[index]

    test = pl.read_parquet(project / "data" / "processed" / "fraud" / "dataset.parquet").filter(
        pl.col("split") == "test"
    )
    with tracking_uri_scope(_uri()):
        loaded = mlflow.pyfunc.load_model("models:/shipa-fraud@champion")
    out = loaded.predict(test.drop("label", "split").to_pandas())
    expected = pl.read_parquet(fraud_models / "eval" / "predictions.parquet")
    assert expected["claim_id"].to_list() == test["claim_id"].to_list()
    # The registered pyfunc against the evaluate stage: two code paths over a float32 network.
    np.testing.assert_allclose(out["probability"], expected["score_model"].to_numpy(), rtol=1e-5, atol=1e-6)
    # The service rebuilds claim features with the options the model was trained on, and shows its risk bands.
    metadata = loaded.metadata.metadata
    assert FraudFeatureOptions(**metadata["feature_options"]).duplicate_days == 5
    assert metadata["risk_bands"] == {"moderate": 0.2, "high": 0.6}
    flagged = out.sort_values("probability", ascending=False).head(5)
    assert all(len(codes) > 0 for codes in flagged["reason_codes"])

    version = get_version("shipa-fraud", "1", tracking_uri=_uri())
    assert version.tags[names.STAGE] == "register@fraud"
    assert version.tags[names.GIT_COMMIT] == _git(project, "rev-parse", "HEAD")
    card = json.loads((fraud_models / "model_card.json").read_text())
    summary = json.loads((project / "data" / "processed" / "fraud" / "summary.json").read_text())
    assert card["training_data"]["claims"] == summary["claims"]
    assert card["evaluation"]["primary_metric"] == "auprc"


def test_missing_inputs_and_unknown_models_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"metrics\.json: not found \(run `shipa evaluate diagnosis` first\)"):
        register_dx.run(RegisterParams().diagnosis, tmp_path / "processed", tmp_path / "models")
    with pytest.raises(InputError, match=r"metrics\.json: not found \(run `shipa evaluate fraud` first\)"):
        register_fr.run(RegisterParams().fraud, tmp_path / "processed", tmp_path / "models")
    # The model is a choice of the command line: anything else is refused there, naming the value.
    shipa = Path(sys.executable).parent / "shipa"
    done = subprocess.run([str(shipa), "register", "claims"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "'claims'" in done.stderr
