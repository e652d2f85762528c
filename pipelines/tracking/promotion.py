"""Apply the gate's decision in the registry, or a named person's override, and record it for auditors.

Every decision is recorded three ways before ``champion`` moves: version tags (``shipa.gate.*``), a paragraph
appended to the version description, and a report (JSON + Markdown) logged to the version's run under
``registry/<name>/v<version>/``.

A diagnosis model (``shipa-diagnosis-*``) becomes champion only with a valid input domain in its MLmodel metadata
(``input_domain``, written by the register stage) and, when it reads the pixels, an image out-of-distribution
score (``image_ood``): the gate fails without them, and an override is refused, since the service would not
serve it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.tracking import tags as names
from pipelines.tracking.client import connect
from pipelines.tracking.errors import GateError, TrackingError
from pipelines.tracking.gate import GateDecision, GateThresholds, check_image_ood, check_input_domain, decide
from pipelines.tracking.model_card import card_json, render_markdown
from pipelines.tracking.registry import (
    VersionInfo,
    append_description,
    champion_version,
    get_version,
    is_diagnosis_model,
    set_alias,
    set_version_tags,
    version_metadata,
)

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
INPUT_DOMAIN_METADATA = "input_domain"
IMAGE_OOD_METADATA = "image_ood"


def recorded_input_domain(name: str, version: str, *, tracking_uri: str) -> Any:
    """The ``input_domain`` metadata logged with a version's model (as logged, unvalidated), or None."""
    return version_metadata(name, version, tracking_uri=tracking_uri).get(INPUT_DOMAIN_METADATA)


def reads_pixels(metadata: Mapping[str, Any]) -> bool:
    """Whether a diagnosis version's model reads the image (its ``mode`` metadata is not ``ehr``)."""
    return bool(metadata.get("mode", "fused") != "ehr")


def artifact_dir(name: str, version: str) -> str:
    """The run-artifact folder of one version's records: ``registry/<name>/v<version>``."""
    return f"registry/{name}/v{version}"


def _run_of(info: VersionInfo) -> str:
    if not info.run_id:
        raise TrackingError(f"{info.uri} has no source run to record evaluations and gate reports in")
    return info.run_id


def _fmt_metric(est: Mapping[str, Any]) -> str:
    value, low, high = est.get("value"), est.get("low"), est.get("high")
    if not isinstance(value, int | float):
        return "undefined"
    if isinstance(low, int | float) and isinstance(high, int | float):
        return f"{value:.4f} [{low:.4f}, {high:.4f}]"
    return f"{value:.4f}"


def attach_evaluation(name: str, version: str, report: Mapping[str, Any], *, tracking_uri: str) -> None:
    """Store a version's evaluation with it: JSON in its run, headline metrics and test data as tags.

    Args:
        name: registered model name.
        version: the version.
        report: an ``evaluate_binary`` report with a top-level ``test_data_md5``.
        tracking_uri: the MLflow store.
    """
    info = get_version(name, version, tracking_uri=tracking_uri)
    connect(tracking_uri).log_dict(_run_of(info), dict(report), f"{artifact_dir(name, version)}/{EVALUATION_FILE}")
    # One tag for all headline metrics: each model-version tag is one request to a tracking server.
    lines = [f"{k}: {_fmt_metric(v)}" for k, v in (report.get("metrics") or {}).items()]
    version_tags = {names.METRICS: "\n".join(lines)}
    if report.get("test_data_md5"):
        version_tags[names.TEST_DATA_MD5] = str(report["test_data_md5"])
    set_version_tags(name, version, version_tags, tracking_uri=tracking_uri)


