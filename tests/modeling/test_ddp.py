"""DDP on two CPU processes (gloo), launched by torchrun exactly as on a multi-GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipelines.modeling.distributed import context_from_env, state_digest
from pipelines.modeling.engine import load_model, predict
from pipelines.modeling.synthetic import make_study_table

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # three Python start-ups (torchrun and two ranks): about 15 s on two cores
def test_torchrun_two_cpu_ranks_train_in_sync(tmp_path: Path) -> None:
    table = make_study_table(tmp_path / "data", n=64, size=32, seed=1)
    table_path = tmp_path / "studies.parquet"
    table.to_parquet(table_path)
    options = {"image_size": 32, "epochs": 4, "batch_size": 8, "lr": 3e-3, "dropout": 0.0, "augment": False}
    options.update({"num_threads": 1, "precision": "fp32"})
    options_path = tmp_path / "options.json"
    options_path.write_text(json.dumps(options))
    out_dir = tmp_path / "model"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    cmd += ["-m", "pipelines.modeling.ddp", "--table", str(table_path), "--out-dir", str(out_dir)]
    cmd += ["--options", str(options_path), "--seed", "4", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads((out_dir / "ddp.json").read_text())
    assert report["world_size"] == 2
    assert report["in_sync"] and len(set(report["state_digests"])) == 1
    history = json.loads((out_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # Rank 0's final weights are the checkpoint's; the saved model predicts the gathered validation output.
    last = torch.load(out_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state_digest(last) == report["state_digests"][0]
    model, meta = load_model(out_dir)
    val = table[table["split"] == "val"]
    saved = pd.read_csv(out_dir / "val_predictions.csv")
    assert saved["study_id"].tolist() == val["study_id"].tolist()
    assert abs(predict(model, meta, val) - saved["probability"].to_numpy()).max() < 1e-6


def test_context_from_env_reads_torchrun_variables() -> None:
    assert context_from_env({}) is None
    ctx = context_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert ctx is not None and (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main) == (1, 2, 1, False)
