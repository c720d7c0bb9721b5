"""The reconciler's pure policies, with fake time: backoff and health verdicts."""

from enova.plan.model import ObservedReplica, ReplicaState
from enova.reconcile.controller import backoff_delay, health_verdicts


def test_backoff_doubles_with_each_failure_up_to_the_cap_and_jitters_upwards():
    assert [backoff_delay(n, rng=lambda: 0.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_delay(20, rng=lambda: 0.0) == 300.0
    assert backoff_delay(1, rng=lambda: 1.0) == 3.0


def _replica(i, healthy, state=ReplicaState.READY):
    return ObservedReplica(id=f"d-{i}", config_hash="h", config={}, state=state, healthy=healthy)


def test_a_replica_failing_health_checks_past_the_threshold_is_marked_failed_and_recovery_resets_it():
    since: dict[str, float] = {}
    first = health_verdicts((_replica(1, False), _replica(2, True)), since, now=100.0, threshold=60)
    assert [r.state for r in first] == [ReplicaState.READY, ReplicaState.READY] and since == {"d-1": 100.0}
    later = health_verdicts((_replica(1, False), _replica(2, True)), since, now=161.0, threshold=60)
    assert later[0].state is ReplicaState.FAILED and "61 s" in later[0].detail
    recovered = health_verdicts((_replica(1, True),), since, now=170.0, threshold=60)
    assert recovered[0].state is ReplicaState.READY and since == {}


def test_a_starting_replica_is_not_judged_by_its_health():
    since: dict[str, float] = {}
    out = health_verdicts((_replica(1, False, ReplicaState.STARTING),), since, now=0.0, threshold=0)
    assert out[0].state is ReplicaState.STARTING and since == {}
