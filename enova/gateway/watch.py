"""Keeping the registry in step with the state directory.

Two triggers, one action: `watchfiles` reports a change under `deployments/` (records are
replaced by atomic renames, so a changed record is seen whole, typically within ~50 ms), and a
timer rescans every `rescan_interval` seconds as a safety net (a missed event, a watcher that
failed). Either way the whole directory is re-read (`membership.read_snapshot`) and handed to
`Registry.apply`; reloads never overlap. Started by `server` for the gateway's lifetime;
`reload` is also called once before the gateway starts listening.
"""

from __future__ import annotations

import asyncio
import logging

from watchfiles import Change, awatch

from enova.observe.state import StateStore

from .membership import read_snapshot
from .registry import Registry

log = logging.getLogger("enova.gateway")


def _records_only(change: Change, path: str) -> bool:
    return path.endswith(".json")       # temp files of atomic writes end in .tmp


class Watcher:
    def __init__(self, store: StateStore, registry: Registry, *, debounce_ms: int = 30,
                 rescan_interval: float = 3.0, default_limit: int = 256):
        self.store = store
        self.registry = registry
        self.debounce_ms = debounce_ms
        self.rescan_interval = rescan_interval
        self.default_limit = default_limit
        self._lock = asyncio.Lock()

    async def reload(self) -> None:
        """Re-read every record and apply it. Never raises for a bad record (it is logged)."""
        async with self._lock:
            snapshot = await asyncio.to_thread(read_snapshot, self.store, self.registry.snapshot,
                                               self.default_limit)
            for change in self.registry.apply(snapshot):
                log.info("membership: %s", change)

    async def run(self) -> None:
        """Watch and rescan until cancelled."""
        await asyncio.gather(self.watch_loop(), self.rescan_loop())

    async def watch_loop(self) -> None:
        """Reload on every change watchfiles reports under deployments/; survives watcher failures."""
        folder = self.store.root / "deployments"
        while True:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                async for _ in awatch(folder, watch_filter=_records_only, debounce=max(self.debounce_ms, 1),
                                      step=max(1, min(10, self.debounce_ms)), recursive=True):
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:        # the folder vanished, inotify limits: rescans carry on
                log.warning("watching %s failed (%s); retrying in %g s", folder, exc, self.rescan_interval)
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
                log.exception("rescanning %s failed", self.store.root)
