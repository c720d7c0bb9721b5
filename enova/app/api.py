"""The REST API under /api/v1 (and /healthz): deployments, the plan, events, the autoscaler, the
recommender, injection runs, and the reconciler's reload.

Routes are thin: they check the request, call the reads at the end of this module, enova.app.runs
(injection runs) or enova.advise (the recommender), and map enova's errors to HTTP: a client's mistake is a
4xx naming it (404 unknown name, 409 not possible now, 422 invalid field), something out of reach
a 503, never a 500. Routes that start, stop or change anything depend on auth.require_token; they
change the world only as the CLI does (an `enova inject run` process, SIGHUP to the reconciler).
Blocking work runs in FastAPI's thread pool (plain `def` routes).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Header, Query, Request, Security
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from enova.errors import EnovaError, TemporaryError
from enova.observe.state import StateStore
from enova.reconcile.controller import read_status
from enova.reconcile.events import Event, EventLog
from enova.spec.models import NAME_PATTERN
from enova.workspace import Workspace

from . import schemas
from .auth import require_token
from .runs import Busy, NotRunning, RunNotFound

router = APIRouter()

CURSOR_PATTERN = r"^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?(:[0-9]{1,9})?$"
OPTIONAL_CURSOR = r"^$|" + CURSOR_PATTERN      # query and header parameters: empty means none
OPTIONAL_NAME = r"^$|" + NAME_PATTERN
MAX_STREAMS = 32
_streams = threading.BoundedSemaphore(MAX_STREAMS)


def _ctx(request: Request):
    return request.app.state.ctx


def invalid(field: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 naming the body field at fault, in the shape of FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message,
                                    "input": value}])


def _read(fn, *args):
    """Call a read; NotFound -> 404, Unavailable -> 409, any other EnovaError (an unreadable
    record, say) -> 503 with its message."""
    try:
        return fn(*args)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except Unavailable as exc:
        raise HTTPException(409, str(exc)) from None
    except EnovaError as exc:
        raise HTTPException(503, f"cannot read enova's state: {exc}") from None


# ---- server ---------------------------------------------------------------------------------------

def healthz() -> dict[str, Any]:
    """Open even when reads need the token (a load balancer's probe); says nothing but the version."""
    from enova import __version__
    return {"status": "ok", "version": __version__}


# ---- deployments ----------------------------------------------------------------------------------

@router.get("/api/v1/deployments", response_model=schemas.Status, tags=["deployments"],
            responses=schemas.errors(503), summary="Every deployment: spec, sync and health, replicas")
def list_deployments(request: Request) -> dict[str, Any]:
    """What `enova status -o json` prints: per deployment its spec summary, sync status (against the
    app's specs, else the running reconciler's) and health status, the reconciler's condition, and
    each replica with its pid or container, port, health, uptime and config hash; the gateway, the
    reconciler and the GPUs. Probes replica health (up to about 2 s)."""
    return _read(status, _ctx(request))


@router.get("/api/v1/deployments/{name}", response_model=schemas.Deployment, tags=["deployments"],
            responses=schemas.errors(404, 503), summary="One deployment")
def get_deployment(name: str, request: Request) -> dict[str, Any]:
    """One deployment of the list; 404 when there is no deployment of that name."""
    return _read(deployment, _ctx(request), name)


@router.get("/api/v1/plan", response_model=schemas.Plan, tags=["deployments"],
            responses=schemas.errors(409, 503), summary="The plan `enova diff` would show")
def get_plan(request: Request) -> dict[str, Any]:
    """`enova diff -o json` for the app's specs (or the running reconciler's); 409 when there are
    no specs or they are invalid, with the reason."""
    return _read(plan, _ctx(request))


# ---- events -------------------------------------------------------------------------------------------

@router.get("/api/v1/events", response_model=schemas.EventPage, tags=["events"], summary="Events, paged")
def list_events(request: Request,
                deployment: str = Query("", pattern=OPTIONAL_NAME, max_length=63,
                                        description="Only this deployment's events."),
                limit: int = Query(100, ge=1, le=1000, description="At most this many (the newest)."),
                before: str = Query("", pattern=OPTIONAL_CURSOR, max_length=64,
                                    description="Only events older than this cursor (`next_before` of "
                                                "the previous page, or a time).")) -> dict[str, Any]:
    """The reconciler's events (`enova events -o json`), newest last; page back with `before`."""
    cursor = parse_cursor(before) if before else None
    return _read(events_page, _ctx(request), deployment or None, limit, cursor)


@router.get("/api/v1/events/stream", tags=["events"], summary="Events as they happen (server-sent events)",
            response_class=StreamingResponse,
            responses={200: {"description": "`event: event` messages whose data is one Event (JSON) and whose "
                                            "id is its cursor; a `: keep-alive` comment every 15 s. With too many "
                                            "streams open, one `event: error` and the end.",
                             "content": {"text/event-stream": {"schema": {
                                 "type": "object", "required": ["data"],
                                 "properties": {"id": {"type": "string", "description": "The event's cursor."},
                                                "event": {"type": "string", "enum": ["event", "error"]},
                                                "data": {"type": "string", "contentMediaType": "application/json",
                                                         "description": "One Event (or {detail} for error)."}}}}}}})
def stream_events(request: Request,
                  deployment: str = Query("", pattern=OPTIONAL_NAME, max_length=63,
                                          description="Only this deployment's events."),
                  last_event_id: str = Header("", alias="Last-Event-ID", max_length=64, pattern=OPTIONAL_CURSOR,
                                              description="Resume after this cursor (browsers send it when they "
                                                          "reconnect).")):
    """New events as server-sent events (`enova events -f`). After a reconnect with Last-Event-ID,
    the events missed since are sent first."""
    ctx = _ctx(request)
    subject = f"deployment/{deployment}" if deployment else None
    resume = parse_cursor(last_event_id) if last_event_id else None
    return StreamingResponse(_event_stream(ctx, request, subject, resume), media_type="text/event-stream",
                             headers={"X-Accel-Buffering": "no"})


async def _event_stream(ctx, request: Request, subject: str | None, resume):
    """Follow the event log in a thread (EventLog.follow) and forward each event. Ends when the
    client goes, or after ctx.stream_seconds (clients reconnect with Last-Event-ID)."""
    if not _streams.acquire(blocking=False):
        yield f"event: error\ndata: {json.dumps({'detail': f'{MAX_STREAMS} event streams are open; close one'})}\n\n"
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    log = event_log(ctx)
    try:
        follow = log.follow(stop, poll=0.2)             # the end of the log is taken now
        last = await asyncio.to_thread(last_position, ctx)
        sent_upto = resume
        if resume is not None:
            for event, k in await asyncio.to_thread(events_after, ctx, subject, resume):
                sent_upto = (event.time, k)
                yield _sse(event, k)
        seen: dict[float, int] = {last[0]: last[1] + 1} if last else {}

        def pump() -> None:
            try:
                for event in follow:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except Exception:  # the file vanished mid-read: the stream just ends
                pass
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=pump, name="enova-app-events", daemon=True).start()
        yield ": stream open\n\n"
        ends = None if ctx.stream_seconds is None else time.monotonic() + ctx.stream_seconds
        keepalive = time.monotonic() + 15.0
        while True:
            now = time.monotonic()
            if ends is not None and now >= ends:
                return
            if await request.is_disconnected():
                return
            timeout = min(0.5, max(0.0, (ends or math.inf) - now))
            try:
                event = await asyncio.wait_for(queue.get(), timeout=timeout)
            except asyncio.TimeoutError:
                if time.monotonic() >= keepalive:
                    keepalive = time.monotonic() + 15.0
                    yield ": keep-alive\n\n"
                continue
            if event is None:
                return
            k = seen.get(event.time, 0)
            seen[event.time] = k + 1
            if (subject is None or event.subject == subject) and (sent_upto is None or (event.time, k) > sent_upto):
                yield _sse(event, k)  # (an event written while the missed ones were read is sent once)
    finally:
        stop.set()
        _streams.release()


