"""Re-admitting ejected replicas: probe each one's /health every `probe_interval` seconds and
tell the registry the outcome (200 re-admits it). Only ejected replicas are probed; the
gateway never probes healthy ones (failures of real requests eject them). Started by
`server` for the gateway's lifetime.
"""

from __future__ import annotations

import asyncio

import aiohttp

from .registry import Registry
from .router import Replica


class Prober:
    def __init__(self, registry: Registry, session: aiohttp.ClientSession, *, interval: float = 2.0,
                 timeout: float = 1.0):
        self.registry = registry
        self.session = session
        self.interval = interval
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def run(self) -> None:
        """Until cancelled: every quarter interval, probe the replicas whose probe is due."""
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                await asyncio.sleep(self.interval / 4)
                for replica in self.registry.due_probes():
                    task = asyncio.create_task(self.probe(replica))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()

    async def probe(self, replica: Replica) -> bool:
        try:
            async with self.session.get(replica.base_url + "/health", timeout=self.timeout) as resp:
                ok = resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            ok = False
        self.registry.probe_result(replica, ok)
        return ok
