"""MONAI dictionary transforms and the study dataset of the diagnosis model.

The deterministic chain (load, channel first, scale, resize) runs once per image and is cached; the random
chain (flip, rotate, zoom) runs on training items only, seeded per (run seed, epoch, index) so that an
epoch's batches do not depend on worker processes, ranks or on whether the run was resumed.
:func:`preprocess_image` is the deterministic chain itself, for serving.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    RandFlipd,
    Randomizable,
    RandRotated,
    RandZoomd,
    Resized,
    ScaleIntensityd,
)
from torch.utils.data import Dataset, Sampler

IMAGE = "image"
EHR = "ehr"
LABEL = "label"


def load_image_array(value: np.ndarray | str | Path) -> np.ndarray:
    """A 2-D float32 image from an array or a ``.npy`` path (loaded without pickle: a file cannot run code).

    Raises:
        ValueError: the array is not 2-D.
    """
    if isinstance(value, str | Path):
        value = np.load(value, allow_pickle=False)
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D image array, got shape {array.shape}")
    return array


class LoadNumpyd(MapTransform):
    """Dictionary transform of :func:`load_image_array`: path or array in, 2-D float32 array out."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        """Store the keys to load."""
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with each key's path replaced by its float32 array."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_image_array(d[key])
        return d


def deterministic_transforms(size: int, keys: KeysCollection = IMAGE) -> Compose:
    """The cached part of the chain: load, add a channel, scale to [0, 1], resize to ``size`` x ``size``.

    The result is a plain ``torch.Tensor`` (no MetaTensor), shape ``(1, size, size)``, float32.
    """
    return Compose(
        [
            LoadNumpyd(keys),
            EnsureChannelFirstd(keys, channel_dim="no_channel"),
            ScaleIntensityd(keys, minv=0.0, maxv=1.0),
            Resized(keys, spatial_size=(size, size), mode="area"),
            EnsureTyped(keys, dtype=torch.float32, track_meta=False),
        ]
    )


def augment_transforms(keys: KeysCollection = IMAGE) -> Compose:
    """The random part, for training images only: flip left-right, rotate up to 15 degrees, zoom 0.9-1.1."""
    return Compose(
        [
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandRotated(keys, range_x=0.26, prob=0.5, padding_mode="border"),
            RandZoomd(keys, prob=0.5, min_zoom=0.9, max_zoom=1.1, padding_mode="edge"),
            EnsureTyped(keys, dtype=torch.float32, track_meta=False),
        ]
    )


@contextmanager
def plain_tensors() -> Iterator[None]:
    """Switch MONAI's MetaTensor tracking off inside the block (the hot loop needs no metadata)."""
    from monai.data import get_track_meta, set_track_meta

    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


def preprocess_image(array: np.ndarray | str | Path, size: int) -> torch.Tensor:
    """Preprocess one image exactly as training does (without augmentation).

    Args:
        array: a 2-D array (or the path of a ``.npy`` file holding one).
        size: the model's image size (``model.json`` ``image_size``).

    Returns:
        A float32 tensor of shape ``(1, size, size)``; add a batch dimension before the model.

    Raises:
        ValueError: the array is not 2-D.
    """
    image: torch.Tensor = deterministic_transforms(size)({IMAGE: load_image_array(array)})[IMAGE]
    return image


class StudyDataset(Dataset[dict[str, torch.Tensor]]):
    """One item per study: ``{"image": (1, S, S), "ehr": (n,), "label": ()}``, all float32 tensors.

    Keys are either an index (no augmentation) or ``(index, epoch)`` from :class:`EpochKeySampler`; with
    ``augment=True`` the random transforms are then seeded from ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        images: Sequence[str | Path | np.ndarray] | None,
        ehr: np.ndarray,
        labels: np.ndarray,
        *,
        image_size: int,
        augment: bool = False,
        seed: int = 0,
        cache: bool = True,
        cache_workers: int = 1,
        progress: bool = False,
    ) -> None:
        """Index the studies and, when ``cache`` is set, preprocess every image once.

        Args:
            images: ``.npy`` paths or 2-D arrays, one per study; ``None`` for an EHR-only model.
            ehr: ``(n_studies, n_ehr)`` float32 features (may have zero columns).
            labels: ``(n_studies,)`` 0/1 labels.
            image_size: side of the resized images.
            augment: apply the random transforms.
            seed: the run seed that augmentation seeds derive from.
            cache: hold the deterministic preprocessing in memory (MONAI CacheDataset).
            cache_workers: threads that fill the cache.
            progress: show a progress bar while caching.
        """
        from monai.data import CacheDataset
        from monai.data import Dataset as MonaiDataset

        self._ehr = torch.as_tensor(np.ascontiguousarray(ehr, dtype=np.float32))
        self._labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))
        if images is not None and len(images) != len(self._labels):
            raise ValueError("images and labels differ in length")
        if len(self._ehr) != len(self._labels):
            raise ValueError("ehr and labels differ in length")
        self._seed = seed
        self._augment = augment_transforms() if augment else None
        # One generator shared by the random transforms and reseeded per item: creating a RandomState per
        # transform per item (Compose.set_random_state) cost a third of the data time.
        self._rng = np.random.RandomState(seed)
        if self._augment is not None:
            for transform in self._augment.transforms:
                if isinstance(transform, Randomizable):
                    transform.set_random_state(state=self._rng)
        self._images: Dataset[Any] | None = None
        if images is not None:
            items = [{IMAGE: p if isinstance(p, np.ndarray) else str(p)} for p in images]
            transform = deterministic_transforms(image_size)
            if cache:
                # copy_cache=False is safe: the random transforms return new tensors and never write in place.
                self._images = CacheDataset(
                    items,
                    transform,
                    cache_rate=1.0,
                    num_workers=cache_workers,
                    progress=progress,
                    copy_cache=False,
                )
            else:
                self._images = MonaiDataset(items, transform)

    def __len__(self) -> int:
        """Number of studies."""
        return len(self._labels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Return the study at ``key`` (an index, or ``(index, epoch)`` for seeded augmentation)."""
        index, epoch = key if isinstance(key, tuple) else (int(key), None)
        item = {EHR: self._ehr[index], LABEL: self._labels[index]}
        if self._images is not None:
            image = self._images[index][IMAGE]
            if self._augment is not None and epoch is not None:
                state = np.random.SeedSequence([self._seed, epoch, index]).generate_state(1)[0]
                self._rng.seed(int(state))
                image = self._augment({IMAGE: image})[IMAGE]
            item[IMAGE] = image
        return item


class EpochKeySampler(Sampler[tuple[int, int]]):
    """Wrap an index sampler so that each key carries the epoch: ``(index, epoch)``.

    The sampler lives in the main process, so the epoch reaches persistent workers and every DDP rank without
    any shared state. ``set_epoch`` is forwarded to the wrapped sampler (``DistributedSampler`` reshuffles).
    """

    def __init__(self, base: Sampler[int]) -> None:
        """Wrap ``base``."""
        self._base = base
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration yields."""
        self.epoch = epoch
        setter = getattr(self._base, "set_epoch", None)
        if setter is not None:
            setter(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Yield ``(index, epoch)`` in the wrapped sampler's order."""
        epoch = self.epoch
        return ((int(i), epoch) for i in self._base)

    def __len__(self) -> int:
        """Number of keys per epoch."""
        return len(self._base)  # type: ignore[arg-type]  # torch's Sampler declares no __len__; the wrapped ones have it
