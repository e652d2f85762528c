"""``/clinic``: a server-rendered page for clinicians (kk/ru/en) over the service's own diagnosis API.

The page is a thin client: it signs a clinician in with the same bearer tokens as the API, then forwards each
upload in-process to ``POST /diagnosis/{task}`` with that token (through the whole middleware stack), so
authentication, roles, the input-domain and image out-of-distribution refusals, rate limits and the audit chain
apply unchanged; it renders the FHIR Bundle (probability, the model's call and threshold, the Grad-CAM overlay)
or the OperationOutcome of a refusal.

The session lives in one cookie (HttpOnly, SameSite=Strict, Path=/clinic, Secure over https) holding the bearer
token, its name, the expiry and a CSRF secret, encrypted and authenticated with AES-GCM under a key derived from
the token pepper: every worker can read it, the browser's user cannot read the token out of it, and nobody can
forge one. Every form carries the session's CSRF secret; a POST without it, or with another, is answered 403.
Forms are sent as ``multipart/form-data``: the one body type the service accepts besides JSON. The pages carry no
script; their Content-Security-Policy admits only this origin (and ``data:`` images: the overlay).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any, Final, cast

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData, UploadFile

from pipelines.predictionlog.roles import Role, role_allows
from pipelines.service import i18n
from pipelines.service.i18n import LANGUAGES, Language, negotiate_language
from pipelines.service.mlflow_source import DIAGNOSIS_PREFIX
from pipelines.service.settings import ServiceSettings
from pipelines.service.tokens import TokenStore

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

PREFIX: Final = "/clinic"
COOKIE: Final = "shipa_clinic"
CSRF_FIELD: Final = "csrf"
SESSION_S: Final = 8 * 3600  # one working shift; the token itself is checked again on every upload
ANONYMOUS_S: Final = 3600  # the login form's session (its CSRF secret only)
_AAD: Final = b"shipa clinic session v1"
_KDF_INFO: Final = b"shipa clinic session cookie key v1"
_NONCE_BYTES: Final = 12
_MAX_COOKIE_CHARS: Final = 2048
_TASK_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_UID_CHARS: Final = frozenset("0123456789.")  # a DICOM UID
_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_INTERNAL_BASE: Final = "http://shipa.internal"

CSP: Final = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# The page's own words; the conclusions and refusals come from the API (conclusions in the page's language).
TEXTS: Final[dict[str, dict[Language, str]]] = {
    "title": {
        "kk": "Шипа: кеуде рентгенограммасы бойынша шешім қабылдауды қолдау",
        "ru": "Шипа: поддержка решений по рентгенограмме грудной клетки",
        "en": "Shipa: decision support for chest radiographs",
    },
    "skip": {"kk": "Негізгі мазмұнға өту", "ru": "Перейти к основному содержанию", "en": "Skip to the main content"},
    "language": {"kk": "Тіл", "ru": "Язык", "en": "Language"},
    "login.heading": {"kk": "Жүйеге кіру", "ru": "Вход в систему", "en": "Sign in"},
    "login.token": {"kk": "Қол жеткізу токені", "ru": "Токен доступа", "en": "Access token"},
    "login.submit": {"kk": "Кіру", "ru": "Войти", "en": "Sign in"},
    "login.wrong": {
        "kk": "Токен белгісіз немесе қайтарып алынған.",
        "ru": "Токен неизвестен или отозван.",
        "en": "The token is unknown or revoked.",
    },
    "login.role": {
        "kk": "Бұл токенмен диагностика сұрауға болмайды: дәрігер рөлі қажет.",
        "ru": "С этим токеном нельзя запрашивать диагностику: нужна роль врача.",
        "en": "This token may not request diagnoses: it needs the clinician role.",
    },
    "logout": {"kk": "Шығу", "ru": "Выйти", "en": "Sign out"},
    "signed_in": {"kk": "Пайдаланушы: {name}", "ru": "Пользователь: {name}", "en": "Signed in as {name}"},
    "upload.heading": {"kk": "Зерттеуді жүктеу", "ru": "Загрузка исследования", "en": "Upload a study"},
    "upload.task": {"kk": "Міндет", "ru": "Задача", "en": "Task"},
    "upload.dicom": {
        "kk": "Кеуде қуысының рентгенограммасы (DICOM файлы)",
        "ru": "Рентгенограмма грудной клетки (файл DICOM)",
        "en": "Chest radiograph (DICOM file)",
    },
    "upload.bundle": {
        "kk": "Пациент деректері (FHIR Bundle, JSON; міндетті емес)",
        "ru": "Данные пациента (FHIR Bundle, JSON; необязательно)",
        "en": "Patient record (FHIR Bundle, JSON; optional)",
    },
    "upload.submit": {"kk": "Талдау", "ru": "Проанализировать", "en": "Analyse"},
    "upload.no_file": {"kk": "DICOM файлын таңдаңыз.", "ru": "Выберите файл DICOM.", "en": "Choose a DICOM file."},
    "model.heading": {"kk": "Модель", "ru": "Модель", "en": "The model"},
    "pacs.heading": {"kk": "PACS-тағы зерттеулер", "ru": "Исследования в PACS", "en": "Studies in the PACS"},
    "pacs.date": {"kk": "Күні", "ru": "Дата", "en": "Date"},
    "pacs.accession": {"kk": "Қабылдау нөмірі", "ru": "Номер направления", "en": "Accession number"},
    "pacs.description": {"kk": "Сипаттама", "ru": "Описание", "en": "Description"},
    "pacs.analyse": {"kk": "Талдау", "ru": "Проанализировать", "en": "Analyse"},
    "pacs.none": {
        "kk": "PACS-та рентгенограммалар жоқ.",
        "ru": "В PACS нет рентгенограмм.",
        "en": "The PACS holds no radiographs.",
    },
    "pacs.unavailable": {
        "kk": "PACS қазір қолжетімсіз.",
        "ru": "PACS сейчас недоступен.",
        "en": "The PACS cannot be reached now.",
    },
    "model.intended_use": {"kk": "Қолданылу мақсаты", "ru": "Назначение", "en": "Intended use"},
    "model.version": {"kk": "нұсқа {version}", "ru": "версия {version}", "en": "version {version}"},
    "model.card_language": {
        "kk": "Модель карточкасының мәтіні ағылшын тілінде.",
        "ru": "Текст карточки модели на английском языке.",
        "en": "",
    },
    "model.none": {
        "kk": "Модельдер әлі жүктелмеген; кейінірек қайталаңыз.",
        "ru": "Модели ещё не загружены; повторите попытку позже.",
        "en": "No diagnosis model is loaded yet; try again later.",
    },
    "result.heading": {"kk": "Нәтиже", "ru": "Результат", "en": "Result"},
    "result.probability": {"kk": "Ықтималдық", "ru": "Вероятность", "en": "Probability"},
    "result.call": {"kk": "Модель қорытындысы", "ru": "Вывод модели", "en": "The model's call"},
    "result.band": {"kk": "Қауіп деңгейі", "ru": "Уровень риска", "en": "Risk band"},
    "result.positive": {"kk": "Оң", "ru": "Положительный", "en": "Positive"},
    "result.negative": {"kk": "Теріс", "ru": "Отрицательный", "en": "Negative"},
    "result.threshold": {"kk": "шегі {t}", "ru": "порог {t}", "en": "threshold {t}"},
    "result.conclusion": {"kk": "Қорытынды", "ru": "Заключение", "en": "Conclusion"},
    "result.overlay": {"kk": "Маңыздылық картасы", "ru": "Карта значимости", "en": "Saliency map"},
    "result.no_overlay": {
        "kk": "Бұл зерттеу үшін маңыздылық картасы жоқ.",
        "ru": "Для этого исследования карты значимости нет.",
        "en": "No saliency map for this study.",
    },
    "result.warnings": {
        "kk": "Сұраудың кейбір бөліктері ескерілмеді:",
        "ru": "Часть запроса не учтена:",
        "en": "Parts of the request were left out:",
    },
    "refusal.heading": {
        "kk": "Сервис бұл зерттеуді қабылдамады",
        "ru": "Сервис отклонил это исследование",
        "en": "The service refused this study",
    },
    "refusal.hint": {
        "kk": "Ешқандай баға берілмеді. Сервистің жауабы (ағылшын тілінде):",
        "ru": "Оценка не выполнялась. Ответ сервиса (на английском языке):",
        "en": "Nothing was scored. The service's answer:",
    },
    "error.heading": {
        "kk": "Сервис жауап бере алмады",
        "ru": "Сервис не смог ответить",
        "en": "The service could not answer",
    },
    "error.csrf": {
        "kk": "Форманың мерзімі өтті немесе ол осы беттен жіберілмеді; бетті жаңартып, қайталаңыз.",
        "ru": "Срок действия формы истёк, или она отправлена не с этой страницы; обновите страницу и повторите.",
        "en": "The form has expired or was not sent from this page; reload the page and try again.",
    },
}
LANGUAGE_NAMES: Final[dict[Language, str]] = {"kk": "Қазақша", "ru": "Русский", "en": "English"}


def text(key: str, lang: Language, **values: object) -> str:
    """The page text ``key`` in ``lang`` with ``{placeholders}`` filled.

    Raises:
        KeyError: an unknown key.
    """
    return TEXTS[key][lang].format(**values)


# --- the session cookie ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """What the session cookie holds: the CSRF secret, the expiry, the language and, once signed in, the token."""

    csrf: str
    expires: int
    lang: Language
    token: str | None = None
    name: str | None = None

    @property
    def signed_in(self) -> bool:
        """True once a clinician's token is in the session."""
        return self.token is not None


