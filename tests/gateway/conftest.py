"""A real gateway in front of fake vLLM-compatible engines, all on the test's event loop.

`FakeEngine` is a real aiohttp HTTP server speaking the slice of vLLM's OpenAI API the gateway
uses (/v1/completions and /v1/chat/completions, streamed as vLLM streams them, with
`stream_options.include_usage`; /health). It streams `max_tokens` tokens (" t0", " t1", ...)
at a fixed pace, counts requests and what is in flight, and can be told to refuse
connections, answer 500, hang, reset the connection before answering, or break a stream after
two tokens. It records every client that went away before its answer was complete.

`Harness` writes deployment and replica records the way `enova apply` does (through
StateStore), starts the gateway on a free port, and offers the client-side helpers tests use.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from enova.gateway.config import GatewayConfig
from enova.gateway.server import Gateway
from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore, record_from_dict


@pytest.fixture
def anyio_backend():
    return "asyncio"


class FakeEngine:
    """modes: ok | error500 | hang | reset (close before answering) | break (cut a stream after 2 tokens)."""

    def __init__(self, name: str, *, tokens: int = 4, pace: float = 0.01):
        self.name = name
        self.tokens = tokens
        self.pace = pace
        self.mode = "ok"
        self.healthy = True
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.completed = 0
        self.disconnects = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # lifecycle
    async def start(self) -> "FakeEngine":
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.accept()
        return self

    async def accept(self) -> None:
        """Listen (again, on the same port)."""
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        self.port = self._runner.addresses[-1][1]

    async def refuse(self) -> None:
        """Stop listening: connections are refused until `accept`."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # handlers
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    def _chunk(self, chat: bool, i: int | None, n: int, model: str) -> bytes:
        if chat:
            delta = {"role": "assistant", "content": ""} if i is None else {"content": f" t{i}"}
            choice = {"index": 0, "delta": delta, "logprobs": None,
                      "finish_reason": "length" if i == n - 1 else None}
            obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [choice]}
        else:
            choice = {"index": 0, "text": f" t{i}", "logprobs": None,
                      "finish_reason": "length" if i == n - 1 else None}
            obj = {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model, "choices": [choice]}
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        finished = False
        try:
            if self.mode == "error500":
                finished = True
                return web.json_response({"error": {"message": "engine exploded", "type": "InternalServerError",
                                                    "param": None, "code": 500}}, status=500)
            if self.mode == "reset":
                finished = True
                request.transport.close()
                raise asyncio.CancelledError
            if self.mode == "hang":
                await asyncio.sleep(3600)
            n = body.get("max_tokens") or self.tokens
            model = body.get("model", "")
            prompt_tokens = len(json.dumps(body.get("messages")) if chat else str(body.get("prompt", ""))) // 4 + 1
            usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + n, "completion_tokens": n}
            if not body.get("stream"):
                for _ in range(n):
                    await asyncio.sleep(self.pace)
                text = "".join(f" t{i}" for i in range(n))
                choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                          if chat else {"index": 0, "text": text, "finish_reason": "length"})
                finished = True
                self.completed += 1
                return web.json_response({"id": "fake", "object": "chat.completion" if chat else "text_completion",
                                          "model": model, "choices": [choice], "usage": usage},
                                         headers={"X-Fake-Engine": self.name})
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "X-Fake-Engine": self.name})
            await resp.prepare(request)
            if chat:
                await resp.write(self._chunk(True, None, n, model))
            for i in range(n):
                await asyncio.sleep(self.pace)
                if self.mode == "break" and i == 2:
                    finished = True
                    request.transport.close()
                    raise asyncio.CancelledError
                await resp.write(self._chunk(chat, i, n, model))
            if (body.get("stream_options") or {}).get("include_usage"):
                obj = {"id": "fake", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
                       "model": model, "choices": [], "usage": usage}
                await resp.write(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            finished = True
            self.completed += 1
            return resp
        except (asyncio.CancelledError, ConnectionResetError):
            if not finished:
                self.disconnects += 1
            raise
        finally:
            self.in_flight -= 1


@dataclass
class Streamed:
    status: int
    headers: dict[str, str]
    events: list[str]          # SSE `data:` payloads, or NDJSON lines

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "[DONE]"

    def text(self) -> str:
        out = ""
        for e in self.events:
            if e == "[DONE]":
                continue
            for c in json.loads(e).get("choices", []):
                out += c.get("text") or (c.get("delta") or {}).get("content") or ""
        return out


class Harness:
    def __init__(self, root: Path):
        self.root = root
        self.store = StateStore(root / "state")
        self.engines: list[FakeEngine] = []
        self.gateway: Gateway | None = None
        self.client: aiohttp.ClientSession | None = None
        self.records: dict[str, ReplicaRecord] = {}

    # fakes and records
    async def engine(self, name: str, **kw) -> FakeEngine:
        engine = await FakeEngine(name, **kw).start()
        self.engines.append(engine)
        return engine

    def deployment(self, name: str, engines: list[FakeEngine], *, serving: dict | None = None,
                   max_num_seqs: int | None = None, state: str = "ready") -> list[str]:
        """Record a deployment with one replica per engine (replica id = engine name)."""
        args = {"max_num_seqs": max_num_seqs} if max_num_seqs else {}
        config = {"engine": {"name": "vllm", "args": args, "env": {}}, "model": "fake"}
        self.store.write_deployment(DeploymentRecord(name=name, replicas=len(engines), config_hash="c0ffee",
                                                     config=config, applied_at=0.0, serving=serving or {}))
        for e in engines:
            # through record_from_dict: the endpoint fields only, whatever process fields the record has
            rec = record_from_dict(ReplicaRecord, {
                "id": e.name, "deployment": name, "host": "127.0.0.1", "port": e.port, "config_hash": "c0ffee",
                "config": config, "argv": [], "log": "", "state": state, "pid": 0, "create_time": 0.0})
            self.records[e.name] = rec
            self.store.write_replica(rec)
        return [e.name for e in engines]

    def set_state(self, replica_id: str, state: str) -> None:
        rec = self.records[replica_id]
        rec.state = state
        self.store.write_replica(rec)

    def remove(self, replica_id: str) -> None:
        rec = self.records.pop(replica_id)
        self.store.remove_replica(rec.deployment, rec.id)

    async def start(self, **config: Any) -> Gateway:
        cfg = GatewayConfig(state_dir=self.store.root, port=0, **{"rescan_interval": 1.0, "probe_interval": 0.3,
                                                                  "shutdown_grace": 2.0, **config})
        self.gateway = Gateway(cfg)
        await self.gateway.start()
        self.client = aiohttp.ClientSession(base_url=self.gateway.url)
        return self.gateway

    @property
    def registry(self):
        assert self.gateway is not None
        return self.gateway.state.registry

    # client helpers
    def _headers(self, token: str | None, headers: dict | None) -> dict:
        return {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}

    async def post(self, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = None,
                   headers: dict | None = None) -> tuple[int, dict[str, str], Any]:
        assert self.client is not None
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.client.post(path, data=data, headers=self._headers(token, headers)) as r:
            payload = await r.read()
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = payload.decode()
            return r.status, dict(r.headers), parsed

    async def get(self, path: str, token: str | None = None) -> tuple[int, dict[str, str], Any]:
        assert self.client is not None
        async with self.client.get(path, headers=self._headers(token, None)) as r:
            payload = await r.read()
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = payload.decode()
            return r.status, dict(r.headers), parsed

    async def stream(self, path: str, body: dict, *, ndjson: bool = False,
                     on_event: Callable[[int], Any] | None = None) -> Streamed:
        """POST and read the whole stream; `on_event(i)` (may be async) after each event."""
        assert self.client is not None
        events: list[str] = []
        async with self.client.post(path, json=body) as r:
            async for line in r.content:
                line = line.decode().rstrip("\n")
                if ndjson:
                    if line:
                        events.append(line)
                elif line.startswith("data: "):
                    events.append(line[6:])
                else:
                    continue
                if on_event is not None:
                    result = on_event(len(events))
                    if asyncio.iscoroutine(result):
                        await result
            return Streamed(r.status, dict(r.headers), events)

    async def admin(self) -> dict[str, dict]:
        status, _, body = await self.get("/admin/v1/replicas")
        assert status == 200, body
        return {r["id"]: r for r in body["replicas"]}

    async def metrics(self) -> dict[tuple[str, tuple], float]:
        """{(sample name, sorted label items): value} from /metrics, parsed by prometheus-client."""
        status, _, text = await self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.gateway is not None:
            await self.gateway.stop()
        for e in self.engines:
            await e.stop()


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> float:
    """Wait until `predicate()` (sync or async) is truthy; return the seconds it took."""
    began = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def sample(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def harness(tmp_path: Path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        await h.close()

