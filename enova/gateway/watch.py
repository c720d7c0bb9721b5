"""Keeping the registry in step with the endpoint source.

Two triggers, one action: the source's change notifications (`EndpointSource.changes`), and a
timer that rescans every `rescan_interval` seconds as a safety net (a missed event, a watcher
that failed). Either way the whole snapshot is re-read (`EndpointSource.read`) and handed to
`Registry.apply`; reloads never overlap. Started by `server` for the gateway's lifetime;
`reload` is also called once before the gateway starts listening.
"""

from __future__ import annotations

import asyncio
import logging

from .registry import Registry
from .source import EndpointSource

log = logging.getLogger("enova.gateway")


class Watcher:
    def __init__(self, source: EndpointSource, registry: Registry, *, rescan_interval: float = 3.0):
        self.source = source
        self.registry = registry
        self.rescan_interval = rescan_interval
        self._lock = asyncio.Lock()

    async def reload(self) -> None:
        """Re-read every endpoint and apply it. Never raises for a bad entry (it is logged)."""
        async with self._lock:
            snapshot = await asyncio.to_thread(self.source.read, self.registry.snapshot)
            for change in self.registry.apply(snapshot):
                log.info("membership: %s", change)

    async def run(self) -> None:
        """Watch and rescan until cancelled."""
        await asyncio.gather(self.watch_loop(), self.rescan_loop())

    async def watch_loop(self) -> None:
        """Reload on every change the source reports; survives watcher failures."""
        while True:
            try:
                async for _ in self.source.changes():
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:        # the folder vanished, inotify limits: rescans carry on
                log.warning("watching %s failed (%s); retrying in %g s", self.source, exc, self.rescan_interval)
            await asyncio.sleep(self.rescan_interval)

    async def rescan_loop(self) -> None:
        """Reload every `rescan_interval` seconds."""
        while True:
            await asyncio.sleep(self.rescan_interval)
            try:
                await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rescanning %s failed", self.source)
