"""The gate's rules on real evaluate_binary reports (pure: no MLflow)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipelines.tracking.errors import GateError
from pipelines.tracking.gate import GateThresholds, decide

RULES = GateThresholds(
    primary_metric="auroc", min_primary_low=0.65, max_ece=0.2, max_subgroup_gap=0.1, champion_tolerance=0.01
)


def test_first_good_model_passes_every_check(good_report: dict[str, Any]) -> None:
    decision = decide(good_report, None, RULES)

    assert decision.promote
    assert decision.failures == []
    assert decision.reasons[0].startswith("pass: auroc lower 95% CI bound")
    assert decision.reasons[-1] == "pass: no champion yet: nothing to compare with"
    assert sum("gap across" in r for r in decision.reasons) == 2  # sex and region


def test_worse_than_champion_on_the_same_test_data_is_refused(
    good_report: dict[str, Any], weak_report: dict[str, Any]
) -> None:
    decision = decide(weak_report, good_report, RULES)

    assert not decision.promote
    assert len(decision.failures) == 1
    assert "champion's" in decision.failures[0] and "on the same test data" in decision.failures[0]


def test_champion_on_other_test_data_is_not_compared(good_report: dict[str, Any], weak_report: dict[str, Any]) -> None:
    other = {**good_report, "test_data_md5": "another-test-set"}

    decision = decide(weak_report, other, RULES)

    assert decision.promote
    assert decision.reasons[-1] == "pass: the champion was evaluated on other test data: not compared"


def test_tolerance_lets_a_slightly_worse_model_through(good_report: dict[str, Any]) -> None:
    slightly = copy.deepcopy(good_report)
    slightly["metrics"]["auroc"]["value"] -= 0.005

    assert decide(slightly, good_report, RULES).promote
    assert not decide(slightly, good_report, GateThresholds(min_primary_low=0.65)).promote


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (GateThresholds(min_primary_low=0.95), "fail: auroc lower 95% CI bound"),
        (GateThresholds(max_ece=0.01), "fail: ece"),
        (GateThresholds(max_subgroup_gap=0.001), "fail: auroc gap across"),
    ],
)
def test_each_rule_can_refuse(good_report: dict[str, Any], rules: GateThresholds, expected: str) -> None:
    decision = decide(good_report, None, rules)

    assert not decision.promote
    assert any(f.startswith(expected) for f in decision.failures)


def test_missing_evidence_refuses(good_report: dict[str, Any]) -> None:
    no_ci = copy.deepcopy(good_report)
    no_ci["metrics"]["auroc"]["low"] = None
    no_subgroups = {k: v for k, v in good_report.items() if k != "subgroups"}

    assert decide(no_ci, None, RULES).failures[0].startswith("fail: auroc lower 95% CI bound is undefined")
    assert "subgroup fairness is unchecked" in decide(no_subgroups, None, RULES).failures[0]
    assert decide(good_report, None, GateThresholds(primary_metric="precision_at_100")).promote is False


def test_thresholds_are_checked() -> None:
    with pytest.raises(GateError, match="champion_tolerance"):
        GateThresholds(champion_tolerance=-0.1)
    with pytest.raises(GateError, match="max_ece"):
        GateThresholds(max_ece=-1)
