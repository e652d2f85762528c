"""A small synthetic study table in the ``features`` contract, for smoke runs, tests and benchmarks.

Positive studies carry a bright, blurred blob (an "opacity") somewhere in one lung field of a noisy chest-like
background, and two of the EHR features shift with the label, so both branches of the fusion model have
something to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

EHR_COLUMNS: tuple[str, ...] = ("ehr_temperature", "ehr_crp", "ehr_age", "miss_crp")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    lungs = np.exp(-(((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2)) + np.exp(
        -(((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2)
    )
    image: np.ndarray = 0.6 - 0.35 * lungs + rng.normal(0.0, 0.08, (size, size))
    return image


def _blob(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx = rng.choice([0.3, 0.7]) + rng.uniform(-0.08, 0.08)
    cy = rng.uniform(0.3, 0.7)
    radius = rng.uniform(0.06, 0.12)
    blob: np.ndarray = strength * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
    return blob


def make_study_table(
    out_dir: Path,
    *,
    n: int = 48,
    size: int = 32,
    seed: int = 0,
    positive_rate: float = 0.4,
    blob_strength: float = 0.35,
    val_share: float = 0.2,
    test_share: float = 0.2,
) -> pd.DataFrame:
    """Write ``n`` float16 ``.npy`` images under ``out_dir/images`` and return their study table.

    Args:
        out_dir: directory for the images (created).
        n: number of studies.
        size: image side in pixels.
        seed: generator seed; the same seed gives the same files and table.
        positive_rate: share of positive studies (exact, rounded).
        blob_strength: brightness of the positive finding (smaller is harder).
        val_share: share of studies in the ``val`` split (stratified).
        test_share: share of studies in the ``test`` split (stratified).

    Returns:
        Columns ``study_id``, ``patient_id``, ``image_path``, ``label``, ``split`` and :data:`EHR_COLUMNS`.
    """
    rng = np.random.default_rng(seed)
    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    n_pos = round(n * positive_rate)
    labels = np.array([1] * n_pos + [0] * (n - n_pos))
    rng.shuffle(labels)
    splits = np.empty(n, dtype=object)
    for value in (0, 1):
        idx = np.flatnonzero(labels == value)
        rng.shuffle(idx)
        n_val, n_test = round(len(idx) * val_share), round(len(idx) * test_share)
        splits[idx[:n_val]] = "val"
        splits[idx[n_val : n_val + n_test]] = "test"
        splits[idx[n_val + n_test :]] = "train"
    rows = []
    for i, label in enumerate(labels):
        image = _background(rng, size)
        if label:
            image = image + _blob(rng, size, blob_strength)
        path = image_dir / f"study-{i:05d}.npy"
        np.save(path, np.clip(image, 0.0, 1.0).astype(np.float16))
        crp_missing = rng.random() < 0.2
        rows.append(
            {
                "study_id": f"study-{i:05d}",
                "patient_id": f"patient-{i:05d}",
                "image_path": str(path),
                "label": int(label),
                "split": str(splits[i]),
                "ehr_temperature": float(rng.normal(0.8 * label, 1.0)),
                "ehr_crp": 0.0 if crp_missing else float(rng.normal(0.6 * label, 1.0)),
                "ehr_age": float(rng.normal(0.0, 1.0)),
                "miss_crp": float(crp_missing),
            }
        )
    table = pd.DataFrame(rows)
    for column in EHR_COLUMNS:
        table[column] = table[column].astype(np.float32)
    return table
