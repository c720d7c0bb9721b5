"""A fast OpenAI-compatible upstream for the runner's tests, in its own process (so that its work
never holds the test's GIL while the runner is due to send).

    .venv/bin/python tests/inject/upstream.py      # prints "port N" once listening

POST /v1/completions, /v1/chat/completions: `max_tokens` tokens (default 4), streamed as vLLM
streams them when `stream` is true (SSE; the usage chunk if `stream_options.include_usage`; then
[DONE]), else one JSON answer with its usage. POST /generate: the seed's API, NDJSON when
streamed (one line per token with `delta`, a last line with `generated_text`, `finish_reason`,
`usage`). A body's `fixture` object (not OpenAI's) changes the answer:
    delay: seconds before the first token (default 0)     pace: seconds between tokens (0)
    status: answer this HTTP status with an error body    cut: close the stream after this many tokens
    no_usage: true, leave the usage chunk out              error_event: true, an error event instead of [DONE]
GET /stats: {"arrivals": [[monotonic time, body index]], "max_in_flight", "in_flight", "headers"
(the last request's)}; POST /reset clears them. CLOCK_MONOTONIC is one clock for all processes
on a host, so arrival times compare with the runner's `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from aiohttp import web


class Upstream:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.arrivals: list[tuple[float, object]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.headers: dict[str, str] = {}

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"arrivals": self.arrivals, "max_in_flight": self.max_in_flight,
                                  "in_flight": self.in_flight, "headers": self.headers})

    async def do_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fixture", "object": "model"}]})

    async def answer(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        body = await request.json()
        self.arrivals.append((now, body.get("index")))
        self.headers = dict(request.headers)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, body)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, body: dict) -> web.StreamResponse:
        path = request.path
        chat, generate = path.endswith("chat/completions"), path == "/generate"
        fx = body.get("fixture") or {}
        n = body.get("max_tokens") or 4
        usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
        if fx.get("delay"):
            await asyncio.sleep(fx["delay"])
        if fx.get("status"):
            return web.json_response({"error": {"message": f"fixture says {fx['status']}", "code": fx["status"]}},
                                     status=fx["status"])
        pace = fx.get("pace") or 0
        if not body.get("stream"):
            await asyncio.sleep(pace * n)
            text = " tok" * n
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                      if chat else {"index": 0, "text": text, "finish_reason": "length"})
            if generate:
                return web.json_response({"text": [body.get("prompt", "") + text], "generated_text": text,
                                          "finish_reason": "length", "usage": usage})
            return web.json_response({"id": "x", "choices": [choice], "usage": None if fx.get("no_usage") else usage})
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson" if generate
                                           else "text/event-stream"})
        await resp.prepare(request)
        if chat:
            await resp.write(b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n')
        text = ""
        for i in range(n):
            if pace:
                await asyncio.sleep(pace)
            if fx.get("cut") is not None and i == fx["cut"]:
                request.transport.close()
                return resp
            finish = "length" if i == n - 1 else None
            if generate:
                text += " tok"
                await resp.write(json.dumps({"text": [text], "delta": " tok"}).encode() + b"\n")
            elif chat:
                await resp.write(b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": " tok"},
                                                                      "finish_reason": finish}]}).encode() + b"\n\n")
            else:
                await resp.write(b"data: " + json.dumps({"choices": [{"index": 0, "text": " tok",
                                                                      "finish_reason": finish}]}).encode() + b"\n\n")
        if generate:
            await resp.write(json.dumps({"text": [text], "delta": "", "generated_text": text, "finish_reason": "length",
                                         "usage": None if fx.get("no_usage") else usage}).encode() + b"\n")
        else:
            if fx.get("error_event"):
                await resp.write(b'data: {"error":{"message":"replica went away","code":"stream_broken"}}\n\n')
            elif (body.get("stream_options") or {}).get("include_usage") and not fx.get("no_usage"):
                await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


async def main() -> None:
    up = Upstream()
    app = web.Application()
    for path in ("/v1/completions", "/v1/chat/completions", "/generate"):
        app.router.add_post(path, up.answer)
    app.router.add_get("/stats", up.stats)
    app.router.add_post("/reset", up.do_reset)
    app.router.add_get("/v1/models", up.models)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    print(f"port {runner.addresses[0][1]}", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:          # a test run that dies takes its upstream with it
        await asyncio.sleep(0.5)


class Running:
    """The upstream as a child process, for tests: `with Running() as up: up.url, up.stats()`."""

    def __init__(self) -> None:
        import subprocess
        self.proc = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.proc.kill()
            raise RuntimeError(f"the test upstream did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        self._call("POST", "/v1/completions", {"prompt": "warm up", "stream": True})   # first-request costs, paid now
        self.reset()

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        import urllib.request
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, method=method, data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            text = r.read()
        return json.loads(text) if not body else {}

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    try:
        run(main())
    except KeyboardInterrupt:
        sys.exit(0)
