"""The gateway follows the state directory: draining, removed, starting and corrupt records;
the admin endpoint and `wait_drained` that `enova apply` relies on."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from enova.gateway.admin import DrainOutcome, wait_drained

from .conftest import eventually

pytestmark = pytest.mark.anyio
STREAM = {"model": "m1", "prompt": "x", "max_tokens": 20, "stream": True}


async def test_a_draining_replica_finishes_its_streams_and_gets_no_new_requests(harness):
    a, b = await harness.engine("a", pace=0.04), await harness.engine("b", pace=0.04)
    harness.deployment("m1", [a, b])
    await harness.start(rescan_interval=30)          # only the file watcher can notice in time
    streams = [asyncio.create_task(harness.stream("/v1/completions", STREAM)) for _ in range(4)]
    await eventually(lambda: a.in_flight == 2 and b.in_flight == 2)
    generation = (await harness.get("/admin/v1/replicas"))[2]["generation"]

    harness.set_state("a", "draining")
    took = await eventually(lambda: harness.registry.deployments["m1"].pool.replicas["a"].view.state == "draining",
                            interval=0.005)
    assert took < 0.3, f"the gateway saw the drain after {took:.3f} s"
    status, _, admin = await harness.get("/admin/v1/replicas")
    assert admin["generation"] > generation
    row = next(r for r in admin["replicas"] if r["id"] == "a")
    assert row["state"] == "draining" and row["in_flight"] == 2

    for _ in range(4):
        status, headers, _ = await harness.post("/v1/completions", {"model": "m1", "prompt": "y", "max_tokens": 1})
        assert status == 200 and headers["X-Enova-Replica"] == "b"
    assert len(a.requests) == 2

    outcome = await asyncio.to_thread(wait_drained, harness.gateway.url, "a", 0.2)
    assert outcome is DrainOutcome.TIMED_OUT
    outcome = await asyncio.to_thread(wait_drained, harness.gateway.url, "a", 10)
    assert outcome is DrainOutcome.DRAINED
    assert (await harness.admin())["a"]["in_flight"] == 0
    results = await asyncio.gather(*streams)
    assert all(r.done and r.text() == "".join(f" t{i}" for i in range(20)) for r in results)
    assert a.disconnects == 0


async def test_a_removed_replica_is_shown_gone_until_its_last_stream_ends(harness):
    a, b = await harness.engine("a", pace=0.03), await harness.engine("b", pace=0.03)
    harness.deployment("m1", [a, b])
    await harness.start(rescan_interval=30)
    a.mode = b.mode = "hang"
    hung = asyncio.create_task(harness.post("/v1/completions", {"model": "m1", "prompt": "x"}))
    await eventually(lambda: a.in_flight + b.in_flight == 1)
    other = a if b.in_flight else b
    other.mode = "ok"
    stream = asyncio.create_task(harness.stream("/v1/completions", STREAM))     # least in flight: other
    await eventually(lambda: other.in_flight == 1)
    harness.remove(other.name)
    await eventually(lambda: harness.registry.deployments["m1"].pool.replicas[other.name].gone)
    row = (await harness.admin())[other.name]
    assert row["state"] == "gone" and row["in_flight"] == 1
    assert (await stream).done
    await eventually(lambda: other.name not in harness.registry.deployments["m1"].pool.replicas)
    assert other.name not in await harness.admin()
    outcome = await asyncio.to_thread(wait_drained, harness.gateway.url, other.name, 1)
    assert outcome is DrainOutcome.DRAINED
    hung.cancel()
    await asyncio.gather(hung, return_exceptions=True)


async def test_a_starting_replica_gets_traffic_once_its_record_says_ready(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a], state="starting")
    await harness.start(rescan_interval=30)
    status, headers, body = await harness.post("/v1/completions", {"model": "m1", "prompt": "x"})
    assert status == 503 and headers["Retry-After"] == "5"
    assert body["error"]["message"] == "deployment m1 has no ready replica; retry later"
    assert (await harness.get("/health"))[0] == 503
    harness.set_state("a", "ready")
    await eventually(lambda: harness.registry.deployments["m1"].pool.has_routable(), timeout=1)
    assert (await harness.post("/v1/completions", {"model": "m1", "prompt": "x"}))[0] == 200
    status, _, detail = await harness.get("/health")
    assert status == 200 and detail["deployments"]["m1"]["ready"] == 1 and detail["status"] == "ok"


async def test_a_deleted_deployment_is_no_longer_served(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a])
    harness.deployment("m2", [b])
    await harness.start(rescan_interval=30)
    shutil.rmtree(harness.store.root / "deployments" / "m1")
    await eventually(lambda: harness.registry.get("m1") is None, timeout=1)
    status, _, body = await harness.post("/v1/completions", {"model": "m1", "prompt": "x"})
    assert status == 404 and body["error"]["code"] == "model_not_found" and "m2" in body["error"]["message"]
    assert [m["id"] for m in (await harness.get("/v1/models"))[2]["data"]] == ["m2"]


async def test_a_corrupt_record_is_skipped_and_the_last_readable_one_is_kept(harness, caplog):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a, b])
    await harness.start(rescan_interval=0.2)
    path = harness.store.replica_path("m1", "a")
    path.write_text("{not json")
    (path.parent / "stray.json").write_text("[1, 2]")
    await asyncio.sleep(0.5)            # a few rescans and watcher reloads
    assert "skipped" in caplog.text
    served = set()
    for _ in range(4):
        status, headers, _ = await harness.post("/v1/completions", {"model": "m1", "prompt": "x", "max_tokens": 1})
        assert status == 200
        served.add(headers["X-Enova-Replica"])
    assert served == {"a", "b"}
    assert set(await harness.admin()) == {"a", "b"}


async def test_the_state_is_reread_by_the_rescan_even_without_the_watcher(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a], state="starting")
    await harness.start(rescan_interval=0.3)
    harness.gateway.state.tasks[0].cancel()    # the watcher's task (rescans included): restart rescans only
    rescans = asyncio.create_task(harness.gateway.state.watcher.rescan_loop())
    try:
        harness.set_state("a", "ready")
        took = await eventually(lambda: harness.registry.get("m1").pool.has_routable(), timeout=2)
        assert took < 1.0
    finally:
        rescans.cancel()


async def test_wait_drained_tells_an_absent_gateway_and_a_refused_token_apart(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start(tokens=("s3cret",))
    assert await asyncio.to_thread(wait_drained, harness.gateway.url, "a", 1) is DrainOutcome.REJECTED
    harness.set_state("a", "draining")
    assert await asyncio.to_thread(wait_drained, harness.gateway.url, "a", 2, "s3cret") is DrainOutcome.DRAINED
    url = harness.gateway.url
    await harness.gateway.stop()
    harness.gateway = None
    assert await asyncio.to_thread(wait_drained, url, "a", 5) is DrainOutcome.UNREACHABLE
