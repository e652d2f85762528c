"""The CUDA path (bf16 autocast, channels-last, pinned non-blocking copies); skipped without a GPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.modeling.engine import load_model, predict, train
from pipelines.modeling.options import TrainOptions

pytestmark = pytest.mark.gpu


def test_cuda_training_uses_bf16_and_predicts_its_validation_output(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, out_dir: Path
) -> None:
    options = dataclasses.replace(tiny_options, precision="auto", epochs=2)
    result = train(options, study_table, ehr_columns=ehr_columns, out_dir=out_dir, device="auto", seed=0)
    assert result.device.startswith("cuda")
    assert result.precision == "bf16" and result.channels_last
    model, meta = load_model(out_dir, device="cuda")
    val = study_table[study_table["split"] == "val"]
    saved = pd.read_csv(out_dir / "val_predictions.csv")["probability"].to_numpy()
    np.testing.assert_allclose(predict(model, meta, val), saved, rtol=0, atol=1e-3)
