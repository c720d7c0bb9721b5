"""Per-replica limits, the bounded FIFO queue, 429 and 503 with Retry-After."""

from __future__ import annotations

import asyncio
import time

import pytest

from .conftest import eventually, sample

pytestmark = pytest.mark.anyio
SERVING_1 = {"default": False, "max_concurrency": 1, "drain_timeout": 30}


async def test_the_limit_is_max_concurrency_else_max_num_seqs_else_256(harness):
    a, b, c = await harness.engine("a"), await harness.engine("b"), await harness.engine("c")
    harness.deployment("m1", [a], serving={"max_concurrency": 3}, max_num_seqs=8)
    harness.deployment("m2", [b], max_num_seqs=8)
    harness.deployment("m3", [c], serving={})
    await harness.start()
    admin = await harness.admin()
    assert (admin["a"]["limit"], admin["b"]["limit"], admin["c"]["limit"]) == (3, 8, 256)


async def test_when_every_replica_is_full_requests_queue_then_get_429_with_retry_after(harness):
    a = await harness.engine("a")
    a.mode = "hang"
    harness.deployment("m1", [a], serving=SERVING_1)
    await harness.start(queue_size=1, queue_timeout=0.4)
    body = {"model": "m1", "prompt": "x"}
    holder = asyncio.create_task(harness.post("/v1/completions", body))
    await eventually(lambda: a.in_flight == 1)
    began = time.monotonic()
    queued = asyncio.create_task(harness.post("/v1/completions", body))
    await eventually(lambda: harness.registry.get("m1").admission.depth == 1)
    m = await harness.metrics()
    assert sample(m, "enova_gateway_queue_depth", deployment="m1") == 1
    assert sample(m, "enova_gateway_requests_in_flight", deployment="m1", replica="a") == 1

    status, headers, err = await harness.post("/v1/completions", body)      # the queue is full
    assert status == 429 and headers["Retry-After"] == "1"
    assert err["error"]["code"] == "queue_full" and "queue of 1 waiting requests is full" in err["error"]["message"]

    status, headers, err = await queued                                     # waited its 0.4 s
    assert status == 429 and headers["Retry-After"] == "1" and err["error"]["code"] == "queue_timeout"
    assert 0.35 < time.monotonic() - began < 2
    assert len(a.requests) == 1
    m = await harness.metrics()
    assert sample(m, "enova_gateway_rejections_total", deployment="m1", reason="queue_full") == 1
    assert sample(m, "enova_gateway_rejections_total", deployment="m1", reason="queue_timeout") == 1
    assert sample(m, "enova_gateway_queue_depth", deployment="m1") == 0
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)


async def test_queued_requests_are_served_in_arrival_order_as_slots_free(harness):
    a = await harness.engine("a", pace=0.02)
    harness.deployment("m1", [a], serving=SERVING_1)
    await harness.start(queue_size=10, queue_timeout=10)
    order = []

    async def one(i):
        status, _, _ = await harness.post("/v1/completions", {"model": "m1", "prompt": f"p{i}", "max_tokens": 3})
        order.append((i, status))

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(one(i)))
        await eventually(lambda: len(a.requests) + harness.registry.get("m1").admission.depth == i + 1)
    await asyncio.gather(*tasks)
    assert order == [(i, 200) for i in range(5)]
    assert [r["prompt"] for r in a.requests] == [f"p{i}" for i in range(5)]
    assert a.max_in_flight == 1


async def test_a_queued_request_takes_a_replica_that_becomes_ready(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    a.mode = "hang"
    harness.deployment("m1", [a, b], serving=SERVING_1)
    harness.set_state("b", "starting")
    await harness.start(queue_size=5, queue_timeout=5, rescan_interval=30)
    holder = asyncio.create_task(harness.post("/v1/completions", {"model": "m1", "prompt": "x"}))
    await eventually(lambda: a.in_flight == 1)
    queued = asyncio.create_task(harness.post("/v1/completions", {"model": "m1", "prompt": "x", "max_tokens": 1}))
    await eventually(lambda: harness.registry.get("m1").admission.depth == 1)
    harness.set_state("b", "ready")
    status, headers, _ = await queued
    assert status == 200 and headers["X-Enova-Replica"] == "b"
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)


async def test_queued_requests_get_503_when_the_last_ready_replica_leaves(harness):
    a = await harness.engine("a")
    a.mode = "hang"
    harness.deployment("m1", [a], serving=SERVING_1)
    await harness.start(queue_size=5, queue_timeout=5, rescan_interval=30)
    holder = asyncio.create_task(harness.post("/v1/completions", {"model": "m1", "prompt": "x"}))
    await eventually(lambda: a.in_flight == 1)
    queued = asyncio.create_task(harness.post("/v1/completions", {"model": "m1", "prompt": "x"}))
    await eventually(lambda: harness.registry.get("m1").admission.depth == 1)
    harness.set_state("a", "draining")
    status, headers, err = await asyncio.wait_for(queued, 2)
    assert status == 503 and headers["Retry-After"] == "5" and err["error"]["code"] == "no_ready_replica"
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)


async def test_no_ready_replica_is_a_503_at_once(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a], state="draining")
    await harness.start()
    began = time.monotonic()
    status, headers, err = await harness.post("/generate", {"prompt": "x"})
    assert time.monotonic() - began < 0.5
    assert status == 503 and headers["Retry-After"] == "5"
    assert err["error"]["type"] == "service_unavailable_error"
    m = await harness.metrics()
    assert sample(m, "enova_gateway_rejections_total", deployment="m1", reason="no_ready_replica") == 1
