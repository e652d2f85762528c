"""Shared helpers of the tracking tests: git with a fixed identity, a dvc.lock, a pyfunc, eval reports."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from pipelines.evaluation.metrics_report import evaluate_binary
from pipelines.imaging.domain import InputDomain

TEST_DATA_MD5 = "0cc175b9c0f1b6a831c399e269772661"

# The MLmodel metadata of a diagnosis version with a recorded input domain (the gate requires one).
DIAGNOSIS_METADATA = {
    "input_domain": InputDomain(
        modalities=("CR", "DX"), body_parts=("CHEST",), view_positions=("AP", "PA"), age_years=(1.0, 100.0)
    ).to_dict(),
    # What the register stage records of an image model's OOD score (pipelines.stages.register.diagnosis).
    "image_ood": {"threshold": 512.5, "val": {"n": 237, "refused": 0}, "test": {"n": 316, "refused": 1}},
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity; returns stdout."""
    cmd = ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=test@example.org", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


DVC_LOCK = """\
schema: '2.0'
stages:
  features:
    cmd: shipa features
    deps:
    - path: data/interim/tables
      hash: md5
      md5: 3f1c6e0b8a2d4f5e6a7b8c9d0e1f2a3b.dir
      size: 1234
      nfiles: 4
    - path: pipelines/features
      hash: md5
      md5: 9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d.dir
  train@diagnosis:
    cmd: shipa train diagnosis
    deps:
    - path: data/processed/diagnosis
      hash: md5
      md5: 7215ee9c7d9dc229d2921a40e899ec5f.dir
    - path: pipelines/modeling/engine.py
      hash: md5
      md5: 5d41402abc4b2a76b9719d911017c592
"""


class DoublingModel(PythonModel):
    """A trivial pyfunc: score = 2 * x."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return model_input[["x"]] * 2.0


def make_report(quality: float, seed: int = 0, n: int = 240, test_data_md5: str = TEST_DATA_MD5) -> dict[str, Any]:
    """A real ``evaluate_binary`` report on a fixed synthetic test set; higher ``quality`` ranks better."""
    rng = np.random.default_rng(123)
    y = (rng.random(n) < 0.4).astype(int)
    sex = np.where(rng.random(n) < 0.5, "female", "male")
    region = np.where(rng.random(n) < 0.5, "Astana", "Almaty")
    noise = np.random.default_rng(seed).normal(0, 1, n)
    scores = 1 / (1 + np.exp(-(quality * (2 * y - 1) + noise)))
    report = evaluate_binary(
        y,
        scores,
        threshold=0.5,
        subgroups={"sex": sex, "region": region},
        n_boot=50,
        seed=0,
        min_group_size=20,
    )
    report["test_data_md5"] = test_data_md5
    return report
