"""``/docs`` and ``/redoc`` are served by the service itself: no CDN, a strict CSP, and Swagger UI renders the
operations in headless Chromium with every host but 127.0.0.1 unresolvable.

The browser test needs Debian's chromium (``/usr/bin/chromium``, installed by ``make test``); skipped without it.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from headless_chromium import CHROMIUM, MISSING, page_messages, run_chromium

from pipelines.service.routes.docs import CSP, STATIC_PREFIX

EXTERNAL = re.compile(r"""(?:src|href)=["'](?:https?:)?//""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_load_only_their_own_assets_under_a_strict_csp(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "default-src 'none'" in CSP
    html = response.text
    assert not EXTERNAL.search(html), html
    assert "<script>" not in html  # no inline script: the CSP allows none
    assets = re.findall(r"""(?:src|href)="([^"]+)\"""", html)
    assert assets and all(a.startswith(STATIC_PREFIX + "/") for a in assets), assets
    for asset in assets:
        got = client.get(asset)
        assert got.status_code == 200 and len(got.content) > 0, asset


def test_an_unknown_asset_is_a_404_operation_outcome(client: TestClient) -> None:
    response = client.get(f"{STATIC_PREFIX}/evil.js")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_the_swagger_start_up_disables_the_online_validator(client: TestClient) -> None:
    script = client.get(f"{STATIC_PREFIX}/swagger-init.js").text
    assert 'url: "/openapi.json"' in script and "validatorUrl: null" in script


@pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)
def test_swagger_ui_renders_the_operations_offline_in_headless_chromium(live_server: str, tmp_path: Path) -> None:
    operations = [op for op in httpx.get(f"{live_server}/openapi.json").json()["paths"]]
    assert len(operations) >= 5
    args = [
        # Every name but the service's loopback address fails to resolve: a CDN fetch would fail and be logged.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=20000",
        "--dump-dom",
        f"{live_server}/docs",
    ]
    result = run_chromium(args, tmp_path / "profile")
    dom = result.stdout
    rendered = set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom))
    rendered |= set(re.findall(r'data-path="([^"]+)"[^>]*class="opblock-summary-path"', dom))
    assert rendered == set(operations), (sorted(rendered), result.stderr[-2000:])
    assert page_messages(result.stderr) == []
