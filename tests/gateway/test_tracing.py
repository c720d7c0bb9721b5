"""Traces: a real OTLP/HTTP receiver gets one span per request, with the W3C trace context passed
on to the engine; a dead collector or none at all changes nothing for the requests."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                       ExportTraceServiceResponse)

from .conftest import FakeEngine, eventually

# Queue waits within 50 ms and exports that never delay a request: run alone (scripts/test.sh).
pytestmark = [pytest.mark.anyio, pytest.mark.serial]

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP traces endpoint (POST /v1/traces, protobuf), keeping every span it decodes."""

    def __init__(self):
        self.spans: list[dict[str, Any]] = []
        self.service_names: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for rs in message.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}.get("service.name", "")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.service_names.append(service)
                    self.spans.append({
                        "name": span.name, "kind": span.kind, "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(), "parent_span_id": span.parent_span_id.hex(),
                        "status": span.status.code, "status_message": span.status.message,
                        "attributes": {a.key: _value(a.value) for a in span.attributes}})
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _value(v) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


class HeaderEngine(FakeEngine):
    """A FakeEngine that also keeps each request's traceparent header (None if absent)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.traceparents: list[str | None] = []

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        self.traceparents.append(request.headers.get("traceparent"))
        return await super()._serve(request, chat)


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


async def _engine(harness, name: str, **kw) -> HeaderEngine:
    engine = await HeaderEngine(name, **kw).start()
    harness.engines.append(engine)
    return engine


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _settle(receiver: Receiver, count: int) -> list[dict]:
    """The spans once `count` arrived, after a further export interval (to catch any extra)."""
    await eventually(lambda: len(receiver.spans) >= count, timeout=10)
    await asyncio.sleep(0.8)
    return receiver.spans


async def test_each_request_is_one_server_span_with_its_routing_replica_ttft_and_tokens(harness, receiver):
    a = await _engine(harness, "a", tokens=3)
    harness.deployment("m1", [a])
    await harness.start(otlp_endpoint=receiver.url, service_name="gw-test")
    streamed = await harness.stream("/v1/chat/completions",
                                    {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert streamed.done
    status, _, _ = await harness.post("/v1/completions", {"model": "m1", "prompt": "hello", "max_tokens": 2})
    assert status == 200
    spans = {s["name"]: s for s in await _settle(receiver, 2)}
    assert len(receiver.spans) == 2 and set(spans) == {"POST /v1/chat/completions", "POST /v1/completions"}
    assert set(receiver.service_names) == {"gw-test"}
    chat, plain = spans["POST /v1/chat/completions"], spans["POST /v1/completions"]
    assert chat["kind"] == plain["kind"] == 2                       # SPAN_KIND_SERVER
    for span in (chat, plain):
        attrs = span["attributes"]
        assert attrs["enova.deployment"] == "m1" and attrs["enova.replica"] == "a"
        assert attrs["enova.routing"].startswith("fewest in flight (0, limit ")
        assert 0 <= attrs["enova.queue_wait_ms"] < 50
        assert attrs["http.response.status_code"] == 200
        assert attrs["gen_ai.usage.input_tokens"] > 0
        assert span["status"] == 0                                  # unset: not an error
    assert chat["attributes"]["gen_ai.usage.output_tokens"] == 3
    assert plain["attributes"]["gen_ai.usage.output_tokens"] == 2
    assert chat["attributes"]["enova.ttft_ms"] >= 10                # the engine's pace is 10 ms a token
    assert "enova.ttft_ms" not in plain["attributes"]
    assert chat["parent_span_id"] == ""                             # no traceparent came in: a new trace


async def test_an_incoming_traceparent_is_continued_and_passed_on_to_the_engine(harness, receiver):
    a = await _engine(harness, "a")
    harness.deployment("m1", [a])
    await harness.start(otlp_endpoint=receiver.url)
    status, _, _ = await harness.post("/v1/completions", {"model": "m1", "prompt": "x", "max_tokens": 1},
                                      headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert status == 200
    (span,) = await _settle(receiver, 1)
    assert span["trace_id"] == CALLER_TRACE and span["parent_span_id"] == CALLER_SPAN
    (sent,) = a.traceparents
    version, trace_id, parent, flags = sent.split("-")
    assert (version, trace_id, parent, flags) == ("00", CALLER_TRACE, span["span_id"], "01")


async def test_the_routing_attribute_says_when_a_request_queued_for_a_slot(harness, receiver):
    a = await _engine(harness, "a", tokens=5, pace=0.02)
    harness.deployment("m1", [a], serving={"max_concurrency": 1})
    await harness.start(otlp_endpoint=receiver.url)
    body = {"model": "m1", "prompt": "x"}
    results = await asyncio.gather(harness.post("/v1/completions", body), harness.post("/v1/completions", body))
    assert [r[0] for r in results] == [200, 200]
    spans = await _settle(receiver, 2)
    routings = sorted(s["attributes"]["enova.routing"] for s in spans)
    assert routings[0].startswith("fewest in flight (0, limit 1)")
    assert routings[1].startswith("queued ") and routings[1].endswith("took the first one freed, on a")
    assert max(s["attributes"]["enova.queue_wait_ms"] for s in spans) >= 50


async def test_a_request_the_gateway_answers_itself_is_an_error_span_with_its_reason(harness, receiver):
    a = await _engine(harness, "a")
    harness.deployment("m1", [a], state="starting")
    await harness.start(otlp_endpoint=receiver.url)
    status, _, _ = await harness.post("/v1/completions", {"model": "m1", "prompt": "x"})
    assert status == 503
    (span,) = await _settle(receiver, 1)
    attrs = span["attributes"]
    assert attrs["http.response.status_code"] == 503 and attrs["enova.deployment"] == "m1"
    assert attrs["enova.reason"] and "enova.replica" not in attrs
    assert span["status"] == 2 and span["status_message"] == attrs["enova.reason"]    # STATUS_CODE_ERROR
    assert not a.requests


async def test_requests_succeed_at_normal_speed_when_the_collector_is_down(harness):
    a = await _engine(harness, "a", tokens=2, pace=0.005)
    harness.deployment("m1", [a])
    await harness.start(otlp_endpoint=f"http://127.0.0.1:{_closed_port()}/v1/traces")
    assert harness.gateway.state.tracing is not None
    took = []
    for _ in range(30):
        began = time.monotonic()
        status, _, _ = await harness.post("/v1/completions", {"model": "m1", "prompt": "x"})
        took.append(time.monotonic() - began)
        assert status == 200
        await asyncio.sleep(0.02)         # across several export attempts, each refused
    assert max(took) < 0.5, took           # the engine takes ~10 ms; an export never sits in a request
    assert all(tp is not None for tp in a.traceparents)
    began = time.monotonic()
    await harness.gateway.stop()
    harness.gateway = None
    assert time.monotonic() - began < 5    # the final flush gives up quickly


async def test_without_an_endpoint_no_tracer_exists_and_the_engine_gets_no_traceparent(harness):
    a = await _engine(harness, "a")
    harness.deployment("m1", [a])
    await harness.start()
    assert harness.gateway.state.tracing is None
    status, _, _ = await harness.post("/v1/completions", {"model": "m1", "prompt": "x", "max_tokens": 1},
                                      headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert status == 200 and a.traceparents == [None]


async def test_a_reload_turns_tracing_on_and_off_in_place(harness, receiver, tmp_path):
    a = await _engine(harness, "a")
    harness.deployment("m1", [a])
    config = tmp_path / "gateway.json"
    config.write_text("{}")
    await harness.start(config_file=config)
    assert harness.gateway.state.tracing is None
    config.write_text(json.dumps({"otlp_endpoint": receiver.url}))
    assert harness.gateway.reload()
    assert harness.gateway.state.tracing is not None
    body = {"model": "m1", "prompt": "x", "max_tokens": 1}
    assert (await harness.post("/v1/completions", body))[0] == 200
    await _settle(receiver, 1)
    config.write_text(json.dumps({"otlp_endpoint": None}))
    assert harness.gateway.reload()
    assert harness.gateway.state.tracing is None
    assert (await harness.post("/v1/completions", body))[0] == 200
    await asyncio.sleep(0.8)
    assert len(receiver.spans) == 1 and a.traceparents[1] is None


def test_a_gateway_documents_otlp_endpoint_reaches_the_config_file_the_gateway_reads(tmp_path):
    from pathlib import Path

    from enova.apply.gateway import file_settings
    from enova.gateway.config import GatewayConfig, read_config_file
    from enova.plan.desired import desired_gateway
    from enova.spec.loader import load_specs

    specs = load_specs(Path(__file__).parent.parent / "golden" / "gateway_tracing_on" / "specs")
    desired = desired_gateway(specs)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(file_settings(desired.config)))
    config = read_config_file(path, GatewayConfig(state_dir=tmp_path))
    assert config.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert config.service_name == "enova-gateway-prod"
    untraced = {k: v for k, v in desired.config.items() if k not in ("otlp_endpoint", "service_name")}
    path.write_text(json.dumps(file_settings(untraced)))
    config = read_config_file(path, GatewayConfig(state_dir=tmp_path))
    assert (config.otlp_endpoint, config.service_name) == (None, "enova-gateway")