def _sse(event, k: int) -> str:
    data = event_dict(event, k)
    return f"id: {data['cursor']}\nevent: event\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


# ---- the autoscaler ------------------------------------------------------------------------------------

@router.get("/api/v1/autoscaler", response_model=list[schemas.Autoscaled], tags=["autoscaler"],
            responses=schemas.errors(503), summary="Every autoscaled deployment: signals and last decision")
def list_autoscaler(request: Request) -> list[dict[str, Any]]:
    """`enova scale status -o json`: policy, target, replicas ready and starting, the last signals
    and the last decision with its reason and numbers, as the running reconciler persisted them."""
    return _read(autoscaler_rows, _ctx(request))


@router.get("/api/v1/autoscaler/{name}", response_model=schemas.Autoscaled, tags=["autoscaler"],
            responses=schemas.errors(404, 503), summary="One autoscaled deployment")
def get_autoscaler(name: str, request: Request) -> dict[str, Any]:
    return _read(autoscaler_rows, _ctx(request), name)[0]


# ---- the recommender ------------------------------------------------------------------------------------

@router.post("/api/v1/recommend", response_model=schemas.Recommendation, tags=["recommend"],
             summary="vLLM settings for a model on given GPUs (or this host's CPU)",
             responses={409: {"model": schemas.Refusal, "description": "The model does not fit: the arithmetic "
                                                                        "and the nearest settings that would."},
                        **schemas.errors(503)})