def session_key(pepper: bytes) -> bytes:
    """The cookie's AES-256-GCM key, derived from the token pepper (HKDF-SHA256): every worker derives the same."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(pepper)


def _aead(request: Request) -> AESGCM:
    state = request.app.state
    aead = getattr(state, "clinic_aead", None)
    if not isinstance(aead, AESGCM):
        settings: ServiceSettings = state.settings
        aead = AESGCM(session_key(settings.pepper()))
        state.clinic_aead = aead
    return aead


def seal(aead: AESGCM, session: Session) -> str:
    """The cookie value of ``session``: base64url(nonce || AES-GCM ciphertext and tag)."""
    payload = {"c": session.csrf, "e": session.expires, "l": session.lang, "t": session.token, "n": session.name}
    nonce = os.urandom(_NONCE_BYTES)
    sealed = aead.encrypt(nonce, json.dumps(payload, separators=(",", ":")).encode("utf-8"), _AAD)
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")


def unseal(aead: AESGCM, value: str | None, now: float | None = None) -> Session | None:
    """The session in a cookie value, or None when it is absent, tampered with, malformed or expired."""
    if not value or len(value) > _MAX_COOKIE_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = json.loads(aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD))
        session = Session(
            csrf=str(data["c"]),
            expires=int(data["e"]),
            lang=cast(Language, data["l"]) if data["l"] in LANGUAGES else i18n.DEFAULT_LANGUAGE,
            token=None if data["t"] is None else str(data["t"]),
            name=None if data["n"] is None else str(data["n"]),
        )
    except (InvalidTag, ValueError, binascii.Error, KeyError, TypeError):
        return None
    return session if session.expires > (time.time() if now is None else now) else None


def _new_session(lang: Language, token: str | None = None, name: str | None = None) -> Session:
    lifetime = SESSION_S if token is not None else ANONYMOUS_S
    return Session(secrets.token_urlsafe(32), int(time.time()) + lifetime, lang, token, name)


def _current(request: Request) -> Session | None:
    return unseal(_aead(request), request.cookies.get(COOKIE))


def _set_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        seal(_aead(request), session),
        max_age=max(0, session.expires - int(time.time())),
        path=PREFIX,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def _csrf_ok(session: Session | None, form: FormData) -> bool:
    sent = form.get(CSRF_FIELD)
    return session is not None and isinstance(sent, str) and hmac.compare_digest(sent, session.csrf)


# --- rendering ------------------------------------------------------------------------------------------------


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("pipelines.service", "templates/clinic"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _render(name: str, lang: Language, status: int = 200, **context: Any) -> HTMLResponse:
    def t(key: str, **values: object) -> str:
        return text(key, lang, **values)

    def number(value: float) -> str:
        return i18n.number(value, lang)

    def task_name(task: str) -> str:
        return i18n.task_name(task, lang)

    context.setdefault("pacs", None)  # the PACS list: only where a PACS is configured
    here = PREFIX if name == "clinic.html" else PREFIX + "/login"  # where the language links lead
    html = (
        _templates()
        .get_template(name)
        .render(
            lang=lang,
            t=t,
            number=number,
            task_name=task_name,
            here=here,
            languages=LANGUAGE_NAMES,
            prefix=PREFIX,
            csrf_field=CSRF_FIELD,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _language(request: Request, session: Session | None, chosen: object = None) -> Language:
    """The page language: the one chosen (form or ``?lang=``), else the session's, else Accept-Language's."""
    for candidate in (chosen, request.query_params.get("lang")):
        if candidate in LANGUAGES:
            return candidate
    if session is not None:
        return session.lang
    return negotiate_language(request.headers.get("accept-language"))


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_HEADERS)


# --- talking to the service's own API -------------------------------------------------------------------------


def _client(request: Request) -> httpx.AsyncClient:
    """A client of this very app, in-process: each call goes through every middleware, as a remote one would."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=request.app), base_url=_INTERNAL_BASE, timeout=None)


