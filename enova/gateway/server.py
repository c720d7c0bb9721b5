"""The gateway's HTTP server: routes, request checks, auth, and its lifecycle.

Endpoints: POST /v1/completions and /v1/chat/completions (OpenAI, streams passed through),
POST /generate (the seed's API, see `generate`), GET /v1/models, GET /health (200 when some
deployment has a ready replica or scales from zero, else 503; JSON detail with requests queued
and held per deployment), GET /metrics (Prometheus text),
GET /admin/v1/replicas (the drain status `enova apply` polls; see `admin`), GET /admin/v1/config
(the settings hash the gateway runs and how its last reload went, for `enova apply` to confirm
a reload).

Reload in place: on SIGHUP (or `Gateway.reload()`) the config file is re-read and checked; the
new token list, body limit and queue settings apply to the next request, while the listening
socket, open connections and requests in flight are untouched. A bad file (unreadable, a bad
value, a token file with no token) is logged and the running settings kept. A changed host or
port is not applied in place (it needs a new process; `enova apply` hands over to one).
Tracing follows a reload too: a new otlp_endpoint or service_name replaces the exporter (the
old one flushes in the background); see `tracing`.

`build_app(config)` makes the aiohttp application (tests drive it directly); its lifecycle
opens the shared upstream connection pool, loads membership once before serving, and runs
the watcher and the prober. `Gateway` binds it and stops it gracefully (stop accepting, let
in-flight requests finish up to `shutdown_grace`); `run_gateway(config, stop_event)` is the
blocking entry point used by `python -m enova.gateway` and `enova enode run`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from enova.errors import EnovaError, PermanentError
from enova.observe.state import StateStore

from . import errors
from .config import GatewayConfig, read_config_file
from .exchange import Exchange
from .generate import GenerateStream, completion_request, generate_response
from .hold import WakeFile
from .metrics import GatewayMetrics
from .prober import Prober
from .proxy import Proxy
from .site import Site, stop_on_signals, wait_for_stop
from .registry import Deployment, Registry
from .source import EndpointSource, StateDirectorySource
from .tracing import Tracing, follow_reload, make_tracing
from .watch import Watcher

log = logging.getLogger("enova.gateway")

API_PATHS = {"/v1/completions": "completions", "/v1/chat/completions": "chat", "/generate": "generate"}
OPEN_PATHS = frozenset({"/health", "/metrics"})     # never need the token
DEPLOYMENT_HEADER = "X-Enova-Deployment"


@dataclass
class GatewayState:
    config: GatewayConfig
    registry: Registry
    metrics: GatewayMetrics
    watcher: Watcher
    clock: Callable[[], float]
    session: aiohttp.ClientSession | None = None
    proxy: Proxy | None = None
    tracing: Tracing | None = None          # None: tracing off (no otlp_endpoint)
    tasks: list[asyncio.Task] = field(default_factory=list)
    last_reload: dict[str, Any] = field(default_factory=lambda: {"ok": True, "error": None, "count": 0})

    def reload(self) -> bool:
        """Re-read the config file and apply what can change in place. Returns False (and
        keeps the running settings, logging why) if the file or its token file is bad.
        Blocks only on reading two small files."""
        path = self.config.config_file
        count = self.last_reload["count"] + 1
        if path is None:
            log.warning("reload asked, but the gateway was started without --config; nothing to re-read")
            self.last_reload = {"ok": False, "error": "started without --config", "count": count}
            return False
        try:
            new = read_config_file(path, self.config)
        except EnovaError as exc:
            log.error("reload refused, running settings kept (%s): %s", self.config.config_hash, exc)
            self.last_reload = {"ok": False, "error": str(exc), "count": count}
            return False
        if (new.host, new.port) != (self.config.host, self.config.port):
            log.warning("reload: host/port %s:%s differ from the address in use; a new address needs a new "
                        "gateway process (enova apply hands over to one); still listening on %s:%s",
                        new.host, new.port, self.config.host, self.config.port)
            new = replace(new, host=self.config.host, port=self.config.port)
        before = self.config.config_hash
        self.config = new
        self.registry.reconfigure(new)
        if self.session is not None:            # serving: tracing follows (else _lifecycle makes it)
            self.tracing = follow_reload(self.tracing, new)
        self.last_reload = {"ok": True, "error": None, "count": count}
        log.info("reloaded %s: config %s -> %s (%d token(s), max_body_bytes %d, queue_size %d, "
                 "queue_timeout %g)", path, before, new.config_hash, len(new.tokens), new.max_body_bytes,
                 new.queue_size, new.queue_timeout)
        return True


def _file_stamp(path: str | None) -> tuple[int, int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def watch_token_file(st: GatewayState) -> None:
    """Reload in place when the token file is edited (a token added or removed during a rotation),
    so a rotation needs neither `enova apply` nor a signal: the file's inode, size and mtime are
    checked every `token_poll_interval` seconds. A bad edit (no token left, unreadable) is refused
    by reload, which keeps the running tokens, and retried on the next edit."""
    seen = _file_stamp(st.config.token_file)
    while True:
        await asyncio.sleep(st.config.token_poll_interval)
        stamp = _file_stamp(st.config.token_file)
        if stamp != seen:
            seen = stamp
            if stamp is not None and st.config.config_file is not None:
                log.info("token file %s changed; reloading in place", st.config.token_file)
                st.reload()
                seen = _file_stamp(st.config.token_file)


STATE = web.AppKey("enova_gateway", GatewayState)
# A typed request key where aiohttp has them (3.14+); a plain string key before that.
EXCHANGE: Any = (web.RequestKey("enova_exchange", Exchange) if hasattr(web, "RequestKey")
                 else "enova_exchange")


# -- request checks -----------------------------------------------------------------------------

def _check_token(request: web.Request, tokens: tuple[str, ...]) -> None:
    """Any of `tokens` is accepted (several during a rotation); each is compared in constant time."""
    header = request.headers.get("Authorization")
    if not header:
        raise errors.unauthorized("missing bearer token")
    given = header.encode()
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given, f"Bearer {token}".encode())
    if not ok:
        raise errors.unauthorized("invalid bearer token")


async def _read_body(request: web.Request, st: GatewayState, ex: Exchange) -> bytes:
    limit = st.config.max_body_bytes           # read per request: a reload may change it
    if request.content_length is not None and request.content_length > limit:
        raise errors.body_too_large(limit, request.content_length)
    raw = bytearray()
    async for chunk in request.content.iter_any():
        raw += chunk
        if len(raw) > limit:
            raise errors.body_too_large(limit)
    ex.request_bytes = len(raw)
    return bytes(raw)


def _parse_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise errors.bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise errors.bad_request("the request body must be a JSON object", code="invalid_json")
    return body


def _http_error(exc: web.HTTPException, request: web.Request) -> errors.GatewayError:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return errors.method_not_allowed(request.method, request.path, list(exc.allowed_methods))
    if isinstance(exc, web.HTTPNotFound):
        return errors.not_found(request.path)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return errors.body_too_large(request.app[STATE].config.max_body_bytes)
    return errors.GatewayError(exc.status, exc.reason or "bad request", reason="invalid_request",
                               code=str(exc.status))


@web.middleware
async def guard(request: web.Request, handler) -> web.StreamResponse:
    """Auth, one error shape for everything, and the per-request metrics of API calls."""
    st = request.app[STATE]
    api = API_PATHS.get(request.path)
    ex = Exchange(api, st.clock()) if api else None
    if ex is not None and st.tracing is not None:
        ex.span = st.tracing.start(request.method, request.path, request.headers)
    request[EXCHANGE] = ex
    try:
        try:
            if st.config.tokens and request.path not in OPEN_PATHS:
                _check_token(request, st.config.tokens)
            resp = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            raise _http_error(exc, request) from None
    except errors.GatewayError as err:
        if ex is not None:
            ex.reason = err.reason
            ex.status = err.status
        resp = web.Response(status=err.status, body=err.body_bytes(), headers=err.headers())
    except asyncio.CancelledError:
        if ex is not None:
            ex.client_gone = True
            ex.finish(st.metrics, st.clock())
        raise
    except Exception:
        log.exception("error handling %s %s", request.method, request.path)
        if ex is not None and ex.status:         # a stream had started: nothing else can be sent
            ex.stream_broken = True
            ex.finish(st.metrics, st.clock())
            raise
        err = errors.GatewayError(500, "internal error in the gateway (see its log)", reason="internal_error",
                                  type="server_error", code="internal_error")
        if ex is not None:
            ex.reason = err.reason
        resp = web.Response(status=500, body=err.body_bytes(), headers=err.headers())
    if ex is not None:
        if isinstance(resp, web.Response) and not resp.prepared:
            ex.status = resp.status
            ex.response_bytes = len(resp.body or b"")
        ex.finish(st.metrics, st.clock())
    return resp


# -- API handlers ------------------------------------------------------------------------------

async def _openai(request: web.Request, path: str, required: str) -> web.StreamResponse:
    st: GatewayState = request.app[STATE]
    ex: Exchange = request[EXCHANGE]
    raw = await _read_body(request, st, ex)
    body = _parse_object(raw)
    model = body.get("model")
    dep = st.registry.default() if model is None else st.registry.resolve(model)
    ex.receive(st.metrics, dep.name)
    value = body.get(required)
    if value is None:
        raise errors.bad_request(f"`{required}` is required", param=required, code="missing_field")
    if required == "messages" and (not isinstance(value, list) or not value):
        raise errors.bad_request("`messages` must be a non-empty list", param="messages")
    stream = body.get("stream") is True
    drop_usage = False
    rewrite = model is None
    if model is None:
        body["model"] = dep.name
    if stream:
        options = body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            drop_usage = rewrite = True
    if rewrite:
        raw = json.dumps(body).encode()
    assert st.proxy is not None
    up = await st.proxy.open(ex, dep, path, raw)
    if stream and st.proxy.is_stream(up):
        return await st.proxy.passthrough(request, ex, up, drop_usage=drop_usage)
    return await st.proxy.buffered(ex, up)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, "/v1/completions", "prompt")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, "/v1/chat/completions", "messages")


async def generate(request: web.Request) -> web.StreamResponse:
    st: GatewayState = request.app[STATE]
    ex: Exchange = request[EXCHANGE]
    raw = await _read_body(request, st, ex)
    name = request.headers.get(DEPLOYMENT_HEADER) or request.query.get("deployment")
    dep: Deployment = st.registry.resolve(name, param="deployment") if name else st.registry.default()
    ex.receive(st.metrics, dep.name)
    body = _parse_object(raw)
    payload, stream = completion_request(body, dep.name)
    prompt = payload["prompt"]
    assert st.proxy is not None
    up = await st.proxy.open(ex, dep, "/v1/completions", json.dumps(payload).encode())
    if stream and st.proxy.is_stream(up):
        n = payload.get("n")
        gs = GenerateStream(prompt, dep.name, n if isinstance(n, int) and not isinstance(n, bool) else 1)
        return await st.proxy.generate_stream(request, ex, up, gs)
    return await st.proxy.buffered(ex, up, translate=lambda answer: generate_response(prompt, answer, dep.name))


# -- status endpoints --------------------------------------------------------------------------

async def models(request: web.Request) -> web.Response:
    st: GatewayState = request.app[STATE]
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "enova"} for name in st.registry.served()]
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    ok, detail = request.app[STATE].registry.health()
    return web.json_response(detail, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def admin_replicas(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].registry.admin_replicas())


async def admin_config(request: web.Request) -> web.Response:
    """What the gateway runs: {"config_hash", "settings", "tokens" (how many), "config_file",
    "last_reload": {"ok", "error", "count"}}. Token required (the hash derives from the tokens)."""
    st: GatewayState = request.app[STATE]
    return web.json_response({"config_hash": st.config.config_hash, "settings": st.config.settings,
                              "tokens": len(st.config.tokens),
                              "config_file": str(st.config.config_file) if st.config.config_file else None,
                              "last_reload": st.last_reload})


# -- lifecycle ---------------------------------------------------------------------------------

async def _lifecycle(app: web.Application):
    st = app[STATE]
    cfg = st.config
    st.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=cfg.upstream_keepalive),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout),
        auto_decompress=False)
    st.proxy = Proxy(st.registry, st.metrics, st.session, retry_after=cfg.retry_after_unavailable, clock=st.clock)
    st.tracing = make_tracing(cfg)
    await st.watcher.reload()
    prober = Prober(st.registry, st.session, interval=cfg.probe_interval, timeout=cfg.probe_timeout)
    st.tasks = [asyncio.create_task(st.watcher.run()), asyncio.create_task(prober.run()),
                asyncio.create_task(watch_token_file(st))]
    try:
        yield
    finally:
        for task in st.tasks:
            task.cancel()
        await asyncio.gather(*st.tasks, return_exceptions=True)
        await st.session.close()
        if st.tracing is not None:
            tracing, st.tracing = st.tracing, None
            await asyncio.to_thread(tracing.shutdown)


def build_app(config: GatewayConfig, *, clock: Callable[[], float] = time.monotonic,
              source: EndpointSource | None = None) -> web.Application:
    """The gateway as an aiohttp application, routing to the endpoints of `source` (default:
    the state directory `config.state_dir`). Nothing runs until the app starts (its cleanup
    context opens the connection pool, loads membership and starts the watcher and prober)."""
    registry = Registry(config, clock=clock, waker=WakeFile(config.state_dir))
    gw_metrics = GatewayMetrics(live=registry.live)
    registry.metrics = gw_metrics
    if source is None:
        source = StateDirectorySource(StateStore(config.state_dir), default_limit=config.default_concurrency,
                                      debounce_ms=config.watch_debounce_ms)
    watcher = Watcher(source, registry, rescan_interval=config.rescan_interval)
    # the body limit is enforced per request by _read_body (it may change on reload), not by aiohttp
    app = web.Application(middlewares=[guard])
    app[STATE] = GatewayState(config=config, registry=registry, metrics=gw_metrics, watcher=watcher, clock=clock)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/generate", generate)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/v1/replicas", admin_replicas)
    app.router.add_get("/admin/v1/config", admin_config)
    return app


class Gateway(Site):
    """A gateway bound to its address. `start` returns once it serves; `stop` stops accepting,
    lets in-flight requests finish (up to `shutdown_grace`), then closes everything."""

    def __init__(self, config: GatewayConfig, *, clock: Callable[[], float] = time.monotonic,
                 source: EndpointSource | None = None):
        super().__init__(build_app(config, clock=clock, source=source), config.host, config.port,
                         shutdown_timeout=config.shutdown_grace)
        self.config = config

    @property
    def state(self) -> GatewayState:
        return self.app[STATE]

    def reload(self) -> bool:
        """Re-read the config file in place (what SIGHUP does); see GatewayState.reload."""
        return self.state.reload()

    async def start(self) -> None:
        """Raises PermanentError if the address cannot be bound."""
        try:
            await super().start()
        except OSError as exc:
            raise PermanentError(f"gateway: cannot listen on {self.config.host}:{self.config.port}: "
                                 f"{exc.strerror or exc}") from exc


async def serve(config: GatewayConfig, stop: asyncio.Event | None = None,
                stop_event: threading.Event | None = None,
                started: Callable[[Gateway], None] | None = None) -> int:
    """Run until `stop` (or the thread-side `stop_event`, or SIGTERM/SIGINT when on the main
    thread) is set; then stop gracefully. Returns the exit code (0)."""
    stop = stop or asyncio.Event()
    gateway = Gateway(config)
    with stop_on_signals(stop, {signal.SIGHUP: gateway.reload}):
        try:
            await gateway.start()
            log.info("gateway listening on %s (state %s, config %s)", gateway.url, config.state_dir,
                     config.config_hash)
            if started is not None:
                started(gateway)
            await wait_for_stop(stop, stop_event)
            busy = sum(dep.pool.in_flight() for dep in gateway.state.registry.deployments.values())
            log.info("gateway stopping: %d request(s) in flight may take up to %g s", busy,
                     gateway.state.config.shutdown_grace)
        finally:
            await gateway.stop()
    log.info("gateway stopped")
    return 0


def run_gateway(config: GatewayConfig, stop_event: threading.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (on the main thread) or `stop_event` is set. Blocks; returns 0
    after in-flight requests finished. Raises PermanentError if the address cannot be bound."""
    return asyncio.run(serve(config, stop_event=stop_event))
