"""Real ``dvc repro`` of the whole pipeline on a tiny cohort, in a scratch copy of the repository."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repro(
    make_workspace: Callable[[dict[str, dict[str, Any]]], Path],
    tiny_params: dict[str, dict[str, Any]],
    cmd: Callable[..., Any],
) -> tuple[Path, str]:
    ws = make_workspace(tiny_params)
    proc = cmd(["dvc", "repro"], ws, timeout=1500)
    return ws, proc.stdout + proc.stderr


def test_repro_builds_every_output(repro: tuple[Path, str]) -> None:
    ws, _ = repro
    report = json.loads((ws / "data" / "interim" / "ingest_report.json").read_text())
    assert report["fhir"]["reconciles"] is True
    assert (ws / "data" / "processed" / "diagnosis" / "dataset.parquet").exists()
    metrics = json.loads((ws / "models" / "diagnosis" / "metrics.json").read_text())
    assert set(metrics["comparison"]) == {"fused", "image", "ehr"}
    lock = (ws / "dvc.lock").read_text()
    for stage in ("synthesize:", "ingest:", "features@diagnosis:", "train@diagnosis:", "evaluate@diagnosis:"):
        assert stage in lock


def test_second_repro_is_up_to_date_and_quick(repro: tuple[Path, str], cmd: Callable[..., Any]) -> None:
    ws, _ = repro
    start = time.monotonic()
    proc = cmd(["dvc", "repro"], ws, timeout=300)
    assert "Data and pipelines are up to date." in proc.stdout + proc.stderr
    assert time.monotonic() - start < 60  # generous: the target is seconds, CI machines are noisy


def test_changing_one_param_reruns_only_what_depends_on_it(repro: tuple[Path, str], cmd: Callable[..., Any]) -> None:
    ws, _ = repro
    proc = cmd(["dvc", "status"], ws)
    assert "changed" not in proc.stdout
    params = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(params.replace("  n_boot: 1000", "  n_boot: 200"))
    status = cmd(["dvc", "status"], ws).stdout
    assert "evaluate@diagnosis" in status
    assert "train@diagnosis" not in status and "ingest" not in status
