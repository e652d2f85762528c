"""Tiny synthetic study tables (48 images of 32x32 with a blob on positives, 4 EHR columns)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.modeling.options import TrainOptions
from pipelines.modeling.synthetic import EHR_COLUMNS, make_study_table


@pytest.fixture(scope="session")
def study_table(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """48 studies (train/val/test), images 32x32 on disk; shared by the module's tests, never modified."""
    return make_study_table(tmp_path_factory.mktemp("studies"), n=48, size=32, seed=0)


@pytest.fixture
def ehr_columns() -> list[str]:
    """The synthetic table's EHR feature and missingness columns."""
    return list(EHR_COLUMNS)


@pytest.fixture
def tiny_options() -> TrainOptions:
    """Fast, fully deterministic CPU options: fp32, one thread, augmentation and dropout on."""
    return TrainOptions(
        network="densenet-tiny",
        mode="fused",
        image_size=32,
        epochs=3,
        batch_size=8,
        eval_batch_size=16,
        lr=2e-3,
        dropout=0.1,
        augment=True,
        num_threads=1,
        precision="fp32",
    )


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A fresh output directory."""
    return tmp_path / "model"