def _auth(session: Session, lang: Language) -> dict[str, str]:
    return {"Authorization": f"Bearer {session.token}", "Accept-Language": lang}


@dataclass(frozen=True)
class ModelInfo:
    """A served diagnosis model, from its card: the task, name, version, intended use and threshold."""

    task: str
    name: str
    version: str
    intended_use: str
    threshold: float | None


def _models_of(cards: list[dict[str, Any]]) -> list[ModelInfo]:
    out = []
    for card in cards:
        name = str(card.get("name", ""))
        if not name.startswith(DIAGNOSIS_PREFIX):
            continue
        threshold = (card.get("evaluation") or {}).get("threshold")
        out.append(
            ModelInfo(
                task=name.removeprefix(DIAGNOSIS_PREFIX),
                name=name,
                version=str(card.get("version", "")),
                intended_use=str(card.get("intended_use", "")),
                threshold=float(threshold) if isinstance(threshold, int | float) else None,
            )
        )
    return sorted(out, key=lambda m: m.task)


async def _served_models(client: httpx.AsyncClient, session: Session, lang: Language) -> tuple[int, list[ModelInfo]]:
    response = await client.get("/models", headers=_auth(session, lang))
    if response.status_code != 200:
        return response.status_code, []
    return 200, _models_of(response.json().get("models", []))


