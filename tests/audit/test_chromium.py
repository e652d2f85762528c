"""The HTML report in headless Chromium: the metrics table and every plot render, with no console error and no
network request; a screenshot is kept as a test artifact (``test-artifacts/audit-report.png``).

Needs Debian's chromium package (``/usr/bin/chromium``, installed by the test set-up); skipped without it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from headless_chromium import CHROMIUM, MISSING, page_messages, run_chromium

from pipelines.audit.common import METRICS_TABLE_ID
from pipelines.audit.document import Table
from pipelines.audit.html_render import CSP, render_html
from pipelines.audit.model_report import audit_source, report_document
from pipelines.predictionlog.log import PredictionLog

from .helpers import NAME, Registered

REPO_ROOT = Path(__file__).resolve().parents[2]
# Counts what rendered into the title, which --dump-dom returns: decoded images, metrics-table rows, resources
# fetched over the network (data: URIs are not fetches).
PROBE = (
    """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; });
  var rows = document.querySelectorAll("#"""
    + METRICS_TABLE_ID
    + """ tbody tr").length;
  var fetched = performance.getEntriesByType("resource").filter(function (e) { return !/^data:/.test(e.name); });
  document.title = "probe images=" + ok.length + "/" + imgs.length + " rows=" + rows + " fetched=" + fetched.length;
});
</script>"""
)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)


def _artifacts_dir() -> Path:
    folder = Path(os.environ.get("SHIPA_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_report_renders_in_headless_chromium(registered: Registered, audit_log: PredictionLog, tmp_path: Path) -> None:
    doc = report_document(
        NAME,
        registered.version,
        tracking_uri=registered.tracking_uri,
        project_root=registered.root,
        source=audit_source(audit_log, "sqlite:///service.db"),
    )
    html = render_html(doc)
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    n_images = len(re.findall(r"<img ", html))
    metrics = next(b for s in doc.sections for b in s.blocks if isinstance(b, Table) and b.css_id == METRICS_TABLE_ID)
    n_metrics = len(metrics.rows)

    # The probe is the only script: the report itself has none, so its policy is widened for this copy only.
    assert html.count(CSP) == 1
    probed = html.replace(CSP, CSP + "; script-src 'unsafe-inline'").replace("</body>", PROBE + "</body>")
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(probed, encoding="utf-8")
    dom = run_chromium(["--virtual-time-budget=5000", "--dump-dom", probe_page.as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", dom.stdout)
    assert title is not None
    assert title.group(1) == f"probe images={n_images}/{n_images} rows={n_metrics} fetched=0"
    assert n_images == 4 and n_metrics > 5
    assert page_messages(dom.stderr) == []

    shot = _artifacts_dir() / "audit-report.png"
    shot.unlink(missing_ok=True)
    render = run_chromium(["--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()], tmp_path / "profile-shot")
    assert render.returncode == 0, render.stderr[-2000:]
    assert page_messages(render.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
