"""The read-only MLflow queries of ``pipelines.tracking.audit_queries`` on a real store."""

from __future__ import annotations

import pytest

from pipelines.tracking import audit_queries as q
from pipelines.tracking.promotion import artifact_dir

from .helpers import EPOCHS, NAME, PIPELINE_ID, TABLES_MD5, Registered


def test_runs_of_a_pipeline_and_by_data_hash(registered: Registered) -> None:
    uri = registered.tracking_uri
    experiments = q.all_experiment_ids(tracking_uri=uri)
    runs = q.pipeline_stage_runs(PIPELINE_ID, tracking_uri=uri, experiment_ids=experiments)
    assert sorted(r.stage for r in runs) == ["evaluate@diagnosis", "register@diagnosis", "train@diagnosis"]
    assert all(r.status == "FINISHED" and r.start for r in runs)
    users = q.runs_using_data("data/interim/tables", TABLES_MD5, tracking_uri=uri, experiment_ids=experiments)
    assert [r.stage for r in users] == ["evaluate@diagnosis"]
    assert q.pipeline_stage_runs("other-id", tracking_uri=uri, experiment_ids=experiments) == []
    assert q.pipeline_stage_runs(PIPELINE_ID, tracking_uri=uri, experiment_ids=[]) == []


def test_search_values_cannot_change_the_filter(registered: Registered) -> None:
    with pytest.raises(ValueError, match="search value"):
        q.pipeline_stage_runs("x' or tags.a != '", tracking_uri=registered.tracking_uri, experiment_ids=["1"])


def test_run_record_and_metric_history(registered: Registered) -> None:
    uri = registered.tracking_uri
    run = q.get_run_record(registered.train_run_id, tracking_uri=uri)
    assert run is not None and run.stage == "train@diagnosis" and run.params["epochs"] == str(EPOCHS)
    history = q.metric_histories(run.run_id, ["fused.train_loss"], tracking_uri=uri)
    assert history == {"fused.train_loss": [(e, pytest.approx(1.0 / e)) for e in range(1, EPOCHS + 1)]}
    assert q.get_run_record("0" * 32, tracking_uri=uri) is None


def test_artifacts_and_model_names(registered: Registered) -> None:
    uri = registered.tracking_uri
    folder = artifact_dir(NAME, registered.version)
    files = q.list_artifacts(registered.run_id, folder, tracking_uri=uri)
    assert f"{folder}/evaluation.json" in files and f"{folder}/model_card.json" in files
    card = q.read_artifact_json(registered.run_id, f"{folder}/model_card.json", tracking_uri=uri)
    assert card["name"] == NAME
    assert q.read_artifact_json(registered.run_id, f"{folder}/absent.json", tracking_uri=uri) is None
    md = q.read_artifact_bytes(registered.run_id, f"{folder}/model_card.md", tracking_uri=uri)
    assert md is not None and md.startswith(b"# Model card")
    assert q.registered_model_names(tracking_uri=uri) == [NAME]
    assert q.registered_model_names(tracking_uri=uri, prefix="other-") == []