def recommend(body: schemas.RecommendRequest, request: Request):
    """`enova recommend -o json`. Changes nothing, so it needs no token. A Hugging Face model's
    config.json is fetched when it is not cached (503 when the Hub is out of reach)."""
    from enova.advise import Request as Advice, advise
    from enova.recommend.model import Refusal
    from enova.recommend.render import refusal_json, to_json
    from enova.spec.models import classify_model
    ctx = _ctx(request)
    folder, _ = specs_folder(ctx)
    spec_set = None
    if folder is not None and (body.profile or _is_name(body.model)):
        try:
            spec_set = load(ctx, folder)
        except EnovaError as exc:
            raise HTTPException(409, f"the specs in {folder} cannot be read: {exc}") from None
    model, base_dir = body.model, Path.cwd()
    if spec_set is not None and model in spec_set.deployments:
        located = spec_set.deployments[model]
        model, base_dir = located.doc.spec.model, Path(located.file).parent
    else:
        try:
            kind = classify_model(model)
        except ValueError as exc:
            raise invalid("model", f"{exc}, or a deployment's name", body.model) from None
        if kind == "local":
            raise invalid("model", "local folders are not read over the API: name a Deployment of the specs "
                                   "whose model it is, or use `enova recommend` on the host", body.model)
        if kind == "hub" and any(part in (".", "..") for part in model.split("/")):
            raise invalid("model", "not a Hugging Face id (org/name)", body.model)
    if body.gpu and body.gpu_memory:
        raise invalid("gpu_memory", "give gpu or gpu_memory, not both", body.gpu_memory)
    if body.profile and spec_set is None:
        raise invalid("profile", "no specs are loaded to find the LoadProfile in (enova app run specs/)", body.profile)
    if body.capacity is not None and body.capacity_run is not None:
        raise invalid("capacity_run", "give capacity or capacity_run, not both", body.capacity_run)
    capacity_from = None
    if body.capacity_run is not None:
        try:
            capacity_from = ctx.runs.result_path(body.capacity_run)
        except RunNotFound:
            capacity_from = None
        if capacity_from is None:
            raise invalid("capacity_run", "no run with a result has this id (GET /api/v1/runs)", body.capacity_run)
    fixed: dict[str, Any] = dict(body.set)
    if body.max_model_len is not None:
        fixed["max_model_len"] = body.max_model_len
    advice = Advice(model=model, gpu=body.gpu, gpu_memory=body.gpu_memory, gpus=body.gpus, cpus=body.cpus,
                    memory=body.memory, profile=body.profile, capacity_rps=body.capacity,
                    capacity_from=capacity_from, run_replicas=body.run_replicas, fixed=fixed,
                    kv_cache_dtype=body.kv_cache_dtype)
    kwargs = {"inventory": ctx.inventory} if ctx.inventory is not None else {}
    try:
        rec = advise(advice, base_dir=base_dir, cache_dir=ctx.settings.cache_dir, specs=spec_set, **kwargs)
    except Refusal as refusal:
        return JSONResponse(refusal_json(refusal), status_code=409)
    except TemporaryError as exc:
        raise HTTPException(503, str(exc)) from None
    except (EnovaError, ValueError) as exc:
        raise invalid(_field_of(str(exc)), str(exc)) from None
    return to_json(rec)


