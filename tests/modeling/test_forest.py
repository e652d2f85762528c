"""The flattened isolation forest scores exactly like scikit-learn's, at every batch size."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from pipelines.modeling.forest import SMALL_BATCH, FlatForest


@pytest.mark.parametrize(
    ("max_samples", "max_features"),
    [(256, 1.0), (64, 0.5), (2, 1.0)],
    ids=["default", "feature-subsampling", "two-samples"],
)
def test_flat_forest_matches_score_samples(max_samples: int, max_features: float) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1500, 12))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the trees' learned branch
    x[:5] *= 40  # a few clear outliers
    forest = IsolationForest(n_estimators=60, max_samples=max_samples, max_features=max_features, random_state=3).fit(x)
    flat = FlatForest(forest)
    complete = x[~np.isnan(x).any(axis=1)]  # the walk without missing values takes its own, shorter path
    assert len(complete) > 37
    for rows in (x[:1], x[:37], complete[:1], complete[:37], x[: SMALL_BATCH + 10]):
        np.testing.assert_allclose(flat.score_samples(rows), forest.score_samples(rows), rtol=0, atol=1e-12)
    assert flat.score_samples(x[:0]).shape == (0,)


def test_flat_forest_names_a_wrong_shape() -> None:
    forest = IsolationForest(n_estimators=5, random_state=0).fit(np.zeros((20, 3)) + np.arange(3))
    with pytest.raises(ValueError, match="3 features, got shape \\(4, 2\\)"):
        FlatForest(forest).score_samples(np.zeros((4, 2)))