@dataclass(frozen=True)
class PacsList:
    """The PACS's newest studies for the page (None: no PACS configured); ``unavailable`` when the search failed."""

    studies: list[dict[str, Any]]
    unavailable: bool = False


async def _pacs_list(request: Request, client: httpx.AsyncClient, session: Session, lang: Language) -> PacsList | None:
    if request.app.state.settings.dicomweb_config() is None:
        return None
    response = await client.get("/pacs/studies", headers=_auth(session, lang))
    if response.status_code != 200:
        return PacsList([], unavailable=True)
    return PacsList(list(response.json().get("studies", [])))


@dataclass
class Result:
    """What the page shows of one answer of ``POST /diagnosis/{task}``."""

    status: int
    probability: float | None = None
    positive: bool | None = None
    band: str = ""
    conclusion: str = ""
    overlay_uri: str | None = None
    overlay_title: str = ""
    warnings: list[str] = field(default_factory=list)
    refusal: str | None = None


def _png_data_uri(attachment: dict[str, Any]) -> str | None:
    """``data:image/png;base64,...`` of an attachment that really holds a PNG, else None."""
    data = attachment.get("data")
    if attachment.get("contentType") != "image/png" or not isinstance(data, str):
        return None
    try:
        head = base64.b64decode(data[:24], validate=True)
    except (binascii.Error, ValueError):
        return None
    return f"data:image/png;base64,{data}" if head.startswith(_PNG_MAGIC) else None


def read_answer(status: int, body: Any) -> Result:
    """The page's view of an API answer: a diagnosis Bundle (200) or an OperationOutcome (an error)."""
    result = Result(status)
    if not isinstance(body, dict):
        result.refusal = f"HTTP {status}"
        return result
    if body.get("resourceType") == "OperationOutcome":
        texts = [str(i.get("diagnostics", "")) for i in body.get("issue", []) if isinstance(i, dict)]
        result.refusal = "; ".join(t for t in texts if t) or f"HTTP {status}"
        return result
    for entry in body.get("entry", []):
        resource = entry.get("resource", {}) if isinstance(entry, dict) else {}
        kind = resource.get("resourceType")
        if kind == "RiskAssessment":
            prediction = (resource.get("prediction") or [{}])[0]
            if isinstance(prediction.get("probabilityDecimal"), int | float):
                result.probability = float(prediction["probabilityDecimal"])
            # The risk band in the page's language, as the API wrote it (Accept-Language).
            result.band = str((prediction.get("qualitativeRisk") or {}).get("text", ""))
        elif kind == "Observation" and result.probability is None:
            value = (resource.get("valueQuantity") or {}).get("value")
            result.probability = float(value) if isinstance(value, int | float) else None
        if kind == "Observation":
            codes = [c.get("code") for i in resource.get("interpretation", []) for c in i.get("coding", [])]
            if "POS" in codes or "NEG" in codes:
                result.positive = "POS" in codes
        elif kind == "DiagnosticReport":
            result.conclusion = str(resource.get("conclusion", ""))
            for attachment in resource.get("presentedForm", []):
                uri = _png_data_uri(attachment)
                if uri is not None:
                    result.overlay_uri, result.overlay_title = uri, str(attachment.get("title", ""))
        elif kind == "OperationOutcome":
            result.warnings += [str(i.get("diagnostics", "")) for i in resource.get("issue", [])]
    if result.probability is None:
        result.refusal = "the answer held no probability"
    return result


