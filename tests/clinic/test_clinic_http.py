"""The clinicians' page over HTTP against the real served app (the tiny cohort's champion behind uvicorn).

The page signs in with the service's own tokens, keeps them in an encrypted cookie, checks a CSRF secret on
every form, forwards uploads to ``POST /diagnosis/{task}`` (audited as any API call) and renders the answer: the
probability, the model's call with its threshold and the Grad-CAM overlay, or the refusal of a CT.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from service.helpers import auth
from service.test_model_endpoints import (  # noqa: F401 - the module-scoped fixtures, reused
    DX_NAME,
    Case,
    Registry,
    Service,
    case,
    registry,
    service,
)

from pipelines.service.i18n import Language
from pipelines.service.routes.clinic import COOKIE, CSP, TEXTS

from .pages import OVERLAY, csrf_of, ct_file, fields, sign_in, upload
from .tls import served_over_tls

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Hand-written, not read from the catalog: each language's page must hold its own words.
WORDS = {
    "kk": ("Зерттеуді жүктеу", "Ықтималдық", "Қолданылу мақсаты", "Сервис бұл зерттеуді қабылдамады"),
    "ru": ("Загрузка исследования", "Вероятность", "Назначение", "Сервис отклонил это исследование"),
    "en": ("Upload a study", "Probability", "Intended use", "The service refused this study"),
}
EXTERNAL = re.compile(r"""(?:src|href|action)=["'](?:https?:)?//""")


def _client(served: Service) -> httpx.Client:
    return httpx.Client(base_url=served.base, timeout=120)


def _set_cookie(response: httpx.Response) -> str:
    headers = [v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE + "=")]
    assert len(headers) == 1, response.headers
    return headers[0]


def _records(served: Service) -> list[Any]:
    return list(served.app.state.audit_log.iter_all())


def test_sign_in_sets_an_encrypted_http_only_strict_cookie(service: Service) -> None:  # noqa: F811
    token = service.tokens["clinician"]
    with _client(service) as client:
        form = client.get("/clinic/login")
        assert form.status_code == 200
        assert form.headers["content-security-policy"] == CSP
        for directive in ("default-src 'self'", "img-src 'self' data:", "form-action 'self'", "frame-ancestors 'none'"):
            assert directive in CSP
        assert not EXTERNAL.search(form.text) and "<script" not in form.text
        signed = sign_in(client, token)
        assert signed.status_code == 303 and signed.headers["location"] == "/clinic?lang=en"
        cookie = _set_cookie(signed)
        flags = [part.strip().lower() for part in cookie.split(";")[1:]]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/clinic" in flags
        assert "secure" not in flags  # plain http here; see the https test below
        value = cookie.split(";")[0].split("=", 1)[1]
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        for secret in (token, token.removeprefix("shipa_"), "clinician-1", "shipa_"):
            assert secret not in value and secret.encode() not in raw
        page = client.get("/clinic")
        css = client.get("/clinic/static/clinic.css")
    assert page.status_code == 200, page.text
    assert "Signed in as clinician-1" in page.text
    assert "Decision support: flag studies likely to show pneumonia" in page.text  # the served model's card
    assert f"{DX_NAME}, version 1" in page.text
    assert page.headers["content-security-policy"] == CSP and page.headers["x-frame-options"] == "DENY"
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert ":focus-visible" in css.text
    fields_of_page = re.findall(r'<(?:input|select)(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', page.text)
    assert fields_of_page == ["task", "file", "bundle"]
    for field_id in [*fields_of_page, "token", "lang"]:  # every field has its label (the sign-in form's too)
        assert f'<label for="{field_id}">' in page.text + form.text, field_id


def test_the_cookie_is_secure_when_the_request_came_over_https(service: Service) -> None:  # noqa: F811
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1 (a TLS proxy on the same host), as it would a TLS socket.
    with _client(service) as client:
        form = client.get("/clinic/login", headers={"X-Forwarded-Proto": "https"})
    assert "secure" in [p.strip().lower() for p in _set_cookie(form).split(";")]


