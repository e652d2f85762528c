"""Helpers of the clinicians' page tests: the form's CSRF secret, signing in, uploading through the page."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
OVERLAY = re.compile(r'<img id="overlay" src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')


def fields(**values: str) -> dict[str, tuple[None, str]]:
    """Form fields sent as ``multipart/form-data`` without files, as a browser sends the page's small forms."""
    return {name: (None, value) for name, value in values.items()}


def csrf_of(html: str) -> str:
    """The CSRF secret a page's forms carry (every form of a page carries the same one)."""
    found = set(CSRF.findall(html))
    assert len(found) == 1, found
    return str(found.pop())


def sign_in(client: httpx.Client, token: str, lang: str = "en") -> httpx.Response:
    """Open the sign-in form, post the token with the form's CSRF secret; returns the answer to the post."""
    form = client.get(f"/clinic/login?lang={lang}")
    assert form.status_code == 200, form.text
    return client.post("/clinic/login", files=fields(csrf=csrf_of(form.text), token=token, lang=lang))


def upload(client: httpx.Client, dicom: bytes, lang: str = "en", csrf: str | None = None) -> httpx.Response:
    """Post a DICOM file through the page's upload form (the CSRF secret of the upload page unless given)."""
    if csrf is None:
        csrf = csrf_of(client.get(f"/clinic?lang={lang}").text)
    data = {"csrf": csrf, "lang": lang, "task": "pneumonia"}
    return client.post("/clinic/diagnose", data=data, files={"file": ("study.dcm", dicom, "application/dicom")})


def ct_file() -> bytes:
    """pydicom's small CT test file."""
    from pydicom.data import get_testdata_file

    return Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
