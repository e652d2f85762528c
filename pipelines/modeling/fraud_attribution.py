"""Why a claim was flagged: feature-group attributions of any fraud scorer, as reason codes and texts.

Attribution is occlusion against the median vector: for each feature group of
:data:`pipelines.features.fraud.FEATURE_GROUPS`, every feature of the group is set to its typical value (the
training median the model saved, else the median of the records given) and the drop of the final log-odds is
the group's attribution. It explains the whole score (network and anomaly parts together), treats a group as
one unit (a duplicate is one piece of evidence, not six correlated features), and works for the baselines too.
Log-odds rather than probabilities keep a saturated score from hiding the evidence.

A group becomes a reason only when it is a finding on both counts: it raises the claim's log-odds (attribution
above ``min_weight``, 0 by default) and the claim's own record passes the group's documented threshold
(:data:`pipelines.fraud.reason_texts.FINDINGS`; the sentence shown is the variant whose threshold passed). A group
that raises the score with an ordinary value (a day of 0.5 times the usual volume) says nothing an investigator
can check, and a striking value that does not raise the score is not why the claim was flagged. See
``docs/fraud-reasons.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines.features.fraud import FEATURE_GROUPS
from pipelines.fraud.reason_texts import REFERENCE_COLUMNS, Reason, finding, make_reason
from pipelines.modeling.fraud_baselines import GbmBaseline, median_reference
from pipelines.modeling.fraud_encoding import OcclusionBatch, TabularEncoder

if TYPE_CHECKING:
    from pipelines.modeling.fraud_model import FraudModel


class Scorer(Protocol):
    """What attribution needs of a model: its final log-odds and the columns it reads."""

    @property
    def feature_names(self) -> list[str]:
        """Input columns."""
        ...

    def logit(self, df: pl.DataFrame) -> npt.NDArray[np.float64]:
        """Final log-odds per record."""
        ...


def _reference(model: Scorer, df: pl.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    saved: Mapping[str, float] = getattr(model, "reference", None) or {}
    batch = median_reference(df, [c for c in columns if c not in saved])
    return {c: float(saved[c]) if c in saved else batch[c] for c in columns}


def group_attributions(
    model: Scorer, features_df: pl.DataFrame, groups: Mapping[str, Sequence[str]] = FEATURE_GROUPS
) -> tuple[npt.NDArray[np.float64], list[str]]:
    """Log-odds each feature group adds to each claim's score, against the group set to typical values.

    Args:
        model: a fraud model or baseline.
        features_df: claim feature records.
        groups: group name -> feature columns.

    Returns:
        A matrix (claims x groups) of attributions and the group names in column order; groups the model does
        not read get zeros.
    """
    _, attr, names = _attributions(model, features_df, groups)
    return attr, names


def _attributions(
    model: Scorer, features_df: pl.DataFrame, groups: Mapping[str, Sequence[str]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[str]]:
    """The records' final log-odds, and each group's attribution (see :func:`group_attributions`), in one call."""
    names = list(groups)
    out = np.zeros((features_df.height, len(names)))
    if features_df.height == 0:
        return np.zeros(0), out, names
    readable = set(model.feature_names) & set(features_df.columns)
    n = features_df.height
    occluded = {j: cols for j, group in enumerate(names) if (cols := [c for c in groups[group] if c in readable])}
    ref = _reference(model, features_df, list(dict.fromkeys(c for cols in occluded.values() for c in cols)))
    # Every occluded copy is scored in one call together with the original rows: the models score rows
    # independently, and one pass costs far less than one per group. A model that reads its input only through
    # its encoder gets the copies unmaterialised (the records are encoded once); others get the stacked frame.
    batch = OcclusionBatch(features_df, tuple({c: ref[c] for c in cols} for cols in occluded.values()))
    stacked = batch if _reads_through_encoder(model) else batch.to_frame()
    logits = model.logit(cast(pl.DataFrame, stacked))
    base = logits[:n]
    for k, j in enumerate(occluded, start=1):
        out[:, j] = base - logits[k * n : (k + 1) * n]
    return base, out, names


def _encodes_numeric_groups(model: Scorer, groups: Mapping[str, Sequence[str]]) -> bool:
    """Whether ``model`` is the fraud network whose encoder reads every column of ``groups`` as numeric."""
    from pipelines.modeling.fraud_model import FraudModel

    if not (isinstance(model, FraudModel) and isinstance(model.encoder, TabularEncoder)):
        return False
    categorical = set(model.encoder.categorical)
    return not any(c in categorical for cols in groups.values() for c in cols)


def _own_attributions(
    model: FraudModel,
    features_df: pl.DataFrame,
    groups: Mapping[str, Sequence[str]],
    passing: Mapping[str, Sequence[bool]],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[str]]:
    """:func:`_attributions` of each record's passing groups only (the others are 0): the records and one copy per
    (record, passing group) with that group at its typical values, encoded once and scored in one pass."""
    names = list(groups)
    n = features_df.height
    attr = np.zeros((n, len(names)))
    if n == 0:
        return np.zeros(0), attr, names
    enc = model.encoder
    readable = set(model.feature_names) & set(features_df.columns)
    columns = {g: [c for c in groups[g] if c in readable] for g in names}
    ref = _reference(model, features_df, list(dict.fromkeys(c for cols in columns.values() for c in cols)))
    cells = {g: enc.occlusion_cells({c: ref[c] for c in columns[g]}) for g in names}
    pairs = [(i, j) for j, g in enumerate(names) if columns[g] for i in range(n) if passing[g][i]]
    dense, codes = enc.dense(features_df), enc.codes(features_df)
    index = np.array([i for i, _ in pairs], dtype=np.intp)
    dense_all = np.concatenate([dense, dense[index]])
    for k, (_, j) in enumerate(pairs, start=n):
        where, values = cells[names[j]]
        dense_all[k, where] = values
    logits = model.logit_encoded(np.concatenate([codes, codes[index]]), dense_all)
    base = logits[:n]
    for k, (i, j) in enumerate(pairs, start=n):
        attr[i, j] = base[i] - logits[k]
    return base, attr, names


def _reads_through_encoder(model: Scorer) -> bool:
    """Whether ``model.logit`` reads its input only through ``model.encoder`` (and the row count)."""
    from pipelines.modeling.fraud_model import FraudModel

    return isinstance(model, FraudModel | GbmBaseline) and isinstance(model.encoder, TabularEncoder)


def explain(
    model: Scorer,
    features_df: pl.DataFrame,
    top_n: int = 3,
    *,
    min_weight: float = 0.0,
    groups: Mapping[str, Sequence[str]] = FEATURE_GROUPS,
) -> list[list[Reason]]:
    """The top reasons of each claim, strongest first, with sentences in Kazakh, Russian and English.

    A group is a reason when it adds more than ``min_weight`` log-odds and the claim passes its threshold
    (:func:`pipelines.fraud.reason_texts.finding`); the strongest ``top_n`` of those are kept.

    Args:
        model: a fraud model or baseline.
        features_df: claim feature records (with the context columns the texts quote).
        top_n: most reasons per claim.
        min_weight: a group must add more than this many log-odds to be a reason.
        groups: group name -> feature columns.

    Returns:
        One list per claim (in row order), of at most ``top_n`` reasons; empty when no group is a finding.
    """
    return _explained(model, features_df, top_n, min_weight, groups, with_logits=False)[1]


def explain_with_logits(
    model: Scorer, features_df: pl.DataFrame, top_n: int = 3, *, min_weight: float = 0.0
) -> tuple[npt.NDArray[np.float64], list[list[Reason]]]:
    """The final log-odds of each claim and its reasons (:func:`explain`), from one pass of the model.

    The original records are scored in the same call as their occluded copies, so a caller that needs both the
    score and the reasons (the service, for every claim) pays for one model call instead of two.
    """
    logits, reasons = _explained(model, features_df, top_n, min_weight, FEATURE_GROUPS, with_logits=True)
    assert logits is not None  # with_logits=True always scores
    return logits, reasons


def _explained(
    model: Scorer,
    features_df: pl.DataFrame,
    top_n: int,
    min_weight: float,
    groups: Mapping[str, Sequence[str]],
    *,
    with_logits: bool,
) -> tuple[npt.NDArray[np.float64] | None, list[list[Reason]]]:
    rows: list[dict[str, Any]] = features_df.to_dicts()
    # The typical values thresholds compare with (the claim total's): the model's training medians, as occlusion.
    reference = _reference(model, features_df, [c for c in REFERENCE_COLUMNS if c in features_df.columns])
    # Only a group whose threshold some claim passes can be a reason, so only those are occluded: most claims pass
    # none or one, and each occluded group costs a full pass of the model (the service explains every claim it
    # scores). The reasons are those of occluding every group.
    passing = {g: [finding(g, row, reference) is not None for row in rows] for g in groups}
    candidates = {g: cols for g, cols in groups.items() if any(passing[g])}
    if not candidates and not with_logits:
        return None, [[] for _ in rows]
    if _encodes_numeric_groups(model, candidates):
        # Each claim's own passing groups only, in one pass over the encoded rows (a batch of claims costs what
        # they cost one by one, without a pass per set of groups).
        base, attr, names = _own_attributions(cast("FraudModel", model), features_df, candidates, passing)
    else:
        base, attr, names = _attributions(model, features_df, candidates)
    out: list[list[Reason]] = []
    for i, row in enumerate(rows):
        # Strongest first, ties in the groups' order; only groups this claim passes.
        ranked = [j for j in np.argsort(-attr[i], kind="stable") if passing[names[j]][i] and attr[i, j] > min_weight]
        out.append([make_reason(names[j], attr[i, j], row, reference) for j in ranked[:top_n]])
    return base, out
