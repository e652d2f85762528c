"""Drift of served outputs against the test-set distribution: PSI and the two-sample KS test, per period.

PSI (population stability index) bins both samples at the baseline's deciles; by the usual reading, below 0.1 is
stable, 0.1 to 0.25 a moderate shift and above 0.25 a major one. KS is the largest gap between the two empirical
distribution functions, with its p-value.

PSI is biased upwards on small samples: two samples of sizes n and m from the same distribution give about
``(bins - 1) * (1/n + 1/m)`` by chance alone (0.28 for 40 outputs against 160 test cases). So a period reads as a
shift only when its PSI passes the threshold *and* the KS test rejects equality (p < 0.05); otherwise it reads
``not significant``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import ks_2samp

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
KS_ALPHA = 0.05
DEFAULT_BINS = 10
DEFAULT_MIN_N = 20
# Added to every bin count, so an empty bin does not weigh as if it were impossible.
_SMOOTHING = 0.5


def _finite(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, bins: int = DEFAULT_BINS) -> float:
    """Population stability index of ``actual`` against ``expected`` (bins at ``expected``'s quantiles).

    Raises:
        ValueError: either sample has no finite value, or ``bins`` < 2.
    """
    if bins < 2:
        raise ValueError("psi needs at least 2 bins")
    exp, act = _finite(expected), _finite(actual)
    if exp.size == 0 or act.size == 0:
        raise ValueError("psi needs finite values in both samples")
    # Inner edges only: values beyond the baseline's range fall into the first or last bin.
    edges = np.unique(np.quantile(exp, np.linspace(0, 1, bins + 1)[1:-1]))

    def shares(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1) + _SMOOTHING
        return np.asarray(counts / counts.sum(), dtype=np.float64)

    e_share, a_share = shares(exp), shares(act)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def psi_by_chance(n: int, m: int, bins: int = DEFAULT_BINS) -> float:
    """The PSI two samples of sizes ``n`` and ``m`` from one distribution show by chance, about."""
    return (bins - 1) * (1 / max(n, 1) + 1 / max(m, 1))


def psi_label(value: float | None, ks_p: float | None = None) -> str:
    """``stable``, ``moderate shift`` or ``major shift``; ``not significant`` when the KS p-value is at least
    :data:`KS_ALPHA`; ``too few`` for None."""
    if value is None:
        return "too few"
    if value < PSI_MODERATE:
        return "stable"
    if ks_p is not None and ks_p >= KS_ALPHA:
        return "not significant"
    return "moderate shift" if value < PSI_MAJOR else "major shift"


@dataclass(frozen=True)
class DriftRow:
    """Drift of one period's outputs (or of all of them) against the baseline.

    Attributes:
        period: the period (a day ``YYYY-MM-DD``, or ``all``).
        n: outputs in the period.
        psi: PSI, or None with fewer than the minimum outputs.
        ks: KS statistic (None likewise); ks_p its p-value.
        mean: mean output in the period.
        label: :func:`psi_label` of the PSI and KS p-value.
        by_chance: :func:`psi_by_chance` for this period's and the baseline's sizes.
    """

    period: str
    n: int
    psi: float | None
    ks: float | None
    ks_p: float | None
    mean: float | None
    label: str
    by_chance: float | None = None


def drift_row(period: str, baseline: npt.ArrayLike, scores: Sequence[float], min_n: int = DEFAULT_MIN_N) -> DriftRow:
    """PSI and KS of ``scores`` against ``baseline`` (None below ``min_n`` outputs)."""
    values = _finite(scores)
    mean = float(values.mean()) if values.size else None
    base = _finite(baseline)
    if values.size < min_n or base.size == 0:
        return DriftRow(period, int(values.size), None, None, None, mean, psi_label(None))
    value = psi(base, values)
    test = ks_2samp(base, values)
    p_value = float(test.pvalue)
    return DriftRow(
        period,
        int(values.size),
        value,
        float(test.statistic),
        p_value,
        mean,
        psi_label(value, p_value),
        psi_by_chance(int(values.size), int(base.size)),
    )


def drift_table(
    baseline: npt.ArrayLike, scores_by_period: Mapping[str, Sequence[float]], min_n: int = DEFAULT_MIN_N
) -> tuple[DriftRow, list[DriftRow]]:
    """Drift over all outputs, and per period (periods in sorted order)."""
    everything = [s for period in sorted(scores_by_period) for s in scores_by_period[period]]
    overall = drift_row("all", baseline, everything, min_n)
    return overall, [drift_row(p, baseline, scores_by_period[p], min_n) for p in sorted(scores_by_period)]
