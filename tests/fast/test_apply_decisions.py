"""The Applier's decisions on the in-memory runtime: what is started, stopped, adopted and
recorded, in which order, when a run is interrupted or replicas misbehave."""

from __future__ import annotations

import threading

import pytest

from enova.errors import PermanentError
from enova.plan.model import Action
from enova.runtime.base import ReplicaStartError, StartInterrupted

from .memworld import MemWorld, deployment_doc


@pytest.fixture
def w(tmp_path) -> MemWorld:
    return MemWorld(tmp_path)


def _only(d: dict):
    assert len(d) == 1, d
    return next(iter(d.values()))


def test_apply_then_plan_again_is_in_sync(w):
    w.write(deployment_doc("a", replicas=2))
    plan, result = w.apply()
    assert plan.changes[0].action is Action.CREATE and not result.failed
    assert {r.state for r in w.records("a").values()} == {"ready"}
    assert not w.plan().has_changes


def _interrupted_replace(w: MemWorld):
    """One ready replica on max_num_seqs 16; the specs change to 8; enova is stopped (Ctrl-C,
    SIGTERM) while the successor starts. Returns the old record, the successor's id and the result."""
    w.write(deployment_doc("a", args={"max_num_seqs": 16}))
    w.apply()
    old = _only(w.records("a"))
    w.write(deployment_doc("a", args={"max_num_seqs": 8}))
    w.runtime.behave("a", ready_after=30.0)
    w.clock.stop_after_sleeps = 2
    plan, result = w.apply()
    assert plan.changes[0].action is Action.REPLACE
    w.clock.stop_after_sleeps = None
    new_id = next(rid for rid in w.records("a") if rid != old.id)
    return old, new_id, result


def test_interrupted_rolling_replace_never_stops_the_only_ready_replica(w):
    old, new_id, result = _interrupted_replace(w)
    assert isinstance(result.failed[0].error, StartInterrupted)
    assert w.runtime.ids("stop") == []                      # neither the old nor the new one
    records = w.records("a")
    assert records[old.id].state == "ready" and records[new_id].state == "starting"
    assert w.runtime.running("a") == sorted([old.id, new_id])

    # the next run adopts the starting successor: waits for it, then stops the old replica
    plan = w.plan()
    change = plan.changes[0]
    assert change.action is Action.REPLACE and change.wait == (new_id,) and change.roll == (old.id,)
    assert change.start == 0 and change.stop == ()
    plan, result = w.apply()
    assert not result.failed
    assert w.runtime.ids("start") == [old.id, new_id]       # adopted, not started again
    assert w.runtime.ids("stop") == [old.id]
    assert w.records("a")[new_id].state == "ready"
    assert not w.plan().has_changes


def test_adopted_successor_that_crashes_leaves_the_old_replica_serving(w):
    old, new_id, _ = _interrupted_replace(w)
    w.runtime.kill(new_id, "exited with code 1")
    plan, result = w.apply()       # the exited successor is forgotten and a new one rolled in
    assert not result.failed
    assert old.id in w.runtime.ids("stop")
    ready = [r for r in w.records("a").values() if r.state == "ready"]
    assert len(ready) == 1 and ready[0].id not in (old.id, new_id)


def test_successor_that_never_becomes_healthy_is_stopped_and_the_old_one_kept(w):
    w.write(deployment_doc("a", args={"max_num_seqs": 16}, startup_timeout="20s"))
    w.apply()
    old = _only(w.records("a"))
    w.write(deployment_doc("a", args={"max_num_seqs": 8}, startup_timeout="20s"))
    w.runtime.behave("a", hang=True)
    _, result = w.apply()
    assert isinstance(result.failed[0].error, ReplicaStartError)
    assert "engine.startup_timeout" in result.failed[0].message
    assert list(w.records("a")) == [old.id] and w.runtime.running("a") == [old.id]


def test_start_crash_with_two_replicas_is_a_temporary_start_error_not_a_permanent_one(w):
    w.write(deployment_doc("a", replicas=2))
    w.runtime.behave("a", crash=True)
    _, result = w.apply()
    error = result.failed[0].error
    assert isinstance(error, ReplicaStartError) and not isinstance(error, PermanentError)
    assert "2 replicas failed to start" in str(error)
    assert "scripted crash" in str(error)      # each replica's log tail is in the message
    assert w.records("a") == {}                # exited replicas are forgotten, not left behind


