"""The seed's /instance page: `/` redirects to `/instance` (every deployment, pick one),
`/instance/{name}` is one deployment's page (a 404 page for a name that is neither recorded nor
in the specs), and `/assets/{file}` serves the page's files from `enova/app/static/`.

The page is static HTML, CSS and JavaScript shipped in the wheel (no CDN: GPU clusters are often
offline; the charts are the page's own SVG code). Its data comes from the browser calling the
REST API (enova.app.api) and the chart data route (enova.app.series), so no script is inline and
no value is written into the HTML but an escaped name on the 404 page: a strict
Content-Security-Policy (`script-src 'self'`) holds. The token for starting a run is typed
into the page and kept in the tab's sessionStorage, never served.

Assets are a fixed table read once at import: the request's file name is only a key into it,
never a path. Called by the browser.
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enova.observe.state import StateStore

from .series import known_deployment, load_spec_set

router = APIRouter()

STATIC = Path(__file__).parent / "static"
# file name -> media type: the only files /assets serves
ASSET_TYPES = {
    "instance.css": "text/css; charset=utf-8",
    "instance.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGE = "instance.html"
MISSING = "missing.html"


def _load(name: str) -> tuple[bytes, str]:
    body = (STATIC / name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


_ASSETS = {name: _load(name) for name in ASSET_TYPES}
_PAGE = (STATIC / PAGE).read_text(encoding="utf-8")
_MISSING = (STATIC / MISSING).read_text(encoding="utf-8")
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/instance", status_code=307)


@router.get("/instance", include_in_schema=False)
def instance_index() -> HTMLResponse:
    """Every deployment; the page lists them from /api/v1/deployments."""
    return HTMLResponse(_PAGE, headers=_HEADERS)


@router.get("/instance/{name}", include_in_schema=False)
def instance_page(request: Request, name: str) -> HTMLResponse:
    """One deployment's page, or a 404 page naming what is unknown. When reads need a token
    the page is served for any name (whether a deployment exists is for the API to say)."""
    ctx = request.app.state.ctx
    if not getattr(ctx, "reads_need_token", False):
        specs, _ = load_spec_set(ctx)
        if not known_deployment(name, StateStore(Path(ctx.settings.state_dir)), specs):
            return HTMLResponse(_MISSING.replace("{{name}}", html.escape(name, quote=True)), status_code=404,
                                headers=_HEADERS)
    return HTMLResponse(_PAGE, headers=_HEADERS)


@router.get("/assets/{file}", include_in_schema=False)
def asset(request: Request, file: str) -> Any:
    """A file of the page from the fixed table; 404 for any other name."""
    if file not in _ASSETS:
        return Response("not found\n", status_code=404, media_type="text/plain")
    body, etag = _ASSETS[file]
    headers = {**_HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=ASSET_TYPES[file], headers=headers)
