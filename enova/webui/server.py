"""The web UI's HTTP server: the page, its API, the checks every request passes, its lifecycle.

Routes: GET / (the chat page), GET /static/app.js, /static/style.css, /favicon.svg (a fixed
whitelist of files shipped in the package, read once at start; no request path ever reaches
the file system), GET /api/info (the gateway's address, whether a token file is set),
GET /api/models and POST /api/chat (relayed to the gateway, see `relay`).

Every answer carries hardening headers: a Content-Security-Policy that allows only this origin
(no inline script, no external origin, no framing), nosniff, no referrer. On a loopback bind
(the default) only loopback Host names are answered, so a web page on another origin cannot
reach the UI through DNS rebinding; a POST whose Origin is another origin is refused, so a
page elsewhere cannot spend the engine with the server-side token.

`build_app(config)` makes the aiohttp application (tests drive it directly); `WebUI` binds
it (handler cancellation on, so a browser that aborts its fetch cancels the relay);
`serve` / `run_webui(config, stop_event)` run until SIGINT/SIGTERM or the event. Called by
`enova webui run` (enova.commands.webui).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import Callable
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from enova import __version__
from enova.errors import UsageError
from enova.gateway.site import Site, stop_on_signals, wait_for_stop

from .config import TokenFile, WebUIConfig, is_loopback
from .relay import Refusal, Relay

log = logging.getLogger("enova.webui")

# path -> (file in enova/webui/static, content type): the only files ever served.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

RELAY = web.AppKey("enova_webui_relay", Relay)


def _hostname(host_header: str) -> str:
    """The name in a Host header, without the port ("[::1]:8501" -> "::1")."""
    try:
        return (urlsplit("//" + host_header).hostname or "").lower()
    except ValueError:
        return ""


def _refused(status: int, message: str) -> web.Response:
    return Refusal(status, "refused", message).response()


def _make_guard(config: WebUIConfig):
    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        if config.loopback and not is_loopback(_hostname(request.host)) and _hostname(request.host) != config.host:
            resp: web.StreamResponse = _refused(
                403, f"unexpected Host {request.host!r}: this web UI listens on {config.host} and answers only "
                     "loopback names (start it with --host to serve another address)")
        elif (request.method not in ("GET", "HEAD") and "Origin" in request.headers
              and urlsplit(request.headers["Origin"]).netloc.lower() != request.host.lower()):
            resp = _refused(403, f"cross-origin request from {request.headers['Origin']} refused")
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:    # aiohttp's own 404/405: same JSON shape as ours
                if exc.status == 404:
                    resp = _refused(404, f"no such page: {request.path}")
                elif exc.status == 405:
                    allowed = exc.headers.get("Allow", "")
                    resp = _refused(405, f"method {request.method} is not allowed on {request.path}; use {allowed}")
                    resp.headers["Allow"] = allowed
                else:
                    resp = _refused(exc.status, exc.reason)
        return resp
    return guard


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, streams included, gets the hardening headers."""
    response.headers.update(SECURITY_HEADERS)


def _static_handler(body: bytes, content_type: str):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    return handler


def build_app(config: WebUIConfig, *, token_file: TokenFile | None = None) -> web.Application:
    """The application. `token_file` defaults to one for `config.token_file` (read at once:
    raises UsageError if it is missing, unreadable or empty)."""
    if token_file is None and config.token_file is not None:
        token_file = TokenFile(config.token_file)
        token_file.load()
    relay = Relay(config, token_file)
    app = web.Application(middlewares=[_make_guard(config)], client_max_size=config.max_body_bytes)
    app[RELAY] = relay
    app.on_response_prepare.append(_on_prepare)
    folder = resources.files("enova.webui") / "static"
    for path, (name, content_type) in STATIC.items():
        app.router.add_get(path, _static_handler((folder / name).read_bytes(), content_type))

    async def info(request: web.Request) -> web.Response:
        return web.json_response({"gateway": config.gateway, "token_file": token_file is not None,
                                  "version": __version__})

    app.router.add_get("/api/info", info)
    app.router.add_get("/api/models", relay.models)
    app.router.add_post("/api/chat", relay.chat)

    async def lifecycle(app: web.Application):
        await relay.start()
        yield
        await relay.close()

    app.cleanup_ctx.append(lifecycle)
    return app


class WebUI(Site):
    """The application bound to `config.host:config.port`."""

    def __init__(self, config: WebUIConfig):
        super().__init__(build_app(config), config.host, config.port, shutdown_timeout=2.0)
        self.config = config

    async def start(self) -> None:
        """Raises UsageError if the address cannot be bound (a port in use)."""
        try:
            await super().start()
        except OSError as exc:
            why = ("the port is in use (another web UI? choose one with --port)" if exc.errno == errno.EADDRINUSE
                   else os.strerror(exc.errno) if exc.errno else str(exc))
            raise UsageError(f"web UI: cannot listen on {self.config.host}:{self.config.port}: {why}") from exc


async def serve(config: WebUIConfig, stop: asyncio.Event | None = None,
                stop_event: threading.Event | None = None,
                started: Callable[[WebUI], None] | None = None) -> int:
    """Run until `stop`, the thread-side `stop_event`, or SIGTERM/SIGINT (on the main thread).
    Returns 0. Raises UsageError for a bad token file or an address in use."""
    stop = stop or asyncio.Event()
    webui = WebUI(config)
    with stop_on_signals(stop):
        try:
            await webui.start()
            log.info("web UI on %s against the gateway at %s", webui.url, config.gateway)
            if started is not None:
                started(webui)
            await wait_for_stop(stop, stop_event)
        finally:
            await webui.stop()
    log.info("web UI stopped")
    return 0


def run_webui(config: WebUIConfig, stop_event: threading.Event | None = None,
              started: Callable[[WebUI], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (on the main thread) or `stop_event`. Blocks; returns 0."""
    return asyncio.run(serve(config, stop_event=stop_event, started=started))
