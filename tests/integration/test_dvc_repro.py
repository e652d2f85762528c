"""Real ``dvc repro`` of the whole pipeline on a tiny cohort, in a scratch copy of the repository."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
import pytest
import yaml

from pipelines import stage_deps
from pipelines.codes import IIN_SYSTEM
from pipelines.tracking.client import tracking_uri_scope

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repro(
    make_workspace: Callable[[dict[str, dict[str, Any]]], Path],
    tiny_params: dict[str, dict[str, Any]],
    cmd: Callable[..., Any],
) -> tuple[Path, str]:
    ws = make_workspace(tiny_params)
    cmd(["dvc", "repro"], ws, timeout=1500)
    return ws, os.environ["MLFLOW_TRACKING_URI"]


def test_repro_builds_every_output(repro: tuple[Path, str]) -> None:
    ws, _ = repro
    report = json.loads((ws / "data" / "interim" / "ingest_report.json").read_text())
    assert report["fhir"]["reconciles"] is True
    assert (ws / "data" / "processed" / "diagnosis" / "dataset.parquet").exists()
    metrics = json.loads((ws / "models" / "diagnosis" / "metrics.json").read_text())
    assert set(metrics["comparison"]) == {"fused", "image", "ehr"}
    lock = (ws / "dvc.lock").read_text()
    for stage in ("synthesize", "ingest", "features", "train", "evaluate", "register"):
        for item in ("",) if stage in ("synthesize", "ingest") else ("@diagnosis", "@fraud"):
            assert f"{stage}{item}:" in lock


def test_second_repro_is_up_to_date(repro: tuple[Path, str], cmd: Callable[..., Any]) -> None:
    ws, _ = repro
    proc = cmd(["dvc", "repro"], ws, timeout=300)
    assert "Data and pipelines are up to date." in proc.stdout + proc.stderr


def test_a_forced_rerun_gives_the_same_outputs_byte_for_byte(repro: tuple[Path, str], cmd: Callable[..., Any]) -> None:
    # Same inputs, seed, machine and builds: the same bytes, so `make run` on a fresh clone leaves dvc.lock as
    # committed (on this machine kind; another CPU's float kernels can change trained weights, see the README).
    ws, _ = repro
    before = (ws / "dvc.lock").read_text()
    stages = [f"{s}@{m}" for s in ("train", "evaluate") for m in ("diagnosis", "fraud")]
    cmd(["dvc", "repro", "--force", "--single-item", *stages], ws, timeout=1200)
    assert (ws / "dvc.lock").read_text() == before


def test_changing_one_param_reruns_only_what_depends_on_it(repro: tuple[Path, str], cmd: Callable[..., Any]) -> None:
    ws, _ = repro
    proc = cmd(["dvc", "status"], ws)
    assert "changed" not in proc.stdout
    params = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(params.replace("  n_boot: 1000", "  n_boot: 200"))
    status = cmd(["dvc", "status"], ws).stdout
    assert "evaluate@diagnosis" in status
    assert "train@diagnosis" not in status and "ingest" not in status


def _code_edits_seen_by_dvc(ws: Path, cmd: Callable[..., Any]) -> dict[str, set[str]]:
    """Per stage, the ``pipelines/`` files ``dvc status`` reports as changed deps (data deps are ignored)."""
    status = json.loads(cmd(["dvc", "status", "--json"], ws).stdout or "{}")
    changed: dict[str, set[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            deps = entry.get("changed deps", {}) if isinstance(entry, dict) else {}
            code = {p for p in deps if p.startswith("pipelines/")}
            if code:
                changed.setdefault(stage.rpartition(":")[2], set()).update(code)
    return changed


def test_a_code_edit_marks_exactly_the_stages_that_import_it(repro: tuple[Path, str], cmd: Callable[..., Any]) -> None:
    ws, _ = repro
    assert _code_edits_seen_by_dvc(ws, cmd) == {}
    closure = stage_deps.expected(yaml.safe_load((ws / "dvc.yaml").read_text()), ws)
    own_modules = [f"pipelines/stages/{s.replace('@', '/')}.py" for s in closure if "@" in s]
    outside = ["pipelines/service/app.py", "pipelines/audit/trace.py", "pipelines/stage_deps.py"]
    shared = ["pipelines/modeling/engine.py", "pipelines/config.py", "pipelines/features/fraud.py", "pipelines/iin.py"]
    seen: dict[str, set[str]] = {}
    for probe in ["pipelines/stages/synthesize.py", "pipelines/stages/ingest.py", *own_modules, *shared, *outside]:
        path = ws / probe
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit\n")
        try:
            seen[probe] = {s for s, files in _code_edits_seen_by_dvc(ws, cmd).items() if probe in files}
        finally:
            path.write_bytes(original)
        assert seen[probe] == {s for s, deps in closure.items() if probe in deps.code}, probe
    for probe in own_modules:
        assert seen[probe] == {probe.removeprefix("pipelines/stages/").removesuffix(".py").replace("/", "@")}
    for probe in outside:
        assert seen[probe] == set(), probe
    # The example: the diagnosis network's predict path reruns the diagnosis evaluation, not the fraud one.
    assert "evaluate@diagnosis" in seen["pipelines/modeling/engine.py"]
    assert "evaluate@fraud" not in seen["pipelines/modeling/engine.py"]
    assert len(seen["pipelines/config.py"]) == len(closure)  # every command reads its params through it


def test_champions_predict_like_the_evaluation(repro: tuple[Path, str]) -> None:
    ws, uri = repro
    with tracking_uri_scope(uri):
        fraud = mlflow.pyfunc.load_model("models:/shipa-fraud@champion")
        diagnosis = mlflow.pyfunc.load_model("models:/shipa-diagnosis-pneumonia@champion")
    claims = pl.read_parquet(ws / "data/processed/fraud/dataset.parquet").filter(pl.col("split") == "test")
    expected = pl.read_parquet(ws / "models/fraud/eval/predictions.parquet")
    scores = fraud.predict(claims.drop("label", "split").to_pandas())["probability"].to_numpy()
    # The pyfunc (pandas in) against the evaluate stage: two code paths over a float32 network.
    np.testing.assert_allclose(scores, expected["score_model"].to_numpy(), rtol=1e-5, atol=1e-6)

    studies = pl.read_parquet(ws / "data/processed/diagnosis/dataset.parquet").filter(pl.col("split") == "test")
    raw = [c for c in studies.columns if c.startswith("raw_")]
    rows = studies.select("image_path", *raw).rename({c: c.removeprefix("raw_") for c in raw})
    rows = rows.with_columns(pl.col("image_path").map_elements(lambda p: str(ws / p), return_dtype=pl.String))
    probs = diagnosis.predict(rows.to_pandas())["probability"].to_numpy()
    predictions = pl.read_parquet(ws / "models/diagnosis/eval/predictions.parquet")
    assert predictions["study_id"].to_list() == studies["study_id"].to_list()
    np.testing.assert_allclose(probs, predictions["probability_fused"].to_numpy(), atol=1e-5)


def test_no_iin_name_or_phone_in_the_mlflow_store(repro: tuple[Path, str]) -> None:
    ws, uri = repro
    iins, names, phones = set(), set(), set()
    for line in (ws / "data/raw/fhir/Patient.ndjson").read_bytes().splitlines():
        try:
            patient = json.loads(line)
        except json.JSONDecodeError:
            continue
        iins |= {i["value"] for i in patient.get("identifier", []) if i.get("system") == IIN_SYSTEM}
        for name in patient.get("name", []):
            names |= {n for n in [name.get("family", ""), *name.get("given", [])] if len(n) >= 5}
        phones |= {t["value"] for t in patient.get("telecom", []) if t.get("system") == "phone"}
    store = Path(uri.removeprefix("sqlite:///")).parent
    files = [f for f in store.rglob("*") if f.is_file()]
    assert any(f.name == "model_card.md" for f in files), "the store should hold the registered models' artifacts"
    digits = re.compile(rb"\d{12}")
    encoded_names = [n.encode() for n in names]
    for f in files:
        data = f.read_bytes()
        assert not {m.decode() for m in digits.findall(data)} & iins, f"an IIN reached {f}"
        assert not [n for n in encoded_names if n in data], f"a patient name reached {f}"
        assert not [p for p in phones if p.encode() in data], f"a phone number reached {f}"
