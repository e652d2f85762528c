"""Everything recorded about one model version, gathered for a report or a trace.

Sources: the registry (version, tags, aliases, description), the version's MLflow run (lineage tags, params,
evaluation, gate reports, model card), the other stage runs of the same pipeline run (training curves, their
data hashes), the workspace's ``dvc.lock`` and, when their hashes show they belong to this version, the
evaluation predictions under ``models/<model>/eval``.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.audit.lineage import (
    DataCheck,
    IngestLink,
    LockStage,
    UpstreamStep,
    check_data,
    ingest_hashes,
    link_ingest_report,
    load_lock,
    walk_upstream,
)
from pipelines.tracking import tags as names
from pipelines.tracking.audit_queries import (
    RunRecord,
    all_experiment_ids,
    get_run_record,
    list_artifacts,
    metric_histories,
    pipeline_stage_runs,
    read_artifact_json,
)
from pipelines.tracking.promotion import EVALUATION_FILE, artifact_dir
from pipelines.tracking.registry import FRAUD_MODEL_NAME, VersionInfo, get_version

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.parquet"
_CURVE_SKIP = ("lr", "seconds", "samples_per_s")


@dataclass(frozen=True)
class Curves:
    """Per-epoch training curves: ``{mode: {metric: [(epoch, value), ...]}}`` and where they came from."""

    series: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class Baseline:
    """The version's test-set predictions (the reference distribution for drift, the data of the calibration plot).

    Attributes:
        scores: predicted scores on the test set, or None when not available.
        labels: the outcomes used by the evaluation (same order), or None.
        source: the file they came from.
        verified: what was checked (test data md5, dvc.lock hash), one line each.
        problems: why they may not belong to this version, one line each (empty when verified).
    """

    scores: npt.NDArray[np.float64] | None = None
    labels: npt.NDArray[np.int64] | None = None
    source: str = ""
    verified: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class VersionEvidence:
    """What the registry, MLflow and the workspace record about one version (see the module docstring)."""

    info: VersionInfo
    model_kind: str
    run: RunRecord | None
    stage_runs: list[RunRecord]
    evaluation: dict[str, Any] | None
    model_card: dict[str, Any] | None
    gate_reports: list[dict[str, Any]]
    lock_path: str
    lock_found: bool
    data_checks: list[DataCheck]
    upstream: list[UpstreamStep]
    ingest: IngestLink
    curves: Curves
    baseline: Baseline

    @property
    def lineage_tags(self) -> dict[str, str]:
        """The ``shipa.*`` lineage: the version's run tags, overridden by the version's own tags."""
        merged = {k: v for k, v in (self.run.tags if self.run else {}).items() if k.startswith(names.PREFIX)}
        merged.update({k: v for k, v in self.info.tags.items() if k.startswith(names.PREFIX)})
        return merged

    @property
    def data_hashes(self) -> dict[str, str]:
        """``{dependency path: md5}`` from the ``shipa.data.*`` tags."""
        return data_tags(self.lineage_tags)


def data_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """``{path: md5}`` of the ``shipa.data.<path>`` tags of a run or version."""
    return {k[len(names.DATA_PREFIX) :]: v for k, v in sorted(tags.items()) if k.startswith(names.DATA_PREFIX)}


def model_kind(name: str, run: RunRecord | None) -> str:
    """``diagnosis`` or ``fraud`` (the per-model stage item), from the run's stage tag or the model name."""
    stage = run.stage if run else ""
    if "@" in stage:
        return stage.split("@", 1)[1]
    if name == FRAUD_MODEL_NAME:
        return "fraud"
    return "diagnosis" if name.startswith("shipa-diagnosis-") else ""


def gate_reports(name: str, version: str, run_id: str, *, tracking_uri: str) -> list[dict[str, Any]]:
    """Every gate or override report logged for the version, oldest first."""
    folder = artifact_dir(name, version)
    found = []
    for path in list_artifacts(run_id, folder, tracking_uri=tracking_uri):
        base = path.rsplit("/", 1)[-1]
        if base.startswith("gate-") and base.endswith(".json"):
            report = read_artifact_json(run_id, path, tracking_uri=tracking_uri)
            if isinstance(report, dict):
                found.append(report)
    return sorted(found, key=lambda r: str(r.get("at", "")))