# --- routes ---------------------------------------------------------------------------------------------------


@router.get(PREFIX + "/static/clinic.css")
def stylesheet() -> Response:
    """The page's stylesheet, from the installed package."""
    css = (files("pipelines.service") / "static" / "clinic.css").read_bytes()
    return Response(css, media_type="text/css", headers={**_HEADERS, "Cache-Control": "max-age=3600"})


@router.get(PREFIX + "/login")
def login_page(request: Request) -> HTMLResponse:
    """The sign-in form (token and language); sets an anonymous session whose CSRF secret the form carries."""
    session = _current(request)
    lang = _language(request, session)
    if session is None:
        session = _new_session(lang)
    response = _render("login.html", lang, session=session, error=None)
    _set_cookie(request, response, session)
    return response


@router.post(PREFIX + "/login")
async def login(request: Request) -> Response:
    """Check the token with the token store (clinician role) and start a session with a fresh CSRF secret.

    403 without the login form's CSRF secret; 401 (the form again, with the reason) for an unknown or revoked
    token, 403 for a token of another role.
    """
    form = await request.form(max_files=0, max_fields=8)
    session = _current(request)
    lang = _language(request, session, form.get("lang"))
    if not _csrf_ok(session, form):
        return _render("error.html", lang, 403, message=text("error.csrf", lang))
    assert session is not None  # _csrf_ok
    sent = form.get("token")
    token = sent.strip() if isinstance(sent, str) else ""
    tokens: TokenStore = request.app.state.tokens
    info = tokens.authenticate(token) if token else None
    if info is None or not role_allows(info.role, (Role.clinician,)):
        key, status = ("login.wrong", 401) if info is None else ("login.role", 403)
        page = _render("login.html", lang, status, session=session, error=text(key, lang))
        _set_cookie(request, page, Session(session.csrf, session.expires, lang))
        return page
    log.info("clinic page sign-in by token %s", info.name)
    response = _redirect(f"{PREFIX}?lang={lang}")
    # A fresh CSRF secret at sign-in: a secret planted before it (session fixation) is worth nothing after.
    _set_cookie(request, response, _new_session(lang, token, info.name))
    return response


@router.post(PREFIX + "/logout")
async def logout(request: Request) -> Response:
    """End the session (CSRF-checked): the cookie is cleared and the sign-in form shown."""
    form = await request.form(max_files=0, max_fields=4)
    session = _current(request)
    lang = _language(request, session, form.get("lang"))
    if not _csrf_ok(session, form):
        return _render("error.html", lang, 403, message=text("error.csrf", lang))
    response = _redirect(f"{PREFIX}/login?lang={lang}")
    response.delete_cookie(COOKIE, path=PREFIX, secure=request.url.scheme == "https", httponly=True, samesite="strict")
    return response


@router.get(PREFIX)
async def clinic_page(request: Request) -> Response:
    """The upload form with the served models' intended use (signed-in clinicians; others go to sign in)."""
    session = _current(request)
    lang = _language(request, session)
    if session is None or not session.signed_in:
        return _redirect(f"{PREFIX}/login?lang={lang}")
    request.state.token_name = session.name  # the access log names the token, as for an API call
    async with _client(request) as client:
        page = await _signed_in_page(request, client, session, lang, "")
    if page is None:  # revoked since sign-in
        return _redirect(f"{PREFIX}/login?lang={lang}")
    response = page.render()
    if session.lang != lang:
        _set_cookie(request, response, Session(session.csrf, session.expires, lang, session.token, session.name))
    return response


def _upload(form: FormData, name: str) -> UploadFile | None:
    value = form.get(name)
    return value if isinstance(value, UploadFile) and (value.size or value.filename) else None


