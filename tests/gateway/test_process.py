"""`python -m enova.gateway` as `enova apply` runs it: options, token file, and a SIGTERM that
lets the streams in flight finish before the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time

import aiohttp
import pytest

from .conftest import Harness, eventually

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def spawn(state, *args):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "enova.gateway", "--state-dir", str(state), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    return proc


async def up(url: str, session: aiohttp.ClientSession, proc) -> None:
    async def answers():
        if proc.returncode is not None:
            raise AssertionError((await proc.stdout.read()).decode())
        try:
            async with session.get(url + "/health") as r:
                return r.status in (200, 503)
        except aiohttp.ClientConnectionError:
            return False
    await eventually(answers, timeout=15, interval=0.05)


async def test_sigterm_lets_in_flight_streams_finish_then_exits_0(harness: Harness, tmp_path):
    a = await harness.engine("a", pace=0.05)
    harness.deployment("m1", [a])
    port = free_port()
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    proc = await spawn(harness.store.root, "--port", str(port), "--token-file", str(token),
                       "--queue-size", "3", "--queue-timeout", "2", "--max-body-bytes", "5000")
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer t0ken"}
    try:
        async with aiohttp.ClientSession() as session:
            await up(url, session, proc)
            async with session.post(url + "/v1/completions", json={"model": "m1", "prompt": "x"}) as r:
                assert r.status == 401
            async with session.post(url + "/v1/completions", headers=auth,
                                    json={"model": "m1", "prompt": "x" * 6000}) as r:
                assert r.status == 413
            events = []
            async with session.post(url + "/v1/completions", headers=auth, json={
                    "model": "m1", "prompt": "x", "max_tokens": 30, "stream": True}) as r:
                assert r.status == 200
                began = time.monotonic()
                async for line in r.content:
                    if line.startswith(b"data: "):
                        events.append(line)
                        if len(events) == 3:
                            proc.send_signal(signal.SIGTERM)
                            await asyncio.sleep(0.3)
                            with pytest.raises(aiohttp.ClientConnectionError):
                                async with aiohttp.ClientSession() as fresh:
                                    await fresh.get(url + "/health")
            assert events[-1] == b"data: [DONE]\n" and len(events) == 31
            assert time.monotonic() - began > 1.0
        code = await asyncio.wait_for(proc.wait(), 10)
        output = (await proc.stdout.read()).decode()
        assert code == 0, output
        assert "gateway stopping: 1 request(s) in flight" in output and "gateway stopped" in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_port_in_use_or_a_missing_token_file_is_one_line_and_a_nonzero_exit(harness: Harness, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await spawn(harness.store.root, "--port", str(port))
        out = (await proc.stdout.read()).decode()
        assert await proc.wait() == 1
        assert f"error: gateway: cannot listen on 127.0.0.1:{port}" in out
    proc = await spawn(harness.store.root, "--token-file", str(tmp_path / "absent"))
    out = (await proc.stdout.read()).decode()
    assert await proc.wait() == 2
    assert "token_file" in out and "No such file" in out


async def test_run_gateway_serves_in_a_thread_until_its_stop_event_is_set(harness: Harness):
    import threading

    from enova.gateway import GatewayConfig, run_gateway

    a = await harness.engine("a")
    harness.deployment("m1", [a])
    port = free_port()
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "code", run_gateway(GatewayConfig(state_dir=harness.store.root, port=port), stop_event=stop)))
    thread.start()
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: _answers(session, f"http://127.0.0.1:{port}/health"), timeout=10)
            async with session.post(f"http://127.0.0.1:{port}/generate", json={"prompt": "x", "max_tokens": 2}) as r:
                assert r.status == 200 and (await r.json())["generated_text"] == " t0 t1"
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive() and result["code"] == 0


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as r:
            return r.status == 200
    except aiohttp.ClientConnectionError:
        return False
