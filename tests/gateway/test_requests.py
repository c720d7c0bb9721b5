"""Bad input, token auth, and clients that go away: each answered as OpenAI clients expect."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from .conftest import eventually, sample

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("method, path, body, status, param, says", [
    ("POST", "/v1/completions", b"{not json", 400, None, "not valid JSON"),
    ("POST", "/v1/completions", b"[1, 2]", 400, None, "must be a JSON object"),
    ("POST", "/v1/completions", b'{"model": "m1"}', 400, "prompt", "`prompt` is required"),
    ("POST", "/v1/chat/completions", b'{"model": "m1"}', 400, "messages", "`messages` is required"),
    ("POST", "/v1/chat/completions", b'{"model": "m1", "messages": "hi"}', 400, "messages", "non-empty list"),
    ("POST", "/v1/completions", b'{"model": "nope", "prompt": "x"}', 404, "model", "`nope` does not exist"),
    ("POST", "/v1/completions", b'{"model": 7, "prompt": "x"}', 400, "model", "non-empty string"),
    ("POST", "/generate", b'{"prompt": "x", "maxtokens": 5}', 400, "maxtokens", "unknown field 'maxtokens'"),
    ("POST", "/generate", b'{"max_tokens": 5}', 400, "prompt", "`prompt` is required"),
    ("POST", "/generate", b'{"prompt": ["x"]}', 400, "prompt", "must be a string"),
    ("POST", "/generate", b"", 400, None, "not valid JSON"),
    ("GET", "/v1/completions", None, 405, None, "method GET is not allowed on /v1/completions; use POST"),
    ("PUT", "/generate", b"{}", 405, None, "use POST"),
    ("POST", "/v1/models", b"{}", 405, None, "use GET"),
    ("GET", "/v2/nothing", None, 404, None, "no such endpoint: /v2/nothing"),
    ("POST", "/v1/completions", b'{"model": "m1", "prompt": "' + b"x" * 3000 + b'"}', 413, None,
     "larger than the gateway's limit of 2000 bytes"),
])
async def test_bad_requests_get_an_openai_error_that_names_the_problem(harness, method, path, body, status, param, says):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start(max_body_bytes=2000)
    async with harness.client.request(method, path, data=body) as r:
        answer = await r.json()
        assert r.status == status, answer
        assert r.headers["Content-Type"].startswith("application/json")
    error = answer["error"]
    assert says in error["message"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error" and error["code"]
    assert not a.requests


async def test_an_oversize_chunked_body_is_a_413(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start(max_body_bytes=1000)

    async def chunks():
        for _ in range(10):
            yield b"x" * 200

    async with harness.client.post("/v1/completions", data=chunks()) as r:
        assert r.status == 413
        assert "limit of 1000 bytes" in (await r.json())["error"]["message"]


async def test_engine_errors_pass_through_with_their_status_and_body(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start()
    a.mode = "error500"
    status, _, body = await harness.post("/v1/completions", {"model": "m1", "prompt": "x"})
    assert status == 500 and body["error"]["message"] == "engine exploded"
    status, _, body = await harness.post("/generate", {"prompt": "x"})
    assert status == 500 and body["error"]["message"] == "engine exploded"


async def test_with_a_token_every_request_but_health_and_metrics_needs_it(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start(tokens=("s3cret",))
    body = {"model": "m1", "prompt": "x", "max_tokens": 1}
    status, _, err = await harness.post("/v1/completions", body)
    assert status == 401 and "missing bearer token" in err["error"]["message"]
    status, _, err = await harness.post("/v1/completions", body, token="wrong")
    assert status == 401 and "invalid bearer token" in err["error"]["message"]
    assert err["error"]["code"] == "invalid_api_key"
    assert (await harness.post("/v1/completions", body, token="s3cret"))[0] == 200
    assert (await harness.post("/generate", {"prompt": "x"}, token="s3cret"))[0] == 200
    for path in ("/v1/models", "/admin/v1/replicas"):
        assert (await harness.get(path))[0] == 401
        assert (await harness.get(path, token="s3cret"))[0] == 200
    assert (await harness.get("/health"))[0] == 200
    assert (await harness.get("/metrics"))[0] == 200
    assert len(a.requests) == 2
    m = await harness.metrics()
    assert sample(m, "enova_gateway_rejections_total", deployment="unknown", reason="unauthorized") == 2


async def test_a_client_leaving_mid_stream_frees_its_slot_and_cancels_the_engine_request(harness):
    a = await harness.engine("a", pace=0.05)
    harness.deployment("m1", [a], serving={"max_concurrency": 1})
    await harness.start(queue_size=0)
    resp = await harness.client.post("/v1/completions", json={"model": "m1", "prompt": "x", "max_tokens": 200,
                                                              "stream": True})
    assert resp.status == 200
    await resp.content.readline()               # the first event arrived
    assert a.in_flight == 1
    resp.close()                                # the client goes away
    await eventually(lambda: a.disconnects == 1, timeout=2)
    assert a.in_flight == 0 and a.completed == 0
    await eventually(lambda: harness.registry.get("m1").pool.in_flight() == 0, timeout=2)
    assert (await harness.admin())["a"]["in_flight"] == 0
    # the slot is free again: with a limit of 1 and no queue, this would be a 429 otherwise
    assert (await harness.post("/v1/completions", {"model": "m1", "prompt": "x", "max_tokens": 1}))[0] == 200
    m = await harness.metrics()
    assert sample(m, "enova_gateway_replica_requests_processed_total", deployment="m1", replica="a", code="499") == 1


async def test_a_client_giving_up_on_a_slow_answer_cancels_the_engine_request(harness):
    a = await harness.engine("a")
    a.mode = "hang"
    harness.deployment("m1", [a])
    await harness.start()
    with pytest.raises(asyncio.TimeoutError):
        async with harness.client.post("/generate", json={"prompt": "x"},
                                       timeout=aiohttp.ClientTimeout(total=0.3)) as r:
            await r.read()
    await eventually(lambda: a.disconnects == 1, timeout=2)
    await eventually(lambda: harness.registry.get("m1").pool.in_flight() == 0, timeout=2)


async def test_a_client_leaving_the_queue_gives_up_its_place(harness):
    a = await harness.engine("a")
    a.mode = "hang"
    harness.deployment("m1", [a], serving={"max_concurrency": 1})
    await harness.start(queue_size=5, queue_timeout=30)
    holder = asyncio.create_task(harness.post("/v1/completions", {"model": "m1", "prompt": "x"}))
    await eventually(lambda: a.in_flight == 1)
    leaver = asyncio.create_task(harness.post("/v1/completions", {"model": "m1", "prompt": "x"}))
    await eventually(lambda: harness.registry.get("m1").admission.depth == 1)
    leaver.cancel()
    await asyncio.gather(leaver, return_exceptions=True)
    await eventually(lambda: harness.registry.get("m1").admission.depth == 0, timeout=2)
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)
    await eventually(lambda: harness.registry.get("m1").pool.in_flight() == 0, timeout=2)
    assert len(a.requests) == 1
