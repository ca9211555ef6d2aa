"""The web app at ``/``, its assets, and the API docs at ``/docs`` and ``/redoc``: all offline.

Everything is served from files inside installed packages, never a CDN: the app from
``ragtide/static`` (plain HTML, CSS and JS, no build step), Swagger UI and ReDoc from the
``fastapi-offline`` wheel. Files are read once, on first use, and kept in memory with
their gzip form and a content hash:

- the page (``/``) is revalidated on every load (``no-cache`` + ``ETag``, so a warm
  reload is a 304) and names its assets with ``?v=<hash>``;
- assets are ``immutable`` for a year: a changed file gets a new URL through the page.

The app page carries a strict Content-Security-Policy (no inline script or style, no
third-party origin); the docs pages are FastAPI's own templates (inline bootstrap
scripts), pointed at the packaged assets.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse, Response

from ragtide.errors import NotFound

__all__ = ["ASSETS", "DOCS_ASSETS", "router"]

router = APIRouter(include_in_schema=False)

# The app's files (ragtide/static) and the docs' files (fastapi_offline/static).
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
PAGE = "chat.html"

_IMMUTABLE = "public, max-age=31536000, immutable"
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    gzipped: bytes | None  # None when compression does not pay (images)
    etag: str
    media_type: str

    def response(self, request: Request, cache_control: str, **headers: str) -> Response:
        common = {"ETag": self.etag, "Cache-Control": cache_control, **headers}
        if self.gzipped is not None:
            common["Vary"] = "Accept-Encoding"
        if self.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=common)
        accepts = request.headers.get("accept-encoding", "")
        if self.gzipped is not None and "gzip" in accepts:
            common["Content-Encoding"] = "gzip"
            return Response(self.gzipped, media_type=self.media_type, headers=common)
        return Response(self.body, media_type=self.media_type, headers=common)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _load(body: bytes, media_type: str) -> _File:
    digest = hashlib.sha256(body).hexdigest()[:16]
    packed = gzip.compress(body, 6, mtime=0) if not media_type.startswith("image/png") else None
    return _File(body, packed, f'"{digest}"', media_type)


@cache
def _asset(name: str) -> _File:
    return _load(files("ragtide").joinpath("static", name).read_bytes(), ASSETS[name])


# What the packaged docs assets would fetch from elsewhere, and what is served instead.
_OFFSITE = {
    "redoc.standalone.js": [(b"https://cdn.redoc.ly/redoc/logo-mini.svg", "icon.svg")],
}


@cache
def _docs_asset(name: str) -> _File:
    body = files("fastapi_offline").joinpath("static", name).read_bytes()
    for url, local in _OFFSITE.get(name, []):
        icon = base64.b64encode(files("ragtide").joinpath("static", local).read_bytes())
        body = body.replace(url, b"data:image/svg+xml;base64," + icon)
    return _load(body, DOCS_ASSETS[name])


def _version(name: str) -> str:
    return _asset(name).etag.strip('"')


@cache
def _page() -> _File:
    html = files("ragtide").joinpath("static", PAGE).read_text(encoding="utf-8")
    for name in ASSETS:  # the page names each asset by its content: /static/app.js?v=…
        html = html.replace(f"/static/{name}", f"/static/{name}?v={_version(name)}")
    return _load(html.encode(), "text/html; charset=utf-8")


@router.get("/")
async def app_page(request: Request) -> Response:
    """The web app (chat, documents, sessions, admin)."""
    return _page().response(
        request,
        "no-cache",
        **{
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


AssetName = Annotated[str, Path(pattern=r"^[a-z0-9.-]{1,40}$")]


@router.get("/static/{name}")
async def asset(name: AssetName, request: Request) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}")
    return _asset(name).response(request, _IMMUTABLE, **{"X-Content-Type-Options": "nosniff"})


@router.get("/static/docs/{name}")
async def docs_asset(name: AssetName, request: Request) -> Response:
    if name not in DOCS_ASSETS:
        raise NotFound(f"no asset {name!r}")
    return _docs_asset(name).response(request, _IMMUTABLE, **{"X-Content-Type-Options": "nosniff"})


def _docs_url(request: Request, name: str) -> str:
    root = request.scope.get("root_path", "")
    version = _docs_asset(name).etag.strip('"')
    return f"{root}/static/docs/{name}?v={version}"


def _openapi_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}{request.app.openapi_url or '/openapi.json'}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI from the packaged assets."""
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=_docs_url(request, "swagger-ui-bundle.js"),
        swagger_css_url=_docs_url(request, "swagger-ui.css"),
        swagger_favicon_url=_docs_url(request, "favicon.png"),
        swagger_ui_parameters={"validatorUrl": None},  # no call to swagger.io
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc from the packaged assets (no web fonts)."""
    return get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_docs_url(request, "redoc.standalone.js"),
        redoc_favicon_url=_docs_url(request, "favicon.png"),
        with_google_fonts=False,
    )
