"""The claims-fraud model as an MLflow pyfunc: claim feature records in, probability and reasons out.

The wrapper loads the saved model folder with :func:`pipelines.modeling.fraud_model.load_fraud_model` (no
unpickling of code), scores with :func:`pipelines.modeling.fraud_model.score` and explains with
:func:`pipelines.modeling.fraud_attribution.explain`: exactly what the evaluation and the worklist use.

Input rows: the claim feature records of ``data/processed/fraud/dataset.parquet`` (the model's numeric and
categorical features are required; the context columns that reason sentences quote are optional). Output:
``probability`` (calibrated probability that an audit would confirm fraud), ``band`` (``low``, ``moderate`` or
``high`` by the risk bands registered with the model, artifact ``risk_bands``), ``rule_hits`` (the codes of the
deterministic rules the claim hits, :mod:`pipelines.fraud.rules`: shown next to the probability, never folded
into it), ``reason_codes`` (strongest first) and ``reasons`` (JSON: code, group, weight and the sentence in
Kazakh, Russian and English). Investigators review every rule hit and the most probable claims; the model never
decides alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import polars as pl
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

from pipelines.errors import InputError

if TYPE_CHECKING:
    from pipelines.fraud.reason_texts import Reason
    from pipelines.fraud.rules import RuleHit
    from pipelines.fraud.worklist import RiskBands
    from pipelines.modeling.fraud_model import FraudScorer

log = logging.getLogger(__name__)

ARTIFACT_MODEL = "model"
ARTIFACT_BANDS = "risk_bands"
PROBABILITY = "probability"
BAND = "band"
RULE_HITS = "rule_hits"
REASON_CODES = "reason_codes"
REASONS = "reasons"
TOP_N = 3
REQUIREMENTS = ("mlflow", "numpy", "pandas", "polars", "scipy", "scikit-learn", "skops", "torch")


def load_scorer(model_dir: Path, *, device: str = "cpu") -> FraudScorer:
    """Load a fraud model folder written by ``shipa train fraud`` (``models/fraud/train/<name>``)."""
    from pipelines.modeling.fraud_model import load_fraud_model

    return load_fraud_model(Path(model_dir), device=device)


def write_risk_bands(bands: RiskBands, path: Path) -> Path:
    """Write the risk bands as the JSON artifact :data:`ARTIFACT_BANDS` the wrapper reads; returns ``path``."""
    path = Path(path)
    path.write_text(json.dumps(bands.as_dict()), encoding="utf-8")
    return path


def read_risk_bands(path: Path | None) -> RiskBands:
    """The risk bands of a logged model (the defaults, 0.1 and 0.5, for a version logged without them).

    Raises:
        InputError: the file is not a JSON object with ``moderate`` and ``high`` in order.
    """
    from pipelines.fraud.worklist import RiskBands

    if path is None or not Path(path).exists():
        return RiskBands()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return RiskBands(moderate=float(data["moderate"]), high=float(data["high"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not valid risk bands ({exc})") from None


@dataclass(frozen=True)
class ScoredClaims:
    """Scores, rule hits and reasons of claim records, in row order (what :func:`score_claims` turns into its
    table).

    Attributes:
        probabilities: the calibrated probability of each record (no rule changes it).
        reasons: per record, at most ``top_n`` reasons, strongest first.
        rule_hits: per record, the deterministic rules it hits with their sentences (empty: none).
    """

    probabilities: npt.NDArray[np.float64]
    reasons: list[list[Reason]]
    rule_hits: list[list[RuleHit]] = field(default_factory=list)


def score_records(model: FraudScorer, records: pl.DataFrame, top_n: int = TOP_N) -> ScoredClaims:
    """Probability, reasons and rule hits of each claim feature record, as :func:`score_claims` computes them,
    unformatted.

    The service calls this on the records it built (no pandas frames, no JSON of the reasons).

    Raises:
        InputError: a feature column the model reads is missing.
    """
    from pipelines.fraud.rules import evaluate_rules
    from pipelines.modeling.fraud_attribution import explain, explain_with_logits
    from pipelines.modeling.fraud_model import FraudModel, probability_of_logit, score

    present = set(records.columns)
    missing = [c for c in model.feature_names if c not in present]
    if missing:
        raise InputError(f"fraud input: missing feature column(s) {', '.join(missing)}")
    if isinstance(model, FraudModel):
        # Its probability is the sigmoid of its log-odds, so one pass of the network and forest gives both the
        # scores and the reasons (the service's hot path; equal to score() to float64 rounding).
        logits, reasons = explain_with_logits(model, records, top_n=top_n)
        return ScoredClaims(probability_of_logit(logits), reasons, evaluate_rules(records))
    return ScoredClaims(score(model, records), explain(model, records, top_n=top_n), evaluate_rules(records))


def score_claims(
    model: FraudScorer,
    records: pd.DataFrame | pl.DataFrame,
    top_n: int = TOP_N,
    bands: RiskBands | None = None,
) -> pd.DataFrame:
    """Probability, band, rule hits, reason codes and reasons of each claim feature record, in row order.

    Args:
        model: a loaded fraud model or baseline.
        records: claim feature records (pandas or polars).
        top_n: most reasons per claim.
        bands: the risk bands of ``band`` (default: 0.1 and 0.5).

    Raises:
        InputError: a feature column the model reads is missing.
    """
    from pipelines.fraud.worklist import RiskBands

    df = records if isinstance(records, pl.DataFrame) else pl.from_pandas(pd.DataFrame(records).reset_index(drop=True))
    scored = score_records(model, df, top_n)
    return pd.DataFrame(
        {
            PROBABILITY: scored.probabilities,
            BAND: (bands or RiskBands()).bands(scored.probabilities),
            RULE_HITS: [[h.code for h in claim] for claim in scored.rule_hits],
            REASON_CODES: [[r.code for r in claim] for claim in scored.reasons],
            REASONS: [json.dumps([r.as_dict() for r in claim], ensure_ascii=False) for claim in scored.reasons],
        }
    )


class FraudPyfunc(PythonModel):
    """MLflow wrapper of a fraud scorer; artifact ``model`` is its folder, artifact ``risk_bands`` (optional) the
    JSON cut-offs of ``band``.

    ``model_config={"device": "auto"}`` at load time runs the network on a GPU (default CPU, as evaluated);
    the ``top_n`` param of ``predict`` sets how many reasons each claim gets.
    """

    def __init__(self) -> None:
        """An empty wrapper; :meth:`load_context` loads the model."""
        self._model: FraudScorer | None = None

    @property
    def scorer(self) -> FraudScorer:
        """The loaded fraud scorer (``loaded.unwrap_python_model().scorer``), for callers that skip MLflow.

        Raises:
            RuntimeError: the wrapper was not loaded by MLflow.
        """
        if self._model is None:
            raise RuntimeError("FraudPyfunc is not loaded; load it with mlflow.pyfunc.load_model")
        return self._model

    def load_context(self, context: PythonModelContext) -> None:
        """Load the model folder and the risk bands from the logged artifacts."""
        self._model = self._load(context)
        self._bands = self._load_bands(context)

    @staticmethod
    def _load(context: PythonModelContext) -> FraudScorer:
        config = context.model_config or {}
        return load_scorer(Path(context.artifacts[ARTIFACT_MODEL]), device=str(config.get("device", "cpu")))

    @staticmethod
    def _load_bands(context: PythonModelContext) -> RiskBands:
        path = (context.artifacts or {}).get(ARTIFACT_BANDS)
        return read_risk_bands(Path(path) if path else None)

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """``probability``, ``band``, ``rule_hits``, ``reason_codes`` and ``reasons`` of each claim record."""
        if self._model is None:
            self._model = self._load(context)
        # A wrapper pickled before the bands existed has no such attribute: it is never set in __init__, so that
        # the pickle stays empty (see tests/tracking/test_pickled_paths.py).
        bands = getattr(self, "_bands", None) or self._load_bands(context)
        self._bands = bands
        return score_claims(self._model, model_input, int((params or {}).get("top_n", TOP_N)), bands)


def _mlflow_type(dtype: pl.DataType) -> str | None:
    if dtype.is_float() or dtype == pl.Null:
        return "double"
    if dtype.is_integer():
        return "long"
    if dtype in (pl.String, pl.Categorical):
        return "string"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_temporal():
        return "datetime"
    return None


def signature(schema: Mapping[str, pl.DataType], required: Sequence[str]) -> ModelSignature:
    """The input/output schema: ``required`` columns (the model's features) and the rest of ``schema`` optional.

    Args:
        schema: column -> polars dtype of the claim feature records (ids, labels and splits left out).
        required: the columns the model reads.

    Raises:
        InputError: a required column is not in ``schema`` or has a type MLflow cannot describe.
    """
    unknown = [c for c in required if c not in schema]
    if unknown:
        raise InputError(f"fraud signature: feature column(s) {', '.join(unknown)} are not in the records")
    columns = []
    for name, dtype in schema.items():
        kind = _mlflow_type(dtype)
        if kind is None:
            if name in required:
                raise InputError(f"fraud signature: column '{name}' has type {dtype}, which MLflow cannot describe")
            continue
        columns.append(ColSpec(kind, name, required=name in required))
    return ModelSignature(
        inputs=Schema(columns),  # type: ignore[arg-type]
        outputs=Schema(
            [
                ColSpec("double", PROBABILITY),
                ColSpec("string", BAND),
                ColSpec(Array("string"), RULE_HITS),
                ColSpec(Array("string"), REASON_CODES),
                ColSpec("string", REASONS),
            ]
        ),
        params=ParamSchema([ParamSpec("top_n", "long", TOP_N)]),
    )


def input_example(model: FraudScorer, schema: Mapping[str, pl.DataType]) -> pd.DataFrame:
    """One typical claim built from the model's training aggregates, never from a real claim.

    Numeric features take the training median the model saved (0 where it saved none); categorical features
    take the first value of the model's vocabulary; optional context columns are left out.
    """
    reference: Mapping[str, float] = getattr(model, "reference", None) or {}
    encoder = getattr(model, "encoder", None)
    vocab: Mapping[str, Sequence[str]] = getattr(encoder, "vocab", None) or {}
    row: dict[str, Any] = {}
    for name in model.feature_names:
        kind = _mlflow_type(schema[name])
        typical = float(reference.get(name, 0.0))
        if kind == "string":
            values = vocab.get(name) or ()
            row[name] = [values[0] if values else None]
        elif kind == "long":
            row[name] = [round(typical)]
        elif kind == "boolean":
            row[name] = [typical >= 0.5]
        else:
            row[name] = [typical]
    return pd.DataFrame(row)
