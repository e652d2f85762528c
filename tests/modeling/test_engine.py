"""The training engine: fixed-seed regression, exact resume, artifacts, load/predict, input errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score as roc_auc

from pipelines.modeling.engine import load_model, predict, predict_arrays, resolve_device, train
from pipelines.modeling.errors import CheckpointMismatchError, InputError
from pipelines.modeling.history import EpochRecord
from pipelines.modeling.options import ModelMeta, TrainOptions

# Recorded once from this engine (torch 2.13 CPU, fp32, one thread), as MONAI's test_integration_determinism
# does: a change to the data pipeline, seeding, model, loss or optimizer moves these values.
EXPECTED_TRAIN_LOSS = [0.845305, 0.81443, 0.80331]
EXPECTED_VAL_LOSS = [0.801538, 0.798837, 0.798241]
EXPECTED_VAL_AUROC = [0.916667, 0.916667, 0.958333]


class _Killed(Exception):
    """Stands for the process dying right after an epoch's checkpoint was written."""


def _kill_after(epoch: int):
    def callback(record: EpochRecord) -> None:
        if record.epoch == epoch:
            raise _Killed

    return callback


def test_fixed_seed_regression_of_first_epochs(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, out_dir: Path
) -> None:
    result = train(tiny_options, study_table, ehr_columns=ehr_columns, out_dir=out_dir, device="cpu", seed=7)
    losses = [r.train_loss for r in result.history]
    aurocs = [r.val_auroc for r in result.history]
    np.testing.assert_allclose(losses, EXPECTED_TRAIN_LOSS, rtol=0, atol=1e-4)
    np.testing.assert_allclose([r.val_loss for r in result.history], EXPECTED_VAL_LOSS, rtol=0, atol=1e-4)
    np.testing.assert_allclose(aurocs, EXPECTED_VAL_AUROC, rtol=0, atol=1e-4)


def test_resume_after_kill_gives_the_same_weights_as_an_uninterrupted_run(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, tmp_path: Path
) -> None:
    straight = train(
        tiny_options,
        study_table,
        ehr_columns=ehr_columns,
        out_dir=tmp_path / "straight",
        device="cpu",
        seed=3,
    )

    with pytest.raises(_Killed):
        train(
            tiny_options,
            study_table,
            ehr_columns=ehr_columns,
            out_dir=tmp_path / "resumed",
            device="cpu",
            seed=3,
            on_epoch_end=_kill_after(1),
        )
    assert not (tmp_path / "resumed" / "model.pt").exists()
    # A new process would start with fresh generators: scramble them so only the checkpoint can restore them.
    torch.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)
    resumed = train(
        tiny_options, study_table, ehr_columns=ehr_columns, out_dir=tmp_path / "resumed", device="cpu", seed=3
    )

    assert resumed.resumed_from_epoch == 1
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in straight.history]
    last_a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)["model"]
    last_b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)["model"]
    best_a = torch.load(straight.model_path, weights_only=True)
    best_b = torch.load(resumed.model_path, weights_only=True)
    for a, b in ((last_a, last_b), (best_a, best_b)):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name


_KILLED_RUN = """
import os, signal, sys
from pathlib import Path
import pandas as pd
from pipelines.modeling.engine import train
from pipelines.modeling.options import TrainOptions

options = TrainOptions(**{options!r})
table = pd.read_parquet(sys.argv[1])
def die(record):
    if record.epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)
out = Path(sys.argv[2])
train(options, table, ehr_columns={columns!r}, out_dir=out, device="cpu", seed=3, on_epoch_end=die)
"""


