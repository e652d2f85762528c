"""Open the MLflow run of a stage with its lineage: the one bridge between stages and ``pipelines.tracking``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from pipelines.config import get_settings, mlflow_tracking_uri
from pipelines.tracking.lineage import collect_lineage, resolve_pipeline_run_id
from pipelines.tracking.runs import StageRun, stage_run


@contextlib.contextmanager
def tracked_stage(
    stage: str, params: BaseModel, *, device: str | None = None, tracking_uri: str | None = None
) -> Iterator[StageRun]:
    """An MLflow run for ``stage`` (e.g. ``train@diagnosis``) under this pipeline run's parent run.

    Tags carry the git commit, the DVC hash of each dependency, the params hash, host, device and library
    versions; the stage's params section is logged as params. ``tracking_uri`` is the MLflow store (None:
    ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the working directory); artifacts go beside an sqlite store.
    Outside a git repository or DVC project the lineage tags say ``unknown``/``none``; nothing fails.
    """
    settings = get_settings()
    root = Path.cwd()
    values = params.model_dump(mode="json")
    tags = collect_lineage(stage, repo_root=root, params=values, device=device)
    with stage_run(
        stage,
        tracking_uri=tracking_uri or mlflow_tracking_uri(root),
        experiment=settings.mlflow_experiment,
        params=values,
        tags=tags,
        pipeline_run_id=resolve_pipeline_run_id(settings.pipeline_run_id, root),
    ) as run:
        yield run