@dataclass(frozen=True)
class _Page:
    """What every rendering of the signed-in page needs: who, in which language, the models and the PACS list."""

    session: Session
    lang: Language
    models: list[ModelInfo]
    chosen: ModelInfo | None
    pacs: PacsList | None

    def render(self, status: int = 200, *, result: Result | None = None, error: str | None = None) -> HTMLResponse:
        """The page with an answer (``result``) or a form error."""
        return _render(
            "clinic.html",
            self.lang,
            status,
            session=self.session,
            models=self.models,
            chosen=self.chosen,
            result=result,
            error=error,
            pacs=self.pacs,
        )

    def answer(self, answer: httpx.Response) -> Response:
        """The page showing an answer of the API (its 401: back to sign in).

        A refusal (4xx) is an answer the page shows as such (its status is in the page); the page itself is 200,
        so a browser does not report a failed load. A fault of the service, or an answer the page cannot read,
        is 502.
        """
        if answer.status_code == 401:
            return _redirect(f"{PREFIX}/login?lang={self.lang}")
        try:
            body = answer.json()
        except ValueError:
            body = None
        result = read_answer(answer.status_code, body)
        status = 502 if answer.status_code >= 500 or (answer.status_code == 200 and result.refusal) else 200
        return self.render(status, result=result)


async def _signed_in_page(
    request: Request, client: httpx.AsyncClient, session: Session, lang: Language, task: str
) -> _Page | None:
    """The page's models and PACS list for ``session`` (None: its token was revoked since sign-in)."""
    status, models = await _served_models(client, session, lang)
    if status == 401:
        return None
    chosen = next((m for m in models if m.task == task), None)
    return _Page(session, lang, models, chosen, await _pacs_list(request, client, session, lang))


@router.post(PREFIX + "/diagnose")
async def diagnose_page(request: Request) -> Response:
    """Forward the upload to ``POST /diagnosis/{task}`` with the session's token and render its answer.

    A refusal (the API's 4xx: a CT, an image unlike the training radiographs, a bad file) is shown with its reason
    and the API's status, on a 200 page; 502 when the service failed; 403 without the session's CSRF secret.
    """
    form = await request.form(max_files=2, max_fields=8)
    session = _current(request)
    lang = _language(request, session, form.get("lang"))
    if session is None or not session.signed_in:
        if session is None or not _csrf_ok(session, form):
            return _render("error.html", lang, 403, message=text("error.csrf", lang))
        return _redirect(f"{PREFIX}/login?lang={lang}")
    if not _csrf_ok(session, form):
        return _render("error.html", lang, 403, message=text("error.csrf", lang))
    request.state.token_name = session.name
    task = str(form.get("task") or "")
    dicom, bundle = _upload(form, "file"), _upload(form, "bundle")
    async with _client(request) as client:
        page = await _signed_in_page(request, client, session, lang, task)
        if page is None:
            return _redirect(f"{PREFIX}/login?lang={lang}")
        if dicom is None or not task or not set(task) <= _TASK_CHARS:
            return page.render(400, error=text("upload.no_file", lang))
        files = {"file": (dicom.filename or "study.dcm", await dicom.read(), "application/dicom")}
        if bundle is not None:
            files["bundle"] = (bundle.filename or "bundle.json", await bundle.read(), "application/fhir+json")
        answer = await client.post(f"/diagnosis/{task}", files=files, headers=_auth(session, lang))
    return page.answer(answer)


@router.post(PREFIX + "/pacs")
async def pacs_study_page(request: Request) -> Response:
    """Score a study picked from the PACS list: forward to ``POST /diagnosis/{task}/studies/{uid}`` with the
    session's token (the results are stored back into the study) and render the answer as an upload's."""
    form = await request.form(max_files=0, max_fields=8)
    session = _current(request)
    lang = _language(request, session, form.get("lang"))
    if session is None or not _csrf_ok(session, form):
        return _render("error.html", lang, 403, message=text("error.csrf", lang))
    if not session.signed_in:
        return _redirect(f"{PREFIX}/login?lang={lang}")
    request.state.token_name = session.name
    task, study_uid = str(form.get("task") or ""), str(form.get("study_uid") or "")
    async with _client(request) as client:
        page = await _signed_in_page(request, client, session, lang, task)
        if page is None:
            return _redirect(f"{PREFIX}/login?lang={lang}")
        if page.chosen is None or not study_uid or not set(study_uid) <= _UID_CHARS or len(study_uid) > 64:
            return page.render(400, error=text("upload.no_file", lang))
        answer = await client.post(f"/diagnosis/{task}/studies/{study_uid}", headers=_auth(session, lang))
    return page.answer(answer)
