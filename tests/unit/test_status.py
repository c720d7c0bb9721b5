"""Health status derivation, kept apart from sync status."""

from enova.plan.model import ObservedDeployment, ObservedReplica, ReplicaState
from enova.plan.status import Health, health_of


def _r(i, state=ReplicaState.READY, healthy=True, detail=""):
    return ObservedReplica(id=f"d-{i}", config_hash="h", config={}, state=state, healthy=healthy, detail=detail)


def test_health_table():
    dep = lambda *rs: ObservedDeployment("d", tuple(rs))
    assert health_of(dep(_r(1)), 1)[0] is Health.HEALTHY
    assert health_of(dep(_r(1, ReplicaState.STARTING, None)), 1)[0] is Health.PROGRESSING
    assert health_of(dep(_r(1), _r(2, ReplicaState.EXITED, False, "pid 9 exited")), 2) == (
        Health.DEGRADED, "1 exited (d-2: pid 9 exited); 1 of 2 running")
    assert health_of(dep(_r(1, healthy=False)), 1)[0] is Health.DEGRADED
    assert health_of(dep(), 1)[0] is Health.MISSING
    assert health_of(None, 0) == (Health.HEALTHY, "scaled to zero")
