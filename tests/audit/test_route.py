"""``GET /audit/report/{name}/{version}`` on the real app: the auditor's HTML report, roles, and errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from pipelines.audit.html_render import CSP
from pipelines.audit.served import html_report
from pipelines.predictionlog.log import PredictionLog
from pipelines.predictionlog.roles import Role
from pipelines.service.app import create_app
from pipelines.service.settings import ServiceSettings

from .helpers import NAME, Registered

PEPPER = "audit-route-test-pepper-0123456789"


@pytest.fixture
def client(
    registered: Registered, audit_log: PredictionLog, audit_db: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The service on the test's audit log and the registered version's store, run from its workspace."""
    monkeypatch.chdir(registered.root)
    # demo_mode: the audit log fixture is written under the public demo audit key.
    settings = ServiceSettings(
        database_url=audit_db, token_pepper=PEPPER, demo_mode=True, tracking_uri=registered.tracking_uri
    )
    app = create_app(settings, report_renderer=html_report)
    tokens = {role.value: app.state.tokens.add(f"{role.value}-1", role) for role in Role}
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client, tokens


def _get(client: TestClient, path: str, token: str | None) -> object:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, headers=headers)


def test_auditors_get_the_self_contained_html_report(
    client: tuple[TestClient, dict[str, str]], registered: Registered
) -> None:
    http, tokens = client
    response = http.get(
        f"/audit/report/{NAME}/{registered.version}", headers={"Authorization": f"Bearer {tokens['auditor']}"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["cache-control"] == "no-store"
    body = response.text
    assert '<table id="metrics-table">' in body
    assert "Audit log chain verified: 81 records intact" in body
    assert "Ingest report: the workspace&#x27;s dvc.lock matches the version&#x27;s ingest data" in body


@pytest.mark.parametrize(
    ("role", "status", "code"),
    [(None, 401, "login"), ("clinician", 403, "forbidden"), ("investigator", 403, "forbidden")],
)
def test_other_roles_are_refused(
    client: tuple[TestClient, dict[str, str]], registered: Registered, role: str | None, status: int, code: str
) -> None:
    http, tokens = client
    headers = {"Authorization": f"Bearer {tokens[role]}"} if role else {}
    response = http.get(f"/audit/report/{NAME}/{registered.version}", headers=headers)
    assert response.status_code == status
    assert response.json()["issue"][0]["code"] == code


def test_unknown_versions_and_bad_names(client: tuple[TestClient, dict[str, str]]) -> None:
    http, tokens = client
    auth = {"Authorization": f"Bearer {tokens['auditor']}"}
    missing = http.get(f"/audit/report/{NAME}/77", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"
    assert "77" not in missing.text and NAME not in missing.text
    bad = http.get("/audit/report/bad'name/1", headers=auth)
    assert bad.status_code == 422
    assert http.get(f"/audit/report/{NAME}/v1", headers=auth).status_code == 422


def test_without_a_report_renderer_the_route_answers_404(audit_db: str, registered: Registered) -> None:
    """The service alone (no auditors' package handed in) does not serve the report."""
    # demo_mode: the audit log fixture is written under the public demo audit key.
    settings = ServiceSettings(
        database_url=audit_db, token_pepper=PEPPER, demo_mode=True, tracking_uri=registered.tracking_uri
    )
    app = create_app(settings)
    token = app.state.tokens.add("auditor-1", Role.auditor)
    with TestClient(app, raise_server_exceptions=False) as http:
        response = http.get(f"/audit/report/{NAME}/{registered.version}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"
