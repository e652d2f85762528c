"""The fast encoding and attribution paths give what the straightforward per-column code gave.

``_reference_dense``, ``_reference_codes`` and ``_reference_attributions`` are the previous implementations (one
polars and numpy call per column, occluded copies materialised as frames), kept here as the specification. They
are compared with :class:`TabularEncoder` and :func:`group_attributions` on the tiny cohort's claim records (all
of them, single claims, small batches, and records with gaps and other dtypes), for the fraud model and both
baselines: category codes exactly; floats (another code path, whose numpy loops may be vectorised differently on
another CPU) within a few units of their dtype's rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import pytest

from pipelines.features.fraud import CATEGORICAL_FEATURES, FEATURE_GROUPS, NUMERIC_FEATURES
from pipelines.modeling import fraud_encoding
from pipelines.modeling.fraud_attribution import explain, group_attributions
from pipelines.modeling.fraud_baselines import GbmBaseline, GbmConfig, RulesBaseline, median_reference
from pipelines.modeling.fraud_encoding import CLIP, FeatureSchemaError, OcclusionBatch, TabularEncoder
from pipelines.modeling.fraud_model import score
from pipelines.tracking.pyfunc_fraud import score_claims, score_records

# Tolerance for float32 outputs of two code paths: a few float32 ulps relative, 1e-6 absolute near zero.
FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}


def _reference_dense(enc: TabularEncoder, df: pl.DataFrame) -> np.ndarray:
    cols, miss = [], []
    for name in enc.numeric:
        raw = df[name].cast(pl.Float64).to_numpy()
        x = np.sign(raw) * np.log1p(np.abs(raw))
        ok = np.isfinite(x)
        x = np.where(ok, x, enc.fill[name])
        cols.append(np.clip((x - enc.mean[name]) / enc.std[name], -CLIP, CLIP))
        if name in enc.indicators:
            miss.append((~ok).astype(np.float64))
    mat = np.column_stack([*cols, *miss]) if cols or miss else np.zeros((df.height, 0))
    return mat.astype(np.float32)


def _reference_codes(enc: TabularEncoder, df: pl.DataFrame) -> np.ndarray:
    out = np.zeros((df.height, len(enc.categorical)), dtype=np.int64)
    for j, name in enumerate(enc.categorical):
        lookup = {v: i + 1 for i, v in enumerate(enc.vocab[name])}
        values = df[name].cast(pl.String).to_list()
        out[:, j] = [lookup.get(v, 0) if v is not None else 0 for v in values]
    return out


def _reference_attributions(
    model: Any, features_df: pl.DataFrame, groups: Mapping[str, Sequence[str]] = FEATURE_GROUPS
) -> tuple[np.ndarray, list[str]]:
    names = list(groups)
    out = np.zeros((features_df.height, len(names)))
    if features_df.height == 0:
        return out, names
    used = set(model.feature_names)
    n = features_df.height
    frames, columns = [features_df], []
    for j, group in enumerate(names):
        cols = [c for c in groups[group] if c in used and c in features_df.columns]
        if not cols:
            continue
        saved = getattr(model, "reference", None) or {}
        batch = median_reference(features_df, [c for c in cols if c not in saved])
        ref = {c: float(saved[c]) if c in saved else batch[c] for c in cols}
        frames.append(features_df.with_columns(pl.lit(ref[c], dtype=pl.Float64).alias(c) for c in cols))
        columns.append(j)
    logits = model.logit(pl.concat(frames, how="vertical_relaxed"))
    base = logits[:n]
    for k, j in enumerate(columns, start=1):
        out[:, j] = base - logits[k * n : (k + 1) * n]
    return out, names


@pytest.fixture(scope="module")
def cohort(tiny_fraud: dict[str, Any]) -> dict[str, Any]:
    """The tiny cohort's claim records, a small fraud model and both baselines trained on them."""
    train = tiny_fraud["train"]
    gbm = GbmBaseline.fit(
        train, train["label"].to_numpy(), numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES,
        config=GbmConfig(max_iter=20),
    )  # fmt: skip
    return {
        "records": tiny_fraud["records"],
        "model": tiny_fraud["model"],
        "gbm": gbm,
        "rules": RulesBaseline.fit(train),
    }


