"""Stage runs in a real sqlite MLflow store: nesting under one parent, params, metrics, artifacts, status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipelines.tracking.runs import stage_run

TAGS = {"shipa.git_commit": "abc123", "shipa.git_dirty": "false", "shipa.host": "node-1"}


def _runs(client: MlflowClient, experiment: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id])


def test_stages_of_one_pipeline_run_nest_under_one_parent(tracking_uri: str) -> None:
    for stage in ("features", "train@diagnosis", "evaluate@diagnosis"):
        with stage_run(
            stage, tracking_uri=tracking_uri, experiment="shipa", params={}, tags=TAGS, pipeline_run_id="p-1"
        ):
            pass
    with stage_run(
        "features", tracking_uri=tracking_uri, experiment="shipa", params={}, tags=TAGS, pipeline_run_id="p-2"
    ):
        pass

    runs = _runs(MlflowClient(tracking_uri), "shipa")
    parents = {r.data.tags["shipa.pipeline_run_id"]: r for r in runs if r.data.tags["shipa.run_kind"] == "pipeline"}
    stages = [r for r in runs if r.data.tags["shipa.run_kind"] == "stage"]
    assert sorted(parents) == ["p-1", "p-2"]
    first = parents["p-1"].info.run_id
    assert sorted(r.data.tags["shipa.stage"] for r in stages if r.data.tags["mlflow.parentRunId"] == first) == [
        "evaluate@diagnosis",
        "features",
        "train@diagnosis",
    ]
    assert parents["p-1"].info.status == "FINISHED"
    assert parents["p-1"].data.tags["shipa.git_commit"] == "abc123"


def test_params_flattened_metrics_per_epoch_and_none_skipped(tracking_uri: str) -> None:
    params = {"lr": 0.001, "model": {"network": "densenet121", "layers": [6, 12]}}
    with stage_run(
        "train@diagnosis",
        tracking_uri=tracking_uri,
        experiment="shipa",
        params=params,
        tags=TAGS,
        pipeline_run_id=None,
    ) as run:
        for epoch, loss in enumerate([0.9, 0.6, 0.4]):
            run.log_metrics({"train": {"loss": loss}, "val": {"auroc": None}}, step=epoch)
        run.log_metrics({"test": {"auroc": 0.91, "note": "text is skipped"}})

    client = MlflowClient(tracking_uri)
    data = client.get_run(run.run_id).data
    assert data.params == {"lr": "0.001", "model.network": "densenet121", "model.layers": "[6, 12]"}
    history = client.get_metric_history(run.run_id, "train.loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 0.9),
        (1, 0.6),
        (2, 0.4),
    ]
    assert "val.auroc" not in data.metrics and "test.note" not in data.metrics
    assert data.metrics["test.auroc"] == 0.91
    assert "mlflow.parentRunId" not in data.tags
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_a_failing_stage_marks_its_run_and_the_parent_failed(tracking_uri: str) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        stage_run(
            "train@fraud",
            tracking_uri=tracking_uri,
            experiment="shipa",
            params={},
            tags=TAGS,
            pipeline_run_id="p-9",
        ) as run,
    ):
        raise RuntimeError("boom")

    client = MlflowClient(tracking_uri)
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert client.get_run(run.parent_run_id).info.status == "FAILED"


def test_artifacts_dicts_and_evaluation_land_beside_the_sqlite_store(
    tracking_uri: str, tmp_path: Path, good_report: dict[str, Any]
) -> None:
    note = tmp_path / "datasheet.md"
    note.write_text("# cohort\n")
    with stage_run(
        "evaluate@diagnosis",
        tracking_uri=tracking_uri,
        experiment="shipa",
        params={},
        tags=TAGS,
        pipeline_run_id=None,
    ) as run:
        run.log_artifact(note)
        run.log_dict({"threshold": 0.42}, "eval/threshold.json")
        run.log_evaluation(good_report)

    client = MlflowClient(tracking_uri)
    info = client.get_run(run.run_id)
    assert info.info.artifact_uri.startswith(str(tmp_path / "mlflow" / "mlartifacts" / "shipa"))
    listed = (
        {a.path for a in client.list_artifacts(run.run_id)}
        | {a.path for a in client.list_artifacts(run.run_id, "eval")}
        | {a.path for a in client.list_artifacts(run.run_id, "evaluation")}
    )
    assert {"datasheet.md", "eval/threshold.json", "evaluation/test.json"} <= listed
    auroc = good_report["metrics"]["auroc"]
    assert info.data.metrics["test.auroc"] == pytest.approx(auroc["value"])
    assert info.data.metrics["test.auroc.low"] == pytest.approx(auroc["low"])
    assert info.data.metrics["test.gap.sex.auroc"] == pytest.approx(
        good_report["subgroups"]["sex"]["gaps"]["auroc"]["gap"]
    )
    assert info.data.tags["shipa.test_data_md5"] == good_report["test_data_md5"]
    local = client.download_artifacts(run.run_id, "evaluation/test.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["metrics"]["auroc"] == auroc


def test_pipeline_run_id_that_could_change_a_search_filter_is_refused(tracking_uri: str) -> None:
    with (
        pytest.raises(ValueError, match="pipeline_run_id"),
        stage_run(
            "features",
            tracking_uri=tracking_uri,
            experiment="shipa",
            params={},
            tags={},
            pipeline_run_id="x' or '1'='1",
        ),
    ):
        pass