def _curves_from_metrics(run: RunRecord, tracking_uri: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    keys = [k for k in run.metrics if not k.startswith("test.") and k.rsplit(".", 1)[-1] not in _CURVE_SKIP]
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for key, points in metric_histories(run.run_id, keys, tracking_uri=tracking_uri).items():
        if len(points) < 2:
            continue
        mode, _, metric = key.rpartition(".")
        series.setdefault(mode, {})[metric] = points
    return series


def _history_lists(value: Any, path: str = "") -> dict[str, list[dict[str, Any]]]:
    """Lists of per-epoch dicts (``[{"epoch": 1, ...}, ...]``) anywhere in a JSON value, by their parent key."""
    found: dict[str, list[dict[str, Any]]] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            found.update(_history_lists(item, f"{path}.{key}" if path else str(key)))
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) and "epoch" in v for v in value):
        found[path] = list(value)
    return found


def _series_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key == "epoch" or key in _CURVE_SKIP:
                continue
            try:
                series.setdefault(key, []).append((int(row["epoch"]), float(value)))
            except (TypeError, ValueError):
                continue
    return {k: v for k, v in series.items() if len(v) >= 2}


def _curves_from_summary(run: RunRecord, tracking_uri: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    summary = read_artifact_json(run.run_id, "train_summary.json", tracking_uri=tracking_uri)
    out = {}
    for path, rows in _history_lists(summary).items():
        mode = path.removesuffix(".history").removesuffix("history") or "model"
        series = _series_of(rows)
        if series:
            out[mode] = series
    return out


def _curves_from_files(train_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    out = {}
    for history in sorted(train_dir.glob("*/history.csv")):
        with history.open(encoding="utf-8", newline="") as fh:
            series = _series_of(list(csv.DictReader(fh)))
        if series:
            out[history.parent.name] = series
    return out


def training_curves(
    kind: str, stage_runs: list[RunRecord], checks: list[DataCheck], project_root: Path, *, tracking_uri: str
) -> Curves:
    """Training curves from the pipeline's train run (per-epoch metrics, else its ``train_summary.json``), else
    from ``models/<kind>/train/*/history.csv`` when ``dvc.lock`` shows those files are the version's."""
    for run in reversed([r for r in stage_runs if r.stage == f"train@{kind}"]):
        series = _curves_from_metrics(run, tracking_uri)
        if series:
            return Curves(series, f"per-epoch metrics of MLflow run {run.run_id} ({run.stage})")
        series = _curves_from_summary(run, tracking_uri)
        if series:
            return Curves(series, f"train_summary.json of MLflow run {run.run_id} ({run.stage})")
    train_path = f"models/{kind}/train"
    if any(c.path == train_path and c.status == "match" for c in checks):
        series = _curves_from_files(project_root / train_path)
        if series:
            return Curves(series, f"{train_path}/*/history.csv (its hash in dvc.lock matches the version's)")
    return Curves()


def evaluation_fingerprint(ids: list[str], labels: list[int]) -> str:
    """The evaluation's test-set fingerprint (ids and labels in id order), as the evaluate stage computes it."""
    digest = hashlib.md5(usedforsecurity=False)
    for i, y in sorted(zip(ids, labels, strict=True)):
        digest.update(f"{i}\t{y}\n".encode())
    return digest.hexdigest()


def load_baseline(
    kind: str, evaluation: Mapping[str, Any] | None, checks: list[DataCheck], project_root: Path
) -> Baseline:
    """The test-set predictions of the evaluated model from ``models/<kind>/eval/predictions.parquet``.

    Two checks say whether they belong to this version: the test data fingerprint of the file equals the
    evaluation's ``test_data_md5``, and ``dvc.lock``'s hash of ``models/<kind>/eval`` equals the version's.
    """
    import polars as pl

    path = project_root / "models" / kind / "eval" / PREDICTIONS_FILE
    if not kind or not path.is_file():
        return Baseline(source=str(path), problems=(f"{path} not found",))
    df = pl.read_parquet(path)
    evaluated = str((evaluation or {}).get("model") or ("fused" if kind == "diagnosis" else "model"))
    column = next((c for c in (f"probability_{evaluated}", f"score_{evaluated}") if c in df.columns), None)
    label = "is_fraud" if "is_fraud" in df.columns else "label"
    if column is None or label not in df.columns:
        return Baseline(source=str(path), problems=(f"{path} has no column for the evaluated model {evaluated}",))
    verified: list[str] = []
    problems: list[str] = []
    expected = (evaluation or {}).get("test_data_md5")
    id_column = next((c for c in ("study_id", "claim_id") if c in df.columns), None)
    if expected and id_column and "label" in df.columns:
        actual = evaluation_fingerprint(df[id_column].cast(pl.String).to_list(), df["label"].cast(pl.Int64).to_list())
        if actual == expected:
            verified.append(f"test data md5 {actual} equals the evaluation's")
        else:
            problems.append(f"test data md5 {actual} differs from the evaluation's {expected}")
    else:
        problems.append("the test data md5 could not be checked")
    eval_check = next((c for c in checks if c.path == f"models/{kind}/eval"), None)
    if eval_check is None:
        problems.append(f"the version's lineage records no hash of models/{kind}/eval")
    elif eval_check.status == "match":
        verified.append(f"dvc.lock's hash of models/{kind}/eval equals the version's ({eval_check.recorded})")
    else:
        problems.append(f"dvc.lock's hash of models/{kind}/eval is not the version's ({eval_check.status})")
    return Baseline(
        scores=df[column].cast(pl.Float64).to_numpy(),
        labels=df[label].cast(pl.Int64).to_numpy(),
        source=f"{path} (column {column})",
        verified=tuple(verified),
        problems=tuple(problems),
    )


def _evaluation(info: VersionInfo, run: RunRecord | None, tracking_uri: str) -> dict[str, Any] | None:
    if run is None:
        return None
    report = read_artifact_json(
        run.run_id, f"{artifact_dir(info.name, info.version)}/{EVALUATION_FILE}", tracking_uri=tracking_uri
    )
    return report if isinstance(report, dict) else None


def collect(name: str, version: str, *, tracking_uri: str, project_root: Path) -> VersionEvidence:
    """Gather the evidence about ``name`` version ``version``.

    Args:
        name: registered model name.
        version: the version.
        tracking_uri: the MLflow store (also the registry).
        project_root: the workspace whose ``dvc.lock`` and ``models/`` are compared with the version.

    Raises:
        ModelVersionNotFoundError: the version does not exist.
    """
    info = get_version(name, str(version), tracking_uri=tracking_uri)
    run = get_run_record(info.run_id, tracking_uri=tracking_uri) if info.run_id else None
    kind = model_kind(name, run)
    pipeline_id = (run.tags if run else {}).get(names.PIPELINE_RUN_ID) or info.tags.get(names.PIPELINE_RUN_ID)
    stage_runs: list[RunRecord] = []
    if pipeline_id:
        experiments = all_experiment_ids(tracking_uri=tracking_uri)
        stage_runs = pipeline_stage_runs(pipeline_id, tracking_uri=tracking_uri, experiment_ids=experiments)
    lock_path = project_root / "dvc.lock"
    lock: dict[str, LockStage] = load_lock(lock_path)
    merged = {k: v for k, v in (run.tags if run else {}).items()}
    merged.update(info.tags)
    checks = check_data(data_tags(merged), lock, project_root)
    upstream = walk_upstream(checks, lock)
    by_source: dict[str, dict[str, str]] = {"the version's lineage tags": data_tags(merged)}
    for other in stage_runs:
        by_source[f"MLflow run {other.run_id} ({other.stage})"] = data_tags(other.tags)
    hashes, sources = ingest_hashes(by_source, upstream, lock)
    evaluation = _evaluation(info, run, tracking_uri)
    card = None
    reports: list[dict[str, Any]] = []
    if run is not None:
        folder = artifact_dir(name, info.version)
        loaded = read_artifact_json(run.run_id, f"{folder}/model_card.json", tracking_uri=tracking_uri)
        card = loaded if isinstance(loaded, dict) else None
        reports = gate_reports(name, info.version, run.run_id, tracking_uri=tracking_uri)
    log.info("collected evidence of %s version %s (%d stage runs)", name, info.version, len(stage_runs))
    return VersionEvidence(
        info=info,
        model_kind=kind,
        run=run,
        stage_runs=stage_runs,
        evaluation=evaluation,
        model_card=card,
        gate_reports=reports,
        lock_path=str(lock_path),
        lock_found=bool(lock),
        data_checks=checks,
        upstream=upstream,
        ingest=link_ingest_report(hashes, sources, lock, project_root),
        curves=training_curves(kind, stage_runs, checks, project_root, tracking_uri=tracking_uri),
        baseline=load_baseline(kind, evaluation, checks, project_root),
    )
