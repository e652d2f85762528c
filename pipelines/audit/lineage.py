"""Data lineage of a model version against the workspace's ``dvc.lock``: which hashes match, what came upstream.

A version's lineage tags (``shipa.data.<path>`` = md5) say which data it was built from. ``dvc.lock`` says which
stage wrote each output and what that stage read. Walking from the version's hashes through the stages that
produced them (only while the hashes agree) reaches the ingest outputs, whose report tells the data's quality.
Everything here is pure file reading: no DVC import, no MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml

log = logging.getLogger(__name__)

INGEST_STAGE = "ingest"
INGEST_REPORT = "ingest_report.json"
CACHE_DIR = Path(".dvc") / "cache" / "files" / "md5"

Status = Literal["match", "differs", "not in dvc.lock", "unverifiable"]


@dataclass(frozen=True)
class LockStage:
    """One stage of ``dvc.lock``: what it read (deps) and wrote (outs), as ``{path: md5}``."""

    name: str
    deps: dict[str, str]
    outs: dict[str, str]


@dataclass(frozen=True)
class DataCheck:
    """One recorded data hash compared with ``dvc.lock``.

    Attributes:
        path: the dependency path (``models/diagnosis/eval``).
        recorded: the md5 the version's lineage recorded.
        lock_md5: what ``dvc.lock`` holds for it (as a stage output, else as a dependency), or None.
        producer: the stage whose output it is (None for inputs such as code or raw data).
        status: ``match``, ``differs``, ``not in dvc.lock`` or ``unverifiable`` (a file inside a folder output
            whose DVC cache listing is not available).
    """

    path: str
    recorded: str
    lock_md5: str | None
    producer: str | None
    status: Status


@dataclass(frozen=True)
class UpstreamStep:
    """A stage reached by walking back from the version's data: its outputs matched, so its inputs are known."""

    stage: str
    via: str
    deps: dict[str, str]


@dataclass(frozen=True)
class IngestLink:
    """Where the ingest report of the version's data is, or why it cannot be shown.

    Attributes:
        status: ``match`` (the workspace's ingest outputs are the version's), ``differs``, or ``unknown`` (no
            ingest output hash was recorded anywhere in the version's lineage).
        hashes: ingest output path -> (md5 the lineage recorded, md5 in the workspace's dvc.lock).
        sources: ingest output path -> where the recorded md5 came from (a run, the dvc.lock walk).
        report_path: the workspace's ingest report file.
        report_status: ``ok`` (its md5 matches dvc.lock), ``differs``, ``missing`` or ``not checked``.
        report: the parsed ingest report when status is ``match`` and the file is present.
        message: one plain sentence for people.
    """

    status: Literal["match", "differs", "unknown"]
    hashes: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    report_path: str = ""
    report_status: str = "not checked"
    report: dict[str, Any] | None = None
    message: str = ""


def load_lock(path: Path) -> dict[str, LockStage]:
    """The stages of a ``dvc.lock`` file (``{}`` when it is missing or unreadable)."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        log.warning("%s is not valid YAML; lineage is not checked against it", path)
        return {}

    def entries(items: Any) -> dict[str, str]:
        return {str(e["path"]): str(e.get("md5", "")) for e in items or [] if isinstance(e, dict) and "path" in e}

    stages = data.get("stages") or {}
    return {
        name: LockStage(name, entries(entry.get("deps")), entries(entry.get("outs")))
        for name, entry in stages.items()
        if isinstance(entry, dict)
    }


def file_md5(path: Path) -> str:
    """md5 of a file's bytes, as DVC 3 records a file output."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _producers(lock: Mapping[str, LockStage]) -> dict[str, tuple[str, str]]:
    return {path: (stage.name, md5) for stage in lock.values() for path, md5 in stage.outs.items()}


def _dir_listing(cache_root: Path, dir_md5: str) -> dict[str, str] | None:
    """``{relpath: md5}`` of a folder output from DVC's cache (``<md5>.dir`` listing), or None."""
    digest = dir_md5.removesuffix(".dir")
    listing = cache_root / digest[:2] / f"{digest[2:]}.dir"
    if not listing.is_file():
        return None
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return {str(e["relpath"]): str(e["md5"]) for e in entries if "relpath" in e and "md5" in e}


def _enclosing_out(path: str, producers: Mapping[str, tuple[str, str]]) -> str | None:
    parents = {str(p) for p in PurePosixPath(path).parents}
    found = [out for out in producers if out in parents]
    return max(found, key=len) if found else None


def check_data(recorded: Mapping[str, str], lock: Mapping[str, LockStage], project_root: Path) -> list[DataCheck]:
    """Compare each recorded ``{path: md5}`` with ``dvc.lock`` (outputs first, then any stage's deps).

    A file inside a folder output is checked through DVC's cache listing of that folder when present.
    """
    producers = _producers(lock)
    dep_md5 = {path: md5 for stage in lock.values() for path, md5 in stage.deps.items()}
    checks = []
    for path, md5 in sorted(recorded.items()):
        if path in producers:
            stage, lock_md5 = producers[path]
            checks.append(DataCheck(path, md5, lock_md5, stage, "match" if lock_md5 == md5 else "differs"))
            continue
        outer = _enclosing_out(path, producers)
        if outer is not None:
            stage, dir_md5 = producers[outer]
            listing = _dir_listing(project_root / CACHE_DIR, dir_md5)
            inner = None if listing is None else listing.get(str(PurePosixPath(path).relative_to(outer)))
            status: Status = "unverifiable" if inner is None else ("match" if inner == md5 else "differs")
            checks.append(DataCheck(path, md5, inner, stage, status))
            continue
        if path in dep_md5:
            lock_md5 = dep_md5[path]
            checks.append(DataCheck(path, md5, lock_md5, None, "match" if lock_md5 == md5 else "differs"))
        else:
            checks.append(DataCheck(path, md5, None, None, "not in dvc.lock"))
    return checks


