"""The MONAI transform chains, the cached dataset, the epoch-keyed sampler and serving preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import MetaTensor
from torch.utils.data import DistributedSampler

from pipelines.modeling.data import EpochKeySampler, StudyDataset, preprocess_image


def _dataset(table: pd.DataFrame, *, augment: bool, seed: int = 0, cache: bool = True) -> StudyDataset:
    return StudyDataset(
        table["image_path"].tolist(),
        table[["ehr_temperature", "ehr_crp"]].to_numpy(np.float32),
        table["label"].to_numpy(),
        image_size=16,
        augment=augment,
        seed=seed,
        cache=cache,
    )


def test_preprocess_image_is_the_deterministic_chain_and_gives_plain_tensors(
    study_table: pd.DataFrame,
) -> None:
    dataset = _dataset(study_table, augment=False)
    array = np.load(study_table["image_path"].iloc[3])
    served = preprocess_image(array, 16)
    assert type(served) is torch.Tensor and not isinstance(served, MetaTensor)
    assert served.shape == (1, 16, 16) and served.dtype == torch.float32
    assert float(served.min()) >= 0.0 and float(served.max()) <= 1.0 + 1e-6
    assert torch.equal(served, dataset[3]["image"])
    assert torch.equal(served, preprocess_image(study_table["image_path"].iloc[3], 16))


def test_items_carry_ehr_and_label(study_table: pd.DataFrame) -> None:
    item = _dataset(study_table, augment=False, cache=False)[5]
    row = study_table.iloc[5]
    assert item["label"].item() == row["label"]
    np.testing.assert_array_equal(item["ehr"].numpy(), row[["ehr_temperature", "ehr_crp"]].to_numpy(np.float32))
    assert type(item["image"]) is torch.Tensor


def test_augmentation_depends_only_on_seed_epoch_and_index(study_table: pd.DataFrame) -> None:
    a = _dataset(study_table, augment=True, seed=1)
    b = _dataset(study_table, augment=True, seed=1)
    plain = _dataset(study_table, augment=False)
    # Same key, any order of access, any instance: the same augmented image.
    first = a[(4, 2)]["image"]
    _ = b[(9, 0)]
    assert torch.equal(first, b[(4, 2)]["image"])
    assert torch.equal(first, a[(4, 2)]["image"])
    # Other epochs draw other augmentations, and the cache keeps the unaugmented image.
    variants = [a[(4, epoch)]["image"] for epoch in range(6)]
    assert any(not torch.equal(variants[0], v) for v in variants[1:])
    assert torch.equal(a[4]["image"], plain[4]["image"])


def test_epoch_key_sampler_reshuffles_by_epoch_and_shards_by_rank(study_table: pd.DataFrame) -> None:
    dataset = _dataset(study_table, augment=False, cache=False)
    ranks = [
        EpochKeySampler(DistributedSampler(dataset, num_replicas=2, rank=r, shuffle=True, seed=3, drop_last=True))
        for r in (0, 1)
    ]
    for sampler in ranks:
        sampler.set_epoch(1)
    keys = [list(s) for s in ranks]
    assert all(epoch == 1 for part in keys for _, epoch in part)
    indices = [i for part in keys for i, _ in part]
    assert len(indices) == len(set(indices)) == len(dataset) // 2 * 2
    ranks[0].set_epoch(2)
    assert [i for i, _ in ranks[0]] != [i for i, _ in keys[0]]


def test_non_2d_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        preprocess_image(np.zeros((2, 8, 8), dtype=np.float32), 8)
