"""``shipa audit report``: one self-contained HTML file and one PDF per model version, for auditors.

The report reads the registry and MLflow runs (lineage, evaluation, gate, model card), the workspace's
``dvc.lock`` and evaluation predictions (only where hashes show they are the version's), and the service's
audit log (usage, output drift, and whether its hash chain verifies).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from pipelines.audit.build import ReportOptions, build_document
from pipelines.audit.document import Document
from pipelines.audit.errors import AuditToolError
from pipelines.audit.evidence import collect
from pipelines.audit.html_render import render_html
from pipelines.audit.pdf_render import render_pdf
from pipelines.audit.usage import read_usage
from pipelines.predictionlog.log import PredictionLog, VerifyResult
from pipelines.tracking.audit_queries import registered_model_names
from pipelines.tracking.errors import ModelVersionNotFoundError
from pipelines.tracking.registry import list_versions, resolve

log = logging.getLogger(__name__)

_UNSAFE_FILE = re.compile(r"[^A-Za-z0-9._\-]")


@dataclass(frozen=True)
class AuditSource:
    """The service audit log a report reads, its verification (once per batch of reports) and how to name it."""

    log: PredictionLog | None
    verify: VerifyResult | None
    label: str


@dataclass(frozen=True)
class ReportFiles:
    """The files written for one version."""

    name: str
    version: str
    html: Path
    pdf: Path
    pdf_pages: int
    audit_log_ok: bool | None


def describe_database(url: str) -> str:
    """A database URL safe to print: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as its scheme only
        return url.split(":", 1)[0] + ":..."


def audit_source(audit_log: PredictionLog | None, label: str) -> AuditSource:
    """Verify ``audit_log``'s hash chain once (None when no log is given)."""
    if audit_log is None:
        return AuditSource(None, None, label)
    result = audit_log.verify()
    if not result.ok:
        log.warning("audit log failed verification at record %s", result.first_bad_id)
    return AuditSource(audit_log, result, label)


def report_document(
    name: str,
    version: str,
    *,
    tracking_uri: str,
    project_root: Path,
    source: AuditSource,
    options: ReportOptions | None = None,
    now: datetime | None = None,
) -> Document:
    """The report of ``name`` version ``version`` as a document (render it with HTML or PDF).

    Raises:
        ModelVersionNotFoundError: the version does not exist.
    """
    started = time.perf_counter()
    evidence = collect(name, version, tracking_uri=tracking_uri, project_root=project_root)
    usage = read_usage(source.log, name, evidence.info.version) if source.log is not None else None
    generated = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    doc = build_document(
        evidence, usage=usage, verify=source.verify, audit_source=source.label, generated_at=generated, options=options
    )
    log.info("report of %s version %s built in %.1f s", name, evidence.info.version, time.perf_counter() - started)
    return doc


def report_stem(name: str, version: str) -> str:
    """The file name (without extension) of a version's report: ``<name>-v<version>``."""
    return _UNSAFE_FILE.sub("_", f"{name}-v{version}")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(
    name: str,
    version: str,
    out_dir: Path,
    *,
    tracking_uri: str,
    project_root: Path,
    source: AuditSource,
    options: ReportOptions | None = None,
    now: datetime | None = None,
) -> ReportFiles:
    """Write ``<out_dir>/<name>-v<version>.html`` and ``.pdf`` (each atomically).

    Raises:
        ModelVersionNotFoundError: the version does not exist.
    """
    doc = report_document(
        name, version, tracking_uri=tracking_uri, project_root=project_root, source=source, options=options, now=now
    )
    stem = report_stem(name, version)
    html_path, pdf_path = out_dir / f"{stem}.html", out_dir / f"{stem}.pdf"
    _write_text(html_path, render_html(doc))
    pages = render_pdf(doc, pdf_path)
    return ReportFiles(name, str(version), html_path, pdf_path, pages, source.verify.ok if source.verify else None)


def report_targets(uri: str | None, *, all_versions: bool, tracking_uri: str) -> list[tuple[str, str]]:
    """The ``(name, version)`` pairs a command asks for.

    ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` is one version; with ``all_versions``,
    ``models:/<name>`` (or any URI of that model) means all its versions, and no URI every version of every
    ``shipa-*`` model.

    Raises:
        ModelVersionNotFoundError: a malformed URI, or an unknown model, version or alias.
        AuditToolError: neither a URI nor ``all_versions``.
    """
    if uri is None:
        if not all_versions:
            raise AuditToolError("give models:/<name>/<version> or --all")
        names = registered_model_names(tracking_uri=tracking_uri)
        return [(v.name, v.version) for n in names for v in list_versions(n, tracking_uri=tracking_uri)]
    if all_versions:
        name = uri.strip().removeprefix("models:/").split("/", 1)[0].split("@", 1)[0]
        found = list_versions(name, tracking_uri=tracking_uri)
        if not found:
            raise ModelVersionNotFoundError(f"model {name!r} has no versions in the registry")
        return [(v.name, v.version) for v in found]
    info = resolve(uri, tracking_uri=tracking_uri)
    return [(info.name, info.version)]