def _is_name(text: str) -> bool:
    import re
    return re.fullmatch(NAME_PATTERN, text) is not None


_FIELDS = {"--gpu-memory": "gpu_memory", "--gpus": "gpus", "--gpu": "gpu", "--cpus": "cpus", "--memory": "memory",
           "--profile": "profile", "--capacity": "capacity", "--max-model-len": "max_model_len", "--set": "set",
           "max_model_len": "max_model_len", "kv_cache_dtype": "kv_cache_dtype", "--kv-cache-dtype": "kv_cache_dtype"}


def _field_of(message: str) -> str:
    """The request field a recommender message is about (it names the CLI's options), else model."""
    for option, field in _FIELDS.items():
        if option in message:
            return field
    return "model"


# ---- injection runs ------------------------------------------------------------------------------------

@router.post("/api/v1/runs", status_code=202, response_model=schemas.Run, tags=["runs"],
             dependencies=[Security(require_token)], responses=schemas.errors(401, 403, 404, 409, 503),
             summary="Start an injection run (a LoadProfile of the specs, or a quick setting)")
def start_run(body: schemas.RunRequest, request: Request) -> dict[str, Any]:
    """Runs `enova inject run` with the app's state directory, writing its result in the run's
    folder. 404: no such deployment or LoadProfile; 409: the deployment has no ready replica, no
    gateway runs, the specs are missing or invalid, or another run is in progress."""
    from .runs import plan_run
    ctx = _ctx(request)
    launch = plan_run(ctx, body)
    try:
        return ctx.runs.start(launch.args, kind=launch.kind, request=body.model_dump(mode="json"),
                              profile=launch.profile, deployment=launch.deployment, duration=launch.duration,
                              token=launch.token)
    except Busy as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/api/v1/runs", response_model=schemas.RunList, tags=["runs"], summary="Every run, newest first")
def list_runs(request: Request) -> dict[str, Any]:
    return {"runs": _ctx(request).runs.list()}


@router.get("/api/v1/runs/{run_id}", response_model=schemas.Run, tags=["runs"], responses=schemas.errors(404),
            summary="One run: state, progress, summary when done")
def get_run(run_id: str, request: Request) -> dict[str, Any]:
    try:
        return _ctx(request).runs.view(run_id)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/api/v1/runs/{run_id}/result", tags=["runs"], summary="The run's result file (JSON)",
            response_class=Response,
            responses={200: {"description": "The result file `enova inject run --out` writes (format_version 1).",
                             "content": {"application/json": {"schema": {"type": "object"}}}},
                       **schemas.errors(404, 409)})
def get_run_result(run_id: str, request: Request):
    from fastapi.responses import FileResponse
    path = _result(request, run_id)
    return FileResponse(path, media_type="application/json")


