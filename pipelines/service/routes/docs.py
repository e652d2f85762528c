"""``GET /docs`` (Swagger UI) and ``GET /redoc`` (ReDoc) served entirely by the service: nothing calls out.

FastAPI's own pages load Swagger UI's script and style from a CDN (and ReDoc's fonts from Google), against
"nothing calls out of the machine": a hospital server has no internet, and a page that fetches from a CDN tells
a third party who reads the API documentation. The assets come from the installed ``fastapi-offline`` package
(Swagger UI and ReDoc, MIT); the pages carry no inline script, so a strict Content-Security-Policy allows only
this origin.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Final

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from pipelines.service.errors import FhirHTTPError

router = APIRouter(include_in_schema=False)

STATIC_PREFIX: Final = "/docs/static"
# Inline styles stay allowed: Swagger UI and ReDoc set style attributes from their scripts. Everything else comes
# from this origin (ReDoc renders in a blob: worker).
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS: Final = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

# Swagger UI's start-up, as a file rather than inline so the CSP needs no 'unsafe-inline' for scripts. No
# validator: Swagger UI would otherwise fetch a badge from validator.swagger.io for any non-localhost spec.
_SWAGGER_INIT: Final = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]
  });
});
"""

# name -> (package file or None for a text above, media type)
_ASSETS: Final = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui.css", "text/css"),
    "redoc.standalone.js": ("redoc.standalone.js", "text/javascript"),
    "favicon.png": ("favicon.png", "image/png"),
    "swagger-init.js": (None, "text/javascript"),
}

_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" type="image/png" href="{static}/favicon.png">
{head}
</head>
<body>
{body}
</body>
</html>
"""


@cache
def _asset(name: str) -> bytes:
    package_file, _ = _ASSETS[name]
    if package_file is None:
        return _SWAGGER_INIT.encode("utf-8")
    return (files("fastapi_offline") / "static" / package_file).read_bytes()


def _page(title: str, head: str, body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=title, static=STATIC_PREFIX, head=head, body=body), headers=_HEADERS)


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    """Swagger UI over ``/openapi.json``."""
    return _page(
        "Shipa inference service - Swagger UI",
        f'<link rel="stylesheet" href="{STATIC_PREFIX}/swagger-ui.css">',
        f'<div id="swagger-ui"></div>\n<script src="{STATIC_PREFIX}/swagger-ui-bundle.js"></script>\n'
        f'<script src="{STATIC_PREFIX}/swagger-init.js"></script>',
    )


@router.get("/redoc")
def redoc() -> HTMLResponse:
    """ReDoc over ``/openapi.json`` (system fonts: no Google Fonts)."""
    return _page(
        "Shipa inference service - ReDoc",
        "",
        f'<redoc spec-url="/openapi.json"></redoc>\n<script src="{STATIC_PREFIX}/redoc.standalone.js"></script>',
    )


@router.get(STATIC_PREFIX + "/{name}")
def static_asset(name: str) -> Response:
    """One of the pages' assets, from the installed package."""
    if name not in _ASSETS:
        raise FhirHTTPError(404, "not-found", "no such documentation asset")
    return Response(_asset(name), media_type=_ASSETS[name][1], headers={**_HEADERS, "Cache-Control": "max-age=86400"})
