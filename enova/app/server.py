"""The application server's FastAPI app and its process.

create_app(ctx) builds the app from routers: api (the REST API under /api/v1), series (chart
data for /instance) and pages (/instance and its static files). serve() runs it with uvicorn.

Around every route: hardening headers (set only where a route did not set its own: a page may
widen its Content-Security-Policy, never to another origin), a Host check on loopback binds (a web
page that rebinds its name to 127.0.0.1 gets 400, so reads open to localhost stay local), errors as
JSON (422 naming the field, 4xx for a client's mistake; a 500 only for a bug, logged), and, when
the server is bound beyond loopback, the token on reads too. /openapi.json describes the API and
/docs renders it as one self-contained page (no script or style from anywhere else).
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from enova.settings import Settings

log = logging.getLogger("enova.app")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'")


@dataclass
class AppContext:
    """What every route reads: settings (state and cache dirs), the specs folder the plan is
    computed from (None: the running reconciler's, if any), the bearer token for mutations (and
    `tokens`: every token accepted, from an operator's token file), whether reads need it too (a
    non-loopback bind), and Prometheus's URL (None: found from the state directory's monitoring
    record). `allowed_hosts`: the Host header values accepted (None: any; serve() sets the
    loopback names on a loopback bind). `runtime` and `inventory` replace the real runtimes and
    NVML (tests); `stream_seconds` ends an event stream after that long (None: when the client
    goes). `runs` is made by create_app."""
    settings: Settings
    specs: Optional[Path] = None
    token: str = ""
    reads_need_token: bool = False
    prometheus_url: Optional[str] = None
    extra: dict = field(default_factory=dict)
    tokens: tuple[str, ...] = ()
    allowed_hosts: Optional[tuple[str, ...]] = None
    runtime: Optional[Callable[..., Any]] = None
    inventory: Optional[Callable[[], Any]] = None
    stream_seconds: Optional[float] = None
    runs: Any = None


def create_app(ctx: AppContext) -> FastAPI:
    from . import api, pages, schemas, series
    from .auth import require_read_token
    from .runs import RunManager
    if ctx.runs is None:
        ctx.runs = RunManager(ctx.settings.state_dir, ctx.settings.cache_dir)
    app = FastAPI(title="enova application server", version=_version(), docs_url=None, redoc_url=None,
                  description="A REST API over what enova knows: deployments, the plan, events, the autoscaler, "
                              "the recommender and injection runs. Reads are open on a loopback bind; every "
                              "request that starts, stops or changes anything needs `Authorization: Bearer "
                              "<token>` (`enova app token` prints it).")
    app.state.ctx = ctx
    reads = [Security(require_read_token)] if ctx.reads_need_token else []
    app.add_api_route("/healthz", api.healthz, methods=["GET"], response_model=schemas.Health, tags=["server"],
                      summary="The server answers")
    app.include_router(api.router, dependencies=reads)
    app.include_router(series.router, dependencies=reads)
    app.include_router(pages.router, dependencies=reads)
    _errors(app)
    app.add_api_route("/docs", _docs, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)
    app.add_middleware(_Hardening, ctx=ctx, routes=lambda: app.routes)
    return app


# ---- errors ------------------------------------------------------------------------------------------

def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})
        for error in errors:
            error.pop("url", None)
            error.pop("ctx", None)
        first = errors[0] if errors else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if not isinstance(part, int) or
                         first.get("type") != "json_invalid")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "invalid request")
        return JSONResponse({"detail": errors, "message": message}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not text: an invalid body like any other, 422
            error = {"type": "json_invalid", "loc": ["body"], "msg": "the body is not UTF-8 JSON", "input": None}
            return JSONResponse({"detail": [error], "message": "body: the body is not UTF-8 JSON"}, status_code=422)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names only the first route's methods: name every route's
            headers["Allow"] = ", ".join(_allowed(request))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the app server's log has the "
                                       "traceback"}, status_code=500)


def _allowed(request: Request) -> list[str]:
    from starlette.routing import Match
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


# ---- headers --------------------------------------------------------------------------------------------

# POSTs that change nothing (a computation), so need no token
UNGUARDED = ("/api/v1/recommend",)


class _Hardening:
    """Pure ASGI middleware (streams pass through unbuffered): the Host check; the token on every
    request under /api/ that is not a read (GET, HEAD, OPTIONS) nor in UNGUARDED, before its body
    is read (so a malformed body without a token is a 401 too, and a route added later cannot
    forget it; the routes' own dependency documents it in the OpenAPI); then the hardening headers
    on every response that does not set its own."""

    def __init__(self, app, ctx=None, routes=None):
        self.app = app
        self.ctx = ctx
        self.routes = routes
        hosts = ctx.allowed_hosts if ctx is not None else None
        self.allowed = None if hosts is None else {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refused = None
        if self.allowed is not None and _host(scope) not in self.allowed:
            refused = JSONResponse({"detail": "this server answers only to its own address (Host header "
                                              f"{_host(scope)!r} refused)"}, status_code=400)
        elif self.ctx is not None and _guarded(scope) and self._routed(scope):
            from .auth import bearer, verdict
            header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), None)
            failed = verdict(self.ctx, bearer(header))
            if failed is not None:
                refused = JSONResponse({"detail": failed[1]}, status_code=failed[0],
                                       headers={"WWW-Authenticate": "Bearer"} if failed[0] == 401 else None)
        if refused is not None:
            return await _Hardening(refused)(scope, receive, send)
        api = scope.get("path", "").startswith(("/api/", "/openapi.json", "/healthz"))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in _defaults(api):
                    if name not in present:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


    def _routed(self, scope) -> bool:
        """A route takes this method on this path (else the router answers 404 or 405, acting on nothing)."""
        from starlette.routing import Match
        if self.routes is None:
            return True
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes())


def _guarded(scope) -> bool:
    path = scope.get("path", "")
    return (scope.get("method", "GET") not in ("GET", "HEAD", "OPTIONS") and path.startswith("/api/")
            and path.rstrip("/") not in UNGUARDED)


def _defaults(api: bool) -> list[tuple[bytes, bytes]]:
    out = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer"), (b"cross-origin-opener-policy", b"same-origin"),
           (b"cross-origin-resource-policy", b"same-origin"),
           (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
           (b"content-security-policy", (API_CSP if api else PAGE_CSP).encode())]
    if api:
        out.append((b"cache-control", b"no-store"))
    return out


def _host(scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            host = value.decode("latin-1").strip().lower()
            if host.startswith("["):
                return host[:host.find("]") + 1] if "]" in host else host
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return ""


# ---- the docs page ----------------------------------------------------------------------------------------

def _docs(request: Request) -> HTMLResponse:
    return HTMLResponse(render_docs(request.app.openapi()))


def render_docs(doc: dict[str, Any]) -> str:
    """The OpenAPI document as one HTML page: every operation with its parameters, body and
    answers, schemas as JSON. Inline CSS, no script, nothing fetched."""
    e = html.escape
    schemas = doc.get("components", {}).get("schemas", {})
    parts = [f"<h1>{e(doc['info']['title'])} <small>{e(doc['info'].get('version', ''))}</small></h1>",
             f"<p>{e(doc['info'].get('description', ''))}</p>",
             '<p>The machine-readable document: <a href="/openapi.json">/openapi.json</a>.</p>', "<h2>Operations</h2><ul>"]
    ops = [(path, method, op) for path, item in doc.get("paths", {}).items() for method, op in item.items()]
    for path, method, op in ops:
        parts.append(f'<li><a href="#{e(op.get("operationId", ""))}"><code>{method.upper()} {e(path)}</code></a> '
                     f"{e(op.get('summary', ''))}</li>")
    parts.append("</ul>")
    for path, method, op in ops:
        secured = " <span class=lock>token required</span>" if op.get("security") else ""
        parts.append(f'<section id="{e(op.get("operationId", ""))}"><h3><code>{method.upper()} {e(path)}</code>'
                     f"{secured}</h3><p>{e(op.get('description') or op.get('summary') or '')}</p>")
        params = op.get("parameters", [])
        if params:
            parts.append("<table><tr><th>parameter</th><th>in</th><th>schema</th><th>description</th></tr>")
            for p in params:
                parts.append(f"<tr><td><code>{e(p['name'])}</code>{' *' if p.get('required') else ''}</td>"
                             f"<td>{e(p['in'])}</td><td><code>{e(json.dumps(p.get('schema', {})))}</code></td>"
                             f"<td>{e(p.get('description', ''))}</td></tr>")
            parts.append("</table>")
        body = op.get("requestBody", {}).get("content", {})
        for media, content in body.items():
            parts.append(f"<p>Body ({e(media)}): {_schema_ref(content.get('schema', {}))}</p>")
        parts.append("<table><tr><th>status</th><th>description</th><th>body</th></tr>")
        for code, answer in op.get("responses", {}).items():
            bodies = ", ".join(f"{e(m)} {_schema_ref(c.get('schema', {}))}" for m, c in answer.get("content", {}).items())
            parts.append(f"<tr><td>{e(code)}</td><td>{e(answer.get('description', ''))}</td><td>{bodies}</td></tr>")
        parts.append("</table></section>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in schemas.items():
        parts.append(f'<section id="schema-{e(name)}"><h3>{e(name)}</h3>'
                     f"<pre>{e(json.dumps(schema, indent=2))}</pre></section>")
    style = ("body{font:14px/1.45 system-ui,sans-serif;max-width:70em;margin:1em auto;padding:0 1em;color:#222}"
             "code,pre{font-family:ui-monospace,monospace}pre{background:#f6f6f6;padding:.6em;overflow:auto}"
             "table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:.2em .5em;"
             "text-align:left;vertical-align:top}section{border-top:1px solid #eee;margin-top:1em}"
             ".lock{font-size:.75em;background:#fde2b5;padding:.1em .4em;border-radius:.3em}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(doc['info']['title'])}: API</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def _schema_ref(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{html.escape(name)}">{html.escape(name)}</a>'
    if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
        return f"array of {_schema_ref(schema['items'])}"
    return f"<code>{html.escape(json.dumps(schema))}</code>"


def _version() -> str:
    from enova import __version__
    return __version__


# ---- the process --------------------------------------------------------------------------------------------

def serve(ctx: AppContext, host: str = "127.0.0.1", port: int = 8182, *, ready: Callable[[], None] | None = None,
          stop=None) -> None:
    """Run the app server in the foreground until SIGINT or SIGTERM (or `stop`, a threading.Event,
    is set). Sets the loopback Host check on a loopback bind. Raises UsageError when the port is
    taken. Cancels the injection runs it started on the way out (they write partial results)."""
    import socket
    import threading

    import uvicorn

    from enova.errors import UsageError
    from enova.spec.models import is_loopback
    if ctx.allowed_hosts is None and is_loopback(host):
        ctx.allowed_hosts = tuple(dict.fromkeys((*LOOPBACK_HOSTS, host)))
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # inherited by every accepted connection: without it a keep-alive client waits out the delayed
    # ACK (about 40 ms) on each answer written in two parts (measured: /healthz 48 ms -> 1 ms)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another app server running? "
                         "choose another --port)") from None
    sock.listen(2048)
    app = create_app(ctx)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3,
                            server_header=False)
    server = uvicorn.Server(config)
    if threading.current_thread() is threading.main_thread():
        # our handlers, not uvicorn's (which re-raises the signal after shutdown: exit -15, not 0)
        import contextlib
        import signal

        def _exit(*_):
            server.force_exit = server.should_exit
            server.should_exit = True
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _exit)
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True).start()
    if ready is not None:
        original = server.startup

        async def startup(sockets=None):
            await original(sockets=sockets)
            ready()
        server.startup = startup  # type: ignore[method-assign]
    try:
        server.run(sockets=[sock])  # uvicorn's loop (uvloop when installed)
    finally:
        sock.close()
        ctx.runs.shutdown()
