"""The `slo` policy (enova's own), with a fake clock: bursts, declines, learning, delays, reasons."""

from __future__ import annotations

from dataclasses import replace

from enova.autoscale.model import ScalerState
from enova.autoscale.policies import decide

from .policysim import Sim, scaling


def warmed(target: int = 1, **changes) -> Sim:
    state = ScalerState(target=target, policy="slo", learned={"in_flight_per_replica": 6.0})
    sim = Sim(scaling("slo", max=8, **changes), state=state)
    sim.run(60, concurrency=3.0 * target)
    return sim


def test_a_burst_gives_a_fast_scale_up_sized_to_the_burst():
    sim = warmed()
    first = sim.step(concurrency=40.0)        # 8 in flight on the one replica, 32 queued
    assert (first.previous, first.target) == (1, 5)   # 40 requests at 8 per replica, not +1
    assert first.numbers["needed"] == 5


def test_the_reason_names_the_risk_with_its_numbers():
    sim = warmed(target=2)
    d = sim.step(concurrency=18.0)            # 9 per replica: p95 TTFT about 490 ms against 500
    assert d.changed and d.target == 3
    assert "p95 TTFT" in d.reason and "500 ms target" in d.reason and "2 -> 3" in d.reason
    assert d.numbers["ttft_target_ms"] == 500.0 and d.numbers["p95_ttft_ms"] > 400


def test_a_slow_decline_gives_one_step_down_after_the_delay():
    sim = warmed(target=4, scale_down_delay=60.0)
    sim.run(90, concurrency=20.0)             # 5 per replica held the SLO
    start = sim.now
    for level in range(20, 3, -1):            # one request fewer every 10 s
        sim.run(10, concurrency=float(level))
    sim.run(300, concurrency=3.0)
    events = sim.events()
    assert events and all(target == previous - 1 for _, previous, target in events)
    assert events[0][0] - start >= 60
    assert all(b[0] - a[0] >= 60 for a, b in zip(events, events[1:]))
    assert sim.decisions[-1].target == 1


def test_no_load_removes_one_replica_per_delay():
    sim = warmed(target=4, scale_down_delay=60.0)
    sim.run(400)
    events = sim.events()
    assert [(p, t) for _, p, t in events] == [(4, 3), (3, 2), (2, 1)]
    assert all(b[0] - a[0] >= 60 for a, b in zip(events, events[1:]))


def test_it_learns_the_in_flight_per_replica_held_while_meeting_the_slo():
    sim = Sim(scaling("slo"), target=2)
    sim.run(70, concurrency=10.0)             # 5 per replica, p95 TTFT about 300 ms: held
    assert sim.state.learned["in_flight_per_replica"] == 5.0


def test_a_scale_up_delay_makes_the_shortage_wait():
    sim = warmed(scale_up_delay=10.0)
    decisions = sim.run(12, concurrency=40.0)
    assert [d.changed for d in decisions] == [False] * 5 + [True]
    assert "scale_up_delay 10 s" in decisions[0].reason


def test_kv_cache_near_full_is_a_risk():
    sim = warmed(target=2)
    sim.now += 2
    sim.samples.append(replace(sim.sample(6.0, 3.0), kv_cache_usage=0.95))
    d = decide(sim.scaling, sim.slo, sim.samples, sim.capacity, sim.state, sim.now)
    assert d.target == 3 and "KV cache 95% full" in d.reason
