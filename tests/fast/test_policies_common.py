"""Rules every policy keeps, table-tested for each policy with a fake clock (tests/fast/policysim.py):
bounds, determinism, starting replicas, restarts, scale to zero and wake, waiting requests, flapping."""

from __future__ import annotations

import pytest

from enova.autoscale.model import ScalerState
from enova.autoscale.policies import decide

from .policysim import SLO, Sim, scaling

POLICIES = ["slo", "concurrency", "rps", "enova-original"]
# a load each policy reads as needing more than one replica: requests at the deployment, arrivals/s, engine queue
HEAVY = {"concurrency": 30.0, "rps": 12.0, "waiting": 60.0}


@pytest.mark.parametrize("policy", POLICIES)
def test_targets_stay_within_min_and_max_whatever_the_load(policy):
    sim = Sim(scaling(policy, min=1, max=3, scale_down_delay=10.0))
    for i in range(400):
        level = (i * 37) % 11          # a fixed, jumpy sequence of loads
        sim.step(concurrency=level * 6.0, rps=level * 1.5, waiting=level * 10.0)
    assert {d.target for d in sim.decisions} <= {1, 2, 3}
    assert any(d.changed for d in sim.decisions)


@pytest.mark.parametrize("policy", POLICIES)
def test_decisions_are_deterministic(policy):
    sim = Sim(scaling(policy))
    sim.run(200, **HEAVY)
    args = (sim.scaling, SLO, list(sim.samples), sim.capacity, sim.state, sim.now + 2)
    assert decide(*args) == decide(*args)


@pytest.mark.parametrize("policy", POLICIES)
def test_replicas_starting_give_no_second_scale_up(policy):
    sim = Sim(scaling(policy, max=6), start_seconds=100.0)
    sim.run(300, **HEAVY)
    ups = [(d, c) for d, c in zip(sim.decisions, sim.seen_capacity) if d.target > d.previous]
    assert ups, "the heavy load must scale up"
    assert all(c.starting == 0 for _, c in ups)
    first = sim.decisions.index(ups[0][0])
    during_start = sim.decisions[first + 1:first + 1 + int(100 / 2) - 1]
    assert not any(d.changed for d in during_start)
    pressed = [d for d in during_start if d.numbers["wanted"] > d.target]
    assert all("starting are capacity on the way" in d.reason for d in pressed)
    if policy == "rps":   # its 60 s rate keeps rising while the first replica starts
        assert pressed


@pytest.mark.parametrize("policy", POLICIES)
def test_a_restart_with_persisted_state_gives_no_event(policy):
    sim = Sim(scaling(policy, scale_down_delay=60.0), target=3)
    sim.run(240, concurrency=20.0, rps=6.0, waiting=0.0)
    sim.run(30, concurrency=1.0, rps=0.3, waiting=0.0)     # a surplus is being timed
    restarted = sim.restarted()
    ongoing = sim.run(120, concurrency=1.0, rps=0.3, waiting=0.0)
    after = restarted.run(120, concurrency=1.0, rps=0.3, waiting=0.0)
    assert [(d.target, d.reason) for d in after] == [(d.target, d.reason) for d in ongoing]
    assert not after[0].changed


@pytest.mark.parametrize("policy", POLICIES)
def test_idle_past_the_threshold_goes_to_zero_and_held_requests_bring_one_back_at_once(policy):
    sim = Sim(scaling(policy, min=0, scale_to_zero_after=120.0, scale_up_delay=30.0), start_seconds=20.0)
    sim.run(30, concurrency=2.0, rps=1.0, waiting=0.0)
    last_busy = sim.now
    sim.run(200)
    zero = [d for d in sim.decisions if d.changed and d.target == 0]
    assert len(zero) == 1
    assert 120 <= zero[0].state.last_down - last_busy <= 122
    assert "scale_to_zero_after 120 s" in zero[0].reason
    assert all(d.target == 0 for d in sim.decisions[sim.decisions.index(zero[0]):])
    woken = sim.step(concurrency=1.0, rps=0.5)          # one request arrives and is held
    assert (woken.previous, woken.target) == (0, 1)
    assert "held at zero replicas" in woken.reason
    second = sim.step(concurrency=2.0, rps=0.5)         # a second one during the start: still one replica
    assert second.target == 1 and not second.changed


