"""The autoscaler's signals: /metrics pages (or a Prometheus server) read into one `Sample` per
deployment per scrape.

Two sources with one contract, `scrape(deployments, now) -> {deployment: Sample}`:

- `Scraper` reads the gateway's /metrics once and each ready replica's engine /metrics directly
  (the default, every couple of seconds). Gauges are taken as they are; counters and histograms
  become deltas since the previous scrape, kept in the scraper (memory only). A counter that went
  down, or a gateway process that is not the one of the previous scrape, was reset: the new value
  is the delta. The first scrape has interval 0 and zero deltas.
- `PrometheusSource` asks a Prometheus server's HTTP API the same questions with instant queries.

What each signal is read from is in `metricnames` (one table, several names per signal for
vLLM's renames). A replica that does not answer gives None for its engine part (the other
replicas' values still count); a gateway that does not answer (or has no record) gives no sample
at all that round, since in-flight, arrivals and latencies would be zeros that look like an idle
deployment; its counters are kept, so the next answer's deltas span the gap (and `interval` with
them). Nothing here raises for an unreachable or garbled page.

Called by the reconciler's autoscaler loop; the only module of `enova.autoscale` that does I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from enova.autoscale import metricnames
from enova.autoscale.model import Histogram, Sample
from enova.observe.ports import connect_url
from enova.observe.state import ReplicaRecord, StateStore

HISTOGRAMS = ("ttft", "itl", "e2e")
COUNTERS = ("arrivals", "completed")
_MAX_WORKERS = 8


# -- a page ------------------------------------------------------------------------------------

Series = list[tuple[dict[str, str], float]]


def parse_page(text: str) -> dict[str, Series]:
    """A /metrics page as {sample name: [(labels, value), ...]} (sample names as on the page:
    `x_total`, `x_bucket`, `x_count`, `x_sum`). Raises ValueError for text that is not the
    Prometheus text format."""
    out: dict[str, Series] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return dict(out)


def _by_label(series: Series, label: str) -> dict[str, float]:
    """Values summed by one label's value (series without it are left out)."""
    out: dict[str, float] = defaultdict(float)
    for labels, value in series:
        if label in labels:
            out[labels[label]] += value
    return dict(out)


def _histograms(page: dict[str, Series], base: str, label: str = "deployment") -> dict[str, Histogram]:
    """Cumulative (since the process started) histograms of `base`, per value of `label`."""
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in page.get(base + "_bucket", ()):
        if label in labels and "le" in labels:
            buckets[labels[label]][float(labels["le"])] += value
    counts = _by_label(page.get(base + "_count", []), label)
    sums = _by_label(page.get(base + "_sum", []), label)
    return {key: Histogram(tuple(sorted(b.items())), counts.get(key, b.get(math.inf, 0.0)), sums.get(key, 0.0))
            for key, b in buckets.items()}


def histogram_delta(new: Histogram, old: Histogram | None) -> Histogram:
    """The observations between two cumulative readings of one histogram. A reading that went
    down anywhere (a restarted process) is a reset: the new reading is the delta. Bounds only
    one side has (buckets changed across a restart) count the other side as 0."""
    if old is None or not old.buckets:
        return new
    before = dict(old.buckets)
    deltas = [(b, c - before.get(b, 0.0)) for b, c in new.buckets]
    if new.count < old.count or any(d < 0 for _, d in deltas):
        return new
    return Histogram(tuple(deltas), new.count - old.count, new.sum - old.sum)


def counter_delta(new: float, old: float | None) -> float:
    """A counter's increase; a counter that went down was reset, and its new value is the increase."""
    if old is None:
        return new
    return new - old if new >= old else new


# -- the gateway's and an engine's readings -------------------------------------------------------

@dataclass(frozen=True)
class GatewayReading:
    """One gateway /metrics page, per deployment: gauges now, counters and histograms cumulative."""

    in_flight: dict[str, float] = field(default_factory=dict)
    queued: dict[str, float] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)
    counters: dict[str, dict[str, float]] = field(default_factory=dict)          # signal -> deployment -> total
    histograms: dict[str, dict[str, Histogram]] = field(default_factory=dict)    # signal -> deployment -> total


def read_gateway_page(page: dict[str, Series]) -> GatewayReading:
    def gauge(signal: str) -> dict[str, float]:
        name = metricnames.resolve(signal, page)
        return _by_label(page[name], "deployment") if name else {}

    counters = {s: gauge(s) for s in COUNTERS}
    histograms = {}
    for signal in HISTOGRAMS:
        base = metricnames.resolve(signal, {n.removesuffix("_bucket") for n in page if n.endswith("_bucket")})
        histograms[signal] = _histograms(page, base) if base else {}
    return GatewayReading(in_flight=gauge("in_flight"), queued=gauge("queued"), held=gauge("held"),
                          counters=counters, histograms=histograms)


@dataclass(frozen=True)
class EngineReading:
    """One engine /metrics page: the gauges the autoscaler uses (None: the page has no such metric)."""

    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None


