"""``shipa audit report`` on a real registered version and a real audit log: the HTML and PDF files, what they
say about lineage, metrics, gate, usage and drift, and how they flag an altered audit log."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import text

from pipelines.audit import titles
from pipelines.audit.document import Document, FigureBlock, Paragraph, Section, Table
from pipelines.audit.evidence import evaluation_fingerprint
from pipelines.audit.html_render import CSP, render_html
from pipelines.audit.lineage import file_md5
from pipelines.audit.model_report import (
    AuditSource,
    ReportFiles,
    audit_source,
    describe_database,
    report_document,
    report_stem,
    report_targets,
    write_report,
)
from pipelines.errors import ShipaError
from pipelines.predictionlog.log import PredictionLog
from pipelines.stages.evaluate import test_data_md5 as stage_fingerprint
from pipelines.tracking.errors import ModelVersionNotFoundError

from .helpers import (
    COMMIT,
    EVAL_MD5,
    IMAGES_MD5,
    NAME,
    TABLES_MD5,
    Registered,
    dvc_lock,
    fill_audit_log,
)

EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.\-]*:)?//""", re.IGNORECASE)
PER_DAY = 40


@pytest.fixture(scope="module")
def module_log(registered: Registered, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PredictionLog]:
    """The module's audit log: two days of predictions (the second shifted) and one of another model."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report-log') / 'service.db'}"
    log = fill_audit_log(url, registered.version, registered.test_scores, per_day=PER_DAY)
    try:
        yield log
    finally:
        log.close()


@pytest.fixture(scope="module")
def written(registered: Registered, module_log: PredictionLog, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    """The report files, written once for the module."""
    out = tmp_path_factory.mktemp("reports")
    return write_report(
        NAME,
        registered.version,
        out,
        tracking_uri=registered.tracking_uri,
        project_root=registered.root,
        source=audit_source(module_log, "sqlite:///service.db"),
    )


@pytest.fixture(scope="module")
def html(written: ReportFiles) -> str:
    return written.html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def doc(registered: Registered, module_log: PredictionLog) -> Document:
    return report_document(
        NAME,
        registered.version,
        tracking_uri=registered.tracking_uri,
        project_root=registered.root,
        source=audit_source(module_log, "sqlite:///service.db"),
    )


def _section(doc: Document, key: str) -> Section:
    return next(s for s in doc.sections if s.key == key)


def _table(section: Section, caption: str) -> Table:
    return next(b for b in section.blocks if isinstance(b, Table) and b.caption.startswith(caption))


def test_report_writes_one_html_and_one_pdf(written: ReportFiles, registered: Registered) -> None:
    assert written.html.name == f"{report_stem(NAME, registered.version)}.html"
    assert written.audit_log_ok is True
    pdf = written.pdf.read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert f"Audit report: {NAME} version {registered.version}".encode() in pdf  # the document title
    assert written.pdf_pages >= 4
    assert not list(written.html.parent.glob(".*.tmp"))


def test_html_is_self_contained(html: str) -> None:
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in html
    assert EXTERNAL.search(html) is None
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    images = re.findall(r'<img src="([^"]*)"', html)
    assert len(images) == 4  # training curves, calibration, usage, drift
    assert all(src.startswith("data:image/png;base64,iVBORw0KGgo") for src in images)


def test_html_has_the_metrics_table_with_cis(html: str, registered: Registered) -> None:
    table = re.search(r'<table id="metrics-table">(.*?)</table>', html, re.S)
    assert table is not None
    auroc = registered.evaluation["metrics"]["auroc"]
    row = f"<td>{auroc['value']:.3f}</td><td>{auroc['low']:.3f}</td><td>{auroc['high']:.3f}</td>"
    assert f'<td class="ok">auroc</td>{row}' in table.group(1)
    assert len(re.findall("<tr>", table.group(1))) == 1 + len(registered.evaluation["metrics"])


def test_html_states_the_verified_chain(html: str) -> None:
    assert f"Audit log chain verified: {2 * PER_DAY + 1} records intact" in html
    assert "ALTERED" not in html


def test_section_titles_in_english_kazakh_and_russian(html: str) -> None:
    for title in (getattr(titles, n) for n in dir(titles) if n.isupper()):
        assert title.joined() in html
    assert "Шығу тегі" in html and "Происхождение" in html


def test_lineage_names_commit_data_hashes_and_the_ingest_report(doc: Document, html: str) -> None:
    assert COMMIT in html
    lineage = _section(doc, "lineage")
    data = _table(lineage, "Data versions")
    rows = {r[0]: r for r in data.rows}
    assert rows["models/diagnosis/eval"][1:] == [EVAL_MD5, EVAL_MD5, "evaluate@diagnosis", "match"]
    ingest = _table(lineage, "Ingest data version")
    assert {r[0]: r[1] for r in ingest.rows} == {
        "data/interim/tables": TABLES_MD5,
        "data/interim/images": IMAGES_MD5,
    }
    status = next(b for b in lineage.blocks if isinstance(b, Paragraph) and b.text.startswith("Ingest report"))
    assert status.tone == "ok" and "matches the version's ingest data" in status.text
    report_rows = dict(map(tuple, _table(lineage, "Ingest report (workspace)").rows))
    assert report_rows["quarantined_total"] == "7"
    params = _table(lineage, "Params")
    assert ["train@diagnosis", "epochs", "5"] in params.rows


def test_training_curves_come_from_the_pipeline_s_train_run(doc: Document, registered: Registered) -> None:
    section = _section(doc, "training")
    assert any(isinstance(b, FigureBlock) for b in section.blocks)
    source = next(b for b in section.blocks if isinstance(b, Paragraph))
    assert registered.train_run_id in source.text


def test_gate_and_promotion_say_who_and_when(doc: Document) -> None:
    gate = _section(doc, "gate")
    decision = gate.blocks[0]
    assert isinstance(decision, Paragraph) and decision.text.startswith("Decision: promote (by gate at ")
    promotion = _section(doc, "promotion")
    assert any(isinstance(b, Paragraph) and b.text.startswith("Made champion by gate at") for b in promotion.blocks)
    records = _table(promotion, "Gate and override records")
    assert records.rows[0][1:5] == ["promote", "gate", "none", "1"]


def test_subgroup_gaps_are_ranked_and_the_largest_highlighted(doc: Document, registered: Registered) -> None:
    section = _section(doc, "subgroups")
    gaps = _table(section, "Largest gaps")
    values = [float(r[2]) for r in gaps.rows]
    assert values == sorted(values, reverse=True)
    assert {m for _, m, *_ in gaps.rows}.isdisjoint({"calibration_slope", "calibration_intercept"})
    assert [k for k, v in gaps.marks.items() if v == "alert"] == [(0, 2), (1, 2), (2, 2)]
    column, metric, _, high, low = gaps.rows[0]
    table = _table(section, f"Subgroups by {column}")
    c = table.columns.index(metric)
    marks = {table.rows[r][0]: mark for (r, col), mark in table.marks.items() if col == c}
    assert marks == {high: "high", low: "low"}
    expected = registered.evaluation["subgroups"][column]["gaps"][metric]["gap"]
    assert float(gaps.rows[0][2]) == pytest.approx(expected, abs=5e-4)


def test_usage_counts_per_day_role_and_alias(doc: Document) -> None:
    usage = _section(doc, "usage")
    per = {
        caption: dict(map(tuple, _table(usage, f"Predictions per {caption}").rows))
        for caption in ("role", "alias", "day")
    }
    admins = 2 * len(range(0, PER_DAY, 3))
    assert per["role"] == {"clinician": str(2 * PER_DAY - admins), "admin": str(admins)}
    challengers = 2 * len(range(0, PER_DAY, 4))
    assert per["alias"] == {"champion": str(2 * PER_DAY - challengers), "challenger": str(challengers)}
    assert per["day"] == {"2025-03-01": str(PER_DAY), "2025-03-02": str(PER_DAY)}


def test_drift_against_the_test_set_flags_the_shifted_day(doc: Document) -> None:
    drift = _table(_section(doc, "drift"), "Drift against the test set")
    readings = {r[0]: r[-1] for r in drift.rows}
    assert readings["2025-03-01"] in ("stable", "not significant")  # drawn from the test-set predictions
    assert readings["2025-03-02"] == "major shift"
    assert drift.marks[(2, 3)] == "alert"
    notes = [b for b in _section(doc, "drift").blocks if isinstance(b, Paragraph) and b.tone == "ok"]
    assert notes and "test data md5" in notes[0].text and "equals the evaluation's" in notes[0].text


def test_an_altered_audit_record_is_flagged(registered: Registered, audit_log: PredictionLog) -> None:
    with audit_log.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET output_json = :out WHERE seq = 5"), {"out": '{"probability":0.01}'})
    source = audit_source(audit_log, "sqlite:///service.db")
    assert source.verify is not None and not source.verify.ok
    doc = report_document(
        NAME, registered.version, tracking_uri=registered.tracking_uri, project_root=registered.root, source=source
    )
    assert doc.banner.tone == "alert"
    html = render_html(doc)
    assert "AUDIT LOG ALTERED: the hash chain breaks at record 5" in html
    assert "record 5 does not match its hash (altered)" in html
    summary = dict(next(b for b in _section(doc, "summary").blocks if hasattr(b, "rows")).rows)  # type: ignore[arg-type]
    assert summary["audit log chain"] == "ALTERED at record 5"


def test_without_an_audit_log_the_report_says_so(registered: Registered) -> None:
    doc = report_document(
        NAME,
        registered.version,
        tracking_uri=registered.tracking_uri,
        project_root=registered.root,
        source=AuditSource(None, None, "sqlite:///missing.db (not found)"),
    )
    assert doc.banner.tone == "warn" and "No service audit log was read" in doc.banner.text
    assert "No audit log was read." in render_html(doc)


@pytest.fixture
def other_workspace(registered: Registered, tmp_path: Path) -> Path:
    """A workspace whose ingest produced other tables, and whose predictions come from another test set."""
    shutil.copytree(registered.root / "models", tmp_path / "models")
    shutil.copytree(registered.root / "data", tmp_path / "data")
    report_md5 = file_md5(tmp_path / "data" / "interim" / "ingest_report.json")
    lock = dvc_lock(report_md5, tables_md5="d" * 32 + ".dir")
    (tmp_path / "dvc.lock").write_text(lock, encoding="utf-8")
    path = tmp_path / "models" / "diagnosis" / "eval" / "predictions.parquet"
    df = pl.read_parquet(path)
    df.with_columns((1 - pl.col("label")).alias("label")).write_parquet(path)
    return tmp_path


def test_another_workspace_is_not_taken_for_the_version_s(registered: Registered, other_workspace: Path) -> None:
    doc = report_document(
        NAME,
        registered.version,
        tracking_uri=registered.tracking_uri,
        project_root=other_workspace,
        source=AuditSource(None, None, "none"),
    )
    lineage = _section(doc, "lineage")
    status = next(b for b in lineage.blocks if isinstance(b, Paragraph) and b.text.startswith("Ingest report"))
    assert status.tone == "warn" and "does NOT match" in status.text
    assert not any(b.caption.startswith("Ingest report (workspace)") for b in lineage.blocks if isinstance(b, Table))
    warnings = [b.text for b in _section(doc, "calibration").blocks if isinstance(b, Paragraph) and b.tone == "warn"]
    assert any("differs from the evaluation's" in w for w in warnings)


def test_report_targets(registered: Registered) -> None:
    uri = registered.tracking_uri
    one = [(NAME, registered.version)]
    assert report_targets(f"models:/{NAME}/{registered.version}", all_versions=False, tracking_uri=uri) == one
    assert report_targets(f"models:/{NAME}@champion", all_versions=False, tracking_uri=uri) == one
    assert report_targets(f"models:/{NAME}", all_versions=True, tracking_uri=uri) == one
    assert report_targets(None, all_versions=True, tracking_uri=uri) == one
    with pytest.raises(ShipaError, match="--all"):
        report_targets(None, all_versions=False, tracking_uri=uri)
    with pytest.raises(ModelVersionNotFoundError):
        report_targets(f"models:/{NAME}/99", all_versions=False, tracking_uri=uri)
    with pytest.raises(ModelVersionNotFoundError, match="no versions"):
        report_targets("models:/shipa-unknown", all_versions=True, tracking_uri=uri)


def test_database_urls_are_shown_without_passwords() -> None:
    assert describe_database("postgresql+psycopg://audit:s3cret@db.local/shipa") == (
        "postgresql+psycopg://audit:***@db.local/shipa"
    )
    assert describe_database("sqlite:///service-state/service.db") == "sqlite:///service-state/service.db"


def test_the_fingerprint_is_the_evaluate_stage_s() -> None:
    ids, labels = ["b", "a", "c"], [1, 0, 1]
    assert evaluation_fingerprint(ids, labels) == stage_fingerprint(ids, labels)
