"""Two baselines with the fraud model's API (``predict``, ``logit``, ``save``, ``kind``).

- :class:`RulesBaseline`: the obvious checks a claims office runs without a model: a near-duplicate of an
  earlier claim (same patient and services within a week, or the same encounter billed again), a service after
  the recorded death, and a claim without an encounter. Score ``1 - prod(1 - w_i * flag_i)``, ties broken by
  the claim amount (a claim with no flag scores at most 0.001).
- :class:`GbmBaseline`: scikit-learn's ``HistGradientBoostingClassifier`` on the same encoded features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.ensemble import HistGradientBoostingClassifier

from pipelines.modeling.fraud_encoding import FeatureSchemaError, TabularEncoder
from pipelines.modeling.fraud_store import FORMAT, read_sklearn, write_model_dir

RULES_KIND = "rules"
GBM_KIND = "hgb"
_EPS = 1e-6
_TIE = 1e-3  # share of the score left to the amount tie-break
RULE_WEIGHTS: dict[str, float] = {"duplicate": 0.6, "after_death": 0.9, "no_encounter": 0.6}
_RULE_COLUMNS = (
    "dup_prior_same_service",
    "dup_prior_same_encounter",
    "after_death",
    "has_encounter",
    "total",
)


def _logit(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass
class RulesBaseline:
    """Score claims by fixed red-flag rules (no training beyond the amount scale).

    Attributes:
        weights: rule name -> weight in (0, 1).
        amount_scale: the amount that maps to the full tie-break (the training 99th percentile).
    """

    weights: dict[str, float] = field(default_factory=lambda: dict(RULE_WEIGHTS))
    amount_scale: float = 1.0
    kind: str = RULES_KIND

    @property
    def feature_names(self) -> list[str]:
        """Input columns the rules read."""
        return list(_RULE_COLUMNS)

    @classmethod
    def fit(cls, train_df: pl.DataFrame) -> RulesBaseline:
        """Set the amount scale from training records."""
        _need(train_df, _RULE_COLUMNS)
        scale = float(np.quantile(train_df["total"].cast(pl.Float64).to_numpy(), 0.99)) if train_df.height else 1.0
        return cls(amount_scale=max(scale, 1.0))

    def flags(self, df: pl.DataFrame) -> dict[str, npt.NDArray[np.bool_]]:
        """Each rule's flag per record."""
        _need(df, _RULE_COLUMNS)

        def col(name: str) -> npt.NDArray[np.float64]:
            return df[name].cast(pl.Float64).fill_null(0.0).to_numpy()

        return {
            "duplicate": (col("dup_prior_same_service") > 0) | (col("dup_prior_same_encounter") > 0),
            "after_death": col("after_death") > 0,
            "no_encounter": col("has_encounter") <= 0,
        }

    def predict(self, df: pl.DataFrame) -> npt.NDArray[np.float64]:
        """Rule score in [0, 1] of each record."""
        keep = np.ones(df.height)
        for name, flag in self.flags(df).items():
            keep *= 1.0 - self.weights[name] * flag
        amount = np.clip(df["total"].cast(pl.Float64).fill_null(0.0).to_numpy() / self.amount_scale, 0.0, 1.0)
        return (1.0 - keep) * (1.0 - _TIE) + _TIE * amount

    def logit(self, df: pl.DataFrame) -> npt.NDArray[np.float64]:
        """Log-odds of :meth:`predict`."""
        return _logit(self.predict(df))

    def save(self, path: Path) -> Path:
        """Write the baseline's folder (metadata only)."""
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "weights": self.weights,
            "amount_scale": self.amount_scale,
            "feature_names": list(_RULE_COLUMNS),
        }
        return write_model_dir(path, meta)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> RulesBaseline:
        """Rebuild from saved metadata."""
        return cls(
            weights={k: float(v) for k, v in meta["weights"].items()},
            amount_scale=float(meta["amount_scale"]),
        )


@dataclass(frozen=True)
class GbmConfig:
    """Hyperparameters of the gradient-boosting baseline."""

    max_iter: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    l2_regularization: float = 1.0
    min_category_count: int = 5


