"""Rebuild a registered model from its lineage: ``models:/<name>/<version>`` -> run -> commit, stage, data.

:func:`reproduction_plan` gives the commands a person runs; :func:`run_reproduction` runs them in a scratch
``git worktree`` of the repository (the user's checkout is never touched) with the DVC cache of the original
repository, and returns the reproduced metrics files.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException

from pipelines.tracking import git
from pipelines.tracking import tags as names
from pipelines.tracking.client import connect
from pipelines.tracking.errors import ModelVersionNotFoundError, ReproductionError, UnknownCommitError
from pipelines.tracking.lineage import dvc_target, lock_dep_hashes
from pipelines.tracking.registry import resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReproductionPlan:
    """What a version was built from, and the commands that rebuild it."""

    uri: str
    name: str
    version: str
    run_id: str
    commit: str
    stage: str
    dirty: str
    params_sha256: str
    data: dict[str, str]
    commands: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reproduction:
    """The outcome of :func:`run_reproduction`."""

    plan: ReproductionPlan
    worktree: Path
    metrics_paths: tuple[Path, ...]
    data_mismatches: dict[str, tuple[str, str]]
    log_file: Path

    @property
    def metrics_path(self) -> Path | None:
        """The first metrics file the stage declares (None when it declares none)."""
        return self.metrics_paths[0] if self.metrics_paths else None


def _repro_args(stage: str, single_item: bool) -> list[str]:
    return ["repro", "--force", *(["--single-item"] if single_item else []), stage]


def reproduction_plan(
    uri: str, *, tracking_uri: str, stage: str | None = None, single_item: bool = False
) -> ReproductionPlan:
    """Resolve a model version to its lineage and the commands that rebuild it.

    Args:
        uri: ``models:/<name>/<version>`` (or ``models:/<name>@<alias>``).
        tracking_uri: the MLflow store.
        stage: the DVC stage to rerun; None uses the run's ``shipa.stage`` (the stage that logged the model).
        single_item: rerun only that stage (inputs from the DVC cache) instead of it and everything upstream.

    Raises:
        ModelVersionNotFoundError: the version (or its run) does not exist.
        UnknownCommitError: the run recorded no git commit.
    """
    info = resolve(uri, tracking_uri=tracking_uri)
    if not info.run_id:
        raise ModelVersionNotFoundError(f"{info.uri} has no source run, so its lineage is unknown")
    try:
        run_tags = dict(connect(tracking_uri).get_run(info.run_id).data.tags)
    except MlflowException:
        raise ModelVersionNotFoundError(f"{info.uri}: its run {info.run_id} no longer exists") from None
    commit = run_tags.get(names.GIT_COMMIT, git.UNKNOWN)
    if commit == git.UNKNOWN:
        raise UnknownCommitError(f"{info.uri}: run {info.run_id} recorded no git commit")
    target = stage or run_tags.get(names.STAGE)
    if target and target.startswith("register@"):
        # The version was logged by its register stage; rebuilding means rerunning up to its evaluation (rerunning
        # register itself would only register yet another version).
        target = "evaluate@" + target.split("@", 1)[1]
    if not target:
        raise ReproductionError(f"{info.uri}: run {info.run_id} recorded no DVC stage; pass the stage to rerun")
    data = {k[len(names.DATA_PREFIX) :]: v for k, v in sorted(run_tags.items()) if k.startswith(names.DATA_PREFIX)}
    dirty = run_tags.get(names.GIT_DIRTY, git.UNKNOWN)
    params_hash = run_tags.get(names.PARAMS_SHA256, "")
    commands = [
        f"git checkout {commit}",
        "dvc checkout --allow-missing",
        "dvc " + shlex.join(_repro_args(target, single_item)),
    ]
    notes = [
        f"params: params.yaml as committed in {commit[:12]}; the run's params section had sha256 {params_hash or '?'}",
        "data: dvc checkout restores the recorded data versions from the DVC cache "
        "(run dvc pull first if the cache is remote)",
    ]
    if dirty != "false":
        notes.append(
            f"the run's work tree was {'dirty' if dirty == 'true' else 'of unknown state'}: "
            "uncommitted changes are not in the commit, so the rebuild may differ"
        )
    return ReproductionPlan(
        uri=info.uri,
        name=info.name,
        version=info.version,
        run_id=info.run_id,
        commit=commit,
        stage=target,
        dirty=dirty,
        params_sha256=params_hash,
        data=data,
        commands=commands,
        notes=notes,
    )


def _subprocess_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # Stage commands call `python`/`shipa`: resolve them in this interpreter's environment (the audited one).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DVC_NO_ANALYTICS", "true")
    env.update(extra or {})
    return env


def _run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str], log_file: Path, timeout_s: float | None) -> str:
    shown = shlex.join(["dvc", *cmd[3:]] if cmd[:3] == [sys.executable, "-m", "dvc"] else cmd)
    log.info("reproduce: %s (in %s)", shown, cwd)
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ReproductionError(f"`{shown}` did not finish within {timeout_s} s (log: {log_file})") from None
    with log_file.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {shown}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1][:300]
        raise ReproductionError(f"`{shown}` failed with exit code {proc.returncode}: {last} (log: {log_file})")
    return proc.stdout


def _declared_metrics(worktree: Path, stage: str) -> tuple[Path, ...]:
    from dvc.repo import Repo  # heavy import, only needed here

    with Repo(str(worktree)) as repo:
        return tuple(
            worktree / str(m.def_path) for s in repo.stage.collect(dvc_target(worktree, stage)) for m in s.metrics
        )


def run_reproduction(
    uri: str,
    *,
    workdir: Path,
    tracking_uri: str,
    repo: Path = Path("."),
    stage: str | None = None,
    single_item: bool = False,
    allow_dirty: bool = False,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> Reproduction:
    """Rebuild a registered version in a scratch git worktree and return its reproduced metrics files.

    Args:
        uri: ``models:/<name>/<version>``.
        workdir: folder for the worktree (``<workdir>/<name>-v<version>``, must not exist) and its log.
        tracking_uri: the MLflow store.
        repo: a folder inside the git repository that holds the tagged commit (and the DVC cache to reuse).
        stage: the DVC stage to rerun (default: the run's ``shipa.stage``).
        single_item: rerun only that stage instead of it and everything upstream.
        allow_dirty: also rebuild a run made from a dirty work tree (the result may differ).
        env: extra environment for the stage commands (e.g. ``SHIPA_PIPELINE_RUN_ID``).
        timeout_s: limit per command.

    Raises:
        ModelVersionNotFoundError: the version does not exist.
        UnknownCommitError: the commit was not recorded or is not in the repository.
        ReproductionError: a dirty run without ``allow_dirty``, an existing worktree folder, or a failed
            command.
    """
    plan = reproduction_plan(uri, tracking_uri=tracking_uri, stage=stage, single_item=single_item)
    top = git.toplevel(repo)
    if top is None or not git.commit_exists(top, plan.commit):
        raise UnknownCommitError(f"{plan.uri}: commit {plan.commit} is not in the git repository at {repo.resolve()}")
    if plan.dirty != "false" and not allow_dirty:
        raise ReproductionError(f"{plan.uri}: run {plan.run_id} came from a dirty work tree; pass allow_dirty to try")
    workdir.mkdir(parents=True, exist_ok=True)
    worktree = (workdir / f"{plan.name}-v{plan.version}").resolve()
    if worktree.exists():
        raise ReproductionError(f"{worktree} already exists; remove it or choose another workdir")
    log_file = worktree.with_name(worktree.name + ".log")
    run_env = _subprocess_env(env)
    dvc = [sys.executable, "-m", "dvc"]
    _run(
        ["git", "-C", str(top), "worktree", "add", "--detach", str(worktree), plan.commit],
        top,
        run_env,
        log_file,
        timeout_s,
    )
    cache_dir = _run([*dvc, "cache", "dir"], top, run_env, log_file, timeout_s).strip()
    if cache_dir:
        _run([*dvc, "cache", "dir", "--local", cache_dir], worktree, run_env, log_file, timeout_s)
    _run([*dvc, "checkout", "--allow-missing"], worktree, run_env, log_file, timeout_s)
    _run([*dvc, *_repro_args(plan.stage, single_item)], worktree, run_env, log_file, timeout_s)
    rebuilt = lock_dep_hashes(worktree / "dvc.lock", plan.stage)
    mismatches = {
        path: (md5, rebuilt.get(path, "missing")) for path, md5 in plan.data.items() if rebuilt.get(path) != md5
    }
    if mismatches:
        log.warning("reproduce %s: %d data versions differ from the original run", plan.uri, len(mismatches))
    return Reproduction(plan, worktree, _declared_metrics(worktree, plan.stage), mismatches, log_file)