def test_serving_only_change_is_an_update_in_place_with_no_restart(w):
    w.write(deployment_doc("a", serving={"max_concurrency": 8}))
    w.apply()
    before = set(w.records("a"))
    w.write(deployment_doc("a", serving={"max_concurrency": 4, "drain_timeout": "5s"}))
    plan = w.plan()
    change = plan.changes[0]
    assert change.action is Action.UPDATE and plan.has_changes
    assert {f.path: (f.before, f.after) for f in change.update} == {
        "serving.max_concurrency": (8, 4), "serving.drain_timeout": (30.0, 5.0)}
    _, result = w.apply()
    assert not result.failed
    assert set(w.records("a")) == before and w.runtime.ids("stop") == []
    assert w.runtime.ids("start") == sorted(before)     # only the first apply started anything
    record = w.store.read_deployment("a")
    assert record.serving["max_concurrency"] == 4 and record.serving["drain_timeout"] == 5.0
    assert not w.plan().has_changes


def test_a_hold_timeout_reaches_the_gateway_in_place_and_removing_it_restores_the_measured_default(w):
    """serving.hold_timeout: spec -> plan (update) -> deployment record -> the gateway's snapshot."""
    from enova.gateway.hold import DEFAULT_HOLD_TIMEOUT
    from enova.gateway.source import read_snapshot

    def doc(**serving):
        d = deployment_doc("a", serving=serving or None)
        d["spec"]["scaling"] = {"min": 0, "max": 1, "policy": "concurrency", "target": {"concurrency": 4},
                                "scale_to_zero_after": "10m"}
        return d

    w.write(doc())
    w.apply()
    assert "hold_timeout" not in w.store.read_deployment("a").serving
    assert read_snapshot(w.store).deployments["a"].hold_timeout == DEFAULT_HOLD_TIMEOUT
    before = set(w.records("a"))
    w.write(doc(hold_timeout="45s"))
    change = w.plan().changes[0]
    assert change.action is Action.UPDATE
    assert {f.path: (f.before, f.after) for f in change.update} == {"serving.hold_timeout": (None, 45.0)}
    _, result = w.apply()
    assert not result.failed and set(w.records("a")) == before and w.runtime.ids("stop") == []
    assert w.store.read_deployment("a").serving["hold_timeout"] == 45.0
    assert read_snapshot(w.store).deployments["a"].hold_timeout == 45.0
    assert not w.plan().has_changes
    w.write(doc())
    change = w.plan().changes[0]
    assert {f.path: (f.before, f.after) for f in change.update} == {"serving.hold_timeout": (45.0, None)}
    w.apply()
    assert "hold_timeout" not in w.store.read_deployment("a").serving
    assert read_snapshot(w.store).deployments["a"].hold_timeout == DEFAULT_HOLD_TIMEOUT
    assert not w.plan().has_changes


def test_startup_timeout_and_slo_changes_reach_the_deployment_record(w):
    w.write(deployment_doc("a", startup_timeout="60s"))
    w.apply()
    w.write(deployment_doc("a", startup_timeout="10m"))
    change = w.plan().changes[0]
    assert change.action is Action.UPDATE
    assert [f.path for f in change.update] == ["engine.startup_timeout"]
    w.apply()
    assert w.store.read_deployment("a").settings["startup_timeout"] == 600.0


def test_the_default_deployment_is_decided_over_the_whole_spec_set(w):
    w.write(deployment_doc("a"), deployment_doc("b"))
    w.apply()
    assert [w.store.read_deployment(n).serving["default"] for n in ("a", "b")] == [False, False]
    w.write(deployment_doc("a"), deployment_doc("b", serving={"default": True}))
    plan = w.plan()
    assert [c.action for c in plan.changes] == [Action.NOOP, Action.UPDATE]
    w.apply()
    assert [w.store.read_deployment(n).serving["default"] for n in ("a", "b")] == [False, True]


