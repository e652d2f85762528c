"""Input checks shared by the evaluation modules, and the array type aliases they use.

Messages name the argument and the problem, never a data value.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def as_labels(y_true: npt.ArrayLike) -> IntArray:
    """Binary labels as a 1-D int64 array of 0/1.

    Args:
        y_true: 1-D labels; booleans or numbers equal to 0 or 1.

    Raises:
        ValueError: not 1-D, empty, or holding values other than 0 and 1.
    """
    arr = np.asarray(y_true)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"y_true must be numeric or boolean, got dtype {arr.dtype}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    return arr.astype(np.int64)


def as_scores(scores: npt.ArrayLike, n: int, *, name: str = "scores", probability: bool = False) -> FloatArray:
    """Scores as a 1-D float64 array of length ``n``.

    Args:
        scores: 1-D finite numbers.
        n: the expected length (that of ``y_true``).
        name: the argument name used in error messages.
        probability: also require every value to lie in [0, 1].

    Raises:
        ValueError: wrong shape or length, non-finite values, or values outside [0, 1] when ``probability``.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} values to match y_true, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (found NaN or infinity)")
    if probability and ((arr < 0).any() or (arr > 1).any()):
        raise ValueError(f"{name} must be probabilities in [0, 1]")
    return arr


def ones_weights(n: int) -> FloatArray:
    """The weight matrix of the observed sample itself: one row of ones."""
    return np.ones((1, n), dtype=np.float64)
