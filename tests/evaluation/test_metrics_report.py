"""The metrics report: JSON-serialisable, complete, deterministic with a seed."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from pipelines.evaluation.metrics import auroc, confusion_at
from pipelines.evaluation.metrics_report import evaluate_binary
from pipelines.evaluation.subgroups import age_band


def _only_builtins(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_builtins(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_builtins(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


@pytest.fixture
def cohort() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    n_patients = 150
    images = rng.integers(1, 4, n_patients)
    patient = np.repeat(np.arange(n_patients), images)
    n = patient.shape[0]
    z = rng.normal(0, 2, n)
    return {
        "y": (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int),
        "p": 1 / (1 + np.exp(-1.5 * z)),
        "patient": patient,
        "sex": np.where(rng.random(n_patients) < 0.5, "female", "male")[patient],
        "age": age_band(rng.uniform(0, 90, n_patients))[patient],
        "kzt": rng.uniform(1_000, 100_000, n),
    }


def test_report_is_json_serialisable_and_complete(cohort: dict[str, np.ndarray]) -> None:
    report = evaluate_binary(
        cohort["y"],
        cohort["p"],
        threshold=0.5,
        groups=cohort["patient"],
        subgroups={"sex": cohort["sex"], "age_band": cohort["age"]},
        n_boot=200,
        seed=1,
        min_group_size=20,
        top_k=(10, 50),
        amounts=cohort["kzt"],
    )
    text = json.dumps(report, allow_nan=False)
    assert _only_builtins(json.loads(text)) and _only_builtins(report)
    assert report["n"] == cohort["y"].shape[0] and report["n_groups"] == 150
    assert report["bootstrap"] == {"n_boot": 200, "seed": 1, "level": 0.95, "unit": "group"}
    assert report["confusion"] == confusion_at(cohort["y"], cohort["p"], 0.5).as_dict()
    assert report["metrics"]["auroc"]["value"] == pytest.approx(auroc(cohort["y"], cohort["p"]))
    expected = {"auroc", "auprc", "sensitivity", "specificity", "ppv", "npv", "brier", "ece"}
    expected |= {"calibration_slope", "calibration_intercept"}
    expected |= {f"{m}_at_{k}" for m in ("precision", "recall", "money") for k in (10, 50)}
    assert set(report["metrics"]) == expected
    for name, m in report["metrics"].items():
        assert m["low"] <= m["value"] <= m["high"], name
    # Overconfident probabilities (1.5 x the true log-odds): slope about 2/3.
    assert report["metrics"]["calibration_slope"]["value"] < 0.9
    assert set(report["subgroups"]) == {"sex", "age_band"}
    sex = report["subgroups"]["sex"]
    assert set(sex["groups"]) == {"female", "male"}
    assert sum(g["n"] for g in sex["groups"].values()) == report["n"]
    assert sex["gaps"]["auroc"]["gap"] == pytest.approx(
        abs(sex["groups"]["female"]["metrics"]["auroc"]["value"] - sex["groups"]["male"]["metrics"]["auroc"]["value"])
    )
    assert "money_at_10" not in sex["gaps"]


def test_report_is_deterministic_with_a_seed(cohort: dict[str, np.ndarray]) -> None:
    def run(seed: int) -> dict[str, Any]:
        return evaluate_binary(
            cohort["y"], cohort["p"], threshold=0.4, subgroups={"sex": cohort["sex"]}, n_boot=100, seed=seed
        )

    assert json.dumps(run(5)) == json.dumps(run(5))
    assert json.dumps(run(5)) != json.dumps(run(6))


def test_undefined_values_become_none() -> None:
    # A rare-event test set: no positive in the top ten, and subgroups without positives.
    y = np.array([0] * 60 + [1, 1])
    p = np.linspace(0.9, 0.0, 62)
    region = np.array(["a"] * 31 + ["b"] * 31)
    report = evaluate_binary(y, p, threshold=0.5, subgroups={"region": region}, n_boot=50, seed=0, min_group_size=5)
    json.dumps(report, allow_nan=False)
    assert report["subgroups"]["region"]["groups"]["a"]["metrics"]["auroc"]["value"] is None
    assert report["subgroups"]["region"]["gaps"]["auroc"] is None
    assert report["metrics"]["auroc"]["n_undefined"] > 0


def test_report_needs_probabilities() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_binary([0, 1], [-2.0, 3.0], threshold=0.0, n_boot=0)
