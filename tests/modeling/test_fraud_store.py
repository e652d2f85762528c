"""The fraud model folder: equal models give equal bytes (DVC hashes them), and what is written loads back."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.ensemble import IsolationForest

from pipelines.modeling.fraud_store import FORMAT, canonical_skops, read_sklearn, write_model_dir


def _forest(seed: int = 0) -> IsolationForest:
    x = np.random.default_rng(seed).normal(size=(200, 4))
    return IsolationForest(n_estimators=5, random_state=seed).fit(x)


def test_the_same_model_gives_the_same_bytes_and_loads_back(tmp_path: Path) -> None:
    forest = _forest()
    raw_a, raw_b = sio.dumps(forest), sio.dumps(_forest())
    first = write_model_dir(tmp_path / "a", {"format": FORMAT, "kind": "t"}, sklearn_objects={"iforest": forest})
    second = write_model_dir(tmp_path / "b", {"format": FORMAT, "kind": "t"}, sklearn_objects={"iforest": _forest()})
    assert (first / "iforest.skops").read_bytes() == (second / "iforest.skops").read_bytes()
    assert canonical_skops(raw_a) == canonical_skops(raw_b)

    loaded = read_sklearn(first, "iforest")
    x = np.random.default_rng(1).normal(size=(50, 4))
    np.testing.assert_array_equal(loaded.score_samples(x), forest.score_samples(x))  # same trees, same arithmetic
    with zipfile.ZipFile(first / "iforest.skops") as zf:
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in zf.infolist())
        assert "schema.json" in zf.namelist()


def test_another_model_gives_other_bytes() -> None:
    assert canonical_skops(sio.dumps(_forest(0))) != canonical_skops(sio.dumps(_forest(1)))
