"""The image OOD score: Mahalanobis distance to the training classes, the stated threshold rule, the file format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import InputError
from pipelines.evaluation.ood import ImageOOD, _ledoit_wolf, choose_threshold, fit_ood


def _gaussian(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    return rng.normal(size=(n, d)) + shift


def test_the_score_is_the_squared_distance_to_the_nearest_class_mean() -> None:
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    precision = np.diag([1.0, 4.0])  # covariance diag(1, 0.25)
    ood = ImageOOD(means, precision, threshold=9.0)
    scores = ood.scores([[0.0, 0.0], [1.0, 0.5], [9.0, 0.0], [5.0, 0.0]])
    np.testing.assert_allclose(scores, [0.0, 1.0 + 4 * 0.25, 1.0, 25.0])
    assert ood.refuses([[5.0, 0.0], [0.0, 1.0]]).tolist() == [True, False]
    with pytest.raises(InputError, match=r"embeddings of shape \(3,\), expected \(n, 2\)"):
        ood.scores([1.0, 2.0, 3.0])


def test_ledoit_wolf_matches_scikit_learn() -> None:
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 25)) @ rng.normal(size=(25, 25))
    centered = x - x.mean(axis=0)
    ours, shrinkage = _ledoit_wolf(centered)
    theirs = LedoitWolf(assume_centered=True).fit(centered)
    np.testing.assert_allclose(ours, theirs.covariance_, rtol=1e-9, atol=1e-9)
    assert shrinkage == pytest.approx(theirs.shrinkage_)


def test_the_threshold_rule() -> None:
    val = np.arange(1.0, 201.0)  # 200 validation scores 1..200
    # alpha = 0.005: rank ceil(201 * 0.995) = 200 -> the largest score
    alone = choose_threshold(val, None, max_false_refusal=0.01, min_catch=0.95)
    assert (alone.threshold, alone.t_in, alone.t_out, alone.catch_target_met) == (200.0, 200.0, None, None)
    # a larger budget: rank ceil(201 * 0.95) = 191
    assert choose_threshold(val, [], max_false_refusal=0.1, min_catch=0.95).t_in == 191.0
    # calibration scores far above: the geometric mean of t_in and their 5th percentile
    far = np.full(20, 800.0)
    chosen = choose_threshold(val, far, max_false_refusal=0.01, min_catch=0.95)
    assert chosen.t_out == 800.0 and chosen.threshold == pytest.approx(math.sqrt(200.0 * 800.0))
    assert chosen.catch_target_met is True
    # calibration scores overlapping: t_in wins (patients first), and the summary says the target was missed
    overlap = np.concatenate([np.full(5, 50.0), np.full(15, 900.0)])
    missed = choose_threshold(val, overlap, max_false_refusal=0.01, min_catch=0.95)
    assert missed.threshold == 200.0 and missed.catch_target_met is False
    with pytest.raises(InputError, match="needs validation images"):
        choose_threshold([], far, max_false_refusal=0.01, min_catch=0.95)


def test_fit_refuses_shifted_data_and_keeps_in_distribution_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    d = 30
    train = np.concatenate([_gaussian(rng, 150, d), _gaussian(rng, 150, d, shift=1.0)])
    labels = np.repeat([0, 1], 150)
    val = np.concatenate([_gaussian(rng, 100, d), _gaussian(rng, 100, d, shift=1.0)])
    calibration = _gaussian(rng, 40, d, shift=4.0)
    ood = fit_ood(train, labels, val, calibration, calibration_names=["b (CT)", "a (MR)"])
    test_in = np.concatenate([_gaussian(rng, 500, d), _gaussian(rng, 500, d, shift=1.0)])
    reported_out = _gaussian(rng, 200, d, shift=-4.0)  # other images than the calibration ones
    assert ood.refuses(test_in).mean() <= 0.01
    assert ood.refuses(reported_out).mean() >= 0.95
    s = ood.summary
    assert s["n_train"] == 300 and s["embedding_dim"] == d
    assert s["val"] == {"n": 200, "refused": int(ood.refuses(val).sum())}
    assert s["calibration"]["n"] == 40 and s["calibration"]["caught"] == int(ood.refuses(calibration).sum())
    assert s["calibration"]["images"] == ["a (MR)", "b (CT)"]
    assert s["t_in"] < ood.threshold < s["t_out"]

    path = tmp_path / "image_ood_fused.npz"
    ood.save(path)
    again = ImageOOD.load(path)
    np.testing.assert_array_equal(again.scores(test_in), ood.scores(test_in))
    assert again.threshold == ood.threshold and again.summary == ood.summary


def test_fewer_training_images_than_dimensions_still_give_a_finite_score() -> None:
    rng = np.random.default_rng(11)
    train = _gaussian(rng, 12, 64)
    ood = fit_ood(train, np.zeros(12), _gaussian(rng, 6, 64), None)
    assert np.isfinite(ood.scores(_gaussian(rng, 5, 64))).all()
    assert math.isfinite(ood.threshold) and ood.summary["calibration"]["n"] == 0


def test_unusable_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"bad.npz: not an image OOD file"):
        ImageOOD.load(bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(
        wrong,
        means=np.zeros((2, 3)),
        precision=np.eye(4),
        header=np.array('{"version": 1, "method": "mahalanobis-tied-ledoit-wolf", "threshold": 1.0}'),
    )
    with pytest.raises(InputError, match=r"wrong.npz: image OOD arrays do not fit together"):
        ImageOOD.load(wrong)
    with pytest.raises(InputError, match="needs \\(n >= 2, d\\) training embeddings"):
        fit_ood(np.zeros((1, 3)), np.zeros(1), np.zeros((2, 3)), None)
