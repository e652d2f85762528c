"""Read-only MLflow queries for auditors' reports and traces: runs, metric histories, artifacts, model names.

Results are plain dataclasses and dicts, so ``pipelines.audit`` never handles MLflow entities. Every value that
goes into a search filter is checked first (no quotes), so a tag value cannot change the filter's meaning.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from pipelines.tracking import tags as names
from pipelines.tracking.client import connect
from pipelines.tracking.keys import safe_key

log = logging.getLogger(__name__)

_FILTER_VALUE = re.compile(r"^[\w.:+/@\- ]{1,500}$")
_MAX_RUNS = 500


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain values.

    Attributes:
        run_id: the run id.
        experiment_id: its experiment.
        name: the run name (the stage name for stage runs).
        status: ``FINISHED``, ``FAILED``, ``RUNNING`` or ``KILLED``.
        start: ISO 8601 UTC start time ("" when unknown); end likewise.
        tags: every tag (``shipa.*`` lineage included).
        params: every param.
        metrics: the latest value of every metric.
    """

    run_id: str
    experiment_id: str
    name: str
    status: str
    start: str
    end: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def stage(self) -> str:
        """The ``shipa.stage`` tag ("" for runs Shipa did not open)."""
        return self.tags.get(names.STAGE, "")


def _iso(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        experiment_id=str(run.info.experiment_id),
        name=run.info.run_name or "",
        status=run.info.status or "",
        start=_iso(run.info.start_time),
        end=_iso(run.info.end_time),
        tags=dict(run.data.tags or {}),
        params=dict(run.data.params or {}),
        metrics={k: float(v) for k, v in (run.data.metrics or {}).items()},
    )


def _checked(value: str) -> str:
    if not _FILTER_VALUE.match(value):
        raise ValueError("a search value must be 1-500 letters, digits or '_.:+/@- '")
    return value


def get_run_record(run_id: str, *, tracking_uri: str) -> RunRecord | None:
    """The run ``run_id``, or None when it does not exist (deleted stores, foreign ids)."""
    try:
        return _record(connect(tracking_uri).get_run(run_id))
    except MlflowException as exc:
        log.warning("MLflow run %s could not be read (%s)", run_id, exc.error_code)
        return None


def _search(tracking_uri: str, experiment_ids: Iterable[str], query: str) -> list[RunRecord]:
    ids = sorted(set(experiment_ids))
    if not ids:
        return []
    runs = connect(tracking_uri).search_runs(ids, filter_string=query, max_results=_MAX_RUNS)
    return [_record(r) for r in runs]


def all_experiment_ids(*, tracking_uri: str) -> list[str]:
    """The ids of every active experiment of the store."""
    return [str(e.experiment_id) for e in connect(tracking_uri).search_experiments()]


def pipeline_stage_runs(pipeline_run_id: str, *, tracking_uri: str, experiment_ids: Iterable[str]) -> list[RunRecord]:
    """The stage runs of one pipeline run (``shipa.pipeline_run_id``), oldest first."""
    query = (
        f"tags.`{names.PIPELINE_RUN_ID}` = '{_checked(pipeline_run_id)}' "
        f"and tags.`{names.RUN_KIND}` = '{names.RUN_KIND_STAGE}'"
    )
    return sorted(_search(tracking_uri, experiment_ids, query), key=lambda r: (r.start, r.run_id))


def runs_using_data(path: str, md5: str, *, tracking_uri: str, experiment_ids: Iterable[str]) -> list[RunRecord]:
    """Stage runs whose lineage records dependency ``path`` at ``md5`` (tag ``shipa.data.<path>``), oldest first."""
    key = safe_key(names.DATA_PREFIX + path)
    query = f"tags.`{_checked(key)}` = '{_checked(md5)}'"
    return sorted(_search(tracking_uri, experiment_ids, query), key=lambda r: (r.start, r.run_id))


def metric_histories(run_id: str, keys: Iterable[str], *, tracking_uri: str) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` for each key, steps increasing (the last value logged per step)."""
    client = connect(tracking_uri)
    out: dict[str, list[tuple[int, float]]] = {}
    for key in keys:
        by_step: dict[int, tuple[int, float]] = {}
        for m in client.get_metric_history(run_id, key):
            step = int(m.step)
            if step not in by_step or m.timestamp >= by_step[step][0]:
                by_step[step] = (int(m.timestamp), float(m.value))
        out[key] = [(step, by_step[step][1]) for step in sorted(by_step)]
    return out


def list_artifacts(run_id: str, folder: str, *, tracking_uri: str) -> list[str]:
    """Paths of the files directly under ``folder`` of a run's artifacts (sorted; [] when absent)."""
    try:
        found = connect(tracking_uri).list_artifacts(run_id, folder)
    except (MlflowException, OSError):
        return []
    return sorted(a.path for a in found if not a.is_dir)


def read_artifact_bytes(run_id: str, path: str, *, tracking_uri: str) -> bytes | None:
    """The bytes of one run artifact, or None when it does not exist."""
    folder = str(Path(path).parent) if "/" in path else ""
    if path not in list_artifacts(run_id, folder, tracking_uri=tracking_uri):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = connect(tracking_uri).download_artifacts(run_id, path, tmp)
        return Path(local).read_bytes()


def read_artifact_json(run_id: str, path: str, *, tracking_uri: str) -> Any | None:
    """One JSON run artifact, parsed; None when it does not exist or is not JSON."""
    data = read_artifact_bytes(run_id, path, tracking_uri=tracking_uri)
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        log.warning("run %s artifact %s is not JSON", run_id, path)
        return None


def registered_model_names(*, tracking_uri: str, prefix: str = "shipa-") -> list[str]:
    """Names of the registered models that start with ``prefix``, sorted."""
    found = connect(tracking_uri).search_registered_models(max_results=1000)
    return sorted(m.name for m in found if m.name.startswith(prefix))
