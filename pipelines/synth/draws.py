"""Fast scalar random draws on top of a numpy ``Generator``.

numpy's scalar calls cost about a microsecond each; the generator makes a few hundred draws per patient, so uniforms
and normals are drawn in blocks and handed out one at a time. The stream is still fully determined by the Generator.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")
_BLOCK = 256


class Draws:
    """Scalar draws from one numpy Generator.

    Args:
        rng: the only source of randomness.
    """

    __slots__ = ("_u", "_ui", "_z", "_zi", "rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._u: list[float] = []
        self._ui = 0
        self._z: list[float] = []
        self._zi = 0

    def u(self) -> float:
        """A uniform in [0, 1)."""
        if self._ui == len(self._u):
            self._u = self.rng.random(_BLOCK).tolist()
            self._ui = 0
        value = self._u[self._ui]
        self._ui += 1
        return value

    def z(self) -> float:
        """A standard normal."""
        if self._zi == len(self._z):
            self._z = self.rng.standard_normal(_BLOCK).tolist()
            self._zi = 0
        value = self._z[self._zi]
        self._zi += 1
        return value

    def normal(self, mean: float, sd: float) -> float:
        """A normal with this mean and standard deviation."""
        return mean + sd * self.z()

    def lognormal(self, median: float, sigma: float) -> float:
        """A log-normal with this median and log-scale standard deviation."""
        return median * math.exp(sigma * self.z())

    def uniform(self, low: float, high: float) -> float:
        """A uniform in [low, high)."""
        return low + (high - low) * self.u()

    def chance(self, p: float) -> bool:
        """True with probability p."""
        return self.u() < p

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return min(int(self.u() * n), n - 1)

    def between(self, low: int, high: int) -> int:
        """A uniform integer in [low, high] (both included)."""
        return low + self.below(high - low + 1)

    def pick(self, items: Sequence[T]) -> T:
        """A uniformly chosen element."""
        return items[self.below(len(items))]

    def pick_weighted(self, items: Sequence[T], cumulative: Sequence[float]) -> T:
        """An element chosen with weights given as a cumulative sum (last value = total)."""
        x = self.u() * cumulative[-1]
        return items[min(bisect.bisect_right(cumulative, x), len(items) - 1)]

    def poisson(self, lam: float) -> int:
        """A Poisson count with mean lam."""
        return int(self.rng.poisson(lam)) if lam > 0 else 0

    def binomial(self, n: int, p: float) -> int:
        """A binomial count."""
        return int(self.rng.binomial(n, p)) if n > 0 and p > 0 else 0
