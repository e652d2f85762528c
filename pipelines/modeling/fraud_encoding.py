"""Turn claim feature records into model matrices: fitted on training claims, saved as plain JSON.

Numeric features are compressed with ``sign(x) * log1p(|x|)`` (counts, ratios and amounts are heavy-tailed),
filled with the training median where missing (with a missing-indicator column for features that had gaps),
standardised and clipped. Categorical codes map to indices from a training vocabulary; index 0 is "unknown"
(unseen, rare or missing), so a new tariff code or region never breaks scoring.

Encoding works on whole matrices (one numpy operation per step for every column), so a single claim costs a few
tens of microseconds rather than a polars and numpy call per column. An :class:`OcclusionBatch` (records followed
by copies with some features set to fixed values, as reason attribution scores them) is encoded without building
the copies: the records are encoded once, tiled, and only the replaced cells are encoded again.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines.errors import InputError

CLIP = 10.0
# Rows encoded per step: bounds the temporaries of large frames (training) to a few matrices of this many rows.
CHUNK_ROWS = 65536


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

    @functools.cached_property
    def _numeric_params(
        self,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.intp]]:
        """Per numeric feature (as column vectors): fill, mean, std; and the row of each indicator feature."""
        fill = np.array([self.fill[n] for n in self.numeric], dtype=np.float64)[:, None]
        mean = np.array([self.mean[n] for n in self.numeric], dtype=np.float64)[:, None]
        std = np.array([self.std[n] for n in self.numeric], dtype=np.float64)[:, None]
        position = {n: i for i, n in enumerate(self.numeric)}
        return fill, mean, std, np.array([position[n] for n in self.indicators], dtype=np.intp)

    @functools.cached_property
    def _dense_columns(self) -> tuple[dict[str, int], dict[str, int]]:
        """Dense matrix column of each numeric feature, and of each missing indicator (by its feature)."""
        k = len(self.numeric)
        return {n: i for i, n in enumerate(self.numeric)}, {n: k + i for i, n in enumerate(self.indicators)}

    @functools.cached_property
    def _lookups(self) -> tuple[dict[str, int], ...]:
        """Per categorical feature: value -> index (``vocab`` position + 1)."""
        return tuple({v: i + 1 for i, v in enumerate(self.vocab[name])} for name in self.categorical)

    def _raw_numeric(self, df: pl.DataFrame) -> npt.NDArray[np.float64]:
        """The numeric features of ``df`` as float64, one row per feature (nulls as NaN)."""
        columns = []
        for name in self.numeric:
            series = df.get_column(name)
            columns.append((series if series.dtype == pl.Float64 else series.cast(pl.Float64)).to_numpy())
        return np.stack(columns) if columns else np.zeros((0, df.height))

    def _transform(
        self, raw: npt.NDArray[np.float64], rows: npt.NDArray[np.intp] | slice = slice(None)
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Standardised values and "was finite" flags of raw values, one row per feature ``rows`` selects.

        Every step is elementwise, so a value encodes the same whatever else is in the matrix.
        """
        fill, mean, std, _ = self._numeric_params
        x = _compress(raw)
        ok = np.isfinite(x)
        x = np.where(ok, x, fill[rows])
        return np.clip((x - mean[rows]) / std[rows], -CLIP, CLIP), ok

    def dense(self, df: pl.DataFrame | OcclusionBatch) -> npt.NDArray[np.float32]:
        """Standardised numeric matrix (rows of ``df``) with missing indicators appended.

        Raises:
            FeatureSchemaError: a numeric feature column is missing.
        """
        if isinstance(df, OcclusionBatch):
            return self._dense_occluded(df)
        _check(df, self.numeric)
        n, k = df.height, len(self.numeric)
        out = np.empty((n, self.n_dense), dtype=np.float32)
        if not k:
            return out
        indicator_rows = self._numeric_params[3]
        for start in range(0, n, CHUNK_ROWS):
            stop = min(n, start + CHUNK_ROWS)
            part = df if (start, stop) == (0, n) else df.slice(start, stop - start)
            values, ok = self._transform(self._raw_numeric(part))
            out[start:stop, :k] = values.T
            out[start:stop, k:] = (~ok[indicator_rows]).T
        return out

    def codes(self, df: pl.DataFrame | OcclusionBatch) -> npt.NDArray[np.int64]:
        """Category indices (0 = unknown) of the categorical columns.

        Raises:
            FeatureSchemaError: a categorical feature column is missing.
        """
        if isinstance(df, OcclusionBatch):
            if any(c in self.categorical for block in df.blocks for c in block):
                return self.codes(df.to_frame())
            return np.tile(self.codes(df.records), (len(df.blocks) + 1, 1))
        _check(df, self.categorical)
        out = np.zeros((df.height, len(self.categorical)), dtype=np.int64)
        for j, (name, lookup) in enumerate(zip(self.categorical, self._lookups, strict=True)):
            series = df.get_column(name)
            values = (series if series.dtype == pl.String else series.cast(pl.String)).to_list()
            out[:, j] = [lookup.get(v, 0) if v is not None else 0 for v in values]
        return out

    def occlusion_cells(self, block: Mapping[str, float]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """The dense columns a row's encoding changes when ``block``'s numeric columns take its values, and their
        new contents (values and missing indicators), encoded as :meth:`dense` encodes them."""
        position, indicator = self._dense_columns
        cells = [(c, v) for c, v in block.items() if c in position]
        if not cells:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        rows = np.array([position[c] for c, _ in cells], dtype=np.intp)
        values, ok = self._transform(np.array([[v] for _, v in cells], dtype=np.float64), rows)
        columns = [int(r) for r in rows] + [indicator[c] for c, _ in cells if c in indicator]
        contents = [float(v) for v in values[:, 0]] + [
            float(not ok[i, 0]) for i, (c, _) in enumerate(cells) if c in indicator
        ]
        return np.array(columns, dtype=np.intp), np.array(contents, dtype=np.float32)

    def _dense_occluded(self, batch: OcclusionBatch) -> npt.NDArray[np.float32]:
        """:meth:`dense` of ``batch.to_frame()``: the records encoded once and tiled, replaced cells encoded anew."""
        if any(c in self.categorical for block in batch.blocks for c in block):
            return self.dense(batch.to_frame())
        base = self.dense(batch.records)
        copies = len(batch.blocks) + 1
        out = np.tile(base, (copies, 1))
        position, indicator = self._dense_columns
        cells = [(b, c, v) for b, block in enumerate(batch.blocks, start=1) for c, v in block.items() if c in position]
        if not cells:
            return out
        blocks = np.array([b for b, _, _ in cells], dtype=np.intp)
        rows = np.array([position[c] for _, c, _ in cells], dtype=np.intp)
        values, ok = self._transform(np.array([[v] for _, _, v in cells], dtype=np.float64), rows)
        stacked = out.reshape(copies, batch.records.height, self.n_dense)  # a view: writes go to ``out``
        stacked[blocks, :, rows] = values.astype(np.float32)
        flagged = [i for i, (_, c, _) in enumerate(cells) if c in indicator]
        if flagged:
            columns = np.array([indicator[cells[i][1]] for i in flagged], dtype=np.intp)
            stacked[blocks[flagged], :, columns] = (~ok[flagged]).astype(np.float32)
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


@dataclass(frozen=True)
class OcclusionBatch:
    """Claim records followed by copies of them with some numeric features set to fixed values, not materialised.

    Block 0 is ``records``; block ``b`` (1 to ``len(blocks)``) is ``records`` with every column of ``blocks[b - 1]``
    set to its value. :meth:`TabularEncoder.dense` and :meth:`TabularEncoder.codes` encode it exactly as they encode
    :meth:`to_frame`, at the cost of encoding ``records`` once; a model that reads its input only through its
    encoder (and ``height``) can score it in place of the stacked frame.

    Attributes:
        records: the claim feature records.
        blocks: per copy, column -> the value every record gets.
    """

    records: pl.DataFrame
    blocks: tuple[Mapping[str, float], ...]

    @property
    def height(self) -> int:
        """Rows of the stacked frame."""
        return self.records.height * (len(self.blocks) + 1)

    @property
    def columns(self) -> list[str]:
        """Columns of the stacked frame."""
        return self.records.columns

    def to_frame(self) -> pl.DataFrame:
        """The stacked frame: the records, then each copy (replaced columns become Float64)."""
        frames = [self.records]
        for block in self.blocks:
            frames.append(self.records.with_columns(pl.lit(v, dtype=pl.Float64).alias(c) for c, v in block.items()))
        return pl.concat(frames, how="vertical_relaxed")


def _check(df: pl.DataFrame, names: Sequence[str]) -> None:
    present = set(df.columns)
    missing = [n for n in names if n not in present]
    if missing:
        raise FeatureSchemaError(f"feature records lack column(s) {', '.join(missing)} that the model needs")