def read_engine_page(page: dict[str, Series]) -> EngineReading:
    """Running and waiting summed over the page's engines (data parallel), KV cache usage the highest."""
    def values(signal: str) -> list[float] | None:
        name = metricnames.resolve(signal, page)
        return [v for _, v in page[name]] if name else None

    running, waiting, kv = values("engine_running"), values("engine_waiting"), values("kv_cache_usage")
    return EngineReading(running=sum(running) if running is not None else None,
                         waiting=sum(waiting) if waiting is not None else None,
                         kv_cache_usage=max(kv) if kv else None)


def combine_engines(readings: Iterable[EngineReading | None]) -> EngineReading:
    """A deployment's engine part from its replicas' readings (None: that replica did not answer):
    running and waiting summed, KV cache usage the highest; None when no replica gave the value."""
    got = [r for r in readings if r is not None]
    running = [r.running for r in got if r.running is not None]
    waiting = [r.waiting for r in got if r.waiting is not None]
    kv = [r.kv_cache_usage for r in got if r.kv_cache_usage is not None]
    return EngineReading(running=sum(running) if running else None, waiting=sum(waiting) if waiting else None,
                         kv_cache_usage=max(kv) if kv else None)


_url = connect_url


# -- the direct scraper ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Baseline:
    at: float
    gateway: tuple                  # which gateway process the counters came from
    reading: GatewayReading


class Scraper:
    """Scrapes the gateway and the ready replicas of the state directory directly.

    Keeps the previous gateway reading for deltas, so one Scraper serves one loop (not thread
    safe: calls to `scrape` must not overlap). Each page is one GET with `timeout` seconds; the
    pages of one scrape are fetched in parallel, so a scrape takes about one timeout at worst.
    """

    def __init__(self, store: StateStore, *, timeout: float = 1.0, client: httpx.Client | None = None):
        self.store = store
        self.timeout = timeout
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._own_client = client is None
        self._base: _Baseline | None = None

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def fetch(self, url: str) -> dict[str, Series] | None:
        """The page at `url`, parsed; None when it does not answer 200 in time or is not a metrics page."""
        try:
            response = self._client.get(url, timeout=self.timeout)
            if response.status_code != 200:
                return None
            return parse_page(response.text)
        except (httpx.HTTPError, ValueError, UnicodeDecodeError):
            return None

    def scrape(self, deployments: list[str], now: float) -> dict[str, Sample]:
        """One Sample per deployment named, at `now`. Never raises for a page that does not answer;
        returns {} when the gateway does not (see the module's docstring)."""
        gateway = self.store.read_gateway()
        if gateway is None:
            return {}
        ready: dict[str, list[ReplicaRecord]] = {d: [r for r in self.store.replicas(d) if r.state == "ready"]
                                                 for d in deployments}
        urls = [_url(gateway.config.get("host", "127.0.0.1"), gateway.config["port"], "/metrics")]
        urls += [_url(r.host, r.port, "/metrics") for d in deployments for r in ready[d]]
        with ThreadPoolExecutor(max_workers=min(_MAX_WORKERS, len(urls))) as pool:
            pages = dict(zip(urls, pool.map(self.fetch, urls)))
        if pages[urls[0]] is None:
            return {}
        reading = read_gateway_page(pages[urls[0]])
        identity = (gateway.pid, gateway.create_time)
        base = self._base
        self._base = _Baseline(now, identity, reading)
        if base is None:
            interval, old = 0.0, reading                    # first scrape: zero deltas
        elif base.gateway != identity:
            interval, old = now - base.at, GatewayReading()  # a new gateway: its counters started at 0
        else:
            interval, old = now - base.at, base.reading
        out = {}
        for d in deployments:
            engine = combine_engines(read_engine_page(p) if (p := pages[_url(r.host, r.port, "/metrics")]) else None
                                     for r in ready[d])
            counters = {s: counter_delta(reading.counters[s].get(d, 0.0), old.counters.get(s, {}).get(d, 0.0))
                        for s in COUNTERS}
            hists = {s: histogram_delta(reading.histograms[s][d], old.histograms.get(s, {}).get(d))
                     if d in reading.histograms[s] else Histogram() for s in HISTOGRAMS}
            out[d] = Sample(at=now, interval=interval, ready=len(ready[d]),
                            in_flight=reading.in_flight.get(d, 0.0), queued=reading.queued.get(d, 0.0),
                            held=reading.held.get(d, 0.0), arrivals=counters["arrivals"],
                            completed=counters["completed"], engine_running=engine.running,
                            engine_waiting=engine.waiting, kv_cache_usage=engine.kv_cache_usage, **hists)
        return out


# -- a Prometheus server ----------------------------------------------------------------------