@pytest.mark.parametrize("policy", POLICIES)
def test_without_scale_to_zero_an_idle_deployment_keeps_min_replicas(policy):
    sim = Sim(scaling(policy, min=0, max=3, scale_to_zero_after=0.0, scale_down_delay=10.0), target=2)
    sim.run(600)
    assert sim.decisions[-1].target == 1


@pytest.mark.parametrize("policy", POLICIES)
def test_no_scale_down_while_requests_are_queued(policy):
    # 3 replicas, almost no arrivals, yet 30 requests at the deployment: 6 of them queued at the gateway
    sim = Sim(scaling(policy, scale_down_delay=0.0), target=3)
    decisions = sim.run(300, concurrency=30.0, rps=0.1, waiting=0.0)
    assert all(d.target >= 3 for d in decisions)


@pytest.mark.parametrize("policy", POLICIES)
def test_an_edit_of_max_or_min_clamps_the_count_at_once(policy):
    sim = Sim(scaling(policy), target=4)
    sim.run(20, concurrency=20.0, rps=6.0)
    sim.scaling = scaling(policy, max=2)
    d = sim.step(concurrency=20.0, rps=6.0)
    assert (d.previous, d.target) == (4, 2) and "scaling.max is 2" in d.reason
    sim.scaling = scaling(policy, min=3)
    d = sim.step(concurrency=20.0, rps=6.0)
    assert (d.previous, d.target) == (2, 3)


@pytest.mark.parametrize("policy", POLICIES)
def test_oscillating_load_gives_no_flapping(policy):
    sim = Sim(scaling(policy, scale_down_delay=60.0), target=2)
    sim.run(60, concurrency=7.0, rps=3.0, waiting=0.0)      # a minute at the mean load fills the windows
    for _ in range(15):                      # 10 minutes: 20 s busy, 20 s quiet
        sim.run(20, concurrency=12.0, rps=5.0, waiting=0.0)
        sim.run(20, concurrency=2.0, rps=1.0, waiting=0.0)
    assert sim.events() == []


@pytest.mark.parametrize("policy", POLICIES)
def test_every_decision_has_a_reason_and_its_numbers(policy):
    sim = Sim(scaling(policy))
    for d in sim.run(240, **HEAVY):
        assert d.reason and d.numbers["target"] == d.target and d.numbers["previous"] == d.previous
        assert d.state.policy == policy
    changed = [d for d in sim.decisions if d.changed]
    assert changed and all(f"{d.previous} -> {d.target}" in d.reason for d in changed)


def test_a_policy_change_drops_the_other_policys_memory():
    state = ScalerState(target=2, policy="concurrency", panic_until=5000.0,
                        learned={"kpa_max_panic_pods": 4.0, "in_flight_per_replica": 6.0})
    sim = Sim(scaling("slo"), state=state)
    d = sim.step(concurrency=4.0)
    assert d.state.panic_until is None and d.state.learned.get("kpa_max_panic_pods") is None
    assert d.state.learned["in_flight_per_replica"] >= 6.0 and d.state.policy == "slo"


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown scaling policy"):
        Sim(scaling("magic")).step()


@pytest.mark.parametrize("policy", POLICIES)
def test_a_replica_still_starting_is_not_idleness_and_the_idle_time_counts_from_when_it_serves(policy):
    """A new deployment with min 0 and no load: its first replica takes 60 s to load a model. The
    idle clock must not run while it loads (scaling it to zero at once would throw the load away)."""
    sim = Sim(scaling(policy, min=0, scale_to_zero_after=10.0), target=1, ready=0, start_seconds=60.0)
    sim.starts = [sim.now + 60.0]
    before_ready = sim.run(58)
    assert all(d.target == 1 for d in before_ready), [d.reason for d in before_ready if d.target != 1]
    ready_at = sim.now
    sim.run(20)
    zero = [d for d in sim.decisions if d.changed and d.target == 0]
    assert len(zero) == 1 and 10 <= zero[0].state.last_down - ready_at <= 14
