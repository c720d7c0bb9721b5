"""Admission to a deployment's replicas: take a slot now, or wait in a bounded FIFO queue.

`acquire()` returns a replica with one more request in flight on it. When every routable
replica is at its limit the request waits, first come first served, for `release()` (or a
membership change, `dispatch()`) to hand it a slot; a full queue or a wait longer than the
timeout is a 429 with Retry-After. No routable replica at all is a 503 at once (a rolling
replace always keeps one ready, so waiting for a replica to start would only hide errors);
requests already queued when the last routable replica leaves get the same 503.
Runs on the gateway's event loop; called by `proxy` (acquire/release) and `registry`.
"""

from __future__ import annotations

import asyncio
from collections import deque

from . import errors
from .router import Pool, Replica


class Admission:
    def __init__(self, pool: Pool, *, queue_size: int, queue_timeout: float, retry_after_busy: int = 1,
                 retry_after_unavailable: int = 5):
        self.pool = pool
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.retry_after_busy = retry_after_busy
        self.retry_after_unavailable = retry_after_unavailable
        self._waiters: deque[asyncio.Future[Replica]] = deque()

    @property
    def depth(self) -> int:
        return len(self._waiters)

    def try_acquire(self, exclude: tuple[str, ...] = ()) -> Replica | None:
        """A slot at once, or None. Does not look at the queue (used for the one retry)."""
        replica = self.pool.pick(exclude)
        if replica is not None:
            replica.in_flight += 1
        return replica

    async def acquire(self) -> Replica:
        """A replica with a slot taken for this request. Raises GatewayError 503 (no routable
        replica) or 429 (queue full, or no slot within the timeout). Cancellation-safe."""
        if not self._waiters:
            replica = self.try_acquire()
            if replica is not None:
                return replica
        if not self.pool.has_routable():
            raise errors.no_ready_replica(self.pool.name, self.retry_after_unavailable)
        if len(self._waiters) >= self.queue_size:
            raise errors.queue_full(self.pool.name, self.queue_size, self.retry_after_busy)
        waiter: asyncio.Future[Replica] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            done, _ = await asyncio.wait((waiter,), timeout=self.queue_timeout)
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        if not done:
            self._abandon(waiter)
            raise errors.queue_timeout(self.pool.name, self.queue_timeout, self.retry_after_busy)
        return waiter.result()

    def _abandon(self, waiter: asyncio.Future[Replica]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.release(waiter.result())       # handed a slot just as it gave up: give it back
        else:
            waiter.cancel()

    def release(self, replica: Replica) -> None:
        """The request on `replica` finished; its slot goes to the head of the queue."""
        replica.in_flight -= 1
        if replica.gone and replica.in_flight == 0:
            self.pool.collect()
        self.dispatch()

    def dispatch(self) -> None:
        """Hand free slots to waiting requests in order; fail them all if no replica is routable."""
        while self._waiters:
            replica = self.pool.pick()
            if replica is None:
                break
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            replica.in_flight += 1
            waiter.set_result(replica)
        if self._waiters and not self.pool.has_routable():
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(errors.no_ready_replica(self.pool.name, self.retry_after_unavailable))
