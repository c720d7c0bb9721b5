"""The gateway's endpoint source seam: any source of endpoint views drives routing, and the
state-directory source reads endpoints only (no process fields)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from enova.gateway.config import GatewayConfig
from enova.gateway.membership import DeploymentView, ReplicaView, Snapshot
from enova.gateway.server import Gateway
from enova.gateway.source import StateDirectorySource
from enova.observe.state import StateStore

from .conftest import Harness, eventually

pytestmark = pytest.mark.anyio


class ListSource:
    """An endpoint source kept in memory: `set` replaces the endpoints and wakes the watcher."""

    def __init__(self):
        self.snapshot = Snapshot()
        self._changed = asyncio.Event()

    def set(self, replicas: list[ReplicaView]) -> None:
        self.snapshot = Snapshot({"m1": DeploymentView("m1", True, None, tuple(replicas))})
        self._changed.set()

    def read(self, previous):
        return self.snapshot

    async def changes(self):
        while True:
            await self._changed.wait()
            self._changed.clear()
            yield None


async def test_a_source_other_than_the_state_directory_drives_routing(harness: Harness, tmp_path):
    a, b = await harness.engine("a"), await harness.engine("b")
    source = ListSource()
    source.set([ReplicaView("a", "m1", "127.0.0.1", a.port, "ready", 8)])
    gateway = Gateway(GatewayConfig(state_dir=tmp_path / "unused", port=0, rescan_interval=60), source=source)
    await gateway.start()
    try:

        async with aiohttp.ClientSession(base_url=gateway.url) as client:
            async def served_by() -> str:
                async with client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}) as r:
                    assert r.status == 200
                    return r.headers["X-Enova-Replica"]
            assert await served_by() == "a"
            source.set([ReplicaView("b", "m1", "127.0.0.1", b.port, "ready", 8)])
            await eventually(lambda: "b" in gateway.state.registry.get("m1").pool.replicas, timeout=2)
            assert await served_by() == "b"
    finally:
        await gateway.stop()


def test_a_replica_record_without_process_fields_is_read_as_an_endpoint(tmp_path):
    source = StateDirectorySource(StateStore(tmp_path))
    path = source.store.replica_path("m1", "m1-a")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"id": "m1-a", "deployment": "m1", "host": "::1", "port": 9001, "state": "ready",
                                "runtime": "docker", "handle": {"container": "abc"}, "config": {}}))
    snap = source.read(None)
    assert snap.problems == ()
    assert snap.deployments["m1"].replicas == (ReplicaView("m1-a", "m1", "::1", 9001, "ready", 256),)
