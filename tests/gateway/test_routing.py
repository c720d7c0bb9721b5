"""Routing through a real gateway to fake engines: by model, to the default deployment, and to
the replica with the fewest requests in flight."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import eventually

pytestmark = pytest.mark.anyio


async def test_requests_go_to_the_deployment_their_model_names(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a])
    harness.deployment("m2", [b])
    await harness.start()
    for model, engine in (("m1", "a"), ("m2", "b"), ("m1", "a")):
        status, headers, body = await harness.post("/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 2})
        assert status == 200, body
        assert headers["X-Enova-Replica"] == engine and headers["X-Enova-Deployment"] == model
        assert body["choices"][0]["text"] == " t0 t1"
    status, _, body = await harness.post("/v1/chat/completions",
                                         {"model": "m2", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and body["choices"][0]["message"]["content"] == " t0 t1 t2 t3"
    assert (len(a.requests), len(b.requests)) == (2, 2)


async def test_models_lists_every_deployment_by_name(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a])
    harness.deployment("m2", [b])
    await harness.start()
    status, _, body = await harness.get("/v1/models")
    assert status == 200
    assert [m["id"] for m in body["data"]] == ["m1", "m2"] and body["object"] == "list"


async def test_generate_goes_to_the_default_deployment_unless_a_header_or_query_names_another(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a])
    harness.deployment("m2", [b], serving={"default": True, "max_concurrency": None, "drain_timeout": 30})
    await harness.start()
    body = {"prompt": "San Francisco is a", "max_tokens": 3, "temperature": 0.9, "top_p": 0.9}
    status, headers, answer = await harness.post("/generate", body)
    assert status == 200, answer
    assert headers["X-Enova-Deployment"] == "m2"
    assert answer == {"text": ["San Francisco is a t0 t1 t2"], "generated_text": " t0 t1 t2", "model": "m2",
                      "finish_reason": "length",
                      "usage": {"prompt_tokens": 5, "total_tokens": 8, "completion_tokens": 3}}
    assert b.requests[-1] == {"model": "m2", "prompt": "San Francisco is a", "max_tokens": 3, "temperature": 0.9,
                              "top_p": 0.9}
    status, headers, _ = await harness.post("/generate", body, headers={"X-Enova-Deployment": "m1"})
    assert status == 200 and headers["X-Enova-Deployment"] == "m1"
    status, headers, _ = await harness.post("/generate?deployment=m1", body)
    assert status == 200 and headers["X-Enova-Deployment"] == "m1"
    status, _, answer = await harness.post("/generate?deployment=nope", body)
    assert status == 404 and answer["error"]["param"] == "deployment"


async def test_generate_without_a_default_among_several_deployments_is_a_400_that_says_how_to_choose(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    harness.deployment("m1", [a])
    harness.deployment("m2", [b])
    await harness.start()
    status, _, answer = await harness.post("/generate", {"prompt": "x"})
    assert status == 400
    assert "X-Enova-Deployment" in answer["error"]["message"] and "m1, m2" in answer["error"]["message"]


async def test_generate_streams_ndjson_with_text_so_far_and_a_last_line_with_usage(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start()
    got = await harness.stream("/generate", {"prompt": "P", "max_tokens": 3, "stream": True}, ndjson=True)
    assert got.status == 200 and got.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [__import__("json").loads(x) for x in got.events]
    assert lines[:3] == [{"text": ["P t0"], "delta": " t0"}, {"text": ["P t0 t1"], "delta": " t1"},
                         {"text": ["P t0 t1 t2"], "delta": " t2"}]
    assert lines[3]["finish_reason"] == "length" and lines[3]["usage"]["completion_tokens"] == 3
    assert lines[3]["generated_text"] == " t0 t1 t2" and lines[3]["text"] == ["P t0 t1 t2"]
    assert a.requests[-1]["stream_options"] == {"include_usage": True}


async def test_openai_streams_pass_through_and_the_usage_chunk_only_reaches_clients_that_asked(harness):
    a = await harness.engine("a")
    harness.deployment("m1", [a])
    await harness.start()
    plain = await harness.stream("/v1/completions", {"model": "m1", "prompt": "x", "max_tokens": 3, "stream": True})
    assert plain.done and plain.text() == " t0 t1 t2"
    assert not any('"usage"' in e for e in plain.events)
    assert a.requests[-1]["stream_options"] == {"include_usage": True}     # asked on the client's behalf
    asked = await harness.stream("/v1/chat/completions", {
        "model": "m1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "stream": True,
        "stream_options": {"include_usage": True}})
    assert asked.done and asked.text() == " t0 t1"
    assert '"usage"' in asked.events[-2]
    assert asked.headers["Content-Type"].startswith("text/event-stream")


async def test_the_replica_with_fewest_requests_in_flight_gets_the_next_one(harness):
    a, b = await harness.engine("a"), await harness.engine("b")
    a.mode = b.mode = "hang"
    harness.deployment("m1", [a, b])
    await harness.start()
    body = {"model": "m1", "prompt": "x"}
    hanging = [asyncio.create_task(harness.post("/v1/completions", body)) for _ in range(3)]
    await eventually(lambda: a.in_flight + b.in_flight == 3)
    assert sorted([a.in_flight, b.in_flight]) == [1, 2]
    lighter = a if a.in_flight == 1 else b
    lighter.mode = "ok"
    status, headers, _ = await harness.post("/v1/completions", {**body, "max_tokens": 1})
    assert status == 200 and headers["X-Enova-Replica"] == lighter.name
    for t in hanging:
        t.cancel()
    await asyncio.gather(*hanging, return_exceptions=True)


async def test_sequential_requests_alternate_between_idle_replicas(harness):
    engines = [await harness.engine(n) for n in ("a", "b", "c")]
    harness.deployment("m1", engines)
    await harness.start()
    served = []
    for _ in range(6):
        status, headers, _ = await harness.post("/v1/completions", {"model": "m1", "prompt": "x", "max_tokens": 1})
        assert status == 200
        served.append(headers["X-Enova-Replica"])
    assert served == ["a", "b", "c", "a", "b", "c"]


async def test_concurrent_streams_spread_evenly_over_replicas(harness):
    a, b = await harness.engine("a", pace=0.02), await harness.engine("b", pace=0.02)
    harness.deployment("m1", [a, b])
    await harness.start()
    results = await asyncio.gather(*(harness.stream("/v1/completions", {
        "model": "m1", "prompt": "x", "max_tokens": 10, "stream": True}) for _ in range(8)))
    assert all(r.done for r in results)
    assert (len(a.requests), len(b.requests)) == (4, 4)
    assert a.max_in_flight == b.max_in_flight == 4