@router.get("/api/v1/runs/{run_id}/report", tags=["runs"], summary="The run's HTML report",
            response_class=Response,
            responses={200: {"description": "Self-contained HTML (inline CSS and SVG, no script).",
                             "content": {"text/html": {"schema": {"type": "string"}}}},
                       **schemas.errors(404, 409)})
def get_run_report(run_id: str, request: Request):
    _result(request, run_id)
    try:
        page = _ctx(request).runs.report(run_id)
    except EnovaError as exc:
        raise HTTPException(409, f"the run's result cannot be reported: {exc}") from None
    if page is None:
        raise HTTPException(409, f"run {run_id} has no result")
    # the report's own CSS is inline; nothing else may load
    return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                  "img-src data:; frame-ancestors 'self'; "
                                                                  "base-uri 'none'; form-action 'none'",
                                       "X-Frame-Options": "SAMEORIGIN"})


def _result(request: Request, run_id: str) -> Path:
    runs = _ctx(request).runs
    try:
        path = runs.result_path(run_id)
        if path is None:
            state = runs.view(run_id)
            why = ("it is still running" if state["state"] in ("starting", "running", "cancelling")
                   else f"it ended ({state['state']}) with none: {state['message'] or 'see its log'}")
            raise HTTPException(409, f"run {run_id} has no result: {why}")
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return path


@router.post("/api/v1/runs/{run_id}/cancel", status_code=202, response_model=schemas.Run, tags=["runs"],
             dependencies=[Security(require_token)], responses=schemas.errors(401, 403, 404, 409),
             summary="Stop a run (it writes a partial result)")
def cancel_run(run_id: str, request: Request) -> dict[str, Any]:
    """Sends the run SIGINT, as Ctrl-C would: it stops sending, waits briefly for the requests in
    flight and writes a partial result. 409 when it has already ended."""
    try:
        return _ctx(request).runs.cancel(run_id)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except NotRunning as exc:
        raise HTTPException(409, str(exc)) from None


# ---- spec-level actions ---------------------------------------------------------------------------------

@router.post("/api/v1/reload", status_code=202, response_model=schemas.Reloaded, tags=["deployments"],
             dependencies=[Security(require_token)], responses=schemas.errors(401, 403, 409),
             summary="Ask the running reconciler to re-read the specs (SIGHUP)")
def reload(request: Request) -> dict[str, Any]:
    """The reconciler re-reads its specs and clears stalls and backoffs, as on SIGHUP. 409 when
    no reconciler runs."""
    pid = _read(reload_reconciler, _ctx(request))
    return {"detail": f"asked the reconciler (pid {pid}) to re-read its specs", "pid": pid}


# =====================================================================================================
# Reads: what the routes above serve, computed on each request from the state directory, the event
# log, the autoscaler's files and the specs, with the functions `enova status`, `diff`, `events` and
# `scale status` use, so the API and the CLI cannot disagree. Nothing is cached: the app server keeps
# no copy of the truth. Blocking (disk, health probes of up to ~2 s): called from the thread pool.


class Unavailable(EnovaError):
    """The request is fine but what it needs is not there now (409 to the client)."""


class NotFound(EnovaError):
    """The named deployment or run does not exist (404 to the client)."""


# ---- specs and the world ------------------------------------------------------------------------

def specs_folder(ctx) -> tuple[Path | None, dict | None]:
    """(specs, reconciler status): the app's specs (`enova app run SPECS`), else those of the
    reconciler that runs now; (None, status) when there are neither."""
    controller = read_status(ctx.settings.state_dir)
    if ctx.specs is not None:
        return ctx.specs, controller
    if controller and controller.get("alive") and controller.get("specs"):
        return Path(controller["specs"]), controller
    return None, controller


def load(ctx, folder: Path):
    return Workspace(ctx.settings).load(folder)


def runtime(ctx, store: StateStore, specs=None):
    if ctx.runtime is not None:
        return ctx.runtime(store, specs)
    return Workspace(ctx.settings).runtime(store, specs)


