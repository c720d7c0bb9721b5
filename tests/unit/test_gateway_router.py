"""Which replica gets the next request (enova.gateway.router): least in flight, below its limit,
routable only while ready and not ejected; ties round-robin in id order."""

from __future__ import annotations

from enova.gateway.membership import DeploymentView, ReplicaView
from enova.gateway.router import Pool


def view(*replicas: tuple[str, str, int]) -> DeploymentView:
    return DeploymentView("m", replicas=tuple(ReplicaView(rid, "m", "127.0.0.1", 9000 + i, state, limit)
                                              for i, (rid, state, limit) in enumerate(replicas)))


def pool(*replicas: tuple[str, str, int]) -> Pool:
    p = Pool("m")
    p.sync(view(*replicas))
    return p


def test_the_replica_with_fewest_in_flight_is_picked():
    p = pool(("a", "ready", 8), ("b", "ready", 8), ("c", "ready", 8))
    p.replicas["a"].in_flight, p.replicas["b"].in_flight, p.replicas["c"].in_flight = 3, 1, 2
    assert p.pick().id == "b"


def test_ties_go_round_robin_in_id_order():
    p = pool(("c", "ready", 8), ("a", "ready", 8), ("b", "ready", 8))
    assert [p.pick().id for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_only_ready_replicas_below_their_limit_and_not_ejected_are_picked():
    p = pool(("a", "starting", 8), ("b", "draining", 8), ("c", "stopping", 8), ("d", "ready", 1), ("e", "ready", 8))
    p.replicas["d"].in_flight = 1
    p.replicas["e"].health.ejected = True
    assert p.pick() is None
    assert not p.has_routable(exclude=("d",))
    assert p.has_routable()             # d is routable, only full
    p.replicas["d"].in_flight = 0
    assert p.pick().id == "d"


def test_excluded_replicas_are_not_picked():
    p = pool(("a", "ready", 8), ("b", "ready", 8))
    assert p.pick(exclude=("a",)).id == "b"
    assert p.pick(exclude=("a", "b")) is None


def test_a_replica_whose_record_went_away_is_kept_until_idle():
    p = pool(("a", "ready", 8), ("b", "ready", 8))
    p.replicas["a"].in_flight = 1
    forgotten = p.sync(view(("b", "ready", 8)))
    assert forgotten == [] and p.replicas["a"].gone and p.replicas["a"].status == "gone"
    assert p.pick(exclude=("b",)) is None
    p.replicas["a"].in_flight = 0
    assert [r.id for r in p.collect()] == ["a"] and set(p.replicas) == {"b"}


def test_a_record_that_comes_back_updates_the_replica_and_keeps_its_counts():
    p = pool(("a", "ready", 8))
    p.replicas["a"].in_flight = 2
    p.sync(view(("a", "draining", 4)))
    r = p.replicas["a"]
    assert r.in_flight == 2 and r.view.limit == 4 and r.status == "draining" and not r.routable


def test_status_shows_ejected_only_for_a_ready_record():
    p = pool(("a", "ready", 8), ("b", "draining", 8))
    for r in p.replicas.values():
        r.health.ejected = True
    assert (p.replicas["a"].status, p.replicas["b"].status) == ("ejected", "draining")
