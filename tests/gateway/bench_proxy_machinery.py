"""Micro-benchmark behind the gateway's choice of machinery (see enova/gateway/__init__.py).

Not a test (pytest does not collect it). Run:  .venv/bin/python tests/gateway/bench_proxy_machinery.py

It starts an SSE upstream that stamps each event with time.perf_counter() (CLOCK_MONOTONIC,
comparable across processes on Linux), then streams through
  direct      no proxy
  aiohttp     aiohttp server + shared aiohttp ClientSession (asyncio loop)
  aiohttp+uv  the same on uvloop
  starlette   uvicorn (uvloop + httptools) + starlette StreamingResponse + shared httpx.AsyncClient
and reports, per path, the added latency per token (median and p99 of arrival - stamp, paced
streams, 1 and 16 at once, minus the direct path; the direct row shows absolute values) and the unpaced throughput in events per second with 1 and 16
concurrent streams. Each server runs in its own process.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import sys
import time

UP, P_AIO, P_AIOUV, P_STAR = 19801, 19802, 19803, 19804


def upstream() -> None:
    from aiohttp import web

    async def stream(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n, pace = body["n"], body["pace"]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            if pace:
                await asyncio.sleep(pace)
            await resp.write(b'data: {"id":"x","choices":[{"index":0,"text":" tok","finish_reason":null}],"t":%r}\n\n'
                             % time.perf_counter())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/completions", stream)
    web.run_app(app, host="127.0.0.1", port=UP, print=None, access_log=None)


def aio_proxy(port: int, uv: bool) -> None:
    if uv:
        import uvloop
        uvloop.install()
    import aiohttp
    from aiohttp import web

    async def on_startup(app):
        app["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4))

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with request.app["s"].post(f"http://127.0.0.1:{UP}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"}) as up:
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers["Content-Type"]})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.on_startup.append(on_startup)
    app.router.add_post("/v1/completions", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def star_proxy() -> None:
    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    client = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None, max_keepalive_connections=100))

    async def handle(request):
        body = await request.body()
        req = client.build_request("POST", f"http://127.0.0.1:{UP}/v1/completions", content=body,
                                   headers={"Content-Type": "application/json"})
        up = await client.send(req, stream=True)

        async def gen():
            try:
                async for chunk in up.aiter_raw():
                    yield chunk
            finally:
                await up.aclose()

        return StreamingResponse(gen(), status_code=up.status_code, media_type=up.headers["content-type"])

    app = Starlette(routes=[Route("/v1/completions", handle, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=P_STAR, log_level="warning", access_log=False)


async def one(session, port: int, n: int, pace: float) -> list[float]:
    lags = []
    async with session.post(f"http://127.0.0.1:{port}/v1/completions", json={"n": n, "pace": pace}) as r:
        buf = b""
        async for chunk in r.content.iter_any():
            now = time.perf_counter()
            buf += chunk
            *events, buf = buf.split(b"\n\n")
            for ev in events:
                if ev.startswith(b"data: {"):
                    lags.append(now - json.loads(ev[6:])["t"])
    return lags


async def measure(port: int) -> dict:
    import aiohttp
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await one(s, port, 50, 0)                       # warm up
        out = {}
        for conc in (1, 16):                            # paced: 200 tokens at 5 ms per stream
            lags = []
            for _ in range(3):
                for part in await asyncio.gather(*(one(s, port, 200, 0.005) for _ in range(conc))):
                    lags += part
            lags.sort()
            out[f"lag_p50_us_c{conc}"] = lags[len(lags) // 2] * 1e6
            out[f"lag_p99_us_c{conc}"] = lags[int(len(lags) * 0.99)] * 1e6
        for conc in (1, 16):
            t0 = time.perf_counter()
            await asyncio.gather(*(one(s, port, 2000, 0) for _ in range(conc)))
            out[f"ev_per_s_c{conc}"] = conc * 2000 / (time.perf_counter() - t0)
        return out


def main() -> None:
    procs = [mp.Process(target=upstream), mp.Process(target=aio_proxy, args=(P_AIO, False)),
             mp.Process(target=aio_proxy, args=(P_AIOUV, True)), mp.Process(target=star_proxy)]
    for p in procs:
        p.start()
    time.sleep(3)
    try:
        results = {name: asyncio.run(measure(port)) for name, port in
                   [("direct", UP), ("aiohttp", P_AIO), ("aiohttp+uv", P_AIOUV), ("starlette", P_STAR)]}
    finally:
        for p in procs:
            p.terminate()
    base = results["direct"]
    print("per-token lag (us, paced 5 ms) added over direct, at 1 and 16 concurrent streams; unpaced events/s")
    print(f"{'path':12} {'c1 p50':>7} {'c1 p99':>7} {'c16 p50':>8} {'c16 p99':>8} {'ev/s c1':>9} {'ev/s c16':>9}")
    for name, r in results.items():
        d = {k: r[k] - base[k] for k in r if k.startswith("lag")} if name != "direct" else r
        print(f"{name:12} {d['lag_p50_us_c1']:7.0f} {d['lag_p99_us_c1']:7.0f} {d['lag_p50_us_c16']:8.0f} "
              f"{d['lag_p99_us_c16']:8.0f} {r['ev_per_s_c1']:9.0f} {r['ev_per_s_c16']:9.0f}")


if __name__ == "__main__":
    sys.exit(main())