def _facts(ctx, specs):
    try:
        return Workspace(ctx.settings).facts(specs)
    except EnovaError:
        return None  # auto deployments are then reported blocked, as the plan says


def status(ctx) -> dict[str, Any]:
    """`enova status -o json` (with the app's or the running reconciler's specs), each deployment
    with a summary of its spec, plus `specs`. A spec error is shown in `spec_error`, not raised."""
    from enova.status import build_status
    folder, controller = specs_folder(ctx)
    spec_set, spec_error = None, None
    if folder is not None:
        try:
            spec_set = load(ctx, folder)
        except EnovaError as exc:
            spec_error = str(exc)
    store = StateStore(ctx.settings.state_dir)
    kwargs = {"inventory": ctx.inventory} if ctx.inventory is not None else {}
    view = build_status(store, runtime(ctx, store, spec_set), spec_set, reconciler=controller, spec_error=spec_error,
                        facts=_facts(ctx, spec_set) if spec_set is not None else None, **kwargs)
    data = view.to_dict()
    data["specs"] = str(folder) if folder is not None else None
    recorded = set(store.deployment_names())
    for deployment in data["deployments"]:
        deployment["spec"] = spec_summary(deployment["name"], spec_set, store, recorded)
    return data


def spec_summary(name: str, specs, store: StateStore, recorded: set[str]) -> dict[str, Any] | None:
    """What the deployment asks for: from the specs when it is in them, else as last applied
    (`recorded`: the deployments with records, listed once per request)."""
    if specs is not None and name in specs.deployments:
        located = specs.deployments[name]
        spec = located.doc.spec
        return {"source": "specs", "file": f"{located.file}:{located.line}", "model": spec.model,
                "engine": spec.engine.name, "engine_args": spec.engine.model_dump(mode="json")["args"],
                "runtime": spec.runtime, "replicas": spec.replicas,
                "resources": spec.resources.model_dump(mode="json"),
                "scaling": spec.scaling.model_dump(mode="json") if spec.scaling else None, "slo": spec.slo}
    if name not in recorded:
        return None
    record = store.read_deployment(name)
    if record is None:
        return None
    config = record.config or {}
    engine = config.get("engine") or {}
    return {"source": "applied", "file": record.source, "model": str(config.get("model", "")),
            "engine": str(engine.get("name", "")), "engine_args": dict(engine.get("args") or {}),
            "runtime": str(config.get("runtime", "local")), "replicas": record.replicas,
            "resources": dict(config.get("resources") or {}), "scaling": (record.settings or {}).get("scaling"),
            "slo": (record.settings or {}).get("slo")}


def deployment(ctx, name: str) -> dict[str, Any]:
    for item in status(ctx)["deployments"]:
        if item["name"] == name:
            return item
    raise NotFound(f"no deployment named {name!r}")


def plan(ctx) -> dict[str, Any]:
    """`enova diff -o json` for the app's specs (or the running reconciler's). Unavailable when
    there are none or they are invalid."""
    from enova.plan.render import render_json
    folder, _ = specs_folder(ctx)
    if folder is None:
        raise Unavailable("no specs to plan from: start the app server with a specs folder (enova app run specs/) "
                          "or run the reconciler (enova reconcile specs/)")
    try:
        spec_set = load(ctx, folder)
    except EnovaError as exc:
        raise Unavailable(f"the specs in {folder} cannot be planned: {exc}") from None
    ws = Workspace(ctx.settings)
    store = StateStore(ctx.settings.state_dir)
    from enova.runtime.world import observe
    world = observe(store, runtime(ctx, store, spec_set), now=time.time())
    planned = ws.plan(spec_set, world)
    data = json.loads(render_json(planned))
    data.update(specs=str(folder), in_sync=not planned.has_changes,
                blocked=[f"{c.deployment}: {c.blocked}" for c in planned.blocked])
    return data


