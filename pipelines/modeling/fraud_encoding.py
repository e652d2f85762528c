"""Turn claim feature records into model matrices: fitted on training claims, saved as plain JSON.

Numeric features are compressed with ``sign(x) * log1p(|x|)`` (counts, ratios and amounts are heavy-tailed),
filled with the training median where missing (with a missing-indicator column for features that had gaps),
standardised and clipped. Categorical codes map to indices from a training vocabulary; index 0 is "unknown"
(unseen, rare or missing), so a new tariff code or region never breaks scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines.errors import InputError

CLIP = 10.0


class FeatureSchemaError(InputError):
    """Feature records lack a column the model was trained on (the message names it)."""


def _compress(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class TabularEncoder:
    """Fitted preprocessing of fraud feature records.

    Attributes:
        numeric: numeric feature names, in matrix order.
        categorical: categorical feature names, in matrix order.
        fill: per numeric feature, the training median (compressed scale) used for missing values.
        mean: per numeric feature, training mean after compression and filling.
        std: per numeric feature, training standard deviation (1 where constant).
        indicators: numeric features that get a missing-indicator column (had gaps in training).
        vocab: per categorical feature, the known values; value ``vocab[c][i]`` has index ``i + 1``.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    fill: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    indicators: tuple[str, ...]
    vocab: dict[str, tuple[str, ...]]

    @classmethod
    def fit(
        cls, df: pl.DataFrame, numeric: Sequence[str], categorical: Sequence[str], *, min_count: int = 5
    ) -> TabularEncoder:
        """Fit on training records.

        Args:
            df: training feature records.
            numeric: numeric columns to use.
            categorical: categorical columns to use.
            min_count: a category seen fewer times maps to "unknown".
        """
        _check(df, [*numeric, *categorical])
        fill, mean, std, indicators = {}, {}, {}, []
        for name in numeric:
            raw = df[name].cast(pl.Float64).to_numpy()
            x = _compress(raw)
            finite = x[np.isfinite(x)]
            med = float(np.median(finite)) if finite.size else 0.0
            if finite.size < x.size:
                indicators.append(name)
            x = np.where(np.isfinite(x), x, med)
            sd = float(x.std())
            fill[name], mean[name], std[name] = med, float(x.mean()), sd if sd > 1e-9 else 1.0
        vocab = {}
        for name in categorical:
            counts = df[name].cast(pl.String).drop_nulls().value_counts()
            keep = counts.filter(pl.col("count") >= min_count)[name].sort().to_list()
            vocab[name] = tuple(keep)
        return cls(tuple(numeric), tuple(categorical), fill, mean, std, tuple(indicators), vocab)

    @property
    def n_dense(self) -> int:
        """Columns of the dense matrix (numeric features plus missing indicators)."""
        return len(self.numeric) + len(self.indicators)

    @property
    def dense_names(self) -> list[str]:
        """Names of the dense matrix columns."""
        return [*self.numeric, *(f"{n}__missing" for n in self.indicators)]

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes (known values plus "unknown")."""
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    def dense(self, df: pl.DataFrame) -> npt.NDArray[np.float32]:
        """Standardised numeric matrix (rows of ``df``) with missing indicators appended.

        Raises:
            FeatureSchemaError: a numeric feature column is missing.
        """
        _check(df, self.numeric)
        cols, miss = [], []
        for name in self.numeric:
            x = _compress(df[name].cast(pl.Float64).to_numpy())
            ok = np.isfinite(x)
            x = np.where(ok, x, self.fill[name])
            cols.append(np.clip((x - self.mean[name]) / self.std[name], -CLIP, CLIP))
            if name in self.indicators:
                miss.append((~ok).astype(np.float64))
        mat = np.column_stack([*cols, *miss]) if cols or miss else np.zeros((df.height, 0))
        return mat.astype(np.float32)

    def codes(self, df: pl.DataFrame) -> npt.NDArray[np.int64]:
        """Category indices (0 = unknown) of the categorical columns.

        Raises:
            FeatureSchemaError: a categorical feature column is missing.
        """
        _check(df, self.categorical)
        out = np.zeros((df.height, len(self.categorical)), dtype=np.int64)
        for j, name in enumerate(self.categorical):
            lookup = {v: i + 1 for i, v in enumerate(self.vocab[name])}
            values = df[name].cast(pl.String).to_list()
            out[:, j] = [lookup.get(v, 0) if v is not None else 0 for v in values]
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready description (saved in the model's metadata)."""
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "fill": self.fill,
            "mean": self.mean,
            "std": self.std,
            "indicators": list(self.indicators),
            "vocab": {k: list(v) for k, v in self.vocab.items()},
            "transform": "sign(x)*log1p(|x|), fill median, standardise, clip",
            "clip": CLIP,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TabularEncoder:
        """Rebuild from :meth:`to_json` output."""
        return cls(
            tuple(data["numeric"]),
            tuple(data["categorical"]),
            {k: float(v) for k, v in data["fill"].items()},
            {k: float(v) for k, v in data["mean"].items()},
            {k: float(v) for k, v in data["std"].items()},
            tuple(data["indicators"]),
            {k: tuple(v) for k, v in data["vocab"].items()},
        )


def _check(df: pl.DataFrame, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise FeatureSchemaError(f"feature records lack column(s) {', '.join(missing)} that the model needs")
