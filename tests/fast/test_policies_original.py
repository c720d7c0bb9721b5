"""Policy `enova-original` (the original ENOVA rule) with a fake clock: slow by design."""

from __future__ import annotations

from .policysim import Sim, scaling


def test_pending_requests_for_three_minutes_add_one_replica_not_before():
    sim = Sim(scaling("enova-original", max=6))
    sim.run(200, waiting=0.0)
    onset = sim.now
    sim.run(240, concurrency=6.0, waiting=60.0)
    events = sim.events()
    assert (events[0][1], events[0][2]) == (1, 2)
    assert 120 <= events[0][0] - onset <= 152
    # still pending: one more per 30 s tick once the last replica is ready, as the original did
    assert all(t == p + 1 and b - a >= 30 for (a, _, _), (b, p, t) in zip(events, events[1:]))
    assert "in each of the last 3 minutes" in sim.decisions[[d.changed for d in sim.decisions].index(True)].reason


def test_a_slow_decline_gives_one_step_down_after_the_delay():
    sim = Sim(scaling("enova-original", scale_down_delay=60.0), target=3)
    sim.run(200, concurrency=24.0, waiting=0.0)
    start = sim.now
    sim.run(600, concurrency=1.0, waiting=0.0)
    events = sim.events()
    assert [(p, t) for _, p, t in events] == [(3, 2), (2, 1)]
    assert events[0][0] - start >= 120 + 60
    assert events[1][0] - events[0][0] >= 60


def test_it_decides_on_30_second_ticks():
    sim = Sim(scaling("enova-original"))
    sim.run(120)
    ticks = sorted({d.state.learned["original_tick_at"] for d in sim.decisions})
    assert all(b - a >= 30 for a, b in zip(ticks, ticks[1:]))


def test_max_num_seqs_from_the_engine_bounds_the_running_requests_for_a_scale_down():
    busy = Sim(scaling("enova-original", scale_down_delay=0.0, max_num_seqs=2), target=2)
    busy.run(400, concurrency=0.6, waiting=0.0)   # 0.3 running per replica > 0.1 x 2
    assert busy.events() == []
    default = Sim(scaling("enova-original", scale_down_delay=0.0), target=2)
    default.run(400, concurrency=0.6, waiting=0.0)   # <= 0.1 x 256
    assert [(p, t) for _, p, t in default.events()] == [(2, 1)]
