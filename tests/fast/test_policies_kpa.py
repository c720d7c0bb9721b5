"""Policy `concurrency` (Knative's KPA) with a fake clock: panic on bursts, no scale-down while
panicking, the scale-down-delay window."""

from __future__ import annotations

from .policysim import Sim, scaling


def test_a_burst_gives_a_fast_scale_up_sized_to_the_burst():
    sim = Sim(scaling("concurrency", max=10))
    sim.run(60, concurrency=3.0)
    decisions = sim.run(6, concurrency=40.0)     # the 6 s panic window fills
    assert decisions[0].changed and decisions[0].numbers["panic"] == 1
    assert sim.decisions[-1].target == 8       # ceil(40 / (8 x 70%))


def test_no_scale_down_while_panicking_then_the_stable_window_rules():
    sim = Sim(scaling("concurrency", max=10, scale_down_delay=0.0))
    sim.run(60, concurrency=3.0)
    sim.run(6, concurrency=40.0)
    quiet = sim.run(56, concurrency=3.0)         # within a stable window of the last burst
    assert all(d.target == 8 for d in quiet)
    later = sim.run(120, concurrency=3.0)
    assert later[-1].target == 1
    assert all(b.target >= a.target // 2 for a, b in zip(later, later[1:]))   # max-scale-down-rate 2


def test_a_slow_decline_gives_one_step_down_after_the_delay():
    sim = Sim(scaling("concurrency", scale_down_delay=60.0), target=4)
    sim.run(90, concurrency=22.0)
    start = sim.now
    for level in range(22, 4, -1):
        sim.run(12, concurrency=float(level))
    sim.run(200, concurrency=4.0)
    events = sim.events()
    assert events and all(target < previous for _, previous, target in events)
    assert events[0][0] - start >= 60
    assert all(b[0] - a[0] >= 60 for a, b in zip(events, events[1:]))
    assert sim.decisions[-1].target == 1
