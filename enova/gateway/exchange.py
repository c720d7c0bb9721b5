"""The record of one API request as it passes through the gateway, and its metrics.

The server's middleware opens an `Exchange` when a request to /v1/completions,
/v1/chat/completions or /generate arrives and closes it when the answer is sent (or the
client went away); the handlers and `proxy` fill it in between. Closing it updates every
per-request metric exactly once, whatever path the request took: received and request size
(when its deployment is known, or at the end as `unknown`), processed with its code, time per
request, response size, success, and the rejection reason if the gateway answered itself;
and ends the request's trace span when tracing is on (`span`; see `tracing`).
"""

from __future__ import annotations

from typing import Any

from .metrics import NO_REPLICA, UNKNOWN, GatewayMetrics
from .tracing import end_span

CLIENT_GONE = 499       # the client closed the connection before the answer was complete
STREAM_BROKEN = 502     # the replica broke a stream after it had started


class Exchange:
    __slots__ = ("api", "started", "deployment", "replica", "request_bytes", "response_bytes", "status",
                 "succeeded", "client_gone", "stream_broken", "reason", "_received", "span", "routing",
                 "queue_wait", "ttft", "input_tokens", "output_tokens")

    def __init__(self, api: str, started: float):
        self.api = api
        self.started = started
        self.deployment = UNKNOWN
        self.replica = NO_REPLICA
        self.request_bytes = 0
        self.response_bytes = 0
        self.status = 0
        self.succeeded = False
        self.client_gone = False
        self.stream_broken = False
        self.reason: str | None = None
        self._received = False
        self.span: Any = None                   # the trace span, when tracing is on
        self.routing: str | None = None         # why its replica (set only when traced)
        self.queue_wait = 0.0                   # seconds waiting for a slot (set only when traced)
        self.ttft: float | None = None          # seconds to the first streamed token
        self.input_tokens: int | None = None    # from the engine's usage
        self.output_tokens: int | None = None

    def receive(self, metrics: GatewayMetrics, deployment: str) -> None:
        """The request's deployment is known (a name the gateway serves): count it as received."""
        if self._received:
            return
        self._received = True
        self.deployment = deployment
        metrics.received.labels(deployment, self.api).inc()
        metrics.request_size.labels(deployment).observe(self.request_bytes)

    @property
    def code(self) -> int:
        if self.client_gone:
            return CLIENT_GONE
        if self.stream_broken:
            return STREAM_BROKEN
        return self.status

    def finish(self, metrics: GatewayMetrics, now: float) -> None:
        self.receive(metrics, self.deployment)
        dep = self.deployment
        code = str(self.code)
        ok = self.succeeded and not self.client_gone and not self.stream_broken
        metrics.processed.labels(dep, code).inc()
        metrics.duration.labels(dep).observe(now - self.started)
        metrics.response_size.labels(dep).observe(self.response_bytes)
        if ok:
            metrics.succeeded.labels(dep).inc()
        if self.replica != NO_REPLICA:
            metrics.replica_request(dep, self.replica, code, ok)
        if self.reason is not None:
            metrics.rejections.labels(dep, self.reason).inc()
        if self.span is not None:
            span, self.span = self.span, None
            end_span(span, self, self.code)