@dataclass
class GbmBaseline:
    """A histogram gradient-boosting classifier on the encoded features.

    Attributes:
        encoder: the fitted preprocessing (shared with the fraud model's design).
        clf: the fitted classifier.
        config: its hyperparameters.
        reference: median raw value of each numeric feature over training records (occlusion baseline).
        info: training summary.
    """

    encoder: TabularEncoder
    clf: HistGradientBoostingClassifier
    config: GbmConfig
    reference: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = GBM_KIND

    @property
    def feature_names(self) -> list[str]:
        """Input columns (numeric, then categorical)."""
        return [*self.encoder.numeric, *self.encoder.categorical]

    @staticmethod
    def _mask(encoder: TabularEncoder) -> list[bool]:
        # HistGradientBoosting takes at most 255 categories per feature; larger vocabularies stay ordinal.
        return [False] * encoder.n_dense + [n <= 255 for n in encoder.cardinalities]

    def _matrix(self, df: pl.DataFrame) -> npt.NDArray[np.float64]:
        return np.column_stack([self.encoder.dense(df), self.encoder.codes(df)]).astype(np.float64)

    @classmethod
    def fit(
        cls,
        train_df: pl.DataFrame,
        y_train: npt.ArrayLike,
        *,
        numeric: Sequence[str],
        categorical: Sequence[str],
        config: GbmConfig | None = None,
        seed: int = 0,
    ) -> GbmBaseline:
        """Train on labelled records (deterministic for a seed; no internal early stopping)."""
        cfg = config or GbmConfig()
        y = np.asarray(y_train).astype(np.int64)
        enc = TabularEncoder.fit(train_df, numeric, categorical, min_count=cfg.min_category_count)
        clf = HistGradientBoostingClassifier(
            max_iter=cfg.max_iter,
            learning_rate=cfg.learning_rate,
            max_leaf_nodes=cfg.max_leaf_nodes,
            l2_regularization=cfg.l2_regularization,
            categorical_features=cls._mask(enc),
            early_stopping=False,
            random_state=seed,
        )
        info = {"seed": seed, "n_train": train_df.height, "n_train_positive": int(y.sum())}
        model = cls(enc, clf, cfg, median_reference(train_df, enc.numeric), info)
        clf.fit(model._matrix(train_df), y)
        return model

    def predict(self, df: pl.DataFrame) -> npt.NDArray[np.float64]:
        """Probability of fraud of each record."""
        if df.height == 0:
            return np.zeros(0)
        proba: npt.NDArray[np.float64] = self.clf.predict_proba(self._matrix(df))  # sklearn has no type stubs
        return proba[:, 1].astype(np.float64)

    def logit(self, df: pl.DataFrame) -> npt.NDArray[np.float64]:
        """Log-odds of :meth:`predict`."""
        return _logit(self.predict(df))

    def save(self, path: Path) -> Path:
        """Write the baseline's folder (metadata and ``gbm.skops``)."""
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "feature_names": self.feature_names,
            "encoder": self.encoder.to_json(),
            "config": asdict(self.config),
            "reference": self.reference,
            "training": self.info,
        }
        return write_model_dir(path, meta, sklearn_objects={"gbm": self.clf})

    @classmethod
    def load(cls, path: Path, meta: dict[str, Any]) -> GbmBaseline:
        """Rebuild from a saved folder."""
        return cls(
            TabularEncoder.from_json(meta["encoder"]),
            read_sklearn(path, "gbm"),
            GbmConfig(**meta["config"]),
            {k: float(v) for k, v in meta.get("reference", {}).items()},
            meta.get("training", {}),
        )


def median_reference(df: pl.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    """Median of each column over the records (0 where all missing): the typical claim used for occlusion."""
    out = {}
    for name in columns:
        values = df[name].cast(pl.Float64).drop_nulls()
        med = values.median() if values.len() else None
        out[name] = float(med) if isinstance(med, int | float) else 0.0
    return out


def _need(df: pl.DataFrame, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise FeatureSchemaError(f"feature records lack column(s) {', '.join(missing)} that the rules need")
