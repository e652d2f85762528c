"""Model cards per registered version, in JSON (fields after MONAI model-zoo ``metadata.json``) and Markdown.

Inputs are plain dicts: an ``evaluate_binary`` report (plus ``test_data_md5``), a training-data summary
(counts, date range, prevalence, regions: aggregates only), lineage tags and the registry's version history.
Rendering is deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.tracking import tags as names
from pipelines.tracking.card_text import CardText
from pipelines.tracking.errors import ModelCardError

SCHEMA_VERSION = "1.0"
CALIBRATION_METRICS = ("ece", "brier", "calibration_slope", "calibration_intercept")
UNDEFINED = "n/a"

# Strings that look like personal data: a 12-digit IIN, a phone number, an e-mail address.
_PHI_PATTERNS = {
    "IIN-like number": re.compile(r"(?<![0-9A-Za-z])\d{12}(?![0-9A-Za-z])"),
    "phone-like number": re.compile(
        r"(?<![0-9A-Za-z])\+?[78][\s\-(]*\d{3}[\s\-)]*\d{3}[\s\-]*\d{2}[\s\-]*\d{2}(?![0-9A-Za-z])"
    ),
    "e-mail address": re.compile(r"[\w.+\-]+@[\w\-]+\.[\w.\-]+"),
}


def personal_data_findings(value: Any, path: str = "") -> list[str]:
    """``"<field path>: <kind>"`` for every string in a nested value that looks like personal data.

    The findings name the field and the kind of match, never the matched text, so they are safe to show.
    """
    found: list[str] = []
    if isinstance(value, str):
        found += [f"{path or '<root>'}: {kind}" for kind, rx in _PHI_PATTERNS.items() if rx.search(value)]
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found += personal_data_findings(str(key), f"{path}.{key}(key)" if path else f"{key}(key)")
            found += personal_data_findings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found += personal_data_findings(item, f"{path}[{i}]")
    return found


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _estimate(est: Any) -> dict[str, float | None]:
    est = est if isinstance(est, Mapping) else {}
    return {"value": _num(est.get("value")), "low": _num(est.get("low")), "high": _num(est.get("high"))}


def _lineage_section(lineage: Mapping[str, str]) -> dict[str, Any]:
    return {
        "stage": lineage.get(names.STAGE, ""),
        "git_commit": lineage.get(names.GIT_COMMIT, ""),
        "git_dirty": lineage.get(names.GIT_DIRTY, ""),
        "params_sha256": lineage.get(names.PARAMS_SHA256, ""),
        "device": lineage.get(names.DEVICE, ""),
        "data": {k[len(names.DATA_PREFIX) :]: v for k, v in sorted(lineage.items()) if k.startswith(names.DATA_PREFIX)},
        "versions": {
            k[len(names.VERSION_PREFIX) :]: v for k, v in sorted(lineage.items()) if k.startswith(names.VERSION_PREFIX)
        },
    }


def _subgroup_section(report: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, table in sorted((report.get("subgroups") or {}).items()):
        groups = {}
        for value, group in sorted((table.get("groups") or {}).items()):
            group_metrics = group.get("metrics") or {}
            groups[value] = {
                "n": group.get("n"),
                "n_positive": group.get("n_positive"),
                "prevalence": _num(group.get("prevalence")),
                "metrics": {m: _estimate(group_metrics.get(m)) for m in metrics} if group.get("metrics") else None,
            }
        gaps = table.get("gaps") or {}
        out[column] = {"groups": groups, "gaps": {m: gaps.get(m) for m in metrics if m in gaps}}
    return out


def build_model_card(
    *,
    name: str,
    version: str,
    text: CardText,
    evaluation: Mapping[str, Any],
    data_summary: Mapping[str, Any],
    lineage: Mapping[str, str],
    history: Sequence[Mapping[str, Any]] = (),
    primary_metric: str = "auroc",
    subgroup_metrics: Sequence[str] = ("sensitivity", "specificity"),
) -> dict[str, Any]:
    """Assemble a model card as a JSON-ready dict.

    Args:
        name: registered model name.
        version: registered version.
        text: intended use, users, inputs/outputs, limitations (see :mod:`pipelines.tracking.card_text`).
        evaluation: the test-set ``evaluate_binary`` report, with ``test_data_md5`` when known.
        data_summary: aggregate description of the training data (counts, date range, prevalence, regions).
        lineage: ``shipa.*`` tags of the training run (:func:`pipelines.tracking.lineage.collect_lineage`).
        history: the registry changelog (:func:`pipelines.tracking.registry.version_history`).
        primary_metric: the metric listed first and shown per subgroup.
        subgroup_metrics: further metrics shown per subgroup.

    Raises:
        ModelCardError: a string in the inputs looks like personal data (the message names the field only).
    """
    findings = personal_data_findings(
        {
            "data_summary": data_summary,
            "text": text.__dict__,
            "history": list(history),
            "lineage": dict(lineage),
        }
    )
    if findings:
        raise ModelCardError(f"model card of {name} version {version} refused: {'; '.join(findings)}")
    metrics = evaluation.get("metrics") or {}
    boot = evaluation.get("bootstrap") or {}
    group_metrics = [primary_metric, *[m for m in subgroup_metrics if m != primary_metric]]
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": str(version),
        "task": text.task,
        "intended_use": text.intended_use,
        "intended_users": list(text.intended_users),
        "out_of_scope_uses": list(text.out_of_scope_uses),
        "inputs": dict(text.inputs),
        "intended_input": dict(text.intended_input),
        "outputs": dict(text.outputs),
        "training_data": json.loads(json.dumps(data_summary, sort_keys=True, default=str)),
        "evaluation": {
            "test_data_md5": evaluation.get("test_data_md5"),
            "n": evaluation.get("n"),
            "n_positive": evaluation.get("n_positive"),
            "prevalence": _num(evaluation.get("prevalence")),
            "threshold": _num(evaluation.get("threshold")),
            "ci_level": _num(boot.get("level")),
            "bootstrap_resamples": boot.get("n_boot"),
            "bootstrap_unit": boot.get("unit"),
            "primary_metric": primary_metric,
            "metrics": {k: _estimate(v) for k, v in metrics.items() if k not in CALIBRATION_METRICS},
        },
        "calibration": {k: _estimate(metrics[k]) for k in CALIBRATION_METRICS if k in metrics},
        "subgroups": _subgroup_section(evaluation, group_metrics),
        "limitations": list(text.limitations),
        "failure_modes": list(text.failure_modes),
        "lineage": _lineage_section(lineage),
        "changelog": [dict(h) for h in history],
    }


def _f(value: Any, digits: int = 3) -> str:
    num = _num(value)
    return UNDEFINED if num is None else f"{num:.{digits}f}"


def _ci(est: Mapping[str, Any]) -> str:
    if _num(est.get("low")) is None or _num(est.get("high")) is None:
        return UNDEFINED
    return f"{_f(est['low'])} to {_f(est['high'])}"


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, float):
        return _f(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _metric_order(metrics: Mapping[str, Any], primary: str) -> list[str]:
    return ([primary] if primary in metrics else []) + sorted(k for k in metrics if k != primary)


def _flat(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key in sorted(data):
        label = f"{prefix}{key}"
        if isinstance(data[key], Mapping):
            rows += _flat(data[key], f"{label}.")
        else:
            rows.append((label, data[key]))
    return rows


def _intended_input(domain: Mapping[str, Any]) -> list[str]:
    """The "Intended input" section: the DICOM header the service requires (the recorded input domain).

    Absent when no domain is recorded (a fraud model has none; a diagnosis model without one is never served).
    """
    if not domain:
        return []
    out = ["", "## Intended input", ""]
    out += [
        "The service refuses, before decoding any pixel, a DICOM file whose header is outside this domain "
        '(422 "outside this model\'s intended use", naming the attribute).',
        "",
        "| DICOM attribute | accepted |",
        "| --- | --- |",
    ]
    return out + [f"| {k} | {_cell(v)} |" for k, v in domain.items()]


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown, deterministic for the same card."""
    ev = card["evaluation"]
    level = f"{ev['ci_level'] * 100:g}% CI" if ev.get("ci_level") else "CI"
    primary = ev["primary_metric"]
    out = [f"# Model card: {card['name']}, version {card['version']}", "", card["task"], ""]
    out += ["## Intended use", "", card["intended_use"], "", "Intended users:", ""]
    out += [f"- {u}" for u in card["intended_users"]]
    out += ["", "Out of scope:", ""] + [f"- {u}" for u in card["out_of_scope_uses"]]
    for title, key in (("Inputs", "inputs"), ("Outputs", "outputs")):
        out += ["", f"## {title}", "", "| name | description |", "| --- | --- |"]
        out += [f"| {k} | {_cell(v)} |" for k, v in sorted(card[key].items())]
        if key == "inputs":
            out += _intended_input(card.get("intended_input") or {})
    out += ["", "## Training data", "", "| field | value |", "| --- | --- |"]
    out += [f"| {k} | {_cell(v)} |" for k, v in _flat(card["training_data"])]
    out += [
        "",
        "## Evaluation",
        "",
        f"Test set: n = {ev['n']}, positives = {ev['n_positive']}, prevalence = {_f(ev['prevalence'])}; "
        f"decision threshold {_f(ev['threshold'])}; {level} from {ev['bootstrap_resamples']} "
        f"bootstrap resamples by {ev['bootstrap_unit']}. "
        f"Test data md5: {ev['test_data_md5'] or 'not recorded'}.",
        "",
        f"| metric | value | {level} |",
        "| --- | --- | --- |",
    ]
    out += [
        f"| {m} | {_f(ev['metrics'][m]['value'])} | {_ci(ev['metrics'][m])} |"
        for m in _metric_order(ev["metrics"], primary)
    ]
    out += ["", "## Calibration", "", f"| metric | value | {level} |", "| --- | --- | --- |"]
    out += [f"| {m} | {_f(e['value'])} | {_ci(e)} |" for m, e in card["calibration"].items()]
    out += ["", "## Subgroups"]
    for column, table in card["subgroups"].items():
        shown = list(table["gaps"]) or [primary]
        out += [
            "",
            f"### {column}",
            "",
            "| group | n | positives | prevalence | " + " | ".join(f"{m} ({level})" for m in shown) + " |",
        ]
        out.append("| --- | --- | --- | --- | " + " | ".join("---" for _ in shown) + " |")
        for value, g in table["groups"].items():
            cells = [
                "too few samples"
                if g["metrics"] is None
                else f"{_f(g['metrics'][m]['value'])} ({_ci(g['metrics'][m])})"
                for m in shown
            ]
            out.append(
                f"| {value} | {g['n']} | {g['n_positive']} | {_f(g['prevalence'])} | " + " | ".join(cells) + " |"
            )
        for metric, gap in table["gaps"].items():
            if gap:
                out.append(f"\nLargest {metric} gap: {_f(gap['gap'])} ({gap['max_group']} vs {gap['min_group']}).")
    out += ["", "## Limitations and known failure modes", ""]
    out += [f"- {x}" for x in card["limitations"]] + [f"- failure mode: {x}" for x in card["failure_modes"]]
    lin = card["lineage"]
    out += ["", "## Lineage", "", "| item | value |", "| --- | --- |"]
    out += [f"| {k} | {lin[k]} |" for k in ("stage", "git_commit", "git_dirty", "params_sha256", "device")]
    out += [f"| data: {path} | {md5} |" for path, md5 in lin["data"].items()]
    out += [f"| version: {pkg} | {v} |" for pkg, v in lin["versions"].items()]
    out += [
        "",
        "## Version history",
        "",
        "| version | created | aliases | gate | by | summary |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    out += [
        f"| {h.get('version', '')} | {h.get('created', '')} | {_cell(h.get('aliases', []))} "
        f"| {h.get('gate_decision', '')} | {h.get('gate_by', '')} | {_cell(h.get('summary', ''))} |"
        for h in card["changelog"]
    ]
    return "\n".join(out) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def card_json(card: Mapping[str, Any]) -> str:
    """The card as canonical JSON text (sorted keys, two-space indent, UTF-8, trailing newline)."""
    return json.dumps(card, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_model_card(card: Mapping[str, Any], out_dir: Path, stem: str = "model_card") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` atomically; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    _write_atomic(json_path, card_json(card))
    _write_atomic(md_path, render_markdown(card))
    return json_path, md_path
