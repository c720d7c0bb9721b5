"""Changing a running gateway process (enova.apply.gateway.GatewayConverger) under load:
settings checked before anything is touched, token rotation reloaded in place, a port change
handed over, and not one refused connection or failed request. Real gateway processes in
front of fake engines; the converger's blocking calls run in threads beside the load."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from enova.apply.gateway import GatewayConverger
from enova.plan.model import GATEWAY, Action, Change, DesiredGateway

from .conftest import Harness
from .test_process import free_port

pytestmark = pytest.mark.anyio


def settings(port: int, token_file: Path | None, **over) -> DesiredGateway:
    config = {"host": "127.0.0.1", "port": port, "token_file": str(token_file) if token_file else None,
              "max_body_bytes": 1 << 20, "queue_size": 100, "queue_timeout": 30.0, **over}
    return DesiredGateway(config=config, config_hash=f"h{sorted(config.items())!r}"[:40])


def change(action: str, **kw) -> Change:
    return Change(GATEWAY, Action(action), f"test {action}", 1, 1, kind=GATEWAY, **kw)


async def converge(conv: GatewayConverger, ch: Change, desired: DesiredGateway | None) -> str:
    problems = await asyncio.to_thread(conv.check, ch, desired)
    assert problems == []
    pending = await asyncio.to_thread(conv.begin, ch, desired)
    return await asyncio.to_thread(conv.finish, pending)


@dataclass
class Load:
    """Closed-loop clients: half on keep-alive connections, half on a new connection per
    request; streaming and not. Every non-2xx answer and every connection error is kept."""

    url: str
    token: str
    clients: int = 12
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stopped: bool = False

    async def worker(self, i: int) -> None:
        connector = aiohttp.TCPConnector(force_close=i % 2 == 1)
        async with aiohttp.ClientSession(connector=connector) as session:
            n = 0
            while not self.stopped:
                n += 1
                stream = (i + n) % 2 == 0
                body = {"model": "m1", "prompt": "x", "max_tokens": 5, "stream": stream}
                try:
                    async with session.post(self.url + "/v1/completions", json=body,
                                            headers={"Authorization": f"Bearer {self.token}"}) as r:
                        payload = await r.read()
                        if r.status != 200:
                            raise AssertionError(f"HTTP {r.status}: {payload[:120]!r}")
                        if stream and not payload.rstrip().endswith(b"data: [DONE]"):
                            raise AssertionError(f"stream cut: {payload[-80:]!r}")
                    self.ok += 1
                except Exception as exc:  # every failure is kept, with its reason
                    self.failures.append(f"client {i}: {type(exc).__name__}: {exc}")

    async def __aenter__(self) -> "Load":
        self.tasks = [asyncio.create_task(self.worker(i)) for i in range(self.clients)]
        await asyncio.sleep(0.5)
        return self

    async def __aexit__(self, *exc) -> None:
        self.stopped = True
        await asyncio.gather(*self.tasks)


async def status_of(url: str, token: str) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/v1/completions", json={"model": "m1", "prompt": "x", "max_tokens": 1},
                          headers={"Authorization": f"Bearer {token}"}) as r:
            return r.status


@pytest.fixture
async def converger(harness: Harness):
    conv = GatewayConverger(harness.store, start_timeout=20, stop_grace=10)
    yield conv
    record = harness.store.read_gateway()
    if record is not None:
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_a_bad_token_file_or_a_taken_port_is_reported_by_check_and_the_gateway_keeps_serving(
        harness: Harness, converger: GatewayConverger, tmp_path):
    harness.deployment("m1", [await harness.engine("a")])
    tokens = tmp_path / "tokens"
    tokens.write_text("old\n")
    port = free_port()
    await converge(converger, change("create", start=1), settings(port, tokens))
    url = f"http://127.0.0.1:{port}"
    pid = harness.store.read_gateway().pid

    (tmp_path / "empty").write_text("# no token yet\n\n")
    for bad in (tmp_path / "absent", tmp_path / "empty"):
        problems = converger.check(change("update"), settings(port, bad))
        assert len(problems) == 1 and str(bad) in problems[0], problems
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        other = taken.getsockname()[1]
        problems = converger.check(change("replace", start=1, stop=(GATEWAY,)), settings(other, tokens))
        assert problems == [f"port {other} on 127.0.0.1 is in use by another process "
                            "(set spec.port in the Gateway document)"]
    # its own address is not "taken"
    assert converger.check(change("update"), settings(port, tokens, queue_size=5)) == []
    assert await status_of(url, "old") == 200
    assert harness.store.read_gateway().pid == pid


async def test_a_bad_config_on_sighup_is_refused_and_the_running_settings_kept(
        harness: Harness, converger: GatewayConverger, tmp_path):
    harness.deployment("m1", [await harness.engine("a")])
    tokens = tmp_path / "tokens"
    tokens.write_text("old\n")
    port = free_port()
    await converge(converger, change("create", start=1), settings(port, tokens))
    url = f"http://127.0.0.1:{port}"
    tokens.write_text("# emptied behind enova's back\n")
    assert converger.check(change("noop"), settings(port, tokens)) != []
    record = harness.store.read_gateway()
    os.kill(record.pid, signal.SIGHUP)
    await asyncio.sleep(0.3)
    assert await status_of(url, "old") == 200
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/admin/v1/config", headers={"Authorization": "Bearer old"}) as r:
            body = await r.json()
    assert body["last_reload"]["ok"] is False and "holds no token" in body["last_reload"]["error"]
    assert body["tokens"] == 1


@pytest.mark.serial  # under a neighbour's load the gateway's own file watch can win the race with apply's check
async def test_token_rotation_reloads_in_place_under_load_with_no_failed_request(
        harness: Harness, converger: GatewayConverger, tmp_path):
    engines = [await harness.engine(n, pace=0.02) for n in ("a", "b")]
    harness.deployment("m1", engines)
    tokens = tmp_path / "tokens"
    tokens.write_text("old\n")
    port = free_port()
    await converge(converger, change("create", start=1), settings(port, tokens))
    url = f"http://127.0.0.1:{port}"
    pid = harness.store.read_gateway().pid

    async with Load(url, "old") as load:
        # 1. add the new token: the file edited in place, `enova apply` sees an unchanged plan (NOOP)
        tokens.write_text("# rotation in progress\nold\nnew\n")
        done = await converge(converger, change("noop"), settings(port, tokens))
        assert done.startswith("reloaded in place"), done
        assert await status_of(url, "new") == 200
        await asyncio.sleep(0.5)
        # 2. clients move to the new token
        load.token = "new"
        await asyncio.sleep(0.5)
        # 3. remove the old one (a new token file and a queue change: the plan's UPDATE)
        only_new = tmp_path / "tokens-2"
        only_new.write_text("new\n")
        desired = settings(port, only_new, queue_size=50)
        done = await converge(converger, change("update"), desired)
        assert done.startswith("reloaded in place"), done
        await asyncio.sleep(0.5)
    assert not load.failures, f"{len(load.failures)} failed of {load.ok + len(load.failures)}: {load.failures[:5]}"
    assert load.ok > 50
    assert await status_of(url, "old") == 401
    record = harness.store.read_gateway()
    assert record.pid == pid, "reloaded in place, not restarted"
    assert record.config == desired.config and record.config_hash == desired.config_hash
    print(f"token rotation: {load.ok} requests from {load.clients} clients, 0 failed")


async def test_a_port_change_hands_over_with_no_failed_request_and_the_old_port_closed(
        harness: Harness, converger: GatewayConverger, tmp_path):
    harness.deployment("m1", [await harness.engine(n, pace=0.05) for n in ("a", "b")])
    old_port, new_port = free_port(), free_port()
    await converge(converger, change("create", start=1), settings(old_port, None))
    old_url, new_url = f"http://127.0.0.1:{old_port}", f"http://127.0.0.1:{new_port}"
    old_pid = harness.store.read_gateway().pid

    async with Load(old_url, "-") as on_old:
        desired = settings(new_port, None)
        ch = change("replace", start=1, stop=(GATEWAY,))
        assert await asyncio.to_thread(converger.check, ch, desired) == []
        pending = await asyncio.to_thread(converger.begin, ch, desired)
        while True:                             # clients move once the new address answers
            try:
                await status_of(new_url, "-")
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        async with Load(new_url, "-") as on_new:
            on_old.stopped = True               # clients move; the old gateway finishes what it has
            done = await asyncio.to_thread(converger.finish, pending)
            assert done.startswith(f"handed over to 127.0.0.1:{new_port}"), done
            await asyncio.sleep(0.5)
    assert not on_old.failures, on_old.failures[:5]
    assert not on_new.failures, on_new.failures[:5]
    assert on_old.ok > 10 and on_new.ok > 10
    with pytest.raises(aiohttp.ClientConnectionError):
        await status_of(old_url, "-")
    record = harness.store.read_gateway()
    assert record.pid != old_pid and record.config["port"] == new_port
    assert not (harness.store.root / "gateway" / "retiring.json").exists()
    print(f"handover: {on_old.ok} requests on the old port, {on_new.ok} on the new, 0 failed")


async def test_a_token_file_edited_in_place_is_picked_up_without_apply_or_signal(
        harness: Harness, converger: GatewayConverger, tmp_path):
    """The token file's content is a secret outside the plan: editing it (to rotate) must reach the
    running gateway by itself, with no `enova apply` (whose plan would be unchanged) and no SIGHUP."""
    harness.deployment("m1", [await harness.engine("a", pace=0.01)])
    tokens = tmp_path / "tokens"
    tokens.write_text("old\n")
    port = free_port()
    await converge(converger, change("create", start=1), settings(port, tokens))
    url = f"http://127.0.0.1:{port}"
    pid = harness.store.read_gateway().pid
    async with Load(url, "old", clients=4) as load:
        tokens.write_text("old\nnew\n")
        for _ in range(100):
            if await status_of(url, "new") == 200:
                break
            await asyncio.sleep(0.1)
        assert await status_of(url, "new") == 200, "the added token was not picked up within 10 s"
        load.token = "new"
        await asyncio.sleep(0.3)
        tokens.write_text("new\n")
        for _ in range(100):
            if await status_of(url, "old") == 401:
                break
            await asyncio.sleep(0.1)
        tokens_bad = await status_of(url, "old")
        tokens.write_text("# nothing left\n")          # a bad edit keeps the running tokens
        await asyncio.sleep(2.5)
        assert await status_of(url, "new") == 200
    assert tokens_bad == 401
    assert not load.failures, load.failures[:5]
    assert harness.store.read_gateway().pid == pid