def walk_upstream(checks: list[DataCheck], lock: Mapping[str, LockStage]) -> list[UpstreamStep]:
    """The stages behind the version's matching data, breadth first, each once (stops where hashes differ).

    A stage is entered only through an output whose recorded md5 matches, so every dep it lists is the one
    the version's data was built from.
    """
    producers = _producers(lock)
    steps: list[UpstreamStep] = []
    seen: set[str] = set()
    frontier: list[tuple[str | None, str]] = [
        (c.producer, c.path) for c in checks if c.status == "match" and c.producer
    ]
    while frontier:
        nxt: list[tuple[str | None, str]] = []
        for stage, via in frontier:
            if stage is None or stage in seen or stage not in lock:
                continue
            seen.add(stage)
            deps = lock[stage].deps
            steps.append(UpstreamStep(stage, via, dict(deps)))
            nxt += [(producers[p][0], p) for p, md5 in deps.items() if p in producers and producers[p][1] == md5]
        frontier = nxt
    return steps


def ingest_hashes(
    recorded_by_source: Mapping[str, Mapping[str, str]], steps: list[UpstreamStep], lock: Mapping[str, LockStage]
) -> tuple[dict[str, str], dict[str, str]]:
    """The md5 of each ingest output the lineage knows, and where it came from.

    Args:
        recorded_by_source: source label (``version``, ``run <id> (evaluate@diagnosis)``) -> its data tags.
        steps: the dvc.lock walk (its deps are what the version's stages read, by construction).
        lock: the workspace's dvc.lock (which outputs belong to ingest).

    Returns:
        ``({path: md5}, {path: source})``; the first source that names a path wins.
    """
    ingest = lock.get(INGEST_STAGE)
    outs = set(ingest.outs) if ingest else set()
    hashes: dict[str, str] = {}
    sources: dict[str, str] = {}

    def is_ingest_out(path: str) -> bool:
        return path in outs or (not outs and path.startswith("data/interim/"))

    for source, recorded in recorded_by_source.items():
        for path, md5 in sorted(recorded.items()):
            if is_ingest_out(path) and path not in hashes:
                hashes[path], sources[path] = md5, source
    for step in steps:
        for path, md5 in sorted(step.deps.items()):
            if is_ingest_out(path) and path not in hashes:
                hashes[path], sources[path] = md5, f"dvc.lock (deps of {step.stage})"
    return hashes, sources


def link_ingest_report(
    hashes: Mapping[str, str], sources: Mapping[str, str], lock: Mapping[str, LockStage], project_root: Path
) -> IngestLink:
    """Decide whether the workspace holds the ingest report of the version's data, and read it when it does.

    The ingest outputs recorded by the lineage must all equal those of the ``ingest`` stage in the workspace's
    ``dvc.lock``; then the report file (whose md5 ``dvc.lock`` also records) is the one of that data version.
    """
    ingest = lock.get(INGEST_STAGE)
    report_key = next((p for p in (ingest.outs if ingest else {}) if p.endswith(INGEST_REPORT)), None)
    report_path = project_root / (report_key or f"data/interim/{INGEST_REPORT}")
    pairs = {p: (md5, ingest.outs.get(p) if ingest else None) for p, md5 in sorted(hashes.items())}
    if not pairs:
        return IngestLink(
            "unknown",
            report_path=str(report_path),
            message="the version's lineage records no ingest output hash, so its ingest report cannot be located",
        )
    if ingest is None or any(lock_md5 != md5 for md5, lock_md5 in pairs.values()):
        differing = ", ".join(p for p, (md5, lock_md5) in pairs.items() if lock_md5 != md5)
        return IngestLink(
            "differs",
            pairs,
            dict(sources),
            str(report_path),
            message=(
                "the workspace's dvc.lock does NOT match the version's ingest data "
                f"({differing or 'no ingest stage in dvc.lock'}): the ingest report here belongs to another data "
                "version; rebuild it at the version's commit (`git checkout <commit> && dvc repro ingest`)"
            ),
        )
    if not report_path.is_file():
        return IngestLink(
            "match",
            pairs,
            dict(sources),
            str(report_path),
            "missing",
            message="the workspace's dvc.lock matches the version's ingest data, but the report file is missing",
        )
    expected = ingest.outs.get(report_key or "")
    if not expected:
        report_status = "not recorded in dvc.lock"
    else:
        report_status = "ok" if file_md5(report_path) == expected else "differs"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        report, report_status = None, "unreadable"
    message = "the workspace's dvc.lock matches the version's ingest data"
    if report_status == "differs":
        message += "; but the report file differs from the md5 dvc.lock records (run `dvc status`)"
    elif report_status != "ok":
        message += f"; the report file's md5 is {report_status}"
    return IngestLink("match", pairs, dict(sources), str(report_path), report_status, report, message)
