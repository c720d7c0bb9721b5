"""/metrics after a known mix of requests: every counter and histogram count equals what was sent."""

from __future__ import annotations

import json

import pytest

from .conftest import eventually, sample

BODY = {"model": "m1", "prompt": "x", "max_tokens": 2}

pytestmark = pytest.mark.anyio


def prompt_tokens(body: dict) -> int:
    """The fake engine's count (see conftest.FakeEngine)."""
    text = json.dumps(body["messages"]) if "messages" in body else body["prompt"]
    return len(text) // 4 + 1


async def test_metrics_count_every_request_token_and_latency_exactly(harness):
    a, b = await harness.engine("a", pace=0.01), await harness.engine("b", pace=0.01)
    harness.deployment("m1", [a, b])
    await harness.start()
    sent: list[dict] = []

    async def post(path, body, expect=200):
        sent.append(body)
        status, _, answer = await harness.post(path, body)
        assert status == expect, answer

    async def stream(path, body, ndjson=False):
        sent.append(body)
        got = await harness.stream(path, body, ndjson=ndjson)
        assert got.status == 200

    for _ in range(3):
        await post("/v1/completions", {"model": "m1", "prompt": "hello", "max_tokens": 2})
    for _ in range(2):
        await stream("/v1/completions", {"model": "m1", "prompt": "hello", "max_tokens": 4, "stream": True})
    await stream("/generate", {"prompt": "hello world", "max_tokens": 3, "stream": True}, ndjson=True)
    await post("/generate", {"prompt": "hello", "max_tokens": 5})
    await post("/v1/chat/completions", {"model": "m1", "messages": [{"role": "user", "content": "hi"}],
                                        "max_tokens": 2})
    await harness.post("/v1/completions", {"model": "nope", "prompt": "x"})
    await harness.post("/v1/completions", raw=b"{oops")

    m = await harness.metrics()
    s = lambda name, **labels: sample(m, name, **labels)  # noqa: E731
    # received, by API, and the two that named no served deployment
    assert s("enova_gateway_requests_received_total", deployment="m1", api="completions") == 5
    assert s("enova_gateway_requests_received_total", deployment="m1", api="generate") == 2
    assert s("enova_gateway_requests_received_total", deployment="m1", api="chat") == 1
    assert s("enova_gateway_requests_received_total", deployment="unknown", api="completions") == 2
    # processed and succeeded, per deployment and per replica
    assert s("enova_gateway_requests_processed_total", deployment="m1", code="200") == 8
    assert s("enova_gateway_requests_succeeded_total", deployment="m1") == 8
    ok = sum(s("enova_gateway_replica_requests_processed_total", deployment="m1", replica=r, code="200") for r in "ab")
    assert ok == 8
    assert s("enova_gateway_replica_requests_processed_total", deployment="m1", replica="a", code="200") == 4
    assert sum(s("enova_gateway_replica_requests_succeeded_total", deployment="m1", replica=r) for r in "ab") == 8
    assert s("enova_gateway_requests_processed_total", deployment="unknown", code="404") == 1
    assert s("enova_gateway_requests_processed_total", deployment="unknown", code="400") == 1
    assert not any(dict(labels).get("replica") == "none" for _, labels in m), "no series for 'no replica'"
    assert s("enova_gateway_rejections_total", deployment="unknown", reason="unknown_model") == 1
    assert s("enova_gateway_rejections_total", deployment="unknown", reason="invalid_request") == 1
    # time per request and sizes: one observation per request
    assert s("enova_gateway_request_duration_seconds_count", deployment="m1") == 8
    assert s("enova_gateway_request_duration_seconds_count", deployment="unknown") == 2
    assert s("enova_gateway_request_size_bytes_count", deployment="m1") == 8
    assert s("enova_gateway_request_size_bytes_sum", deployment="m1") == sum(len(json.dumps(b)) for b in sent)
    assert s("enova_gateway_response_size_bytes_count", deployment="m1") == 8
    assert s("enova_gateway_response_size_bytes_sum", deployment="m1") > 0
    # streams: TTFT once per stream, ITL between tokens; e2e for every success
    assert s("enova_gateway_time_to_first_token_seconds_count", deployment="m1") == 3
    assert s("enova_gateway_inter_token_latency_seconds_count", deployment="m1") == 2 * 3 + 2
    itl = s("enova_gateway_inter_token_latency_seconds_sum", deployment="m1") / 8
    assert 0.005 < itl < 0.1, f"mean ITL {itl} for a 10 ms pace"
    assert s("enova_gateway_time_to_first_token_seconds_sum", deployment="m1") >= 3 * 0.01
    assert s("enova_gateway_e2e_latency_seconds_count", deployment="m1") == 8
    # tokens from usage (streams included, though those clients never saw the usage chunk)
    assert s("enova_gateway_generation_tokens_total", deployment="m1") == 3 * 2 + 2 * 4 + 3 + 5 + 2
    assert s("enova_gateway_prompt_tokens_total", deployment="m1") == sum(prompt_tokens(b) for b in sent)
    # nothing left in flight or queued; no retries, no ejections
    assert s("enova_gateway_requests_in_flight", deployment="m1", replica="a") == 0
    assert s("enova_gateway_requests_in_flight", deployment="m1", replica="b") == 0
    assert s("enova_gateway_queue_depth", deployment="m1") == 0
    assert s("enova_gateway_retries_total", deployment="m1") == 0
    assert not any(name == "enova_gateway_replica_ejections_total" for name, _ in m)