def test_over_uvicorn_s_own_tls_the_cookie_is_secure_and_sign_in_works(
    service: Service,  # noqa: F811
    tmp_path: Path,
) -> None:
    with served_over_tls(service.app, service.app.state.settings, tmp_path) as client:
        form = client.get("/clinic/login")
        signed = sign_in(client, service.tokens["clinician"])
        page = client.get("/clinic")
    for response in (form, signed):
        flags = [p.strip().lower() for p in _set_cookie(response).split(";")]
        assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
    assert signed.status_code == 303 and page.status_code == 200 and "Signed in as clinician-1" in page.text


def test_a_wrong_token_or_another_role_gets_the_form_again(service: Service) -> None:  # noqa: F811
    with _client(service) as client:
        wrong = sign_in(client, "shipa_" + "x" * 43, "ru")
        other = sign_in(client, service.tokens["investigator"], "kk")
        after = client.get("/clinic")
    assert wrong.status_code == 401 and "Токен неизвестен или отозван." in wrong.text
    assert 'id="token"' in wrong.text
    assert other.status_code == 403 and "дәрігер рөлі қажет" in other.text
    assert after.status_code == 303 and after.headers["location"].startswith("/clinic/login")


def test_a_tampered_or_foreign_cookie_is_refused(service: Service, case: Case) -> None:  # noqa: F811
    before = len(_records(service))
    with _client(service) as client:
        assert sign_in(client, service.tokens["clinician"]).status_code == 303
        csrf = csrf_of(client.get("/clinic").text)
        value = client.cookies[COOKIE]
        flipped = value[:30] + ("A" if value[30] != "A" else "B") + value[31:]
        client.cookies.clear()
        client.cookies.set(COOKIE, flipped, path="/clinic")
        page = client.get("/clinic")
        post = upload(client, case.dicom.read_bytes(), csrf=csrf)
    assert page.status_code == 303 and page.headers["location"].startswith("/clinic/login")
    assert post.status_code == 403 and "reload the page" in post.text
    assert len(_records(service)) == before  # nothing reached the model


def test_a_form_post_without_the_csrf_secret_or_with_another_is_refused(service: Service, case: Case) -> None:  # noqa: F811
    before = len(_records(service))
    with _client(service) as client:
        assert sign_in(client, service.tokens["clinician"]).status_code == 303
        real = csrf_of(client.get("/clinic").text)
        dicom = {"file": ("study.dcm", case.dicom.read_bytes(), "application/dicom")}
        missing = client.post("/clinic/diagnose", files={**fields(lang="en", task="pneumonia"), **dicom})
        wrong = upload(client, case.dicom.read_bytes(), csrf=real[:-2] + ("aa" if real[-2:] != "aa" else "bb"))
        logout = client.post("/clinic/logout", files=fields(lang="en"))
        still = client.get("/clinic")
    with _client(service) as fresh:
        fresh.get("/clinic/login")
        login = fresh.post("/clinic/login", files=fields(token=service.tokens["clinician"], lang="en"))
    for response in (missing, wrong, logout, login):
        assert response.status_code == 403, response.text
        assert "The form has expired or was not sent from this page" in response.text
    assert still.status_code == 200  # the refused logout did not sign out
    assert len(_records(service)) == before


def test_a_chest_radiograph_shows_probability_call_and_overlay_and_is_audited(service: Service, case: Case) -> None:  # noqa: F811
    dicom = case.dicom.read_bytes()
    with _client(service) as client:
        direct = client.post(
            "/diagnosis/pneumonia",
            files={"file": ("study.dcm", dicom, "application/dicom")},
            headers=auth(service.tokens["clinician"]),
        ).json()
        before = len(_records(service))
        assert sign_in(client, service.tokens["clinician"]).status_code == 303
        page = upload(client, dicom)
    assert page.status_code == 200, page.text
    html = page.text
    risk = next(e["resource"] for e in direct["entry"] if e["resource"]["resourceType"] == "RiskAssessment")
    probability = risk["prediction"][0]["probabilityDecimal"]
    assert f'<dd id="probability">{probability:.2f}</dd>' in html
    band = risk["prediction"][0]["qualitativeRisk"]["coding"][0]["code"]
    assert f'<dd id="band">{ {"low": "Low", "moderate": "Moderate", "high": "High"}[band] } risk</dd>' in html
    observation = next(e["resource"] for e in direct["entry"] if e["resource"]["resourceType"] == "Observation")
    positive = observation["interpretation"][0]["coding"][0]["code"] == "POS"
    call = re.search(
        r'<dd id="call" class="(?:positive|negative)">(Positive|Negative) \(threshold (\d\.\d\d)\)</dd>', html
    )
    assert call is not None, html
    assert call.group(1) == ("Positive" if positive else "Negative")
    assert f"(threshold {call.group(2)})" in html and f"threshold {call.group(2)})." in html  # the conclusion's own
    overlay = OVERLAY.search(html)
    assert overlay is not None
    assert base64.b64decode(overlay.group(1))[:8] == PNG_MAGIC
    assert overlay.group(2).startswith("Grad-CAM saliency map")
    assert '<h2 id="result-heading">Result</h2>' in html
    records = _records(service)
    assert len(records) == before + 1
    record = records[-1]
    assert record.endpoint == "/diagnosis/{task}" and record.token_name == "clinician-1"
    assert record.input_sha256 == hashlib.sha256(dicom).hexdigest()
    assert record.outcome == "0"


