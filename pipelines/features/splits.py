"""Patient-grouped, stratified, seeded splits, or splits taken from a given file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipelines.errors import InputError

SPLITS = ("train", "val", "test")


def grouped_split(patient_ids: pl.Series, labels: pl.Series, *, val: float, test: float, seed: int) -> dict[str, str]:
    """Assign each patient to train/val/test, stratified by whether the patient has any positive sample.

    Every sample of a patient lands in the same split, so no patient's images leak across splits.

    Args:
        patient_ids: patient id per sample.
        labels: 0/1 label per sample.
        val: share of patients for validation.
        test: share of patients for test.
        seed: the split's seed.

    Returns:
        patient id -> split name.
    """
    per_patient = (
        pl.DataFrame({"patient_id": patient_ids, "label": labels})
        .group_by("patient_id")
        .agg(pl.col("label").max())
        .sort("patient_id")  # group_by order is not deterministic
    )
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for stratum in (0, 1):
        ids = per_patient.filter(pl.col("label") == stratum)["patient_id"].to_list()
        order = rng.permutation(len(ids))
        n_test = round(len(ids) * test)
        n_val = round(len(ids) * val)
        for rank, idx in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            assignment[ids[idx]] = split
    return assignment


def read_split_file(path: Path) -> dict[str, str]:
    """Read a CSV of ``patient_id,split`` (pseudonymous patient ids) and check every split name.

    Raises:
        InputError: missing file or columns, an unknown split name, or a patient listed twice.
    """
    if not path.exists():
        raise InputError(f"{path}: split file not found")
    df = pl.read_csv(path, schema_overrides={"patient_id": pl.String, "split": pl.String})
    missing = {"patient_id", "split"} - set(df.columns)
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    bad = df.filter(~pl.col("split").is_in(SPLITS))
    if bad.height:
        row = bad.row(0, named=True)
        raise InputError(f"{path}: patient {row['patient_id']}: split '{row['split']}' is not one of {SPLITS}")
    dup = df.filter(pl.col("patient_id").is_duplicated())
    if dup.height:
        raise InputError(f"{path}: patient {dup['patient_id'][0]} is listed more than once")
    return dict(zip(df["patient_id"].to_list(), df["split"].to_list(), strict=True))