class PrometheusSource:
    """The same signals from a Prometheus server that scrapes the gateway and the engines, by
    instant queries at `now` (`/api/v1/query`).

    Gateway series are matched by their `deployment` label; engine series by `deployment` when
    the scrape config adds one, else by vLLM's `model_name` (enova serves each deployment under
    its own name). Counters and histogram buckets are `rate(...[range]) * interval` with range =
    interval + 2 x `scrape_interval` (the server's own): a range of just the interval would miss
    the server's last point before the interval began, and a counter that moved once inside it
    would show no increase at all; so the delta is the average over a slightly longer range.
    rate() handles counter resets itself. `ready` is the count of ready replica records when a
    `store` is given, else the count of engine series answering.
    A query that fails is treated as a page that did not answer (see the module's docstring).
    """

    def __init__(self, url: str, *, timeout: float = 1.0, scrape_interval: float = 15.0,
                 store: StateStore | None = None, client: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.scrape_interval = scrape_interval
        self.store = store
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._own_client = client is None
        self._last: float | None = None

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def query(self, promql: str, now: float) -> list[tuple[dict[str, str], float]] | None:
        """An instant vector at `now`: [(labels, value)]; None when the server does not answer."""
        try:
            response = self._client.get(f"{self.url}/api/v1/query", params={"query": promql, "time": f"{now:.3f}"},
                                        timeout=self.timeout)
            body = response.json()
            if response.status_code != 200 or body.get("status") != "success":
                return None
            data = body["data"]
            if data.get("resultType") != "vector":
                return None
            return [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError):
            return None

    def _per(self, promql: str, now: float, labels: tuple[str, ...] = ("deployment",)) -> dict[str, float] | None:
        """A query's values keyed by the first of `labels` each series has."""
        result = self.query(promql, now)
        if result is None:
            return None
        out: dict[str, float] = {}
        for metric, value in result:
            key = next((metric[k] for k in labels if metric.get(k)), None)
            if key is not None and not math.isnan(value):
                out[key] = out.get(key, 0.0) + value
        return out

    def _engine(self, signal: str, how: str, now: float) -> dict[str, float]:
        """An engine gauge per deployment, through the name table (per deployment, the newest name wins)."""
        out: dict[str, float] = {}
        for name in metricnames.names(signal):
            got = self._per(f"{how} by (deployment, model_name) ({name})", now, ("deployment", "model_name")) or {}
            for key, value in got.items():
                out.setdefault(key, value)
        return out

    def scrape(self, deployments: list[str], now: float) -> dict[str, Sample]:
        last = self._last
        interval = 0.0 if last is None else max(0.0, now - last)
        rng = f"{max(1, round((interval + 2 * self.scrape_interval) * 1000))}ms"   # PromQL ranges are integers
        gauges = {s: self._per(f"sum by (deployment) ({metricnames.names(s)[0]})", now)
                  for s in ("in_flight", "queued", "held")}
        counters: dict[str, dict[str, float] | None] = {s: {} for s in COUNTERS}
        hists: dict[str, dict[str, Histogram] | None] = {s: {} for s in HISTOGRAMS}
        if interval > 0:
            for signal in COUNTERS:
                counters[signal] = self._per(f"sum by (deployment) (rate({metricnames.names(signal)[0]}[{rng}]))"
                                             f" * {interval!r}", now)
            for signal in HISTOGRAMS:
                hists[signal] = self._histograms(metricnames.names(signal)[0], rng, interval, now)
        if any(v is None for v in (*gauges.values(), *counters.values(), *hists.values())):
            return {}         # the server does not answer: no sample, and the next interval spans the gap
        self._last = now
        running = self._engine("engine_running", "sum", now)
        waiting = self._engine("engine_waiting", "sum", now)
        kv = self._engine("kv_cache_usage", "max", now)
        if self.store is not None:
            ready = {d: sum(1 for r in self.store.replicas(d) if r.state == "ready") for d in deployments}
        else:
            counted = self._per(f"count by (deployment, model_name) ({metricnames.names('engine_running')[0]})",
                                now, ("deployment", "model_name")) or {}
            ready = {d: int(counted.get(d, 0)) for d in deployments}
        return {d: Sample(at=now, interval=interval, ready=ready[d],
                          in_flight=gauges["in_flight"].get(d, 0.0), queued=(gauges["queued"] or {}).get(d, 0.0),
                          held=(gauges["held"] or {}).get(d, 0.0), arrivals=counters["arrivals"].get(d, 0.0),
                          completed=counters["completed"].get(d, 0.0), engine_running=running.get(d),
                          engine_waiting=waiting.get(d), kv_cache_usage=kv.get(d),
                          **{s: hists[s].get(d, Histogram()) for s in HISTOGRAMS})
                for d in deployments}

    def _histograms(self, base: str, rng: str, interval: float, now: float) -> dict[str, Histogram] | None:
        buckets = self.query(f"sum by (deployment, le) (rate({base}_bucket[{rng}])) * {interval!r}", now)
        counts = self._per(f"sum by (deployment) (rate({base}_count[{rng}])) * {interval!r}", now)
        sums = self._per(f"sum by (deployment) (rate({base}_sum[{rng}])) * {interval!r}", now)
        if buckets is None or counts is None or sums is None:
            return None
        by: dict[str, dict[float, float]] = defaultdict(dict)
        for metric, value in buckets:
            if "deployment" in metric and "le" in metric and not math.isnan(value):
                by[metric["deployment"]][float(metric["le"])] = value
        return {d: Histogram(tuple(sorted(b.items())), counts.get(d, b.get(math.inf, 0.0)), sums.get(d, 0.0))
                for d, b in by.items()}
