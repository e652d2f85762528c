"""The report's lineage section: commit, data hashes against dvc.lock, upstream stages, ingest report, params."""

from __future__ import annotations

from collections.abc import Mapping

from pipelines.audit import titles
from pipelines.audit.common import NA, flat
from pipelines.audit.document import Block, KeyValues, Mark, Paragraph, Section, Table, Tone
from pipelines.audit.evidence import VersionEvidence
from pipelines.tracking import tags as names

_STATUS_MARKS: dict[str, Mark] = {"match": "ok", "differs": "alert"}


def _status_mark(status: str) -> Mark | None:
    return _STATUS_MARKS.get(status)


def lineage_section(ev: VersionEvidence) -> Section:
    """Commit, runs, data hashes against dvc.lock, upstream stages, ingest report, params, environment."""
    tags = ev.lineage_tags
    run = ev.run
    blocks: list[Block] = [
        KeyValues(
            [
                ("git commit", tags.get(names.GIT_COMMIT, "unknown")),
                ("uncommitted changes", tags.get(names.GIT_DIRTY, "unknown")),
                ("pipeline run", tags.get(names.PIPELINE_RUN_ID, NA)),
                (
                    "MLflow run",
                    f"{run.run_id} ({run.stage or run.name}, {run.status}, {run.start} to {run.end})"
                    if run
                    else "none",
                ),
                ("params sha256", tags.get(names.PARAMS_SHA256, NA)),
                ("data hashes from", tags.get(names.DATA_SOURCE, NA)),
                ("host", tags.get(names.HOST, NA)),
                ("device", tags.get(names.DEVICE, NA)),
            ]
        )
    ]
    rows: list[list[str]] = []
    marks: dict[tuple[int, int], Mark] = {}
    for i, c in enumerate(ev.data_checks):
        rows.append([c.path, c.recorded, c.lock_md5 or NA, c.producer or "input", c.status])
        mark = _status_mark(c.status)
        if mark:
            marks[(i, 4)] = mark
    where = ev.lock_path if ev.lock_found else f"{ev.lock_path} (not found)"
    blocks.append(
        Table(
            ["path", "version's md5 (shipa.data.*)", "dvc.lock md5", "produced by", "status"],
            rows,
            caption=f"Data versions: the version's lineage tags against {where}",
            marks=marks,
        )
        if rows
        else Paragraph("The version records no data hashes (shipa.data.* tags).", "warn")
    )
    up_rows = [[s.stage, s.via, path, md5] for s in ev.upstream for path, md5 in sorted(s.deps.items())]
    if up_rows:
        blocks.append(
            Table(
                ["stage", "reached through", "dependency", "md5 in dvc.lock"],
                up_rows,
                caption="Upstream stages (dvc.lock, entered only through outputs whose hashes match the version's)",
            )
        )
    blocks += _ingest_blocks(ev)
    blocks += _params_blocks(ev)
    versions = sorted(
        (k[len(names.VERSION_PREFIX) :], v) for k, v in tags.items() if k.startswith(names.VERSION_PREFIX)
    )
    if versions:
        blocks.append(Table(["package", "version"], [list(v) for v in versions], caption="Environment"))
    return Section("lineage", titles.LINEAGE, blocks)


def _ingest_blocks(ev: VersionEvidence) -> list[Block]:
    link = ev.ingest
    tone: Tone = "ok" if link.status == "match" and link.report_status == "ok" else "warn"
    blocks: list[Block] = [Paragraph(f"Ingest report: {link.message} ({link.report_path}).", tone)]
    if link.hashes:
        rows = [[p, rec, lock or NA, link.sources.get(p, "")] for p, (rec, lock) in link.hashes.items()]
        marks: dict[tuple[int, int], Mark] = {(i, 2): ("ok" if r[1] == r[2] else "alert") for i, r in enumerate(rows)}
        blocks.append(
            Table(
                ["ingest output", "md5 in the lineage", "md5 in dvc.lock", "recorded by"],
                rows,
                "Ingest data version",
                marks,
            )
        )
    report = link.report
    if link.status == "match" and isinstance(report, Mapping):
        scalars = [(k, str(v)) for k, v in sorted(flat(report).items()) if ".by_resource_type." not in k]
        blocks.append(Table(["ingest report field", "value"], [list(r) for r in scalars], "Ingest report (workspace)"))
        by_type = (report.get("fhir") or {}).get("by_resource_type") or {}
        if by_type:
            cols = sorted({k for v in by_type.values() if isinstance(v, Mapping) for k in v})
            rows = [
                [t, *(str(v.get(c, "")) for c in cols)] for t, v in sorted(by_type.items()) if isinstance(v, Mapping)
            ]
            blocks.append(Table(["resource type", *cols], rows, "FHIR resources at ingest"))
    return blocks


def _params_blocks(ev: VersionEvidence) -> list[Block]:
    runs = ([ev.run] if ev.run else []) + [r for r in ev.stage_runs if not ev.run or r.run_id != ev.run.run_id]
    rows = [[r.stage or r.name, key, value] for r in runs for key, value in sorted(r.params.items())]
    if not rows:
        return [Paragraph("No params were logged with the version's run or its pipeline's stage runs.")]
    stage_rows = [[r.stage or r.name, r.run_id, r.status, r.start, r.tags.get(names.GIT_COMMIT, NA)] for r in runs]
    return [
        Table(["stage", "MLflow run", "status", "started", "git commit"], stage_rows, "Stage runs of the pipeline run"),
        Table(["stage", "param", "value"], rows, "Params"),
    ]
