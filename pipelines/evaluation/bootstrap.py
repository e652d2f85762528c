"""Percentile bootstrap confidence intervals, resampling samples or whole groups (patients).

A resample is a row of sample weights (how often each sample was drawn), so every metric kernel of
:mod:`pipelines.evaluation.weighted` evaluates all resamples at once; resamples are drawn in chunks to bound
memory. With group ids, groups are drawn with replacement and every sample of a drawn group comes along,
each as many times as its group was drawn, so a patient's images stay together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipelines.evaluation.arrays import FloatArray, IntArray, as_labels, as_scores, ones_weights
from pipelines.evaluation.weighted import BatchMetric

log = logging.getLogger(__name__)

# Weight-matrix cells per chunk: about 16 MB of float64, so a few kernel temporaries stay well under a GB.
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap percentile interval.

    Attributes:
        value: the metric on the observed sample; None where undefined.
        low: lower CI bound; None without at least two defined resamples.
        high: upper CI bound; None like ``low``.
        n_boot: resamples drawn.
        n_undefined: resamples where the metric was undefined (one class only, empty denominator), left out.
    """

    value: float | None
    low: float | None
    high: float | None
    n_boot: int
    n_undefined: int

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain JSON-ready fields."""
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "n_boot": self.n_boot,
            "n_undefined": self.n_undefined,
        }


def group_index(groups: npt.ArrayLike, n: int) -> tuple[IntArray, int]:
    """Dense group number (0..G-1) of each sample and the number of groups G.

    Raises:
        ValueError: ``groups`` is not 1-D with ``n`` values.
    """
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"groups must be 1-D with {n} values to match y_true, got shape {arr.shape}")
    uniques, inverse = np.unique(arr, return_inverse=True)
    return inverse.astype(np.int64), int(uniques.shape[0])


def resample_weights(
    n: int, n_boot: int, rng: np.random.Generator, group_of: IntArray | None = None, n_groups: int = 0
) -> FloatArray:
    """Draw ``n_boot`` bootstrap resamples as a ``(n_boot, n)`` matrix of sample multiplicities.

    Args:
        n: samples.
        n_boot: resamples to draw.
        rng: the random generator (seeded by the caller).
        group_of: dense group number per sample (see :func:`group_index`); None resamples single samples.
        n_groups: number of groups when ``group_of`` is given.
    """
    units = n if group_of is None else n_groups
    draws = rng.integers(0, units, size=(n_boot, units))
    flat = (draws + units * np.arange(n_boot)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_boot * units).reshape(n_boot, units).astype(np.float64)
    return counts if group_of is None else counts[:, group_of]


def _weight_chunks(n: int, n_boot: int, seed: int, group_of: IntArray | None, n_groups: int) -> Iterator[FloatArray]:
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_CELLS // max(n, n_groups))
    for start in range(0, n_boot, per_chunk):
        yield resample_weights(n, min(per_chunk, n_boot - start), rng, group_of, n_groups)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def bootstrap_metrics(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    metrics: Mapping[str, BatchMetric],
    *,
    groups: npt.ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Estimate]:
    """Point estimates and percentile CIs of several metrics over the same resamples.

    Args:
        y_true: 0/1 labels.
        scores: scores or probabilities.
        metrics: name -> kernel (see :mod:`pipelines.evaluation.weighted`, or :func:`per_resample` for any
            ``f(y_true, scores) -> float``).
        groups: group id per sample (e.g. patient pseudonym); resample whole groups when given.
        n_boot: resamples; 0 gives point estimates without intervals.
        seed: seed of the random generator; the same inputs and seed give the same intervals.
        level: coverage of the interval (0.95 takes the 2.5th and 97.5th percentiles).

    Returns:
        name -> :class:`Estimate`.
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    y = as_labels(y_true)
    s = as_scores(scores, y.shape[0])
    n = y.shape[0]
    group_of, n_groups = (None, 0) if groups is None else group_index(groups, n)

    observed = ones_weights(n)
    points = {name: float(kernel(y, s, observed)[0]) for name, kernel in metrics.items()}
    samples: dict[str, list[FloatArray]] = {name: [] for name in metrics}
    for weights in _weight_chunks(n, n_boot, seed, group_of, n_groups):
        for name, kernel in metrics.items():
            samples[name].append(kernel(y, s, weights))

    tail = 100.0 * (1.0 - level) / 2.0
    out: dict[str, Estimate] = {}
    for name, point in points.items():
        values = np.concatenate(samples[name]) if samples[name] else np.empty(0)
        defined = values[np.isfinite(values)]
        low = high = None
        if defined.shape[0] >= 2:
            low, high = (float(q) for q in np.percentile(defined, [tail, 100.0 - tail]))
        n_undefined = int(values.shape[0] - defined.shape[0])
        if n_undefined:
            log.debug("bootstrap %s: %d of %d resamples undefined, left out", name, n_undefined, n_boot)
        out[name] = Estimate(_finite_or_none(point), low, high, n_boot, n_undefined)
    return out


def bootstrap_ci(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    metric: BatchMetric,
    *,
    groups: npt.ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Point estimate and percentile CI of one metric kernel; see :func:`bootstrap_metrics`."""
    return bootstrap_metrics(y_true, scores, {"metric": metric}, groups=groups, n_boot=n_boot, seed=seed, level=level)[
        "metric"
    ]


def per_resample(fn: Callable[[IntArray, FloatArray], float]) -> BatchMetric:
    """Turn any ``fn(y_true, scores) -> float`` into a kernel by materialising each resample.

    Slower than a vectorised kernel (one call per resample). A resample where ``fn`` raises ``ValueError``
    (including :class:`UndefinedMetricError`) or returns NaN counts as undefined.
    """

    def kernel(y_true: IntArray, scores: FloatArray, weights: FloatArray) -> FloatArray:
        out = np.full(weights.shape[0], np.nan)
        positions = np.arange(y_true.shape[0])
        for row in range(weights.shape[0]):
            idx = np.repeat(positions, weights[row].astype(np.int64))
            try:
                out[row] = fn(y_true[idx], scores[idx])
            except ValueError:
                continue
        return out

    return kernel
