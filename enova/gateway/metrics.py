"""The gateway's Prometheus metrics: the seed's API Service table, measured where clients meet it.

Rates come from counters (requests received, processed and succeeded per second, success rate
= succeeded / processed); time per request, request and response size, time to first token,
inter-token latency and end-to-end latency are histograms per deployment (replica labels are
kept off histograms to bound cardinality); prompt and generation tokens come from `usage`.
Requests in flight, queue depth and requests held (scale from zero; `held_total` counts how
each hold ended) are read from the live pools at scrape time (a collector),
so they cost nothing per request and vanish with the replica. The request counters are kept
twice: per deployment (`enova_gateway_requests_processed_total{deployment, code}`, totals that
outlive every rollout) and per replica (`enova_gateway_replica_requests_*{deployment, replica}`
and ejections), and a replica's series are removed when it leaves membership (`retain`), so the
number of series stays bounded however many rollouts the gateway lives through. Label values never come from
user input: a deployment the gateway does not serve is `unknown`, an API is one of three
names, a reason is one of `errors.REASONS`. Own registry, so tests and `enova enode run` can
hold several gateways in one process. Called by `proxy`, `server` and `registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# No `_created` series: they double the page and no dashboard reads them. (A process-wide
# setting of prometheus-client; the gateway owns its process, and enode's in-process gateway
# has no other registry to disturb.)
disable_created_metrics()

APIS = ("completions", "chat", "generate")   # the `api` label: the gateway's three generation APIs
UNKNOWN = "unknown"     # the deployment label of requests that name none the gateway serves
NO_REPLICA = "none"     # the replica label of requests answered without one

_LATENCY = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_TTFT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1)
_SIZE = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)

LiveRead = Callable[[], tuple[Iterable[tuple[str, str, int]], Iterable[tuple[str, int]], Iterable[tuple[str, int]]]]


class _Live(Collector):
    """enova_gateway_requests_in_flight, enova_gateway_queue_depth and
    enova_gateway_requests_held, read at scrape time."""

    def __init__(self, read: LiveRead):
        self._read = read

    def collect(self):
        in_flight = GaugeMetricFamily("enova_gateway_requests_in_flight",
                                      "Requests sent to a replica and not yet finished.",
                                      labels=["deployment", "replica"])
        depth = GaugeMetricFamily("enova_gateway_queue_depth",
                                  "Requests waiting for a free slot on a ready replica.", labels=["deployment"])
        held = GaugeMetricFamily("enova_gateway_requests_held",
                                 "Requests held while no replica is ready (scale from zero).", labels=["deployment"])
        replicas, queues, holds = self._read()
        for dep, rid, n in replicas:
            in_flight.add_metric([dep, rid], n)
        for dep, n in queues:
            depth.add_metric([dep], n)
        for dep, n in holds:
            held.add_metric([dep], n)
        yield in_flight
        yield depth
        yield held


class GatewayMetrics:
    def __init__(self, live: LiveRead | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("enova_gateway_requests_received", "Requests received, by API.",
                                ["deployment", "api"], registry=r)
        self.processed = Counter("enova_gateway_requests_processed",
                                 "Requests answered, by HTTP status (499: the client went away first).",
                                 ["deployment", "code"], registry=r)
        self.succeeded = Counter("enova_gateway_requests_succeeded",
                                 "Requests answered with 2xx and, for streams, sent to the end.",
                                 ["deployment"], registry=r)
        self.replica_processed = Counter("enova_gateway_replica_requests_processed",
                                         "Requests answered by a replica, by HTTP status (series removed when the "
                                         "replica leaves).", ["deployment", "replica", "code"], registry=r)
        self.replica_succeeded = Counter("enova_gateway_replica_requests_succeeded",
                                         "Requests of a replica answered with 2xx and sent to the end (series "
                                         "removed when the replica leaves).", ["deployment", "replica"], registry=r)
        self.duration = Histogram("enova_gateway_request_duration_seconds",
                                  "Time per request: from arrival to the last byte sent, every answer.",
                                  ["deployment"], buckets=_LATENCY, registry=r)
        self.request_size = Histogram("enova_gateway_request_size_bytes", "Request body size.",
                                      ["deployment"], buckets=_SIZE, registry=r)
        self.response_size = Histogram("enova_gateway_response_size_bytes", "Response body size sent.",
                                       ["deployment"], buckets=_SIZE, registry=r)
        self.ttft = Histogram("enova_gateway_time_to_first_token_seconds",
                              "Streams: from arrival to the first token event sent.",
                              ["deployment"], buckets=_TTFT, registry=r)
        self.itl = Histogram("enova_gateway_inter_token_latency_seconds",
                             "Streams: time between token events.", ["deployment"], buckets=_ITL, registry=r)
        self.e2e = Histogram("enova_gateway_e2e_latency_seconds",
                             "Successful generations: from arrival to the last byte sent.",
                             ["deployment"], buckets=_LATENCY, registry=r)
        self.prompt_tokens = Counter("enova_gateway_prompt_tokens", "Prompt tokens, from the engine's usage.",
                                     ["deployment"], registry=r)
        self.generation_tokens = Counter("enova_gateway_generation_tokens",
                                         "Generated tokens, from the engine's usage.", ["deployment"], registry=r)
        self.retries = Counter("enova_gateway_retries", "Requests sent again to another replica after a "
                               "connection failure.", ["deployment"], registry=r)
        self.rejections = Counter("enova_gateway_rejections", "Requests answered by the gateway itself, by reason.",
                                  ["deployment", "reason"], registry=r)
        self.held = Counter("enova_gateway_held", "Requests held while no replica was ready (scale from zero), "
                            "by how the hold ended: served, timeout (503), disconnected, rejected (queue full, or "
                            "scale from zero turned off or the deployment removed meanwhile).",
                            ["deployment", "outcome"], registry=r)
        self.ejections = Counter("enova_gateway_replica_ejections", "Replicas taken out of rotation after "
                                 "repeated failures.", ["deployment", "replica"], registry=r)
        if live is not None:
            r.register(_Live(live))
        self._members: frozenset[tuple[str, str]] = frozenset()    # (deployment, replica) in membership
        self._declared: set[str] = set()                            # deployments whose series exist at 0
        self._codes: dict[tuple[str, str], set[str]] = {}          # the code labels each one has used

    def declare(self, deployments: Iterable[str]) -> None:
        """Create every per-deployment series of these deployments at zero, before their first
        request. Prometheus takes a series' first sample as its start, not as an increase from 0:
        without this, a burst that ends before the next scrape after a deployment's first request
        never shows in `rate()` or `increase()`, and the first latencies are missing from the
        percentiles. A deployment's series are kept after it leaves (totals outlive rollouts)."""
        for dep in deployments:
            if dep in self._declared:
                continue
            self._declared.add(dep)
            for api in APIS:
                self.received.labels(dep, api)
            self.processed.labels(dep, "200")
            for family in (self.succeeded, self.duration, self.request_size, self.response_size, self.ttft,
                           self.itl, self.e2e, self.prompt_tokens, self.generation_tokens, self.retries):
                family.labels(dep)

    # per-replica series: only for members, removed when they leave
    def retain(self, members: Iterable[tuple[str, str]]) -> None:
        """The (deployment, replica) pairs now in membership. Every per-replica series of any
        other replica is removed; later requests finishing on one are counted per deployment only."""
        self._members = frozenset(members)
        for key in [k for k in self._codes if k not in self._members]:
            for code in self._codes.pop(key):
                self.replica_processed.remove(*key, code)
            for family in (self.replica_succeeded, self.ejections):
                try:
                    family.remove(*key)
                except KeyError:
                    pass

    def replica_request(self, deployment: str, replica: str, code: str, succeeded: bool) -> None:
        key = (deployment, replica)
        if key not in self._members:
            return
        codes = self._codes.setdefault(key, set())
        if code not in codes:
            codes.add(code)
            self.replica_succeeded.labels(deployment, replica)    # present (0) for every replica that answered
        self.replica_processed.labels(deployment, replica, code).inc()
        if succeeded:
            self.replica_succeeded.labels(deployment, replica).inc()

    def replica_ejected(self, deployment: str, replica: str) -> None:
        key = (deployment, replica)
        if key in self._members:
            self._codes.setdefault(key, set())
            self.ejections.labels(deployment, replica).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