# ---- events ------------------------------------------------------------------------------------------

_CURSOR = re.compile(r"^([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(?::([0-9]{1,9}))?$")


def parse_cursor(text: str) -> tuple[float, int]:
    """(time, k) from "TIME:K" or a bare time. Raises ValueError."""
    match = _CURSOR.match(text.strip())
    if not match:
        raise ValueError("expected a cursor from an earlier page (TIME:N) or a time in seconds since the epoch")
    return float(match.group(1)), int(match.group(2) or 0)


def cursor_of(time_: float, k: int) -> str:
    return f"{time_!r}:{k}"


def event_log(ctx) -> EventLog:
    return EventLog(ctx.settings.state_dir / "events.jsonl")


def positioned(events: list[Event]) -> list[tuple[Event, int]]:
    """Each event with its rank among those of the same time (the cursor's K), in file order."""
    seen: dict[float, int] = {}
    out = []
    for event in events:
        k = seen.get(event.time, 0)
        seen[event.time] = k + 1
        out.append((event, k))
    return out


def event_dict(event: Event, k: int) -> dict[str, Any]:
    return {"time": event.time, "type": event.type, "reason": event.reason, "subject": event.subject,
            "message": event.message, "revision": event.revision, "cursor": cursor_of(event.time, k)}


def events_page(ctx, deployment: str | None, limit: int, before: tuple[float, int] | None) -> dict[str, Any]:
    """The `limit` newest events (of `deployment`) older than `before`, oldest first, and the
    cursor of the page before it."""
    subject = f"deployment/{deployment}" if deployment else None
    items = [(e, k) for e, k in positioned(event_log(ctx).read())
             if (subject is None or e.subject == subject) and (before is None or (e.time, k) < before)]
    page = items[-limit:] if limit > 0 else []
    older = len(items) > len(page)
    return {"events": [event_dict(e, k) for e, k in page],
            "next_before": cursor_of(page[0][0].time, page[0][1]) if older and page else None}


def events_after(ctx, subject: str | None, after: tuple[float, int]) -> list[tuple[Event, int]]:
    return [(e, k) for e, k in positioned(event_log(ctx).read())
            if (subject is None or e.subject == subject) and (e.time, k) > after]


def last_position(ctx) -> tuple[float, int] | None:
    items = positioned(event_log(ctx).read())
    return (items[-1][0].time, items[-1][1]) if items else None


# ---- the autoscaler ------------------------------------------------------------------------------

def autoscaler_rows(ctx, name: str | None = None) -> list[dict[str, Any]]:
    """`enova scale status -o json` (enova.status.autoscaler); an unknown name is a 404."""
    from enova.status.autoscaler import UnknownAutoscaler, autoscaler_rows as rows
    try:
        return rows(ctx.settings.state_dir, name)
    except UnknownAutoscaler as exc:
        raise NotFound(str(exc)) from None


# ---- a spec-level action ------------------------------------------------------------------------------

def reload_reconciler(ctx) -> int:
    """Ask the running reconciler to re-read its specs and clear stalls (SIGHUP, as an operator
    would send it). Returns its pid. Unavailable when none runs. The process is known by its pid,
    its start time (before the time it says it started) and its command line before any signal."""
    import psutil
    controller = read_status(ctx.settings.state_dir)
    if not controller or not controller.get("alive"):
        raise Unavailable("no reconciler is running (start one: enova reconcile specs/)")
    pid = int(controller.get("pid", -1))
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        raise Unavailable(f"the reconciler (pid {pid}) is no longer running") from None
    if started > float(controller.get("started_at") or 0) + 1.0 or "reconcile" not in cmdline:
        raise Unavailable(f"pid {pid} is no longer the reconciler (its status file is stale)")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise Unavailable(f"the reconciler (pid {pid}) is no longer running") from None
    except PermissionError:
        raise Unavailable(f"the reconciler (pid {pid}) runs as another user; this server may not signal it") from None
    return pid
