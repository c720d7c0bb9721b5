"""Admission to a deployment's replicas: take a slot now, or wait in a bounded FIFO queue.

`acquire()` returns a replica with one more request in flight on it. When every routable
replica is at its limit the request waits, first come first served, for `release()` (or a
membership change, `dispatch()`) to hand it a slot; a full queue or a wait longer than the
timeout is a 429 with Retry-After. No routable replica at all is a 503 at once (a rolling
replace always keeps one ready, so waiting for a replica to start would only hide errors);
requests already queued when the last routable replica leaves get the same 503.

Scale from zero (`hold_timeout` set, see `hold`): with no routable replica a request is held
instead, in the same queue and under the same bound (429 beyond it), for up to `hold_timeout`
seconds; the first held request of an episode calls `on_wake` (ask for a replica), repeated
every half timeout while requests are still held. When a replica becomes routable the held
requests take slots in arrival order like any queued request; one still waiting at its
deadline with no routable replica gets 503 (hold_timeout), with one routable but full 429.
Requests queued when the last replica leaves are held, not failed. Every held request ends
with one outcome, reported to `on_outcome`: served | timeout | disconnected | rejected.
Runs on the gateway's event loop; called by `proxy` (acquire/release) and `registry`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from . import errors
from .router import Pool, Replica

OUTCOMES = ("served", "timeout", "disconnected", "rejected")


class _Waiter:
    __slots__ = ("future", "deadline", "held", "was_held", "since")

    def __init__(self, future: asyncio.Future[Replica], since: float, deadline: float, held: bool):
        self.future = future
        self.since = since          # loop time it arrived
        self.deadline = deadline    # loop time it gives up
        self.held = held            # waiting for a replica to start (none routable)
        self.was_held = held        # held at some point: it ends with a hold outcome


class Admission:
    def __init__(self, pool: Pool, *, queue_size: int, queue_timeout: float, retry_after_busy: int = 1,
                 retry_after_unavailable: int = 5, hold_timeout: float | None = None,
                 on_wake: Callable[[], None] | None = None, on_outcome: Callable[[str], None] | None = None):
        self.pool = pool
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.retry_after_busy = retry_after_busy
        self.retry_after_unavailable = retry_after_unavailable
        self.hold_timeout = hold_timeout        # None: no scale from zero (503 at once)
        self.on_wake = on_wake
        self.on_outcome = on_outcome
        self._waiters: deque[_Waiter] = deque()
        self._rewake: asyncio.TimerHandle | None = None     # set while a hold episode lasts

    @property
    def depth(self) -> int:
        """Every waiting request, held or queued (what the queue bound counts)."""
        return len(self._waiters)

    @property
    def held(self) -> int:
        """Requests waiting for a replica to start."""
        return sum(1 for w in self._waiters if w.held)

    @property
    def queued(self) -> int:
        """Requests waiting for a slot on a routable replica."""
        return len(self._waiters) - self.held

    def try_acquire(self, exclude: tuple[str, ...] = ()) -> Replica | None:
        """A slot at once, or None. Does not look at the queue (used for the one retry)."""
        replica = self.pool.pick(exclude)
        if replica is not None:
            replica.in_flight += 1
        return replica

    async def acquire(self) -> Replica:
        """A replica with a slot taken for this request. Raises GatewayError 503 (no routable
        replica, or none within the hold timeout) or 429 (queue full, or no slot within the
        timeout). Cancellation-safe."""
        if not self._waiters:
            replica = self.try_acquire()
            if replica is not None:
                return replica
        hold = not self.pool.has_routable()
        if hold and self.hold_timeout is None:
            raise errors.no_ready_replica(self.pool.name, self.retry_after_unavailable)
        if len(self._waiters) >= self.queue_size:
            if hold:
                self._outcome("rejected")
            raise errors.queue_full(self.pool.name, self.queue_size, self.retry_after_busy)
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout = self.hold_timeout if hold and self.hold_timeout is not None else self.queue_timeout
        waiter = _Waiter(loop.create_future(), now, now + timeout, hold)
        self._waiters.append(waiter)
        if hold:
            self._held_changed()
        try:
            while not waiter.future.done():
                remaining = waiter.deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait((waiter.future,), timeout=remaining)   # a deadline may move later
        except asyncio.CancelledError:
            self._abandon(waiter, "disconnected")
            raise
        if not waiter.future.done():
            self._abandon(waiter, "timeout")
            waited = loop.time() - waiter.since
            if waiter.was_held and not self.pool.has_routable():
                raise errors.hold_timeout(self.pool.name, waited, self.retry_after_unavailable)
            raise errors.queue_timeout(self.pool.name, waited if waiter.was_held else self.queue_timeout,
                                       self.retry_after_busy)
        return waiter.future.result()

    def _abandon(self, waiter: _Waiter, outcome: str) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self.release(future.result())       # handed a slot just as it gave up: give it back
        else:
            future.cancel()
            if waiter.was_held:
                self._outcome(outcome)
        if waiter.held:
            self._held_changed()

    def release(self, replica: Replica) -> None:
        """The request on `replica` finished; its slot goes to the head of the queue."""
        replica.in_flight -= 1
        if replica.gone and replica.in_flight == 0:
            self.pool.collect()
        self.dispatch()

    def dispatch(self) -> None:
        """Hand free slots to waiting requests in order. With no routable replica, hold them all
        (scale from zero) or fail them all with 503."""
        while self._waiters:
            replica = self.pool.pick()
            if replica is None:
                break
            waiter = self._waiters.popleft()
            if waiter.future.done():
                continue
            replica.in_flight += 1
            waiter.future.set_result(replica)
            if waiter.was_held:
                self._outcome("served")
        if not self._waiters:
            self._held_changed()
            return
        if self.pool.has_routable():
            for waiter in self._waiters:        # a replica is up: they wait for its slots now
                waiter.held = False
        elif self.hold_timeout is not None:
            loop = self._waiters[0].future.get_loop()
            for waiter in self._waiters:        # the last replica left: wait for the next to start
                if not waiter.held:
                    waiter.held = waiter.was_held = True
                    waiter.deadline = max(waiter.deadline, loop.time() + self.hold_timeout)
        else:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.future.done():
                    waiter.future.set_exception(errors.no_ready_replica(self.pool.name,
                                                                        self.retry_after_unavailable))
                    if waiter.was_held:
                        self._outcome("rejected")
        self._held_changed()

    # hold episodes
    def _outcome(self, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _held_changed(self) -> None:
        """Start a hold episode (ask for a replica) when requests are held and none was under
        way; end it when none is held any more."""
        if self.held and self._rewake is None:
            self._wake()
        elif not self.held and self._rewake is not None:
            self._rewake.cancel()
            self._rewake = None

    def _wake(self) -> None:
        self._rewake = None
        if not self.held or self.hold_timeout is None:
            return
        if self.on_wake is not None:
            self.on_wake()
        self._rewake = asyncio.get_running_loop().call_later(self.hold_timeout / 2, self._wake)
