"""Scale from zero at the gateway: a deployment with `serving.scale_from_zero` and no ready
replica keeps its route, holds requests (bounded), asks for a replica with a wake file, sends
the held requests once a replica is ready, and answers 503 with Retry-After past the hold
timeout. Real gateway, fake engines (conftest)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from enova.gateway.hold import DEFAULT_HOLD_TIMEOUT, HOLD_MARGIN, WakeFile, hold_timeout, wake_path

from .conftest import eventually, sample

pytestmark = pytest.mark.anyio
SFZ = {"scale_from_zero": True}
REQUEST = {"model": "m1", "prompt": "x", "max_tokens": 3}


def held(harness) -> int:
    return harness.registry.get("m1").admission.held


def wake_file(harness):
    return wake_path(harness.store.root, "m1")


async def test_a_request_to_a_deployment_scaled_to_zero_is_held_and_asks_for_a_replica(harness):
    harness.deployment("m1", [], serving=SFZ)
    await harness.start(rescan_interval=30)
    assert [m["id"] for m in (await harness.get("/v1/models"))[2]["data"]] == ["m1"]
    status, _, detail = await harness.get("/health")      # a sleeping deployment is still served
    assert status == 200 and detail["deployments"]["m1"]["ready"] == 0
    assert detail["deployments"]["m1"]["scale_from_zero"] is True

    asked = time.time()
    request = asyncio.create_task(harness.post("/v1/completions", REQUEST))
    await eventually(lambda: held(harness) == 1)
    await eventually(lambda: wake_file(harness).exists())
    assert asked - 1 < float(wake_file(harness).read_text()) < time.time() + 1
    assert sorted(p.name for p in wake_file(harness).parent.iterdir()) == ["m1"]
    m = await harness.metrics()
    assert sample(m, "enova_gateway_requests_held", deployment="m1") == 1
    assert sample(m, "enova_gateway_queue_depth", deployment="m1") == 0
    assert (await harness.get("/health"))[2]["deployments"]["m1"]["held"] == 1
    assert (await harness.get("/admin/v1/replicas"))[2]["held"] == {"m1": 1}
    assert not request.done()

    a = await harness.engine("a")
    harness.deployment("m1", [a], serving=SFZ, state="starting")
    await eventually(lambda: "a" in harness.registry.get("m1").pool.replicas)
    assert held(harness) == 1 and not request.done()
    harness.set_state("a", "ready")
    status, headers, body = await asyncio.wait_for(request, 5)
    assert status == 200 and headers["X-Enova-Replica"] == "a" and body["choices"][0]["text"] == " t0 t1 t2"
    m = await harness.metrics()
    assert sample(m, "enova_gateway_held_total", deployment="m1", outcome="served") == 1
    assert sample(m, "enova_gateway_requests_held", deployment="m1") == 0


async def test_a_held_stream_and_a_request_arriving_during_the_start_are_answered_in_order(harness):
    serving = {**SFZ, "max_concurrency": 1}
    harness.deployment("m1", [], serving=serving)
    await harness.start(rescan_interval=30)
    stream = asyncio.create_task(harness.stream("/v1/chat/completions", {
        "model": "m1", "messages": [{"role": "user", "content": "first"}], "max_tokens": 4, "stream": True}))
    await eventually(lambda: held(harness) == 1)
    a = await harness.engine("a")
    harness.deployment("m1", [a], serving=serving, state="starting")
    await eventually(lambda: "a" in harness.registry.get("m1").pool.replicas)
    second = asyncio.create_task(harness.post("/v1/completions", {**REQUEST, "prompt": "second"}))
    await eventually(lambda: held(harness) == 2)
    harness.set_state("a", "ready")
    streamed = await asyncio.wait_for(stream, 5)
    status, _, body = await asyncio.wait_for(second, 5)
    assert streamed.status == 200 and streamed.done and streamed.text() == " t0 t1 t2 t3"
    assert status == 200 and body["choices"][0]["text"] == " t0 t1 t2"
    assert [r.get("prompt") or r["messages"][0]["content"] for r in a.requests] == ["first", "second"]
    assert a.max_in_flight == 1         # the held requests went through the replica's limit
    m = await harness.metrics()
    assert sample(m, "enova_gateway_held_total", deployment="m1", outcome="served") == 2
    assert sample(m, "enova_gateway_time_to_first_token_seconds_count", deployment="m1") == 1


async def test_a_request_held_past_its_timeout_gets_503_with_retry_after(harness):
    harness.deployment("m1", [], serving={**SFZ, "hold_timeout": 0.5})
    await harness.start(rescan_interval=30)
    began = time.monotonic()
    status, headers, err = await harness.post("/generate", {"prompt": "x"})
    assert 0.45 < time.monotonic() - began < 2
    assert status == 503 and headers["Retry-After"] == "5"
    assert err["error"]["code"] == "hold_timeout" and err["error"]["type"] == "service_unavailable_error"
    assert re.fullmatch(r"deployment m1 has no ready replica: the request was held (0\.[5-9]|1(\.\d)?) s while "
                        r"one started \(scale from zero\) and none became ready; retry later", err["error"]["message"])
    assert wake_file(harness).exists()
    m = await harness.metrics()
    assert sample(m, "enova_gateway_held_total", deployment="m1", outcome="timeout") == 1
    assert sample(m, "enova_gateway_rejections_total", deployment="m1", reason="hold_timeout") == 1
    assert sample(m, "enova_gateway_requests_held", deployment="m1") == 0


async def test_a_deployment_without_scale_from_zero_still_gets_503_at_once(harness):
    harness.deployment("m1", [], serving={})
    await harness.start()
    began = time.monotonic()
    status, headers, err = await harness.post("/v1/completions", REQUEST)
    assert time.monotonic() - began < 0.5
    assert status == 503 and headers["Retry-After"] == "5" and err["error"]["code"] == "no_ready_replica"
    assert not wake_file(harness).parent.exists()
    assert (await harness.get("/health"))[0] == 503


async def test_a_client_that_disconnects_while_held_frees_its_place(harness):
    harness.deployment("m1", [], serving=SFZ)
    await harness.start(queue_size=1, rescan_interval=30)
    leaver = asyncio.create_task(harness.post("/v1/completions", REQUEST))
    await eventually(lambda: held(harness) == 1)
    leaver.cancel()
    await asyncio.gather(leaver, return_exceptions=True)
    await eventually(lambda: harness.registry.get("m1").admission.depth == 0, timeout=2)
    m = await harness.metrics()
    assert sample(m, "enova_gateway_held_total", deployment="m1", outcome="disconnected") == 1
    stayer = asyncio.create_task(harness.post("/v1/completions", REQUEST))     # its place is free: held, not 429
    await eventually(lambda: held(harness) == 1)
    a = await harness.engine("a")
    harness.deployment("m1", [a], serving=SFZ)
    status, _, _ = await asyncio.wait_for(stayer, 5)
    assert status == 200 and len(a.requests) == 1


async def test_held_requests_beyond_the_queue_size_get_429_with_retry_after(harness):
    harness.deployment("m1", [], serving=SFZ)
    await harness.start(queue_size=2, rescan_interval=30)
    waiting = [asyncio.create_task(harness.post("/v1/completions", REQUEST)) for _ in range(2)]
    await eventually(lambda: held(harness) == 2)
    status, headers, err = await harness.post("/v1/completions", REQUEST)
    assert status == 429 and headers["Retry-After"] == "1" and err["error"]["code"] == "queue_full"
    m = await harness.metrics()
    assert sample(m, "enova_gateway_held_total", deployment="m1", outcome="rejected") == 1
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_the_wake_file_is_written_again_while_requests_are_still_held(harness):
    harness.deployment("m1", [], serving={**SFZ, "hold_timeout": 0.6})
    await harness.start(rescan_interval=30)
    request = asyncio.create_task(harness.post("/v1/completions", REQUEST))
    await eventually(lambda: wake_file(harness).exists())
    wake_file(harness).unlink()                 # what the reconciler does once it scaled up
    took = await eventually(lambda: wake_file(harness).exists(), timeout=1)
    assert took < 0.5                           # every half timeout
    assert (await request)[0] == 503


async def test_requests_queued_when_the_last_replica_leaves_are_held_not_failed(harness):
    a = await harness.engine("a")
    a.mode = "hang"
    serving = {**SFZ, "max_concurrency": 1}
    harness.deployment("m1", [a], serving=serving)
    await harness.start(queue_size=5, queue_timeout=5, rescan_interval=30)
    holder = asyncio.create_task(harness.post("/v1/completions", REQUEST))
    await eventually(lambda: a.in_flight == 1)
    queued = asyncio.create_task(harness.post("/v1/completions", REQUEST))
    await eventually(lambda: harness.registry.get("m1").admission.queued == 1)
    harness.set_state("a", "draining")
    await eventually(lambda: held(harness) == 1)
    await eventually(lambda: wake_file(harness).exists())
    b = await harness.engine("b")
    harness.deployment("m1", [b], serving=serving)
    status, headers, _ = await asyncio.wait_for(queued, 5)
    assert status == 200 and headers["X-Enova-Replica"] == "b"
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)


async def test_held_requests_get_503_when_scale_from_zero_is_turned_off(harness):
    harness.deployment("m1", [], serving=SFZ)
    await harness.start(rescan_interval=30)
    request = asyncio.create_task(harness.post("/v1/completions", REQUEST))
    await eventually(lambda: held(harness) == 1)
    harness.deployment("m1", [], serving={})
    status, _, err = await asyncio.wait_for(request, 2)
    assert status == 503 and err["error"]["code"] == "no_ready_replica"
    m = await harness.metrics()
    assert sample(m, "enova_gateway_held_total", deployment="m1", outcome="rejected") == 1


async def test_the_hold_timeout_is_the_measured_start_time_plus_a_margin(harness):
    harness.deployment("m1", [], serving=SFZ)
    harness.deployment("m2", [], serving={**SFZ, "hold_timeout": 7})
    harness.deployment("m3", [], serving={})
    await harness.start(rescan_interval=0.2)
    timeouts = lambda: {n: harness.registry.get(n).admission.hold_timeout for n in ("m1", "m2", "m3")}  # noqa: E731
    assert timeouts() == {"m1": DEFAULT_HOLD_TIMEOUT, "m2": 7.0, "m3": None}
    scaler = harness.store.root / "autoscaler" / "m1.json"
    scaler.parent.mkdir(parents=True, exist_ok=True)
    scaler.write_text('{"target": 0, "start_seconds": 12.5, "updated_at": 1.0}')
    await eventually(lambda: timeouts()["m1"] == 12.5 + HOLD_MARGIN, timeout=2)      # read on the next rescan


def test_hold_timeout_prefers_the_override_then_the_start_time_then_the_default():
    assert hold_timeout(20, 12.0) == 20.0
    assert hold_timeout(None, 12.0) == 12.0 + HOLD_MARGIN
    assert hold_timeout(None, None) == DEFAULT_HOLD_TIMEOUT
    assert hold_timeout(True, 0) == DEFAULT_HOLD_TIMEOUT      # not numbers a user meant
    assert hold_timeout(-1, "12") == DEFAULT_HOLD_TIMEOUT


def test_the_wake_file_is_replaced_whole_and_holds_the_time(tmp_path):
    waker = WakeFile(tmp_path, clock=lambda: 1234.5)
    path = waker.write("m1")
    assert path == tmp_path / "autoscaler" / "wake" / "m1" and path.read_text() == "1234.500\n"
    waker.clock = lambda: 1300.0
    waker.write("m1")
    assert path.read_text() == "1300.000\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["m1"]
    assert not list((tmp_path / "autoscaler").glob("*.tmp"))