async def test_metric_labels_never_take_a_value_from_user_input(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start()
    for i in range(5):
        await harness.post("/v1/completions", {"model": f"made-up-{i}", "prompt": "x"})
        await harness.post(f"/generate?deployment=made-up-{i}", {"prompt": "x"})
    status, _, text = await harness.get("/metrics")
    assert "made-up" not in text
    m = await harness.metrics()
    assert sample(m, "enova_gateway_requests_received_total", deployment="unknown", api="completions") == 5
    assert sample(m, "enova_gateway_requests_received_total", deployment="unknown", api="generate") == 5


async def test_rollouts_leave_no_series_for_departed_replicas_and_deployment_totals_intact(harness):
    """Four rolling replacements: each new replica joins, serves, the old one drains and its record
    goes. The first one is also ejected once, so it has an ejection series to lose."""
    first = await harness.engine("r0")
    harness.deployment("m1", [first])
    await harness.start(eject_after=1)
    sent = ok = 0
    for i in range(1, 5):
        new = await harness.engine(f"r{i}")
        harness.deployment("m1", [new])           # joins next to the old one
        await eventually(lambda: harness.registry.get("m1").pool.replicas.get(f"r{i}") is not None)
        if i == 1:
            first.mode = "error500"
            while not harness.registry.get("m1").pool.replicas["r0"].health.ejected:
                status, _, _ = await harness.post("/v1/completions", BODY)
                sent += 1
                ok += status == 200
        for _ in range(3):
            status, _, _ = await harness.post("/v1/completions", BODY)
            sent += 1
            ok += status == 200
        old = f"r{i - 1}"
        harness.set_state(old, "draining")
        harness.remove(old)
        await eventually(lambda: old not in harness.registry.get("m1").pool.replicas)
    m = await harness.metrics()
    replicas = {dict(labels).get("replica") for _, labels in m} - {None}
    assert replicas == {"r4"}, f"series left for departed replicas: {sorted(replicas - {'r4'})}"
    processed = sum(v for (name, labels), v in m.items()
                    if name == "enova_gateway_requests_processed_total" and dict(labels)["deployment"] == "m1")
    assert processed == sent
    assert sample(m, "enova_gateway_requests_succeeded_total", deployment="m1") == ok
    assert ok >= 12


async def test_a_served_deployment_has_its_series_at_zero_before_its_first_request(harness):
    """Prometheus takes a new series' first sample as its start: a burst that ends before the
    scrape after a deployment's first request would never show in rate(). So the deployment's
    request counters and latency histograms exist, at 0, as soon as the gateway serves it."""
    from enova.gateway.metrics import APIS
    from enova.gateway.server import API_PATHS

    assert sorted(API_PATHS.values()) == sorted(APIS)
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start()
    m = await harness.metrics()

    def present(name: str, **labels: str) -> bool:
        return m.get((name, tuple(sorted(labels.items())))) == 0.0

    for api in APIS:
        assert present("enova_gateway_requests_received_total", deployment="m1", api=api)
    assert present("enova_gateway_requests_processed_total", deployment="m1", code="200")
    assert present("enova_gateway_requests_succeeded_total", deployment="m1")
    for histogram in ("request_duration_seconds", "time_to_first_token_seconds", "inter_token_latency_seconds",
                      "e2e_latency_seconds", "request_size_bytes", "response_size_bytes"):
        assert present(f"enova_gateway_{histogram}_count", deployment="m1")
    harness.deployment("m2", [a])
    await eventually(lambda: harness.registry.get("m2") is not None)
    m = await harness.metrics()
    assert present("enova_gateway_requests_received_total", deployment="m2", api="chat")
