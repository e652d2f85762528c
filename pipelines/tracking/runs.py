"""One MLflow run per stage, nested under one parent run per pipeline run.

How stages of one pipeline run find the same parent: every stage passes the same ``pipeline_run_id``; the
parent is the run of the experiment tagged ``shipa.run_kind=pipeline`` and ``shipa.pipeline_run_id=<id>``,
created by whichever stage comes first. The id comes from the stage: ``SHIPA_PIPELINE_RUN_ID`` when
``make run`` sets one per invocation, otherwise
:func:`pipelines.tracking.lineage.pipeline_run_id_from_state`, which every stage of one ``dvc repro``
derives identically from git HEAD, uncommitted changes, ``params.yaml`` and ``dvc.yaml``.

The parent shows RUNNING while a stage runs and then takes the status of the stage that ended last (FINISHED
or FAILED), so a failed ``dvc repro`` is visible on the parent.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel

from pipelines.tracking import tags as names
from pipelines.tracking.client import connect, default_artifact_location, ensure_experiment
from pipelines.tracking.keys import evaluation_metrics, metric_items, param_items, safe_key
from pipelines.tracking.pyfunc import LoggedModelRef, log_pyfunc_model

log = logging.getLogger(__name__)

_PIPELINE_ID = re.compile(r"^[\w.:+\-]{1,200}$")
_BATCH_PARAMS = 100
_BATCH_METRICS = 1000
_MAX_TAG = 8000


def _check_pipeline_id(pipeline_run_id: str) -> None:
    # The id goes into an MLflow search filter: refuse quotes and anything else that could change its meaning.
    if not _PIPELINE_ID.match(pipeline_run_id):
        raise ValueError("pipeline_run_id must be 1-200 letters, digits or '_.:+-'")


def find_or_create_parent(
    client: MlflowClient, experiment_id: str, pipeline_run_id: str, tags: Mapping[str, str] | None = None
) -> str:
    """The run id of the pipeline run's parent, created (with ``tags``) when no stage has created it yet."""
    _check_pipeline_id(pipeline_run_id)
    found = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{names.PIPELINE_RUN_ID}` = '{pipeline_run_id}' "
            f"and tags.`{names.RUN_KIND}` = '{names.RUN_KIND_PIPELINE}'"
        ),
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if found:
        return str(found[0].info.run_id)
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline {pipeline_run_id}",
        tags={
            **(tags or {}),
            names.PIPELINE_RUN_ID: pipeline_run_id,
            names.RUN_KIND: names.RUN_KIND_PIPELINE,
        },
    )
    log.info("created parent run %s for pipeline run %s", run.info.run_id, pipeline_run_id)
    return str(run.info.run_id)


class StageRun:
    """An open stage run: log metrics, params, tags, artifacts and models to it."""

    def __init__(self, client: MlflowClient, tracking_uri: str, run_id: str, parent_run_id: str | None) -> None:
        self._client = client
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.parent_run_id = parent_run_id

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        """Log params, nested mappings flattened to dotted keys (``model.lr``)."""
        items = [Param(k, v) for k, v in param_items(params, prefix).items()]
        for start in range(0, len(items), _BATCH_PARAMS):
            self._client.log_batch(self.run_id, params=items[start : start + _BATCH_PARAMS], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values as strings, cut to MLflow's limit)."""
        items = [RunTag(safe_key(k), str(v)[:_MAX_TAG]) for k, v in tags.items()]
        for start in range(0, len(items), _BATCH_PARAMS):
            self._client.log_batch(self.run_id, tags=items[start : start + _BATCH_PARAMS], synchronous=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
        """Log numeric metrics; nested mappings become dotted keys and None/non-numeric leaves are skipped.

        Args:
            metrics: e.g. ``{"train": {"loss": 0.4}, "val": {"auroc": 0.8}}``.
            step: the epoch for per-epoch curves (MLflow's step); None logs at step 0.
            prefix: prepended to every key with a dot.
        """
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step or 0) for k, v in metric_items(metrics, prefix).items()]
        for start in range(0, len(items), _BATCH_METRICS):
            self._client.log_batch(self.run_id, metrics=items[start : start + _BATCH_METRICS], synchronous=True)

    def log_evaluation(self, report: Mapping[str, Any], prefix: str = "test") -> None:
        """Log an ``evaluate_binary`` report: headline metrics with CI bounds, the JSON, its test-data tag.

        The JSON goes to ``evaluation/<prefix>.json``; a ``test_data_md5`` key of the report becomes the
        ``shipa.test_data_md5`` tag.
        """
        self.log_metrics(evaluation_metrics(report, prefix))
        self.log_dict(dict(report), f"evaluation/{prefix}.json")
        if report.get("test_data_md5"):
            self.set_tags({names.TEST_DATA_MD5: report["test_data_md5"]})

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Copy a local file, or a folder's contents, into the run's artifacts (under ``artifact_path``)."""
        local = Path(path)
        if local.is_dir():
            self._client.log_artifacts(self.run_id, str(local), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(local), artifact_path)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Save a JSON (or YAML, by extension) document as a run artifact."""
        self._client.log_dict(self.run_id, dict(data), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Save a text document as a run artifact."""
        self._client.log_text(self.run_id, text, artifact_file)

    def log_pyfunc_model(
        self,
        python_model: PythonModel,
        *,
        input_example: Any,
        name: str = "model",
        artifacts: Mapping[str, str | Path] | None = None,
        signature: ModelSignature | None = None,
        pip_requirements: Sequence[str] | None = None,
        code_paths: Sequence[str | Path] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> LoggedModelRef:
        """Log a pyfunc wrapper into this run; see :func:`pipelines.tracking.pyfunc.log_pyfunc_model`."""
        return log_pyfunc_model(
            python_model,
            tracking_uri=self.tracking_uri,
            run_id=self.run_id,
            input_example=input_example,
            name=name,
            artifacts=artifacts,
            signature=signature,
            pip_requirements=pip_requirements,
            code_paths=code_paths,
            metadata=metadata,
        )


@contextlib.contextmanager
def stage_run(
    stage: str,
    *,
    tracking_uri: str,
    experiment: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    pipeline_run_id: str | None,
    artifact_location: str | None = None,
) -> Iterator[StageRun]:
    """Open an MLflow run for one stage, nested under its pipeline run's parent, and close it with its status.

    Args:
        stage: the DVC stage name (run name and ``shipa.stage`` tag).
        tracking_uri: the MLflow store (the stage passes ``pipelines.config.mlflow_tracking_uri()``).
        experiment: experiment name, created when missing.
        params: the stage's params section, logged flattened (``model.lr``).
        tags: run tags, normally :func:`pipelines.tracking.lineage.collect_lineage`'s output.
        pipeline_run_id: groups the stages of one pipeline run under one parent; None makes a top-level run.
        artifact_location: artifact root for a new experiment; None puts it beside an sqlite store.

    Yields:
        The open :class:`StageRun`. An exception inside the block marks the run (and the parent) FAILED, or
        KILLED on Ctrl-C, and is re-raised.
    """
    client = connect(tracking_uri)
    location = artifact_location or default_artifact_location(tracking_uri, experiment)
    experiment_id = ensure_experiment(client, experiment, location)
    run_tags = {safe_key(k): str(v)[:_MAX_TAG] for k, v in tags.items()}
    run_tags[names.STAGE] = stage
    run_tags[names.RUN_KIND] = names.RUN_KIND_STAGE
    parent_id = None
    if pipeline_run_id is not None:
        inherited = {k: v for k, v in run_tags.items() if k in (names.GIT_COMMIT, names.GIT_DIRTY, names.HOST)}
        parent_id = find_or_create_parent(client, experiment_id, pipeline_run_id, inherited)
        run_tags[names.PIPELINE_RUN_ID] = pipeline_run_id
        run_tags[names.MLFLOW_PARENT_RUN_ID] = parent_id
        client.update_run(parent_id, status="RUNNING")
    run = client.create_run(experiment_id, run_name=stage, tags=run_tags)
    handle = StageRun(client, tracking_uri, run.info.run_id, parent_id)
    log.info("stage %s: MLflow run %s (parent %s)", stage, run.info.run_id, parent_id or "none")
    status = "FAILED"
    try:
        handle.log_params(params)
        yield handle
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run.info.run_id, status=status)
        if parent_id is not None:
            client.set_terminated(parent_id, status=status)
