"""An aiohttp application bound to one address, and the wait for a stop: what the gateway and
the web UI share. Handler cancellation is on, so a client that leaves cancels its handler (and
with it any upstream request the handler holds)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from aiohttp import web

from enova.observe.ports import connect_url


class Site:
    """`app` served on `host:port` (port 0: one the OS picks). `start` raises OSError when the
    address cannot be bound, with nothing left listening."""

    def __init__(self, app: web.Application, host: str, port: int, shutdown_timeout: float):
        self.app = app
        self.host = host
        self.requested_port = port
        self.shutdown_timeout = shutdown_timeout
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None,
                                    shutdown_timeout=self.shutdown_timeout)
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, self.host, self.requested_port).start()
        except OSError:
            await self.runner.cleanup()
            self.runner = None
            raise

    @property
    def port(self) -> int:
        assert self.runner is not None
        return self.runner.addresses[0][1]

    @property
    def url(self) -> str:
        """How a client on this host reaches it (a wildcard bind on loopback, IPv6 bracketed)."""
        return connect_url(self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to `shutdown_timeout`), close."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


async def wait_for_stop(stop: asyncio.Event, stop_event: threading.Event | None = None) -> None:
    """Until `stop` is set, or the thread-side `stop_event` (polled every 0.1 s) is."""
    if stop_event is None:
        await stop.wait()
        return
    while not stop.is_set() and not stop_event.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, extra: dict[int, Callable[[], object]] | None = None) -> Iterator[None]:
    """While inside: SIGTERM and SIGINT set `stop`, and each signal in `extra` calls its handler
    (the gateway's SIGHUP reload). Only on the main thread, where asyncio can take signals;
    elsewhere (a server run in a thread by tests or pilot) nothing is installed."""
    loop = asyncio.get_running_loop()
    installed = []
    if threading.current_thread() is threading.main_thread():
        for sig, handler in {signal.SIGTERM: stop.set, signal.SIGINT: stop.set, **(extra or {})}.items():
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
