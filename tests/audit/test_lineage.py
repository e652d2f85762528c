"""A version's data hashes against dvc.lock: statuses, the walk upstream, and locating the ingest report."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipelines.audit.lineage import (
    check_data,
    file_md5,
    ingest_hashes,
    link_ingest_report,
    load_lock,
    walk_upstream,
)

from .helpers import (
    EVAL_MD5,
    IMAGES_MD5,
    INGEST_REPORT,
    PROCESSED_MD5,
    RAW_MD5,
    TABLES_MD5,
    TRAIN_MD5,
    dvc_lock,
)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace with an ingest report and a dvc.lock that records its md5."""
    report = tmp_path / "data" / "interim" / "ingest_report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps(INGEST_REPORT), encoding="utf-8")
    (tmp_path / "dvc.lock").write_text(dvc_lock(file_md5(report)), encoding="utf-8")
    return tmp_path


def test_load_lock_reads_deps_and_outs_and_tolerates_absence(workspace: Path, tmp_path: Path) -> None:
    lock = load_lock(workspace / "dvc.lock")
    assert lock["train@diagnosis"].outs == {"models/diagnosis/train": TRAIN_MD5}
    assert lock["ingest"].deps["data/raw"] == RAW_MD5
    assert load_lock(tmp_path / "absent.lock") == {}
    (tmp_path / "bad.lock").write_text("stages: [unclosed", encoding="utf-8")
    assert load_lock(tmp_path / "bad.lock") == {}


def test_file_md5_is_dvc_s_file_hash(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b'{"a": 1}\r\n')
    assert file_md5(path) == hashlib.md5(b'{"a": 1}\r\n').hexdigest()


def test_check_data_statuses(workspace: Path) -> None:
    lock = load_lock(workspace / "dvc.lock")
    recorded = {
        "models/diagnosis/eval": EVAL_MD5,
        "models/diagnosis/train": "ffffffffffffffffffffffffffffffff.dir",
        "data/raw": RAW_MD5,
        "pipelines/stages/register.py": "0" * 32,
        "data/processed/diagnosis/summary.json": "1" * 32,
    }
    checks = {c.path: c for c in check_data(recorded, lock, workspace)}
    assert (checks["models/diagnosis/eval"].status, checks["models/diagnosis/eval"].producer) == (
        "match",
        "evaluate@diagnosis",
    )
    assert checks["models/diagnosis/train"].status == "differs"
    assert checks["models/diagnosis/train"].lock_md5 == TRAIN_MD5
    assert (checks["data/raw"].status, checks["data/raw"].producer) == ("match", None)
    assert checks["pipelines/stages/register.py"].status == "not in dvc.lock"
    inner = checks["data/processed/diagnosis/summary.json"]
    assert (inner.status, inner.producer) == ("unverifiable", "features@diagnosis")


def test_files_inside_a_folder_output_are_checked_through_dvc_s_cache_listing(workspace: Path) -> None:
    digest = PROCESSED_MD5.removesuffix(".dir")
    listing = workspace / ".dvc" / "cache" / "files" / "md5" / digest[:2] / f"{digest[2:]}.dir"
    listing.parent.mkdir(parents=True)
    listing.write_text(json.dumps([{"md5": "a" * 32, "relpath": "summary.json"}]), encoding="utf-8")
    lock = load_lock(workspace / "dvc.lock")
    good, bad = (
        check_data({"data/processed/diagnosis/summary.json": md5}, lock, workspace)[0] for md5 in ("a" * 32, "b" * 32)
    )
    assert (good.status, good.lock_md5) == ("match", "a" * 32)
    assert bad.status == "differs"


def test_walk_upstream_enters_stages_only_through_matching_outputs(workspace: Path) -> None:
    lock = load_lock(workspace / "dvc.lock")
    checks = check_data({"models/diagnosis/eval": EVAL_MD5}, lock, workspace)
    steps = walk_upstream(checks, lock)
    assert steps[0].stage == "evaluate@diagnosis"
    assert sorted(s.stage for s in steps) == ["evaluate@diagnosis", "features@diagnosis", "ingest", "train@diagnosis"]
    assert steps[0].deps["data/interim/tables"] == TABLES_MD5
    stale = check_data({"models/diagnosis/eval": "e" * 32 + ".dir"}, lock, workspace)
    assert walk_upstream(stale, lock) == []


def test_ingest_report_is_read_when_the_ingest_outputs_match(workspace: Path) -> None:
    lock = load_lock(workspace / "dvc.lock")
    hashes, sources = ingest_hashes(
        {"run r1 (evaluate@diagnosis)": {"data/interim/tables": TABLES_MD5, "models/diagnosis/train": TRAIN_MD5}},
        [],
        lock,
    )
    assert hashes == {"data/interim/tables": TABLES_MD5}
    assert sources == {"data/interim/tables": "run r1 (evaluate@diagnosis)"}
    link = link_ingest_report(hashes, sources, lock, workspace)
    assert (link.status, link.report_status) == ("match", "ok")
    assert link.report == INGEST_REPORT
    assert link.hashes == {"data/interim/tables": (TABLES_MD5, TABLES_MD5)}


def test_ingest_hashes_fall_back_to_the_dvc_lock_walk(workspace: Path) -> None:
    lock = load_lock(workspace / "dvc.lock")
    steps = walk_upstream(check_data({"models/diagnosis/eval": EVAL_MD5}, lock, workspace), lock)
    hashes, sources = ingest_hashes({}, steps, lock)
    assert hashes == {"data/interim/tables": TABLES_MD5, "data/interim/images": IMAGES_MD5}
    assert sources["data/interim/tables"] == "dvc.lock (deps of evaluate@diagnosis)"


def test_another_data_version_is_said_plainly(workspace: Path) -> None:
    lock = load_lock(workspace / "dvc.lock")
    other = "c" * 32 + ".dir"
    link = link_ingest_report({"data/interim/tables": other}, {"data/interim/tables": "run r1"}, lock, workspace)
    assert link.status == "differs"
    assert link.report is None
    assert "does NOT match" in link.message and "data/interim/tables" in link.message
    assert link.hashes == {"data/interim/tables": (other, TABLES_MD5)}


def test_edited_or_missing_report_and_unknown_lineage(workspace: Path) -> None:
    lock = load_lock(workspace / "dvc.lock")
    hashes = {"data/interim/tables": TABLES_MD5}
    report = workspace / "data" / "interim" / "ingest_report.json"
    report.write_text(json.dumps({**INGEST_REPORT, "quarantined_total": 0}), encoding="utf-8")
    edited = link_ingest_report(hashes, {}, lock, workspace)
    assert (edited.status, edited.report_status) == ("match", "differs")
    assert "differs from the md5 dvc.lock records" in edited.message
    report.unlink()
    assert link_ingest_report(hashes, {}, lock, workspace).report_status == "missing"
    unknown = link_ingest_report({}, {}, lock, workspace)
    assert unknown.status == "unknown" and "records no ingest output hash" in unknown.message
