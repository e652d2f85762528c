"""The promotion gate's decision: pure rules over two evaluation reports (no MLflow; see ``promotion``).

A candidate is promoted only when every check passes:

1. the lower CI bound of the primary metric (AUROC for diagnosis, AUPRC or precision@k for fraud) is at least
   ``min_primary_low``;
2. the expected calibration error is at most ``max_ece`` (when set);
3. the largest subgroup gap of ``gap_metric`` in each subgroup column is at most ``max_subgroup_gap``;
4. the primary metric's point estimate is not below the champion's minus ``champion_tolerance`` - compared
   only when both were evaluated on the same test data (equal ``test_data_md5``), since numbers on different
   test sets are not comparable;
5. for a model that reads DICOM images (diagnosis), a valid input domain
   (:class:`~pipelines.imaging.domain.InputDomain`) is recorded with the version: without one the service could
   not tell what the model may be used on, and it refuses to serve such a version;
6. for a diagnosis model that reads the pixels (``fused`` or ``image`` mode), an image out-of-distribution score
   (:class:`~pipelines.evaluation.ood.ImageOOD`) is recorded with it: without one a study whose header lies
   would be scored, and the service refuses to serve such a version.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.imaging.domain import InputDomain, InputDomainError
from pipelines.tracking.errors import GateError

PASS = "pass"
FAIL = "fail"


@dataclass(frozen=True)
class GateThresholds:
    """The rules a candidate must meet (from the register stage's params).

    Attributes:
        primary_metric: key in the report's ``metrics`` (``auroc``, ``auprc``, ``precision_at_100`` ...).
        min_primary_low: minimum lower CI bound of the primary metric.
        max_ece: maximum expected calibration error; None skips the check.
        max_subgroup_gap: maximum largest gap between subgroups; None skips the check.
        gap_metric: the metric whose subgroup gap is checked; None means the primary metric.
        champion_tolerance: how far below the champion's point estimate a candidate may be.
    """

    primary_metric: str = "auroc"
    min_primary_low: float = 0.0
    max_ece: float | None = None
    max_subgroup_gap: float | None = None
    gap_metric: str | None = None
    champion_tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.champion_tolerance < 0:
            raise GateError("gate threshold champion_tolerance must be >= 0")
        for key in ("max_ece", "max_subgroup_gap"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise GateError(f"gate threshold {key} must be >= 0")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and one line per check (``pass: ...`` or ``fail: ...``), in check order."""

    promote: bool
    reasons: list[str]
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        """The failed checks only."""
        return [r for r in self.reasons if r.startswith(f"{FAIL}:")]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields."""
        return {"promote": self.promote, "reasons": list(self.reasons), "thresholds": dict(self.thresholds)}


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _estimate(report: Mapping[str, Any], metric: str, part: str = "value") -> float | None:
    est = (report.get("metrics") or {}).get(metric)
    return _num(est.get(part)) if isinstance(est, Mapping) else None


def _level(report: Mapping[str, Any]) -> str:
    level = _num((report.get("bootstrap") or {}).get("level"))
    return f"{level * 100:g}%" if level is not None else "CI"


def _check_primary(candidate: Mapping[str, Any], th: GateThresholds) -> tuple[bool, str]:
    low = _estimate(candidate, th.primary_metric, "low")
    what = f"{th.primary_metric} lower {_level(candidate)} CI bound"
    if low is None:
        return False, f"{what} is undefined (no bootstrap CI in the evaluation)"
    ok = low >= th.min_primary_low
    return ok, f"{what} {low:.4f} {'>=' if ok else '<'} minimum {th.min_primary_low:.4f}"


def _check_ece(candidate: Mapping[str, Any], max_ece: float) -> tuple[bool, str]:
    ece = _estimate(candidate, "ece")
    if ece is None:
        return False, "ece is undefined or missing from the evaluation"
    ok = ece <= max_ece
    return ok, f"ece {ece:.4f} {'<=' if ok else '>'} maximum {max_ece:.4f}"


def _check_gaps(candidate: Mapping[str, Any], metric: str, max_gap: float) -> list[tuple[bool, str]]:
    tables = candidate.get("subgroups") or {}
    results: list[tuple[bool, str]] = []
    for column in sorted(tables):
        gap = ((tables[column] or {}).get("gaps") or {}).get(metric)
        if not isinstance(gap, Mapping) or (value := _num(gap.get("gap"))) is None:
            continue
        ok = value <= max_gap
        pair = f"{gap.get('max_group')} vs {gap.get('min_group')}"
        results.append((ok, f"{metric} gap across {column} {value:.4f} ({pair}) {'<=' if ok else '>'} {max_gap:.4f}"))
    if not results:
        return [(False, f"no subgroup gap of {metric} could be computed: subgroup fairness is unchecked")]
    return results


def _check_champion(
    candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, th: GateThresholds
) -> tuple[bool, str]:
    metric = th.primary_metric
    if champion is None:
        return True, "no champion yet: nothing to compare with"
    cand_md5, champ_md5 = candidate.get("test_data_md5"), champion.get("test_data_md5")
    if not champ_md5:
        return True, "the champion's test data is not recorded: not compared"
    if not cand_md5:
        return True, "the candidate's test data is not recorded: not compared"
    if cand_md5 != champ_md5:
        return True, "the champion was evaluated on other test data: not compared"
    cand, champ = _estimate(candidate, metric), _estimate(champion, metric)
    if cand is None or champ is None:
        return (
            False,
            f"{metric} point estimate missing for the candidate or the champion on the same test data",
        )
    floor = champ - th.champion_tolerance
    ok = cand >= floor
    return ok, (
        f"{metric} {cand:.4f} {'>=' if ok else '<'} champion's {champ:.4f} minus tolerance "
        f"{th.champion_tolerance:.4f} on the same test data"
    )


def check_input_domain(recorded: Any) -> tuple[bool, str]:
    """Check 5: ``recorded`` (the version's ``input_domain`` metadata, None when absent) is a valid input domain."""
    if recorded is None:
        return False, (
            "no input domain is recorded with this version: what it may be used on is unknown and the service "
            "will not serve it (register it with the input_domain.json of `shipa features diagnosis`)"
        )
    try:
        domain = InputDomain.from_dict(recorded)
    except InputDomainError as exc:
        return False, f"the recorded input domain cannot be used ({exc})"
    shown = "; ".join(
        f"{k} {v}"
        for k, v in domain.describe().items()
        if k in ("SOPClassUID", "Modality", "BodyPartExamined", "ViewPosition") or k.startswith("PatientAge")
    )
    return True, f"input domain recorded: {shown or 'no attribute constrained'}"


def check_image_ood(recorded: Any) -> tuple[bool, str]:
    """Check 6: ``recorded`` (the version's ``image_ood`` metadata, None when absent) has a finite threshold."""
    threshold = recorded.get("threshold") if isinstance(recorded, Mapping) else None
    if not isinstance(threshold, int | float) or not math.isfinite(threshold):
        return False, (
            "no image out-of-distribution score is recorded with this version: a study whose header lies would be "
            "scored, and the service will not serve it (register it with the image_ood file of `shipa evaluate`)"
        )
    test = recorded.get("test", {}) if isinstance(recorded.get("test"), Mapping) else {}
    return True, (
        f"image OOD score recorded: threshold {threshold:.1f}, refuses {test.get('refused', '?')} of "
        f"{test.get('n', '?')} test images"
    )


def decide(
    candidate_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    thresholds: GateThresholds,
    *,
    requires_input_domain: bool = False,
    input_domain: Mapping[str, Any] | None = None,
    requires_image_ood: bool = False,
    image_ood: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Decide whether a candidate may become champion.

    Args:
        candidate_metrics: the candidate's ``evaluate_binary`` report, with a top-level ``test_data_md5``.
        champion_metrics: the current champion's report (same shape), or None when there is no champion.
        thresholds: the rules.
        requires_input_domain: the model reads DICOM images (diagnosis): check 5 applies.
        input_domain: the input domain recorded with the candidate (``InputDomain.to_dict()``), None when absent.
        requires_image_ood: the model reads the pixels (a fused or image diagnosis model): check 6 applies.
        image_ood: the image OOD summary recorded with the candidate, None when absent.

    Returns:
        ``promote`` is true only when every check passes; ``reasons`` has one line per check.
    """
    checks = [_check_primary(candidate_metrics, thresholds)]
    if thresholds.max_ece is not None:
        checks.append(_check_ece(candidate_metrics, thresholds.max_ece))
    if thresholds.max_subgroup_gap is not None:
        metric = thresholds.gap_metric or thresholds.primary_metric
        checks.extend(_check_gaps(candidate_metrics, metric, thresholds.max_subgroup_gap))
    checks.append(_check_champion(candidate_metrics, champion_metrics, thresholds))
    if requires_input_domain:
        checks.append(check_input_domain(input_domain))
    if requires_image_ood:
        checks.append(check_image_ood(image_ood))
    reasons = [f"{PASS if ok else FAIL}: {text}" for ok, text in checks]
    return GateDecision(promote=all(ok for ok, _ in checks), reasons=reasons, thresholds=thresholds.as_dict())