def _gappy(df: pl.DataFrame) -> pl.DataFrame:
    """The records with nulls, NaN and infinities in numeric columns, integer and boolean dtypes, unseen codes."""
    rng = np.random.default_rng(0)
    n = df.height
    holes = pl.Series(rng.random(n) < 0.3)
    return df.with_columns(
        pl.when(holes).then(None).otherwise(pl.col("total")).alias("total"),
        pl.when(holes).then(float("nan")).otherwise(pl.col("amount_ratio_dx")).alias("amount_ratio_dx"),
        pl.when(~holes).then(float("inf")).otherwise(pl.col("spo2_min")).alias("spo2_min"),
        pl.col("item_count").fill_null(0).fill_nan(0).cast(pl.Int64),
        (pl.col("has_encounter") > 0).alias("has_encounter"),
        pl.when(holes).then(pl.lit("UNSEEN-CODE")).otherwise(pl.col("main_tariff")).alias("main_tariff"),
        pl.when(~holes).then(None).otherwise(pl.col("dx")).alias("dx"),
    )


def _frames(df: pl.DataFrame) -> list[pl.DataFrame]:
    return [df, _gappy(df), df.head(1), df[7:8], df[3:19], _gappy(df)[40:47], df.head(0)]


def test_encoder_matches_the_per_column_code(cohort: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    enc: TabularEncoder = cohort["model"].encoder
    for frame in _frames(cohort["records"]):
        dense = enc.dense(frame)
        assert dense.dtype == np.float32 and dense.shape == (frame.height, enc.n_dense)
        np.testing.assert_allclose(dense, _reference_dense(enc, frame), **FLOAT32)
        np.testing.assert_array_equal(enc.codes(frame), _reference_codes(enc, frame))
    monkeypatch.setattr(fraud_encoding, "CHUNK_ROWS", 7)  # large frames are encoded in row chunks
    frame = _gappy(cohort["records"])
    np.testing.assert_allclose(enc.dense(frame), _reference_dense(enc, frame), **FLOAT32)
    with pytest.raises(FeatureSchemaError, match="total"):
        enc.dense(frame.drop("total"))


def test_occlusion_batch_encodes_like_the_stacked_frame(cohort: dict[str, Any]) -> None:
    enc: TabularEncoder = cohort["model"].encoder
    blocks = ({"total": 4500.0, "item_count": float("nan")}, {}, {"spo2_min": -3.0, "peer_amount_median": 1.0})
    for frame in _frames(cohort["records"]):
        batch = OcclusionBatch(frame, blocks)
        stacked = batch.to_frame()
        assert batch.height == stacked.height == 4 * frame.height
        np.testing.assert_allclose(enc.dense(batch), _reference_dense(enc, stacked), **FLOAT32)
        np.testing.assert_array_equal(enc.codes(batch), _reference_codes(enc, stacked))


@pytest.mark.parametrize("kind", ["model", "gbm", "rules"])
def test_attributions_and_reasons_match_the_materialised_copies(cohort: dict[str, Any], kind: str) -> None:
    scorer = cohort[kind]
    for frame in _frames(cohort["records"]):
        attr, names = group_attributions(scorer, frame)
        want, want_names = _reference_attributions(scorer, frame)
        assert names == want_names
        # Differences of float32 network logits (held as float64): float32 rounding, relative to the logits.
        np.testing.assert_allclose(attr, want, rtol=1e-5, atol=1e-5)


def test_scores_and_reasons_of_single_claims_are_unchanged(cohort: dict[str, Any]) -> None:
    model, df = cohort["model"], cohort["records"]
    for i in range(0, min(df.height, 60), 3):
        row = df[i : i + 1]
        scored = score_records(model, row)
        np.testing.assert_array_equal(scored.probabilities, model.predict(row))
        reasons = explain(model, row)
        assert [[r.as_dict() for r in claim] for claim in scored.reasons] == [
            [r.as_dict() for r in claim] for claim in reasons
        ]
    table = score_claims(model, df.to_pandas())
    # Scored in one pass with the occluded copies: the float64 products may round differently with the row count.
    np.testing.assert_allclose(table["probability"].to_numpy(), score(model, df), rtol=1e-12, atol=1e-15)