def version_evaluation(name: str, version: str, *, tracking_uri: str) -> dict[str, Any] | None:
    """The evaluation report attached to a version, or None when none was attached."""
    info = get_version(name, version, tracking_uri=tracking_uri)
    if not info.run_id:
        return None
    client = connect(tracking_uri)
    folder = artifact_dir(name, version)
    if not any(a.path == f"{folder}/{EVALUATION_FILE}" for a in client.list_artifacts(info.run_id, folder)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(info.run_id, f"{folder}/{EVALUATION_FILE}", tmp)
        report: dict[str, Any] = json.loads(Path(local).read_text(encoding="utf-8"))
        return report


def log_model_card(name: str, version: str, card: Mapping[str, Any], *, tracking_uri: str) -> str:
    """Log a model card (JSON + Markdown) to the version's run; returns the artifact folder it went to."""
    info = get_version(name, version, tracking_uri=tracking_uri)
    client = connect(tracking_uri)
    folder = artifact_dir(name, version)
    client.log_text(_run_of(info), card_json(card), f"{folder}/model_card.json")
    client.log_text(_run_of(info), render_markdown(card), f"{folder}/model_card.md")
    return folder


def render_report_markdown(report: Mapping[str, Any]) -> str:
    """A gate or override report as Markdown (deterministic for the same report)."""
    verdict = {
        "promote": "promoted to champion",
        "refuse": "refused (champion unchanged)",
        "override": "made champion by override",
    }[report["decision"]]
    lines = [
        f"# Promotion gate: {report['model']} version {report['version']}",
        "",
        f"- Decision: **{verdict}**",
        f"- By: {report['by']}",
        f"- At: {report['at']}",
        f"- Champion before: {report['champion_before'] or 'none'}",
        f"- Champion after: {report['champion_after'] or 'none'}",
    ]
    if report.get("override_reason"):
        lines.append(f"- Override reason: {report['override_reason']}")
    lines += ["", "## Checks", ""]
    lines += [f"- {reason}" for reason in report["reasons"]] or ["- none (override)"]
    if report.get("thresholds"):
        lines += ["", "## Thresholds", "", "| rule | value |", "| --- | --- |"]
        lines += [f"| {key} | {value} |" for key, value in report["thresholds"].items()]
    return "\n".join(lines) + "\n"


def _record(
    name: str,
    version: str,
    *,
    tracking_uri: str,
    decision: str,
    by: str,
    reasons: list[str],
    thresholds: Mapping[str, Any],
    override_reason: str | None,
    now: datetime | None,
) -> dict[str, Any]:
    info = get_version(name, version, tracking_uri=tracking_uri)
    run_id = _run_of(info)
    at = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    before = champion_version(name, tracking_uri=tracking_uri)
    moves = decision in ("promote", "override")
    report: dict[str, Any] = {
        "model": name,
        "version": str(version),
        "decision": decision,
        "by": by,
        "at": at,
        "champion_before": before,
        "champion_after": str(version) if moves else before,
        "reasons": list(reasons),
        "thresholds": dict(thresholds),
    }
    if override_reason is not None:
        report["override_reason"] = override_reason
    version_tags = {
        names.GATE_DECISION: decision,
        names.GATE_REASONS: "\n".join(reasons) or "override",
        names.GATE_BY: by,
        names.GATE_AT: at,
        names.GATE_PREVIOUS_CHAMPION: before or "none",
    }
    if override_reason is not None:
        version_tags[names.GATE_OVERRIDE_REASON] = override_reason
    set_version_tags(name, version, version_tags, tracking_uri=tracking_uri)
    markdown = render_report_markdown(report)
    append_description(
        name, version, markdown.replace("# Promotion gate", "### Promotion gate"), tracking_uri=tracking_uri
    )
    stamp = at.replace(":", "").replace("-", "").replace("+0000", "Z")
    client = connect(tracking_uri)
    base = f"{artifact_dir(name, version)}/gate-{stamp}-{decision}"
    client.log_dict(run_id, report, f"{base}.json")
    client.log_text(run_id, markdown, f"{base}.md")
    if moves:
        set_alias(name, names.CHAMPION, str(version), tracking_uri=tracking_uri)
    log.info(
        "gate %s: %s version %s by %s (champion %s -> %s)",
        decision,
        name,
        version,
        by,
        before,
        report["champion_after"],
    )
    return report


def apply_gate(
    name: str,
    version: str,
    decision: GateDecision,
    *,
    tracking_uri: str,
    actor: str = "gate",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record the gate's decision on a version and move ``champion`` to it only when ``decision.promote``.

    Returns:
        The gate report (also logged as JSON and Markdown to the version's run).
    """
    return _record(
        name,
        str(version),
        tracking_uri=tracking_uri,
        decision="promote" if decision.promote else "refuse",
        by=actor,
        reasons=decision.reasons,
        thresholds=decision.thresholds,
        override_reason=None,
        now=now,
    )


def override(
    name: str,
    version: str,
    *,
    tracking_uri: str,
    person: str,
    reason: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Make a version champion regardless of the gate, recorded as an override by a named person.

    Raises:
        GateError: ``person`` or ``reason`` is empty.
    """
    if not person.strip():
        raise GateError(f"override of {name} version {version} needs the name of the person responsible")
    if not reason.strip():
        raise GateError(f"override of {name} version {version} needs a reason")
    if is_diagnosis_model(name):
        metadata = version_metadata(name, str(version), tracking_uri=tracking_uri)
        checks = [check_input_domain(metadata.get(INPUT_DOMAIN_METADATA))]
        if reads_pixels(metadata):
            checks.append(check_image_ood(metadata.get(IMAGE_OOD_METADATA)))
        for ok, why in checks:
            if not ok:
                raise GateError(f"override of {name} version {version} refused: {why}")
    return _record(
        name,
        str(version),
        tracking_uri=tracking_uri,
        decision="override",
        by=person.strip(),
        reasons=[f"override: {reason.strip()}"],
        thresholds={},
        override_reason=reason.strip(),
        now=now,
    )


def gate_version(
    name: str,
    version: str,
    candidate_metrics: Mapping[str, Any],
    thresholds: GateThresholds,
    *,
    tracking_uri: str,
    actor: str = "gate",
    now: datetime | None = None,
) -> GateDecision:
    """Attach the candidate's evaluation, compare with the champion's, decide and apply (register stage).

    A diagnosis model's recorded input domain is checked too (see the module docstring).

    Returns:
        The decision (already recorded and applied).
    """
    version = str(version)
    attach_evaluation(name, version, candidate_metrics, tracking_uri=tracking_uri)
    champion = champion_version(name, tracking_uri=tracking_uri)
    champion_metrics = None
    if champion is not None and champion != version:
        # A champion without an attached evaluation compares as "test data not recorded", not "no champion".
        champion_metrics = version_evaluation(name, champion, tracking_uri=tracking_uri) or {}
    diagnosis = is_diagnosis_model(name)
    metadata = version_metadata(name, version, tracking_uri=tracking_uri) if diagnosis else {}
    decision = decide(
        candidate_metrics,
        champion_metrics,
        thresholds,
        requires_input_domain=diagnosis,
        input_domain=metadata.get(INPUT_DOMAIN_METADATA),
        requires_image_ood=diagnosis and reads_pixels(metadata),
        image_ood=metadata.get(IMAGE_OOD_METADATA),
    )
    apply_gate(name, version, decision, tracking_uri=tracking_uri, actor=actor, now=now)
    return decision