def test_a_healthy_replica_left_starting_is_recorded_ready_without_a_restart(w):
    w.write(deployment_doc("a"))
    w.runtime.behave("a", ready_after=30.0)
    w.clock.stop_after_sleeps = 0
    w.apply()
    rid = _only(w.records("a")).id
    w.clock.stop_after_sleeps = None
    w.clock.advance(31)
    change = w.plan().changes[0]
    assert change.action is Action.UPDATE and change.wait == (rid,)
    w.apply()
    assert w.records("a")[rid].state == "ready" and w.runtime.ids("start") == [rid]  # not restarted


def test_a_replica_starting_past_its_start_timeout_is_failed_and_replaced(w):
    w.write(deployment_doc("a", startup_timeout="20s"))
    w.runtime.behave("a", hang=True)
    w.clock.stop_after_sleeps = 0
    w.apply()
    stuck = _only(w.records("a")).id
    w.clock.stop_after_sleeps = None
    w.clock.advance(21)
    change = w.plan().changes[0]
    assert change.action is Action.SCALE and change.stop == (stuck,) and change.start == 1
    assert "engine.startup_timeout" in change.reason
    w.runtime.behave("a")
    _, result = w.apply()
    assert not result.failed and stuck in w.runtime.ids("stop")
    assert [r.state for r in w.records("a").values()] == ["ready"]


def test_replicas_left_draining_are_stopped_and_replaced(w):
    w.write(deployment_doc("a"))
    w.apply()
    record = _only(w.records("a"))
    record.state = "draining"          # an apply died between drain and stop
    w.store.write_replica(record)
    change = w.plan().changes[0]
    assert change.action is Action.SCALE and change.stop == (record.id,) and change.start == 1
    w.apply()
    assert record.id in w.runtime.ids("stop")
    assert [r.state for r in w.records("a").values()] == ["ready"]


def test_scaling_to_zero_stops_every_replica_and_keeps_the_deployment(w):
    w.write(deployment_doc("a", replicas=2))
    w.apply()
    w.write(deployment_doc("a", replicas=0))
    change = w.plan().changes[0]
    assert change.action is Action.SCALE and len(change.stop) == 2
    w.apply()
    assert w.records("a") == {} and w.store.read_deployment("a").replicas == 0
    assert not w.plan().has_changes


def test_a_hub_outage_during_preflight_is_temporary(w):
    from enova.errors import TemporaryError
    w.write(deployment_doc("a"))
    w.resolve_error = TemporaryError("the Hugging Face Hub could not be reached", delay=30)
    with pytest.raises(TemporaryError):
        w.apply()
    assert w.records("a") == {}


def test_impossible_resources_are_refused_before_anything_starts(w):
    w.write(deployment_doc("a", args={"tensor_parallel_size": 4}, cpus=2))
    with pytest.raises(PermanentError, match="tensor_parallel_size"):
        w.apply()
    assert w.runtime.ids("start") == []


def test_concurrent_rolling_replaces_never_give_a_gpu_twice(tmp_path):
    w = MemWorld(tmp_path, gpus=3)
    w.write(deployment_doc("a", gpus=1), deployment_doc("b", gpus=1))
    w.apply()
    w.write(deployment_doc("a", gpus=1, args={"max_num_seqs": 8}), deployment_doc("b", gpus=1, args={"max_num_seqs": 8}))
    plan = w.plan()
    overlaps: list[str] = []
    real_start = w.runtime.start

    def checked_start(request):
        live = {g: r.id for r in w.store.all_replicas() if w.runtime.liveness(r).alive for g in r.gpus}
        overlaps.extend(f"{g} held by {live[g]}" for g in request.gpus if g in live)
        return real_start(request)
    w.runtime.start = checked_start
    applier = w.applier()
    applier.preflight(plan)
    barrier = threading.Barrier(2)
    errors = []

    def run(change):
        barrier.wait()
        try:
            applier.apply_change(change, plan.desired[change.deployment])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(c,)) for c in plan.deployment_changes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not overlaps
    gpus = [g for r in w.store.all_replicas() for g in r.gpus]
    assert len(gpus) == len(set(gpus)) == 2


def test_nothing_is_started_once_enova_is_asked_to_stop(w):
    w.write(deployment_doc("a", replicas=2))
    plan = w.plan()
    stop = threading.Event()
    applier = w.applier()
    applier.stop_event = stop
    applier.preflight(plan)
    stop.set()
    result = applier.apply(plan)
    assert isinstance(result.failed[0].error, StartInterrupted)
    assert w.runtime.ids("start") == []
