"""Slots and the bounded FIFO queue (enova.gateway.admission), on a bare event loop."""

from __future__ import annotations

import asyncio

import pytest

from enova.gateway.admission import Admission
from enova.gateway.errors import GatewayError
from enova.gateway.membership import DeploymentView, ReplicaView
from enova.gateway.router import Pool


def admission(limit: int = 1, replicas: int = 1, queue_size: int = 2, timeout: float = 5.0) -> Admission:
    pool = Pool("m")
    pool.sync(DeploymentView("m", replicas=tuple(ReplicaView(f"r{i}", "m", "h", i, "ready", limit)
                                                 for i in range(replicas))))
    return Admission(pool, queue_size=queue_size, queue_timeout=timeout)


def run(coro):
    return asyncio.run(coro)


def test_slots_are_taken_at_once_while_replicas_have_room():
    async def main():
        adm = admission(limit=2, replicas=2)
        got = [await adm.acquire() for _ in range(4)]
        assert sorted(r.id for r in got) == ["r0", "r0", "r1", "r1"]
        assert adm.depth == 0
    run(main())


def test_waiters_are_served_first_come_first_served_as_slots_free():
    async def main():
        adm = admission(limit=1, queue_size=5)
        first = await adm.acquire()
        order = []

        async def wait(i):
            r = await adm.acquire()
            order.append(i)
            return r

        tasks = [asyncio.create_task(wait(i)) for i in range(3)]
        await asyncio.sleep(0)
        assert adm.depth == 3
        adm.release(first)
        r = await tasks[0]
        adm.release(r)
        r = await tasks[1]
        adm.release(r)
        await tasks[2]
        assert order == [0, 1, 2]
    run(main())


def test_a_new_request_does_not_jump_the_queue():
    async def main():
        adm = admission(limit=1, queue_size=5)
        first = await adm.acquire()
        waiter = asyncio.create_task(adm.acquire())
        await asyncio.sleep(0)
        first.in_flight -= 1            # a slot frees without release(): the queue still comes first
        late = asyncio.create_task(adm.acquire())
        await asyncio.sleep(0)
        assert adm.depth == 2 and not waiter.done()
        adm.dispatch()
        await waiter
        assert not late.done()
        late.cancel()
    run(main())


def test_a_full_queue_and_a_long_wait_are_429_with_retry_after():
    async def main():
        adm = admission(limit=1, queue_size=1, timeout=0.05)
        await adm.acquire()
        waiting = asyncio.create_task(adm.acquire())
        await asyncio.sleep(0)
        with pytest.raises(GatewayError) as full:
            await adm.acquire()
        assert full.value.status == 429 and full.value.reason == "queue_full" and full.value.retry_after == 1
        with pytest.raises(GatewayError) as late:
            await waiting
        assert late.value.status == 429 and late.value.reason == "queue_timeout"
        assert adm.depth == 0
    run(main())


def test_no_routable_replica_is_503_and_fails_the_queue():
    async def main():
        adm = admission(limit=1)
        r = await adm.acquire()
        waiting = asyncio.create_task(adm.acquire())
        await asyncio.sleep(0)
        r.health.ejected = True
        adm.dispatch()
        with pytest.raises(GatewayError) as caught:
            await waiting
        assert caught.value.status == 503 and caught.value.retry_after == 5
        with pytest.raises(GatewayError):
            await adm.acquire()
    run(main())


def test_a_waiter_cancelled_after_being_handed_a_slot_gives_it_back():
    async def main():
        adm = admission(limit=1)
        r = await adm.acquire()
        waiting = asyncio.create_task(adm.acquire())
        await asyncio.sleep(0)
        adm.release(r)                  # hands the slot to the waiter...
        waiting.cancel()                # ...which is cancelled before it runs
        await asyncio.gather(waiting, return_exceptions=True)
        assert r.in_flight == 0 and adm.depth == 0
    run(main())
