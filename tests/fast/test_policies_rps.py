"""Policy `rps` (dstack's and SkyServe's request-rate rule) with a fake clock."""

from __future__ import annotations

from .policysim import Sim, scaling


def test_a_burst_gives_a_fast_scale_up_sized_to_the_burst():
    sim = Sim(scaling("rps", max=6))
    sim.run(60, rps=0.5)
    sim.run(40, rps=20.0)                      # the 60 s rate passes 10/s within 30 s
    assert sim.decisions[-1].target == 6
    assert "requests/s over the last 60 s" in sim.decisions[-1].reason


def test_a_slow_decline_steps_down_after_the_delay_to_the_rate_wanted_then():
    sim = Sim(scaling("rps", scale_down_delay=60.0), target=4)
    sim.run(90, rps=8.0)
    start = sim.now
    for rate in range(8, 1, -1):
        sim.run(30, rps=float(rate))
    sim.run(200, rps=1.0)
    events = sim.events()
    assert events and all(target < previous for _, previous, target in events)
    assert events[0][0] - start >= 60
    assert all(b[0] - a[0] >= 60 for a, b in zip(events, events[1:]))
    assert sim.decisions[-1].target == 1


def test_the_window_rate_counts_the_whole_minute_as_the_sources_do():
    sim = Sim(scaling("rps"))
    d = sim.step(rps=30.0)                     # 60 requests in the first 2 s: 1 request/s over the minute
    assert d.numbers["rps"] == 1.0 and d.target == 1
