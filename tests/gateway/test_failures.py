"""Replicas that fail: one retry on a connection failure (never after the answer started),
ejection after repeated failures, re-admission once /health passes again."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import eventually, sample

pytestmark = pytest.mark.anyio
BODY = {"model": "m1", "prompt": "x", "max_tokens": 2}


async def test_a_refused_connection_is_retried_once_on_another_replica(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a, b])
    await harness.start()
    await a.refuse()
    for _ in range(2):       # round-robin would give "a" one of the two
        status, headers, body = await harness.post("/v1/completions", BODY)
        assert status == 200, body
        assert headers["X-Enova-Replica"] == "b"
    m = await harness.metrics()
    assert sample(m, "enova_gateway_retries_total", deployment="m1") == 1
    assert sample(m, "enova_gateway_replica_requests_processed_total", deployment="m1", replica="b", code="200") == 2


async def test_a_reset_before_the_answer_is_retried_on_another_replica(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a, b])
    await harness.start()
    a.mode = "reset"
    results = [await harness.post("/v1/completions", BODY) for _ in range(2)]
    assert [r[0] for r in results] == [200, 200]
    assert len(a.requests) == 1 and len(b.requests) == 2


async def test_without_another_replica_a_refused_connection_is_a_502(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start()
    await a.refuse()
    status, headers, body = await harness.post("/v1/completions", BODY)
    assert status == 502 and "no other replica free to retry on" in body["error"]["message"]
    assert body["error"]["code"] == "upstream_unreachable"


async def test_a_stream_broken_after_it_started_is_not_retried_and_ends_with_an_error_event(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a, b])
    await harness.start()
    a.mode = b.mode = "break"
    got = await harness.stream("/v1/completions", {**BODY, "max_tokens": 6, "stream": True})
    assert got.status == 200 and not got.done
    assert got.text() == " t0 t1"
    assert "broke the stream" in got.events[-1] and '"error"' in got.events[-1]
    assert len(a.requests) + len(b.requests) == 1, "a started answer must not be sent again"
    m = await harness.metrics()
    assert sample(m, "enova_gateway_retries_total", deployment="m1") == 0
    replica = "a" if a.requests else "b"
    assert sample(m, "enova_gateway_replica_requests_processed_total", deployment="m1", replica=replica, code="502") == 1
    assert sample(m, "enova_gateway_replica_requests_succeeded_total", deployment="m1", replica=replica) == 0


async def test_a_replica_failing_three_times_is_ejected_and_readmitted_after_its_health_passes(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a, b])
    await harness.start(probe_interval=0.3)
    a.mode = "error500"
    a.healthy = False
    codes = []
    for _ in range(6):       # alternates a, b until a is out
        status, headers, _ = await harness.post("/v1/completions", BODY)
        codes.append((headers["X-Enova-Replica"], status))
    assert codes[:5] == [("a", 500), ("b", 200), ("a", 500), ("b", 200), ("a", 500)]
    assert codes[5] == ("b", 200)
    admin = await harness.admin()
    assert admin["a"]["state"] == "ejected" and admin["b"]["state"] == "ready"
    for _ in range(4):
        status, headers, _ = await harness.post("/v1/completions", BODY)
        assert (headers["X-Enova-Replica"], status) == ("b", 200)
    assert len(a.requests) == 3
    m = await harness.metrics()
    assert sample(m, "enova_gateway_replica_ejections_total", deployment="m1", replica="a") == 1

    a.mode, a.healthy = "ok", True
    took = await eventually(lambda: harness.registry.deployments["m1"].pool.replicas["a"].routable, timeout=3)
    assert took < 1.5
    served = set()
    for _ in range(4):
        status, headers, _ = await harness.post("/v1/completions", BODY)
        assert status == 200
        served.add(headers["X-Enova-Replica"])
    assert served == {"a", "b"}
    assert (await harness.admin())["a"]["state"] == "ready"


async def test_an_ejected_replica_stays_out_while_its_health_fails(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a, b])
    await harness.start(probe_interval=0.2, eject_after=2)
    await a.refuse()
    for _ in range(4):
        await harness.post("/v1/completions", BODY)
    assert (await harness.admin())["a"]["state"] == "ejected"
    await a.accept()
    a.healthy = False
    await asyncio.sleep(0.8)            # four probe intervals
    assert (await harness.admin())["a"]["state"] == "ejected"
    a.healthy = True
    await eventually(lambda: harness.registry.deployments["m1"].pool.replicas["a"].routable, timeout=2)


async def test_the_last_replica_ejected_makes_the_deployment_unavailable_with_503(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start(probe_interval=10)
    await a.refuse()
    for _ in range(3):
        status, _, _ = await harness.post("/v1/completions", BODY)
        assert status == 502
    status, headers, body = await harness.post("/v1/completions", BODY)
    assert status == 503 and headers["Retry-After"] == "5" and body["error"]["code"] == "no_ready_replica"
    status, _, detail = await harness.get("/health")
    assert status == 503 and detail["deployments"]["m1"]["ready"] == 0
