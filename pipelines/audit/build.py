"""Turn a version's evidence, its usage and the audit log's verification into the report's document."""

from __future__ import annotations

from pipelines.audit import titles
from pipelines.audit.common import NA, ReportOptions, banner, fmt, primary_metric, value_ci
from pipelines.audit.document import Block, Bullets, Document, KeyValues, Paragraph, Section
from pipelines.audit.drift import DriftRow
from pipelines.audit.evidence import VersionEvidence
from pipelines.audit.sections_lineage import lineage_section
from pipelines.audit.sections_model import calibration_section, metrics_section, subgroups_section, training_section
from pipelines.audit.sections_registry import gate_section, model_card_section, promotion_section
from pipelines.audit.sections_usage import drift_section, usage_section
from pipelines.audit.usage import Usage
from pipelines.predictionlog.log import VerifyResult
from pipelines.tracking import tags as names

__all__ = ["ReportOptions", "build_document"]


def _summary(
    ev: VersionEvidence, usage: Usage | None, verify: VerifyResult | None, overall: DriftRow | None
) -> Section:
    tags = ev.lineage_tags
    primary = primary_metric(ev)
    metrics = (ev.evaluation or {}).get("metrics") or {}
    if verify is None:
        log_state = "not read"
    elif verify.ok:
        log_state = f"verified ({verify.checked} records)"
    else:
        log_state = f"ALTERED at record {verify.first_bad_id}"
    rows = [
        ("model", ev.info.name),
        ("version", ev.info.version),
        ("model URI", ev.info.uri),
        ("aliases", ", ".join(ev.info.aliases) or "none"),
        ("registered", ev.info.created or NA),
        ("MLflow run", ev.info.run_id or "none"),
        ("git commit", tags.get(names.GIT_COMMIT, "unknown")),
        ("test data md5", tags.get(names.TEST_DATA_MD5) or str((ev.evaluation or {}).get("test_data_md5") or NA)),
        (f"test {primary} [CI]", value_ci(metrics.get(primary))),
        ("gate decision", tags.get(names.GATE_DECISION, "none")),
        ("gate decided by", f"{tags.get(names.GATE_BY, NA)} at {tags.get(names.GATE_AT, NA)}"),
        ("audit log chain", log_state),
        ("predictions recorded", str(usage.total) if usage else "not read"),
        ("output drift (PSI, all days)", f"{fmt(overall.psi)} ({overall.label})" if overall else NA),
    ]
    blocks: list[Block] = [KeyValues(rows)]
    differing = [c.path for c in ev.data_checks if c.status == "differs"]
    if differing:
        blocks.append(
            Paragraph(
                "The workspace's dvc.lock records other hashes than this version for: " + ", ".join(differing) + ".",
                "warn",
            )
        )
    return Section("summary", titles.SUMMARY, blocks)


def _search(ev: VersionEvidence) -> Section:
    tags = ev.lineage_tags
    items = [f"Models > {ev.info.name} > Version {ev.info.version}: tags, aliases, description and source run."]
    if names.GIT_COMMIT in tags:
        items.append(f"Runs built from the same commit: tags.shipa.git_commit = '{tags[names.GIT_COMMIT]}'")
    if names.PIPELINE_RUN_ID in tags:
        items.append(
            f"Stage runs of the same pipeline run: tags.\"shipa.pipeline_run_id\" = '{tags[names.PIPELINE_RUN_ID]}'"
        )
    for path, md5 in list(ev.data_hashes.items())[:6]:
        items.append(f"Runs that read the same {path}: tags.\"shipa.data.{path}\" = '{md5}'")
    items.append("See pipelines/audit/README.md (For auditors) for more searches.")
    return Section("search", titles.SEARCH, [Bullets(items)])


def build_document(
    ev: VersionEvidence,
    *,
    usage: Usage | None,
    verify: VerifyResult | None,
    audit_source: str,
    generated_at: str,
    options: ReportOptions | None = None,
) -> Document:
    """The auditors' report of one version as a :class:`Document`.

    Args:
        ev: the version's evidence (:func:`pipelines.audit.evidence.collect`).
        usage: its usage from the audit log, or None when no log was read.
        verify: the audit log's chain verification, or None.
        audit_source: where the audit log is (shown to the reader; never a password-bearing URL).
        generated_at: ISO 8601 time of the report.
        options: calibration bins and drift settings.
    """
    options = options or ReportOptions()
    drift, overall = drift_section(ev, usage, options)
    sections = [
        _summary(ev, usage, verify, overall),
        lineage_section(ev),
        training_section(ev),
        metrics_section(ev),
        calibration_section(ev, options),
        subgroups_section(ev),
        gate_section(ev),
        promotion_section(ev),
        model_card_section(ev),
        usage_section(usage, verify, audit_source),
        drift,
        _search(ev),
    ]
    return Document(
        title=f"Audit report: {ev.info.name} version {ev.info.version}",
        subtitle=f"Generated {generated_at} by shipa audit report from the MLflow registry, the workspace's "
        "dvc.lock and the service audit log.",
        banner=banner(verify, audit_source),
        sections=sections,
    )
