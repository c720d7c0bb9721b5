"""OpenTelemetry traces of the gateway's API requests, sent over OTLP/HTTP; off unless configured.

`make_tracing(config)` returns None when `config.otlp_endpoint` is None: no tracer provider,
no exporter thread, and the request path pays one None check. Otherwise a `Tracing` holds its
own TracerProvider (never the global one) whose BatchSpanProcessor exports from a background
thread: the request path only appends a finished span to a bounded queue (dropped when full),
so a slow or dead collector never delays a request. A failed export is logged once per outage
(and its recovery once); the exporter library's own per-batch log lines are silenced.

One span per request (SpanKind.SERVER, named "POST /v1/completions"), started by the server's
middleware (`start`, continuing an incoming W3C `traceparent`) and ended by `Exchange.finish`
(`end_span`) with: enova.deployment, enova.replica, enova.routing (why that replica),
enova.queue_wait_ms, enova.ttft_ms (streams), gen_ai.usage.input_tokens / output_tokens (when
the engine reported usage), http.response.status_code, enova.reason (when the gateway answered
itself), and an error status for 5xx and broken streams. `upstream_headers` adds the span's
`traceparent` to the request sent to the engine. Called by `server`, `proxy` and `exchange`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .config import GatewayConfig

if TYPE_CHECKING:
    from .exchange import Exchange

log = logging.getLogger("enova.gateway")

EXPORT_TIMEOUT = 2.0        # seconds per export request (in the exporter's thread, never a request's)
EXPORT_BATCH = 64          # spans per export request
SHUTDOWN_TIMEOUT = 2.0      # how long stopping the gateway waits to flush the last spans


class _OncePerOutage(SpanExporter):
    """The OTLP exporter, its failures logged once until an export succeeds again. Never raises."""

    def __init__(self, inner: SpanExporter, endpoint: str):
        self.inner = inner
        self.endpoint = endpoint
        self.failing = False

    def export(self, spans) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:       # noqa: BLE001 - a collector's fault must never reach the gateway
            log.debug("traces: export raised %r", exc)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            if self.failing:
                log.info("traces: %s accepts spans again", self.endpoint)
            self.failing = False
        elif not self.failing:
            self.failing = True
            log.warning("traces: export to %s failed; spans are dropped until it answers (logged once)",
                        self.endpoint)
        return result

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception:               # noqa: BLE001
            pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Tracing:
    """A tracer exporting to one OTLP/HTTP endpoint. Creating it starts the export thread."""

    def __init__(self, endpoint: str, service_name: str, *, export_timeout: float = EXPORT_TIMEOUT,
                 schedule_delay_ms: int = 500):
        # the library logs every failed batch (and its retries), and every span dropped from a full
        # queue (a dead collector fills it): _OncePerOutage says it once instead
        logging.getLogger("opentelemetry.exporter.otlp.proto.http").setLevel(logging.CRITICAL)
        logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
        self.endpoint = endpoint
        self.service_name = service_name
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.exporter = _OncePerOutage(OTLPSpanExporter(endpoint=endpoint, timeout=export_timeout), endpoint)
        # small batches: encoding one holds the GIL, so a batch of 512 (the default) would stall the
        # event loop for milliseconds; 64 keeps each stall short at the same total cost
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter, schedule_delay_millis=schedule_delay_ms,
                                                            max_export_batch_size=EXPORT_BATCH))
        self.tracer = self.provider.get_tracer("enova.gateway")

    def start(self, method: str, path: str, headers: Mapping[str, str]) -> Span:
        """The request's server span, a child of the caller's `traceparent` if it sent one."""
        return self.tracer.start_span(f"{method} {path}", context=propagate.extract(headers), kind=SpanKind.SERVER,
                                      attributes={"http.request.method": method, "url.path": path})

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Flush what is queued (up to about `timeout` s) and stop the export thread. Blocks; never
        raises; idempotent."""
        try:
            self.provider.force_flush(int(timeout * 1000))
            self.provider.shutdown()
        except Exception as exc:        # noqa: BLE001
            log.debug("traces: shutdown: %r", exc)

    def shutdown_in_background(self) -> None:
        """Shutdown on a thread of its own (a reload must not block the event loop)."""
        threading.Thread(target=self.shutdown, name="enova-traces-shutdown", daemon=True).start()


def make_tracing(config: GatewayConfig) -> Tracing | None:
    """A Tracing for `config.otlp_endpoint`, or None when it is not set (tracing off)."""
    if config.otlp_endpoint is None:
        return None
    log.info("traces: sending spans of service %s to %s", config.service_name, config.otlp_endpoint)
    return Tracing(config.otlp_endpoint, config.service_name)


def follow_reload(current: Tracing | None, config: GatewayConfig) -> Tracing | None:
    """The Tracing for a reloaded `config`: `current` if its endpoint and service name are
    unchanged; else a new one (or None), the old one flushed and stopped in the background."""
    if current is not None and (current.endpoint, current.service_name) == (config.otlp_endpoint,
                                                                            config.service_name):
        return current
    if current is None and config.otlp_endpoint is None:
        return None
    if current is not None:
        current.shutdown_in_background()
    return make_tracing(config)


def upstream_headers(span: Span, base: Mapping[str, str]) -> dict[str, str]:
    """`base` plus the W3C trace context of `span`, for the request to the engine."""
    headers = dict(base)
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return headers


def end_span(span: Span, ex: "Exchange", code: int) -> None:
    """Set the request's attributes on its span and end it."""
    attrs: dict[str, Any] = {"enova.deployment": ex.deployment, "http.response.status_code": code}
    if ex.routing is not None:
        attrs["enova.replica"] = ex.replica
        attrs["enova.routing"] = ex.routing
        attrs["enova.queue_wait_ms"] = round(ex.queue_wait * 1000, 3)
    if ex.ttft is not None:
        attrs["enova.ttft_ms"] = round(ex.ttft * 1000, 3)
    if ex.input_tokens is not None:
        attrs["gen_ai.usage.input_tokens"] = ex.input_tokens
    if ex.output_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = ex.output_tokens
    if ex.reason is not None:
        attrs["enova.reason"] = ex.reason
    if ex.client_gone:
        attrs["enova.client_gone"] = True
    span.set_attributes(attrs)
    if code >= 500:
        why = "the replica broke the stream" if ex.stream_broken else (ex.reason or f"HTTP {code}")
        span.set_status(Status(StatusCode.ERROR, why))
    span.end()
