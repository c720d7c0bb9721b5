"""The state directory as the gateway reads it (enova.gateway.membership): limits, corrupt
records, and the diff it logs."""

from __future__ import annotations

from pathlib import Path

from enova.gateway.membership import DeploymentView, ReplicaView, Snapshot, diff, replica_limit
from enova.gateway.source import read_snapshot
from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore, record_from_dict


def record(rid: str, dep: str, port: int, state: str = "ready", args: dict | None = None) -> ReplicaRecord:
    return record_from_dict(ReplicaRecord, {
        "id": rid, "deployment": dep, "host": "127.0.0.1", "port": port, "config_hash": "h",
        "config": {"engine": {"args": args or {}}}, "argv": [], "log": "", "state": state, "pid": 1, "create_time": 0.0})


def store_with(tmp_path: Path) -> StateStore:
    store = StateStore(tmp_path)
    store.write_deployment(DeploymentRecord("m1", 2, "h", {}, 0.0, serving={"default": True, "max_concurrency": None,
                                                                             "drain_timeout": 30.0}))
    store.write_replica(record("m1-a", "m1", 9001, args={"max_num_seqs": 16}))
    store.write_replica(record("m1-b", "m1", 9002, state="draining", args={"max_num_seqs": 16}))
    store.write_replica(record("m2-a", "m2", 9003))          # no deployment.json: serving defaults
    return store


def test_limits_come_from_max_concurrency_then_max_num_seqs_then_the_default():
    args = {"engine": {"args": {"max_num_seqs": 16}}}
    assert replica_limit({"max_concurrency": 4}, args, 256) == 4
    assert replica_limit({"max_concurrency": None}, args, 256) == 16
    assert replica_limit({}, {}, 256) == 256
    assert replica_limit({"max_concurrency": True}, {"engine": {"args": {"max_num_seqs": "8"}}}, 100) == 100


def test_a_snapshot_holds_every_deployment_and_replica_with_its_state_and_limit(tmp_path):
    snap = read_snapshot(store_with(tmp_path))
    assert snap.problems == ()
    assert snap.deployments["m1"] == DeploymentView("m1", True, None, (
        ReplicaView("m1-a", "m1", "127.0.0.1", 9001, "ready", 16),
        ReplicaView("m1-b", "m1", "127.0.0.1", 9002, "draining", 16)))
    assert snap.deployments["m2"] == DeploymentView("m2", False, None, (
        ReplicaView("m2-a", "m2", "127.0.0.1", 9003, "ready", 256),))


def test_a_corrupt_record_is_reported_and_its_last_readable_view_kept(tmp_path):
    store = store_with(tmp_path)
    first = read_snapshot(store)
    store.replica_path("m1", "m1-a").write_text("{half")
    (store.replica_path("m1", "x").parent / "new.json").write_text('"a string"')
    (tmp_path / "deployments" / "m2" / "deployment.json").write_text("[]")
    snap = read_snapshot(store, previous=first)
    assert snap.deployments["m1"].replicas == first.deployments["m1"].replicas
    assert snap.deployments["m2"] == first.deployments["m2"]
    assert len(snap.problems) == 3
    assert any("m1-a.json: skipped" in p and "last readable record is kept" in p for p in snap.problems)
    assert any("new.json: skipped" in p for p in snap.problems)
    # without a previous view a corrupt record is simply absent
    assert [r.id for r in read_snapshot(store).deployments["m1"].replicas] == ["m1-b"]


def test_a_missing_state_directory_is_an_empty_snapshot(tmp_path):
    assert read_snapshot(StateStore(tmp_path / "nothing")).deployments == {}


def test_the_diff_lists_deployments_and_replicas_that_came_went_or_changed_sorted():
    r = lambda rid, state="ready", limit=8: ReplicaView(rid, "m1", "h", 1, state, limit)  # noqa: E731
    old = Snapshot({"m1": DeploymentView("m1", False, None, (r("a"), r("b"))), "m0": DeploymentView("m0")})
    new = Snapshot({"m1": DeploymentView("m1", True, None, (r("b", "draining"), r("c"))),
                    "m2": DeploymentView("m2")})
    assert [str(c) for c in diff(old, new)] == [
        "deployment m0: present -> absent",
        "deployment m1: default=False max_concurrency=None -> default=True max_concurrency=None",
        "replica m1/a: ready h:1 limit 8 -> absent",
        "replica m1/b: ready h:1 limit 8 -> draining h:1 limit 8",
        "replica m1/c: absent -> ready h:1 limit 8",
        "deployment m2: absent -> present",
    ]
    assert diff(new, new) == []