def test_a_ct_is_refused_with_the_service_s_reason_and_audited(service: Service) -> None:  # noqa: F811
    with _client(service) as client:
        assert sign_in(client, service.tokens["clinician"]).status_code == 303
        before = len(_records(service))
        page = upload(client, ct_file())
    assert page.status_code == 200, page.text  # the page answered; the API's refusal is its content
    assert "The service refused this study" in page.text and '<p class="note" id="api-status">HTTP 422</p>' in page.text
    refusal = re.search(r'<p class="refusal" role="alert" id="refusal" lang="en">([^<]+)</p>', page.text)
    assert refusal is not None and "outside this model&#39;s intended use" in refusal.group(1)
    assert 'id="probability"' not in page.text and 'id="overlay"' not in page.text
    records = _records(service)
    assert len(records) == before + 1 and records[-1].outcome == "4"


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_each_language_s_page_holds_its_own_words(service: Service, case: Case, lang: Language) -> None:  # noqa: F811
    upload_heading, probability, intended_use, refused = WORDS[lang]
    with _client(service) as client:
        assert sign_in(client, service.tokens["clinician"], lang).status_code == 303
        page = client.get("/clinic")  # the session remembers the language chosen at sign-in
        result = upload(client, case.dicom.read_bytes(), lang)
        refusal = upload(client, ct_file(), lang)
    assert f'<html lang="{lang}">' in page.text
    assert upload_heading in page.text and intended_use in page.text
    assert probability in result.text
    assert refused in refusal.text
    conclusion = re.search(r'<p id="conclusion">([^<]+)</p>', result.text)
    assert conclusion is not None
    kazakh = set("әғқңөұүһі")
    if lang == "kk":
        assert kazakh & set(conclusion.group(1))
    elif lang == "ru":
        assert "вероятность" in conclusion.group(1) and not kazakh & set(conclusion.group(1))
    else:
        assert conclusion.group(1).isascii()
    others = [w for other, words in WORDS.items() if other != lang for w in words]
    assert not [w for w in others if w in page.text + result.text + refusal.text]
    assert TEXTS["result.probability"][lang] == probability  # the catalog agrees with the hand-written words


def test_sign_out_clears_the_cookie_and_a_revoked_token_s_session_ends(service: Service) -> None:  # noqa: F811
    with _client(service) as client:
        assert sign_in(client, service.tokens["clinician"]).status_code == 303
        csrf = csrf_of(client.get("/clinic").text)
        out = client.post("/clinic/logout", files=fields(csrf=csrf, lang="en"))
        assert out.status_code == 303 and out.headers["location"] == "/clinic/login?lang=en"
        assert "max-age=0" in _set_cookie(out).lower()
        assert client.get("/clinic").status_code == 303
    token = service.app.state.tokens.add("clinician-revoked", "clinician")
    with _client(service) as client:
        assert sign_in(client, token).status_code == 303
        assert client.get("/clinic").status_code == 200
        service.app.state.tokens.revoke("clinician-revoked")
        after = client.get("/clinic")
    assert after.status_code == 303 and after.headers["location"].startswith("/clinic/login")