@pytest.mark.slow  # a second Python process that imports torch and MONAI
def test_resume_after_a_real_sigkill(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, tmp_path: Path
) -> None:
    options = dataclasses.replace(tiny_options, epochs=3)
    table_path = tmp_path / "studies.parquet"
    study_table.to_parquet(table_path)
    script = _KILLED_RUN.format(options=options.to_dict(), columns=ehr_columns)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", script, str(table_path), str(tmp_path / "killed")], env=env, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    assert not list((tmp_path / "killed" / "checkpoints").glob("*.tmp"))

    resumed = train(options, study_table, ehr_columns=ehr_columns, out_dir=tmp_path / "killed", device="cpu", seed=3)
    straight = train(options, study_table, ehr_columns=ehr_columns, out_dir=tmp_path / "straight", device="cpu", seed=3)
    assert resumed.resumed_from_epoch == 2
    a = torch.load(straight.model_path, weights_only=True)
    b = torch.load(resumed.model_path, weights_only=True)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_weights_do_not_depend_on_the_number_of_loader_workers(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, tmp_path: Path
) -> None:
    # Augmentation is seeded per (seed, epoch, index), so worker processes cannot change what is drawn.
    options = dataclasses.replace(tiny_options, epochs=2)
    inline = train(options, study_table, ehr_columns=ehr_columns, out_dir=tmp_path / "w0", device="cpu", seed=2)
    workers = dataclasses.replace(options, num_workers=2)
    forked = train(workers, study_table, ehr_columns=ehr_columns, out_dir=tmp_path / "w2", device="cpu", seed=2)
    a = torch.load(inline.model_path, weights_only=True)
    b = torch.load(forked.model_path, weights_only=True)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_the_same_seed_twice_gives_bit_identical_weights_history_and_predictions(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, tmp_path: Path
) -> None:
    # What the README promises: the same inputs, seed, machine and library builds give identical outputs. Both
    # runs are the same computation in one process, so they are compared bit for bit (other machines' kernels
    # round differently, which is why cross-machine numbers are only equal within a tolerance).
    options = dataclasses.replace(tiny_options, epochs=2)
    runs = []
    for i, name in enumerate(("a", "b")):
        # Other global generator states before each run: only ``seed`` may decide what is drawn.
        torch.manual_seed(1000 + i)
        np.random.seed(2000 + i)
        random.seed(3000 + i)
        runs.append(train(options, study_table, ehr_columns=ehr_columns, out_dir=tmp_path / name, device="cpu", seed=4))
    a, b = runs
    assert [dataclasses.replace(r, seconds=0.0, samples_per_s=0.0) for r in a.history] == [
        dataclasses.replace(r, seconds=0.0, samples_per_s=0.0) for r in b.history
    ]
    wa = torch.load(a.model_path, weights_only=True)
    wb = torch.load(b.model_path, weights_only=True)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    val = study_table[study_table["split"] == "val"]
    model_a, meta_a = load_model(tmp_path / "a")
    model_b, meta_b = load_model(tmp_path / "b")
    np.testing.assert_array_equal(predict(model_a, meta_a, val), predict(model_b, meta_b, val))
    assert (tmp_path / "a" / "val_predictions.csv").read_bytes() == (
        tmp_path / "b" / "val_predictions.csv"
    ).read_bytes()


def test_a_different_seed_gives_different_weights(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, tmp_path: Path
) -> None:
    options = dataclasses.replace(tiny_options, epochs=1)
    a = train(options, study_table, ehr_columns=ehr_columns, out_dir=tmp_path / "a", device="cpu", seed=1)
    b = train(options, study_table, ehr_columns=ehr_columns, out_dir=tmp_path / "b", device="cpu", seed=2)
    wa = torch.load(a.model_path, weights_only=True)
    wb = torch.load(b.model_path, weights_only=True)
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoint_of_other_options_is_refused_unless_resume_is_off(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, out_dir: Path
) -> None:
    options = dataclasses.replace(tiny_options, epochs=1)
    train(options, study_table, ehr_columns=ehr_columns, out_dir=out_dir, device="cpu", seed=1)
    other = dataclasses.replace(options, lr=1e-3)
    with pytest.raises(CheckpointMismatchError, match=r"last\.pt"):
        train(other, study_table, ehr_columns=ehr_columns, out_dir=out_dir, device="cpu", seed=1)
    result = train(other, study_table, ehr_columns=ehr_columns, out_dir=out_dir, device="cpu", seed=1, resume=False)
    assert result.resumed_from_epoch == 0
    assert len(result.history) == 1


def test_artifacts_history_and_predict(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, out_dir: Path
) -> None:
    result = train(tiny_options, study_table, ehr_columns=ehr_columns, out_dir=out_dir, device="cpu", seed=5)

    history = json.loads((out_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    # No wall-clock fields: DVC hashes these files, and the same training must give the same bytes.
    assert set(history[0]) == {"epoch", "train_loss", "val_loss", "val_auroc", "lr"}
    with (out_dir / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["val_auroc"]) for r in rows] == [r.val_auroc for r in result.history]
    assert history[0]["lr"] == pytest.approx(tiny_options.lr)
    assert history[1]["lr"] < history[0]["lr"]  # cosine schedule

    meta = ModelMeta.model_validate_json((out_dir / "model.json").read_text())
    assert meta.ehr_columns == ehr_columns
    assert (meta.network, meta.mode, meta.image_size) == ("densenet-tiny", "fused", 32)
    assert meta.best_epoch == result.best_epoch
    assert meta.thresholds["decision"] == 0.5

    model, loaded_meta = load_model(out_dir)
    assert loaded_meta == meta
    assert not model.training
    val = study_table[study_table["split"] == "val"]
    first = predict(model, meta, val, batch_size=3)
    second = predict(model, meta, val.iloc[::-1], batch_size=64)[::-1]
    # The same call again is the same computation: bit for bit.
    np.testing.assert_array_equal(first, predict(model, meta, val, batch_size=3))
    # Other batch sizes are other matrix products, whose float32 rounding depends on the CPU's kernels.
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)

    # The in-memory path the service uses gives the same numbers from arrays (in one batch of 256, not 3: equal up
    # to float32 rounding, which differed by one ulp on another machine).
    arrays = [np.load(path) for path in val["image_path"]]
    in_memory = predict_arrays(model, meta, arrays, val[ehr_columns].to_numpy())
    np.testing.assert_allclose(in_memory, first, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="shape"):
        predict_arrays(model, meta, arrays, val[ehr_columns[:2]].to_numpy())

    saved = pd.read_csv(out_dir / "val_predictions.csv")
    assert saved["study_id"].tolist() == val["study_id"].tolist()
    np.testing.assert_allclose(first, saved["probability"].to_numpy(), rtol=0, atol=1e-6)
    assert roc_auc(val["label"], first) == pytest.approx(result.best_val_auroc, abs=1e-9)


