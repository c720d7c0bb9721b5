"""The web UI's API against a real gateway over fake engines: models, a streamed answer relayed
as it is written, Stop reaching the engine, and every refusal turned into plain words."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from enova.errors import UsageError
from enova.webui.config import WebUIConfig
from enova.webui.server import WebUI

from .conftest import FakeEngine, chat, eventually, free_port

pytestmark = pytest.mark.anyio


async def _gateway(harness, *, pace: float = 0.01, state: str = "ready", **config):
    """A real gateway (`config`: GatewayConfig fields) over one fake engine, deployment smollm2."""
    engine = await harness.engine("e1", pace=pace)
    harness.deployment("smollm2", [engine], state=state, max_num_seqs=config.pop("max_num_seqs", None))
    gateway = await harness.start(**config)
    return gateway, engine


async def test_models_are_listed_from_the_gateway(harness, make_ui):
    gateway, _ = await _gateway(harness)
    ui = await make_ui(gateway.port)
    status, _, body = await ui.get("/api/models")
    assert status == 200 and body == {"models": ["smollm2"]}


async def test_a_chat_answer_is_relayed_piece_by_piece_as_the_engine_writes_it(harness, make_ui):
    gateway, engine = await _gateway(harness, pace=0.15)
    ui = await make_ui(gateway.port)
    body = chat(temperature=0.3, top_p=0.9, max_tokens=6,
                messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    arrivals: list[tuple[float, str]] = []
    began = time.monotonic()
    async with ui.client.post("/api/chat", json=body) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["X-Enova-Deployment"] == "smollm2"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        async for line in r.content:
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic() - began, line[6:].decode().strip()))
    assert arrivals[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in arrivals[:-1]]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert text == " t0 t1 t2 t3 t4 t5"
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    # streamed, not buffered: the first token arrived long before the last (6 tokens, 0.15 s apart)
    first = next(t for t, d in arrivals if '"content":" t0"' in d)
    last = next(t for t, d in arrivals if '"content":" t5"' in d)
    assert last - first > 0.5, arrivals
    sent = engine.requests[-1]
    assert sent["messages"] == body["messages"]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["stream"]) == (0.3, 0.9, 6, True)


async def test_closing_the_browser_request_cancels_the_engine_request(harness, make_ui):
    gateway, engine = await _gateway(harness, pace=0.05)
    ui = await make_ui(gateway.port)
    async with ui.client.post("/api/chat", json=chat(max_tokens=2000)) as r:
        assert r.status == 200
        seen = 0
        async for line in r.content:
            seen += line.startswith(b"data: ")
            if seen >= 3:
                break
        assert engine.in_flight == 1
        r.close()                           # what the page's Stop does: abort the fetch
    await eventually(lambda: engine.in_flight == 0 and engine.disconnects == 1, timeout=3)
    assert engine.completed == 0
    metrics = await harness.metrics()
    in_flight = sum(v for (name, _), v in metrics.items() if name == "enova_gateway_requests_in_flight")
    assert in_flight == 0


async def test_a_gateway_that_is_not_listening_is_reported_as_not_answering(make_ui):
    port = free_port()
    ui = await make_ui(port)
    for status, _, body in (await ui.get("/api/models"), await ui.post("/api/chat", chat())):
        assert status == 502
        assert body["error"]["kind"] == "unreachable"
        assert body["error"]["message"] == (f"The LLM service at 127.0.0.1:{port} is not answering — is it "
                                            "running? Check with `enova status`.")


async def test_no_ready_replica_is_503_with_the_gateways_retry_after(harness, make_ui):
    gateway, _ = await _gateway(harness, state="starting", retry_after_unavailable=7)
    ui = await make_ui(gateway.port)
    status, headers, body = await ui.post("/api/chat", chat())
    assert status == 503 and headers["Retry-After"] == "7"
    assert body["error"]["kind"] == "unavailable" and body["error"]["retry_after"] == 7
    assert "retry in 7 s" in body["error"]["message"]
    assert "no ready replica" in body["error"]["detail"]


async def test_a_full_queue_is_429_busy_with_the_gateways_retry_after(harness, make_ui):
    gateway, engine = await _gateway(harness, pace=0.05, max_num_seqs=1, queue_size=0, retry_after_busy=3)
    ui = await make_ui(gateway.port)
    first = asyncio.create_task(ui.post("/api/chat", chat(max_tokens=40)))
    await eventually(lambda: engine.in_flight == 1)
    status, headers, body = await ui.post("/api/chat", chat())
    assert status == 429 and headers["Retry-After"] == "3"
    assert body["error"] == {"kind": "busy", "message": "The LLM service is busy; retry in 3 s.", "retry_after": 3,
                             "detail": body["error"]["detail"]}
    assert "queue" in body["error"]["detail"]
    assert (await first)[0] == 200


async def test_a_missing_token_is_401_telling_where_to_set_it(harness, make_ui):
    gateway, _ = await _gateway(harness, tokens=("s3cret",))
    ui = await make_ui(gateway.port)
    for status, _, body in (await ui.get("/api/models"), await ui.post("/api/chat", chat())):
        assert status == 401 and body["error"]["kind"] == "unauthorized"
        assert "refused the token" in body["error"]["message"] and "--token-file" in body["error"]["message"]
        assert "missing bearer token" in body["error"]["detail"]


async def test_a_token_typed_in_the_page_is_forwarded(harness, make_ui):
    gateway, _ = await _gateway(harness, tokens=("s3cret",))
    ui = await make_ui(gateway.port)
    assert (await ui.get("/api/models", headers={"Authorization": "Bearer s3cret"}))[0] == 200
    assert (await ui.post("/api/chat", chat(max_tokens=2), headers={"Authorization": "Bearer s3cret"}))[0] == 200
    status, _, body = await ui.get("/api/models", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "invalid bearer token" in body["error"]["detail"]


async def test_the_token_file_is_sent_and_reread_when_it_changes(harness, make_ui, tmp_path):
    gateway, _ = await _gateway(harness, tokens=("first", "second"))
    token_file = tmp_path / "token"
    token_file.write_text("# the gateway's token\nfirst\n")
    ui = await make_ui(gateway.port, token_file=token_file)
    assert (await ui.get("/api/models"))[0] == 200
    assert (await ui.get("/api/info"))[2]["token_file"] is True
    token_file.write_text("third\n")            # a token the gateway does not know: proves the file is re-read
    assert (await ui.get("/api/models"))[0] == 401
    token_file.write_text("second\n")
    assert (await ui.post("/api/chat", chat(max_tokens=2)))[0] == 200
    token_file.write_text("")                   # emptied by mistake: the last good token is kept
    assert (await ui.get("/api/models"))[0] == 200
    # a token typed in the page wins over the file
    assert (await ui.get("/api/models", headers={"Authorization": "Bearer nope"}))[0] == 401


def test_a_token_file_that_holds_no_token_is_refused_at_start(tmp_path):
    empty = tmp_path / "token"
    empty.write_text("# nothing yet\n")
    with pytest.raises(UsageError, match="holds no token"):
        WebUI(WebUIConfig(token_file=empty, port=0))
    with pytest.raises(UsageError, match="token_file .*missing"):
        WebUI(WebUIConfig(token_file=tmp_path / "missing", port=0))


async def test_a_stream_the_gateway_breaks_ends_with_an_error_event(make_ui):
    # the web UI pointed straight at an engine that cuts its stream after two tokens, as a gateway dying mid-answer would
    engine = await FakeEngine("dying", tokens=10, pace=0.01).start()
    engine.mode = "break"
    try:
        ui = await make_ui(engine.port)
        async with ui.client.post("/api/chat", json=chat(max_tokens=10)) as r:
            assert r.status == 200
            events = [line[6:].decode().strip() async for line in r.content if line.startswith(b"data: ")]
    finally:
        await engine.stop()
    error = json.loads(events[-1])["error"]
    assert error["kind"] == "unreachable" and f"127.0.0.1:{engine.port} is not answering" in error["message"]
    assert sum('"content":" t' in e for e in events) == 2


async def test_the_gateways_own_refusal_reaches_the_page_in_its_words(harness, make_ui):
    gateway, _ = await _gateway(harness)
    ui = await make_ui(gateway.port)
    status, _, body = await ui.post("/api/chat", chat(model="nope"))
    assert status == 404 and body["error"]["kind"] == "invalid"
    assert body["error"]["message"].startswith("the model `nope` does not exist; served models: smollm2")


@pytest.mark.parametrize("body, field", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    (chat(model=""), "model"),
    ({"model": "smollm2", "messages": []}, "messages"),
    (chat(messages=[{"role": "bot", "content": "hi"}]), "messages.0.role"),
    (chat(messages=[{"role": "user"}]), "messages.0.content"),
    (chat(temperature=2.5), "temperature"),
    (chat(top_p=0), "top_p"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=1.5), "max_tokens"),
    (chat(max_tokens=100000), "max_tokens"),
    (chat(stream=False), "stream"),
])
async def test_a_bad_chat_body_is_422_naming_the_field(make_ui, body, field):
    ui = await make_ui(free_port())            # never reached: the body is checked first
    status, _, answer = await ui.post("/api/chat", body)
    assert status == 422, answer
    assert answer["error"]["kind"] == "invalid" and answer["error"]["message"].startswith(f"{field}: ")


async def test_a_body_that_is_not_json_or_too_large_is_a_4xx(make_ui):
    ui = await make_ui(free_port())
    status, _, answer = await ui.post("/api/chat", raw=b"{not json")
    assert status == 422 and answer["error"]["message"].startswith("body: Invalid JSON")
    status, _, answer = await ui.post("/api/chat", raw=b"hello", headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in answer["error"]["message"]
    huge = json.dumps(chat(text="x" * (2 << 20))).encode()
    status, _, answer = await ui.post("/api/chat", raw=huge)
    assert status == 413 and "larger than" in answer["error"]["message"]
