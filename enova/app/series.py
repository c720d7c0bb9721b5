"""Chart data for the /instance page: `GET /api/v1/deployments/{name}/series?window=3600`.

One answer holds every chart of a deployment's page, each a list of named series of
`[unix time, value]` points, the SLO's lines to draw on them, the SLO attainment over the last
hour, the scale events to mark, and where the numbers come from (`source`):

- `prometheus` (the normal case: `enova mon start` or a Monitoring document runs it): each chart
  is a panel of enova's Grafana dashboard (enova.monitor.dashboards, whose queries are tested
  against a real Prometheus), run as `query_range` over the window for this one deployment. The
  scale marks are the dashboard's annotation (the minutes in which the number of replica
  targets changed) and the autoscaler's and reconciler's events from `events.jsonl`, which say
  why. Attainment is the SLO recording rules' `1 - enova:<sli>:ratio_rate1h`.
- `live` (no Prometheus, or it does not answer): the gateway's, the replicas' and the
  reconciler's `/metrics` pages are read at most every `LIVE_MIN_GAP` seconds while a page asks,
  and the app server keeps those samples for `LIVE_HISTORY` seconds in memory; rates and
  percentiles are computed over the samples of the last minute as Prometheus computes
  `rate(...[1m])` and `histogram_quantile`. `hint` says how to get stored history.

Thresholds come from the deployment's SLO document (ttft_p95_ms, itl_p95_ms, e2e_p99_ms as
seconds) and the KV-cache alert's level. Nothing from the request reaches a file path or a
query but the deployment name, which must be a known deployment (a DNS label, so it is literal
inside the dashboards' `=~"..."` matchers). Reads only; called by the browser.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from enova.errors import EnovaError
from enova.monitor.dashboards import panel_queries, scaling_expr, service_dashboard, slo_lines, substitute
from enova.monitor.process import is_running, read_record
from enova.monitor.rules import KV_CACHE_LIMIT
from enova.observe.state import StateStore
from enova.reconcile.controller import read_status
from enova.reconcile.events import EventLog
from enova.spec.models import NAME_PATTERN

from .auth import require_read_token
from .schemas import errors

router = APIRouter()

# (chart id, the dashboard panel it shows, the title on the page, the page's unit)
CHARTS: tuple[tuple[str, str, str, str], ...] = (
    ("requests", "Requests per second", "Request rate", "req/s"),
    ("success", "Success rate", "Success rate", "ratio"),
    ("ttft", "Time to first token", "Time to first token", "s"),
    ("itl", "Inter-token latency", "Inter-token latency", "s"),
    ("e2e", "End-to-end latency", "End-to-end latency", "s"),
    ("tokens", "Prompt and generation throughput", "Tokens per second", "tokens/s"),
    ("engine", "Running and waiting requests", "Running and waiting requests", "requests"),
    ("kv_cache", "KV-cache usage", "KV-cache usage", "ratio"),
    ("gpu", "GPU utilisation", "GPU utilisation", "percent"),
    ("replicas", "Replicas", "Replicas", "replicas"),
)
LATENCY_FIELDS = {"ttft": "ttft_p95_ms", "itl": "itl_p95_ms", "e2e": "e2e_p99_ms"}
SCALE_REASONS = ("Created", "Scaled", "ScaledUp", "ScaledDown", "Replaced", "Deleted")
HINT = ("Monitoring is not running: these are live values the app server reads from the gateway's and "
        "replicas' /metrics while this page is open (kept {history} minutes). For stored history, SLO "
        "attainment and replica changes over time, start Prometheus: `enova mon start SPECS` (or add a "
        "Monitoring document to the specs and `enova apply`).")
MAX_POINTS = 300            # per series in a window: step = window / MAX_POINTS, at least MIN_STEP
MIN_STEP = 2.0
PROMETHEUS_TIMEOUT = 5.0
LIVE_MIN_GAP = 2.0          # seconds between two reads of the /metrics pages
LIVE_HISTORY = 900.0        # seconds of live samples kept per deployment
LIVE_RATE_WINDOW = 60.0     # as rate(...[1m])
SCRAPE_TIMEOUT = 2.0
REFRESH_SECONDS = 5         # how often the page asks again (live, and Prometheus up to a 10-minute step)
MAX_REFRESH_SECONDS = 30


# ---------------------------------------------------------------------------------------------
# The route


@router.get("/api/v1/deployments/{name}/series", tags=["instance"], dependencies=[Depends(require_read_token)],
            responses=errors(401, 403, 404), summary="Chart data of the deployment's /instance page")
async def deployment_series(request: Request, name: str,
                            window: int = Query(3600, ge=60, le=7 * 86400,
                                                description="Seconds of history, up to now (60 to 604800).")
                            ) -> dict[str, Any]:
    """Every chart of the deployment's /instance page over the last `window` seconds."""
    ctx = request.app.state.ctx
    now = time.time()
    # the files (specs, records, the event log) are read off the event loop
    base, store, slo_name, slo = await asyncio.to_thread(_page_context, ctx, name, window, now)
    state_dir = Path(ctx.settings.state_dir)
    url = prometheus_url(ctx, state_dir)
    reason = ""         # why Prometheus was not used when one is configured
    if url is not None:
        try:
            answer = await _from_prometheus(url, name, slo_name, slo, now, window)
            return {**base, "source": "prometheus", "prometheus": url, "hint": "", **answer}
        except _PrometheusDown as exc:
            reason = str(exc)
    sampler = _sampler(request.app)
    samples = await sampler.sample(name, store, state_dir, now)
    charts = live_charts(samples, slo, slo_name)
    return {**base, "source": "live", "prometheus": url, "reason": reason,
            "hint": HINT.format(history=int(LIVE_HISTORY // 60)),
            "charts": charts, "attainment": [], "replica_changes": []}


def _page_context(ctx: Any, name: str, window: int, now: float
                  ) -> tuple[dict[str, Any], StateStore, Optional[str], Optional[dict[str, float]]]:
    """(the answer's fields that do not depend on the source, the store, the SLO's name and
    objectives). Raises HTTPException 404 for an unknown deployment."""
    state_dir = Path(ctx.settings.state_dir)
    store = StateStore(state_dir)
    specs, spec_error = load_spec_set(ctx)
    if not known_deployment(name, store, specs):
        raise HTTPException(404, detail=f"deployment: no deployment named {name!r} is recorded or in the specs")
    slo_name, slo = deployment_slo(name, store, specs)
    base = {
        "deployment": name, "window": window, "now": now, "refresh_seconds": REFRESH_SECONDS,
        "slo": {"name": slo_name, "objectives": slo} if slo_name else None, "spec_error": spec_error,
        "scale_events": scale_events(state_dir, name, now - window),
        "profiles": sorted(p for p, located in (specs.load_profiles.items() if specs is not None else ())
                           if located.doc.spec.target == name),
    }
    return base, store, slo_name, slo


# ---------------------------------------------------------------------------------------------
# What the deployment is held to


def load_spec_set(ctx: Any):
    """(the spec set the app server was given, or the running reconciler's; the error reading it)."""
    from enova.spec.loader import load_specs
    path = ctx.specs
    if path is None:
        status = read_status(Path(ctx.settings.state_dir))
        if status and status.get("alive") and status.get("specs"):
            path = Path(status["specs"])
    if path is None:
        return None, None
    try:
        return load_specs(Path(path)), None
    except (EnovaError, OSError) as exc:
        return None, str(exc)


def known_deployment(name: str, store: StateStore, specs: Any) -> bool:
    if not re.fullmatch(NAME_PATTERN, name) or len(name) > 63:
        return False
    return store.has_deployment(name) or (specs is not None and name in specs.deployments)


def deployment_slo(name: str, store: StateStore, specs: Any) -> tuple[Optional[str], Optional[dict[str, float]]]:
    """(the SLO document's name, its objectives) from the specs, else the name the deployment
    record was applied with (objectives unknown without the specs)."""
    if specs is not None and name in specs.deployments:
        slo_name = specs.deployments[name].doc.spec.slo
        if slo_name and slo_name in specs.slos:
            spec = specs.slos[slo_name].doc.spec
            return slo_name, {k: v for k, v in spec.model_dump().items() if v is not None}
        return slo_name, None
    record = store.read_deployment(name)
    slo_name = (record.settings or {}).get("slo") if record else None
    return (slo_name if isinstance(slo_name, str) else None), None


def scale_events(state_dir: Path, name: str, since: float) -> list[dict[str, Any]]:
    """The reconciler's and autoscaler's events that changed the deployment's replicas, at or
    after `since`. The log (up to 6 files of 10 MB) is parsed again only when a file of it
    changed, not at every poll of every page."""
    log = EventLog(state_dir / "events.jsonl")
    stats = []
    for file in log.files():
        try:
            st = file.stat()
        except OSError:
            continue
        stats.append((str(file), st.st_ino, st.st_size, st.st_mtime_ns))
    events = _scale_events_of(str(log.path), tuple(stats), name)
    return [dict(e) for e in events if e["time"] >= since][-200:]


@functools.lru_cache(maxsize=64)
def _scale_events_of(path: str, stats: tuple, name: str) -> tuple[dict[str, Any], ...]:
    return tuple({"time": e.time, "type": e.type, "reason": e.reason, "message": e.message}
                 for e in EventLog(Path(path)).read(subject=f"deployment/{name}") if e.reason in SCALE_REASONS)


def prometheus_url(ctx: Any, state_dir: Path) -> Optional[str]:
    """`enova app run --prometheus URL`, else the Prometheus `enova mon` runs for this state
    directory (None when its record is missing or its process is gone)."""
    if ctx.prometheus_url:
        return str(ctx.prometheus_url).rstrip("/")
    try:
        record = read_record(state_dir)
    except EnovaError:
        return None
    return record.url.rstrip("/") if is_running(record) else None


def chart_lines(chart: str, slo: Optional[dict[str, float]], slo_name: Optional[str]) -> list[dict[str, Any]]:
    """The threshold lines of a chart: the SLO's latency target (in seconds) and the KV-cache alert."""
    if chart in LATENCY_FIELDS and slo and LATENCY_FIELDS[chart] in slo:
        target = LATENCY_FIELDS[chart]
        return [{"value": slo[target] / 1000, "label": f"SLO {slo_name}: {target} {slo[target]:g} ms"}]
    if chart == "kv_cache":
        return [{"value": KV_CACHE_LIMIT, "label": f"EnovaKVCacheSaturated alert ({KV_CACHE_LIMIT:.0%})"}]
    return []


# ---------------------------------------------------------------------------------------------
# Prometheus


class _PrometheusDown(Exception):
    pass


def _dashboard(slo_name: Optional[str], slo: Optional[dict[str, float]], name: str) -> dict[str, Any]:
    from enova.spec.models import SLOSpec
    if slo_name and slo:
        objectives, lines = slo_lines({slo_name: SLOSpec(**slo)}, {name: slo_name})
        return service_dashboard(objectives, lines)
    return service_dashboard((), {})


def _legend(legend: str, labels: dict[str, str], name: str) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend).strip()
    if text.startswith(name + " "):
        text = text[len(name) + 1:]
    return text or name


async def _from_prometheus(url: str, name: str, slo_name: Optional[str], slo: Optional[dict[str, float]],
                           now: float, window: int) -> dict[str, Any]:
    """The charts, attainment and replica-change marks from Prometheus, all queries at once.
    Raises _PrometheusDown when no query got an answer; a query Prometheus refuses is listed in
    `errors` and the rest are drawn."""
    model = _dashboard(slo_name, slo, name)
    panels = {p["title"]: p for p in model["panels"] if p.get("type") != "row"}
    step = max(MIN_STEP, math.ceil(window / MAX_POINTS))
    start = now - window
    jobs: list[tuple[str, str, str]] = []     # (chart id, legend format, PromQL)
    for chart, title, _, _ in CHARTS:
        for target in panels[title]["targets"]:
            jobs.append((chart, target["legendFormat"], substitute(target["expr"], name)))
    attainment = [(title.removeprefix("SLO attainment: "), expr)
                  for title, expr in panel_queries(model, name)
                  if title.startswith("SLO attainment: ") and "ratio_rate1h" in expr]
    async with httpx.AsyncClient(base_url=url, timeout=PROMETHEUS_TIMEOUT, trust_env=False) as client:
        ranged = [_query(client, "/api/v1/query_range", {"query": q, "start": f"{start:.3f}", "end": f"{now:.3f}",
                                                         "step": f"{step:g}"}) for _, _, q in jobs]
        marks = _query(client, "/api/v1/query_range", {"query": substitute(scaling_expr(), name),
                                                       "start": f"{start:.3f}", "end": f"{now:.3f}",
                                                       "step": f"{step:g}"})
        instant = [_query(client, "/api/v1/query", {"query": q, "time": f"{now:.3f}"}) for _, q in attainment]
        results = await asyncio.gather(*ranged, marks, *instant, return_exceptions=True)
    if all(isinstance(r, _PrometheusDown) for r in results):
        raise results[0]
    errors: list[str] = []
    series_by_chart: dict[str, list[dict[str, Any]]] = {chart: [] for chart, *_ in CHARTS}
    for (chart, legend, query), result in zip(jobs, results[:len(jobs)]):
        if isinstance(result, BaseException):
            errors.append(f"{chart}: {result}")
            continue
        for item in result:
            points = [[float(t), float(v)] for t, v in item.get("values", []) if _finite(v)]
            if not points:      # only NaN: 0/0, no event in any step (an idle engine's percentile)
                continue
            series_by_chart[chart].append({"name": _legend(legend, item.get("metric", {}), name), "points": points})
    charts = [_chart(chart, title, unit, sorted(series_by_chart[chart], key=lambda s: s["name"]),
                     chart_lines(chart, slo, slo_name)) for chart, _, title, unit in CHARTS]
    changes: list[float] = []
    mark_result = results[len(jobs)]
    if isinstance(mark_result, BaseException):
        errors.append(f"replica changes: {mark_result}")
    else:
        changes = sorted({float(t) for item in mark_result for t, v in item.get("values", []) if v == "1"})
    out_attainment = []
    for (objective, _), result in zip(attainment, results[len(jobs) + 1:]):
        value = None
        if isinstance(result, BaseException):
            errors.append(f"attainment {objective}: {result}")
        elif result and _finite(result[0]["value"][1]):
            value = float(result[0]["value"][1])
        out_attainment.append({"objective": objective, "window": "1h", "value": value,
                               "level": _attainment_level(objective, slo)})
    return {"charts": charts, "attainment": out_attainment, "replica_changes": _collapse(changes, step),
            "step": step, "errors": errors,
            # a long window's points are minutes apart: asking every 5 s would redraw the same
            "refresh_seconds": int(min(MAX_REFRESH_SECONDS, max(REFRESH_SECONDS, step // 2)))}


def _attainment_level(objective_title: str, slo: Optional[dict[str, float]]) -> Optional[float]:
    """The good fraction an objective asks for: 0.95 for a p95 target, 0.99 for p99, 1 - max_error_rate."""
    if not slo:
        return None
    by_title = {"TTFT": ("ttft_p95_ms", 0.95), "ITL": ("itl_p95_ms", 0.95), "E2E latency": ("e2e_p99_ms", 0.99)}
    if objective_title == "errors":
        return round(1 - slo["max_error_rate"], 9) if "max_error_rate" in slo else None
    field_name, level = by_title.get(objective_title, ("", None))
    return level if field_name in slo else None


def _collapse(times: list[float], step: float) -> list[float]:
    """The first time of each run of consecutive marked steps (one mark per change, not per step)."""
    out: list[float] = []
    for t in times:
        if not out or t - last > step * 1.5:
            out.append(t)
        last = t
    return out


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


async def _query(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    try:
        resp = await client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise _PrometheusDown(f"Prometheus at {client.base_url} did not answer: {type(exc).__name__}") from None
    try:
        body = resp.json()
    except ValueError:
        raise RuntimeError(f"Prometheus answered {resp.status_code} with no JSON") from None
    if resp.status_code != 200 or body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused the query: {body.get('error', resp.status_code)}")
    return body["data"]["result"]


def _chart(chart: str, title: str, unit: str, series: list[dict[str, Any]], lines: list[dict[str, Any]]
           ) -> dict[str, Any]:
    return {"id": chart, "title": title, "unit": unit, "series": series, "lines": lines}


# ---------------------------------------------------------------------------------------------
# Live: the /metrics pages, sampled while a page asks

GATEWAY_HISTOGRAMS = {"ttft": "enova_gateway_time_to_first_token_seconds",
                      "itl": "enova_gateway_inter_token_latency_seconds",
                      "e2e": "enova_gateway_e2e_latency_seconds"}
GATEWAY_COUNTERS = {"received": "enova_gateway_requests_received_total",
                    "processed": "enova_gateway_requests_processed_total",
                    "succeeded": "enova_gateway_requests_succeeded_total"}
ENGINE_COUNTERS = {"prompt": "vllm:prompt_tokens_total", "generation": "vllm:generation_tokens_total"}
ENGINE_GAUGES = {"running": "vllm:num_requests_running", "waiting": "vllm:num_requests_waiting",
                 "kv": "vllm:kv_cache_usage_perc"}
GPU_UTIL = "enova_gpu_utilization_ratio"
_WANTED = tuple({*GATEWAY_COUNTERS.values(), *(f"{h}_bucket" for h in GATEWAY_HISTOGRAMS.values()),
                 *ENGINE_COUNTERS.values(), *ENGINE_GAUGES.values(), GPU_UTIL})
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_page(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of the samples of a Prometheus text page whose names enova charts;
    other lines are skipped before any parsing (a vLLM page has hundreds)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        out.append((match.group(1), dict(_LABEL.findall(match.group(2) or "")), value))
    return out


@dataclass
class Snapshot:
    """What one read of the pages found for one deployment."""

    time: float
    counters: dict[str, float] = field(default_factory=dict)              # gateway counters
    histograms: dict[str, dict[float, float]] = field(default_factory=dict)  # gateway: le -> count
    engine_counters: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> replica -> total
    engine_gauges: dict[str, dict[str, float]] = field(default_factory=dict)    # name -> replica -> value
    gpus: dict[str, float] = field(default_factory=dict)                  # gpu index -> utilisation 0-1
    replicas_up: int = 0
    replicas_recorded: int = 0


def snapshot(now: float, name: str, gateway: Optional[str], replicas: dict[str, Optional[str]],
             reconciler: Optional[str]) -> Snapshot:
    """A Snapshot from the pages' texts (None: the page could not be read)."""
    snap = Snapshot(now, replicas_recorded=len(replicas))
    for metric, labels, value in parse_page(gateway or ""):
        if labels.get("deployment") != name:
            continue
        for key, wanted in GATEWAY_COUNTERS.items():
            if metric == wanted:
                snap.counters[key] = snap.counters.get(key, 0.0) + value
        for key, histogram in GATEWAY_HISTOGRAMS.items():
            if metric == f"{histogram}_bucket" and "le" in labels:
                le = float(labels["le"])
                buckets = snap.histograms.setdefault(key, {})
                buckets[le] = buckets.get(le, 0.0) + value
    for replica, page in sorted(replicas.items()):
        if page is None:
            continue
        snap.replicas_up += 1
        for metric, _, value in parse_page(page):
            for key, wanted in ENGINE_COUNTERS.items():
                if metric == wanted:
                    per = snap.engine_counters.setdefault(key, {})
                    per[replica] = per.get(replica, 0.0) + value
            for key, wanted in ENGINE_GAUGES.items():
                if metric == wanted:
                    per = snap.engine_gauges.setdefault(key, {})
                    per[replica] = max(per.get(replica, 0.0), value) if key == "kv" else per.get(replica, 0.0) + value
    for metric, labels, value in parse_page(reconciler or ""):
        if metric == GPU_UTIL and "gpu" in labels:
            snap.gpus[labels["gpu"]] = value
    return snap


def histogram_quantile(q: float, buckets: dict[float, float]) -> Optional[float]:
    """Prometheus's histogram_quantile over cumulative buckets {upper bound: count}: linear
    interpolation inside the bucket that holds the rank; the highest finite bound when the
    rank falls in +Inf; None with no observation."""
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return lower if len(bounds) > 1 else None
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return None


def _delta(new: float, old: float) -> float:
    return new - old if new >= old else new  # a reset (a restarted process) counts from zero


def live_charts(samples: list[Snapshot], slo: Optional[dict[str, float]], slo_name: Optional[str] = None
                ) -> list[dict[str, Any]]:
    """The charts from the kept samples: gauges at every sample; rates and percentiles at every
    sample that has an older one, over the samples of the last LIVE_RATE_WINDOW seconds."""
    series: dict[str, dict[str, list[list[float]]]] = {chart: {} for chart, *_ in CHARTS}

    def add(chart: str, name: str, t: float, value: Optional[float]) -> None:
        if value is not None and math.isfinite(value):
            series[chart].setdefault(name, []).append([t, value])

    for i, cur in enumerate(samples):
        t = cur.time
        for key, per in cur.engine_gauges.items():
            for replica, value in per.items():
                if key == "kv":
                    add("kv_cache", replica, t, value)
                else:
                    add("engine", f"{replica} {key}", t, value)
        for gpu, value in cur.gpus.items():
            add("gpu", f"GPU {gpu}", t, value * 100)
        add("replicas", "up", t, cur.replicas_up)
        add("replicas", "recorded", t, cur.replicas_recorded)
        if i == 0:
            continue
        old = next((s for s in samples[:i] if t - s.time <= LIVE_RATE_WINDOW + 1e-6), samples[i - 1])
        dt = t - old.time
        if dt <= 0:
            continue
        for key in GATEWAY_COUNTERS:
            if key in cur.counters:
                add("requests", key, t, _delta(cur.counters[key], old.counters.get(key, 0.0)) / dt)
        processed = _delta(cur.counters.get("processed", 0.0), old.counters.get("processed", 0.0))
        if processed > 0:
            add("success", "success", t,
                _delta(cur.counters.get("succeeded", 0.0), old.counters.get("succeeded", 0.0)) / processed)
        for key, buckets in cur.histograms.items():
            before = old.histograms.get(key, {})
            delta = {le: _delta(count, before.get(le, 0.0)) for le, count in buckets.items()}
            for q in (0.5, 0.95, 0.99):
                add(key, f"p{round(q * 100)}", t, histogram_quantile(q, delta))
        for key, per in cur.engine_counters.items():
            before = old.engine_counters.get(key, {})
            common = [r for r in per if r in before]   # as rate(): a series needs an older sample
            if common:
                add("tokens", key, t, sum(_delta(per[r], before[r]) for r in common) / dt)
    return [_chart(chart, title, unit,
                   [{"name": n, "points": p} for n, p in sorted(series[chart].items())],
                   chart_lines(chart, slo, slo_name))
            for chart, _, title, unit in CHARTS]


class LiveSampler:
    """Samples per deployment, read at most every `min_gap` seconds (however many pages poll)
    and kept `history` seconds. Thread-safe; one per app (app.state.instance_live_sampler, made
    on first use)."""

    def __init__(self, min_gap: float = LIVE_MIN_GAP, history: float = LIVE_HISTORY) -> None:
        self.min_gap, self.history = min_gap, history
        self._samples: dict[str, deque[Snapshot]] = {}
        self._lock = threading.Lock()
        self._reading: dict[str, asyncio.Lock] = {}

    async def sample(self, name: str, store: StateStore, state_dir: Path, now: float) -> list[Snapshot]:
        lock = self._reading.setdefault(name, asyncio.Lock())
        async with lock:
            with self._lock:
                kept = self._samples.setdefault(name, deque())
                fresh = not kept or now - kept[-1].time >= self.min_gap
            if fresh:
                snap = await _read_pages(name, store, state_dir, time.time())
                with self._lock:
                    kept.append(snap)
                    while kept and snap.time - kept[0].time > self.history:
                        kept.popleft()
            with self._lock:
                return list(kept)


def _sampler(app: Any) -> LiveSampler:
    sampler = getattr(app.state, "instance_live_sampler", None)
    if sampler is None:
        sampler = app.state.instance_live_sampler = LiveSampler()
    return sampler


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host


async def _read_pages(name: str, store: StateStore, state_dir: Path, now: float) -> Snapshot:
    gateway = store.read_gateway()
    gateway_url = f"http://{_local(str(gateway.config.get('host', '')))}:{gateway.config.get('port')}/metrics" \
        if gateway is not None else None
    replica_urls = {r.id: f"http://{_local(r.host)}:{r.port}/metrics" for r in store.replicas(name)}
    status = read_status(state_dir)
    reconciler_url = None
    address = status.get("metrics") if status and status.get("alive") else None
    if isinstance(address, dict) and isinstance(address.get("port"), int):
        reconciler_url = f"http://{_local(str(address.get('host', '')))}:{address['port']}/metrics"
    async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT, trust_env=False) as client:
        async def page(url: Optional[str]) -> Optional[str]:
            if url is None:
                return None
            try:
                resp = await client.get(url)
            except httpx.HTTPError:
                return None
            return resp.text if resp.status_code == 200 else None
        ids = list(replica_urls)
        texts = await asyncio.gather(page(gateway_url), page(reconciler_url), *(page(replica_urls[i]) for i in ids))
    return snapshot(now, name, texts[0], dict(zip(ids, texts[2:])), texts[1])