@pytest.mark.parametrize("mode", ["image", "ehr"])
def test_single_branch_modes_train(
    mode: str, study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, out_dir: Path
) -> None:
    options = dataclasses.replace(tiny_options, mode=mode, epochs=2)
    table = study_table.drop(columns=["image_path"]) if mode == "ehr" else study_table
    result = train(options, table, ehr_columns=ehr_columns, out_dir=out_dir, device="cpu", seed=0)
    model, meta = load_model(out_dir)
    assert meta.mode == mode
    assert meta.ehr_columns == (ehr_columns if mode == "ehr" else [])
    assert len(result.history) == 2
    probs = predict(model, meta, table[table["split"] == "test"])
    assert probs.shape == ((table["split"] == "test").sum(),)
    assert ((probs > 0) & (probs < 1)).all()


def test_a_pyarrow_table_is_accepted(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, out_dir: Path
) -> None:
    import pyarrow as pa

    options = dataclasses.replace(tiny_options, mode="ehr", epochs=1)
    result = train(options, pa.Table.from_pandas(study_table), ehr_columns=ehr_columns, out_dir=out_dir, seed=0)
    model, meta = load_model(out_dir)
    probs = predict(model, meta, pa.Table.from_pandas(study_table[study_table["split"] == "val"]))
    assert roc_auc(study_table.loc[study_table["split"] == "val", "label"], probs) == pytest.approx(
        result.best_val_auroc
    )


@pytest.mark.slow  # torch.compile takes 15-20 s even for the EHR MLP on two shared cores
def test_compiled_training_saves_plain_weights_that_load_uncompiled(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, out_dir: Path
) -> None:
    options = dataclasses.replace(tiny_options, mode="ehr", epochs=2, compile=True)
    result = train(options, study_table, ehr_columns=ehr_columns, out_dir=out_dir, device="cpu", seed=0)
    weights = torch.load(result.model_path, weights_only=True)
    assert not any(name.startswith("_orig_mod") for name in weights)
    model, meta = load_model(out_dir)
    val = study_table[study_table["split"] == "val"]
    saved = pd.read_csv(out_dir / "val_predictions.csv")["probability"].to_numpy()
    np.testing.assert_allclose(predict(model, meta, val), saved, rtol=0, atol=1e-5)


def test_early_stopping_stops_after_patience_epochs_without_improvement(
    study_table: pd.DataFrame, ehr_columns: list[str], tiny_options: TrainOptions, out_dir: Path
) -> None:
    # lr 0 keeps the weights (and so the AUROC) fixed: epoch 1 is the best and patience 2 ends at epoch 3.
    options = dataclasses.replace(tiny_options, mode="ehr", epochs=10, patience=2, lr=1e-12, scheduler="none")
    result = train(options, study_table, ehr_columns=ehr_columns, out_dir=out_dir, device="cpu", seed=0)
    assert result.stopped_early
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert result.best_epoch == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop(columns=["ehr_crp"]), "missing column"),
        (
            lambda t: t.assign(label=t["label"].where(t["split"] != "val", 0)),
            "split 'val' needs studies of both",
        ),
        (lambda t: t.assign(ehr_age=np.nan), "missing or infinite"),
        (lambda t: t.assign(label=2), "only 0 and 1"),
    ],
)
def test_unusable_tables_are_refused_with_a_named_reason(
    mutate,
    message: str,
    study_table: pd.DataFrame,
    ehr_columns: list[str],
    tiny_options: TrainOptions,
    out_dir: Path,
) -> None:
    with pytest.raises(InputError, match=message):
        train(tiny_options, mutate(study_table), ehr_columns=ehr_columns, out_dir=out_dir, device="cpu")
    assert not out_dir.exists()


def test_auto_device_is_cpu_without_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
