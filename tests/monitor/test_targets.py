"""Prometheus's scrape targets come from the state directory's records: the gateway from its
configured address, every replica with its deployment, replica and runtime labels; the files are
replaced atomically and only when their content changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from enova.observe.state import GatewayRecord, ReplicaRecord, StateStore
from enova.monitor.targets import (
    GATEWAY_FILE,
    RECONCILER_FILE,
    REPLICAS_FILE,
    gateway_groups,
    read_target_files,
    reconciler_groups,
    refresh_targets,
    replica_groups,
    target_address,
    target_files,
    targets_dir,
    write_targets,
)


def replica(rid: str, deployment: str = "chat", *, host: str = "127.0.0.1", port: int = 19300,
            runtime: str = "local", state: str = "ready") -> ReplicaRecord:
    return ReplicaRecord(id=rid, deployment=deployment, host=host, port=port, config_hash="h", config={}, argv=[],
                         log="", runtime=runtime, handle={"pid": 999999, "create_time": 1.0}, state=state)


def gateway(host: str = "127.0.0.1", port: int = 9199) -> GatewayRecord:
    return GatewayRecord(pid=999999, create_time=1.0, config_hash="g", config={"host": host, "port": port},
                         argv=[], log="")


def test_a_target_address_is_how_enova_itself_reaches_the_server():
    assert target_address("127.0.0.1", 9199) == "127.0.0.1:9199"
    assert target_address("0.0.0.0", 9199) == "127.0.0.1:9199"     # a wildcard bind is reached on loopback
    assert target_address("::", 9199) == "[::1]:9199"
    assert target_address("::1", 19200) == "[::1]:19200"
    assert target_address("localhost", 9199) == "localhost:9199"


def test_the_gateway_is_one_target_at_its_configured_address_and_none_without_a_record():
    assert gateway_groups(gateway("0.0.0.0", 9300)) == [{"targets": ["127.0.0.1:9300"], "labels": {}}]
    assert gateway_groups(None) == []


def test_every_replica_is_a_group_labelled_by_deployment_replica_and_runtime_sorted():
    records = [replica("zeta-b", "zeta", port=19302, runtime="docker"), replica("chat-b", port=19301),
               replica("chat-a", port=19300, state="starting")]
    assert replica_groups(records) == [
        {"targets": ["127.0.0.1:19300"], "labels": {"deployment": "chat", "replica": "chat-a", "runtime": "local"}},
        {"targets": ["127.0.0.1:19301"], "labels": {"deployment": "chat", "replica": "chat-b", "runtime": "local"}},
        {"targets": ["127.0.0.1:19302"], "labels": {"deployment": "zeta", "replica": "zeta-b", "runtime": "docker"}},
    ]


def test_the_files_do_not_depend_on_the_order_records_are_read_in():
    a, b = replica("chat-a", port=19300), replica("chat-b", port=19301)
    assert target_files(gateway(), [a, b]) == target_files(gateway(), [b, a])
    files = target_files(None, [])
    assert set(files) == {GATEWAY_FILE, REPLICAS_FILE, RECONCILER_FILE}
    assert all(json.loads(text) == [] for text in files.values())


def test_the_reconciler_is_a_target_at_the_metrics_address_its_status_names_and_none_without_one():
    assert reconciler_groups({"pid": 1, "metrics": {"host": "127.0.0.1", "port": 9188}}) == \
        [{"targets": ["127.0.0.1:9188"], "labels": {}}]
    assert reconciler_groups({"pid": 1, "metrics": None}) == []   # --metrics-port 0, or its port was taken
    assert reconciler_groups({"pid": 1}) == []                    # written by an enova before the metrics
    assert reconciler_groups(None) == []


def test_write_targets_reads_the_reconcilers_status_file(tmp_path):
    state = tmp_path / "state"
    (state / "reconciler").mkdir(parents=True)
    (state / "reconciler" / "status.json").write_text(json.dumps({"pid": 1, "metrics": {"host": "127.0.0.1",
                                                                                          "port": 9288}}))
    out = tmp_path / "targets"
    assert write_targets(StateStore(state), out) is True
    assert json.loads((out / RECONCILER_FILE).read_text()) == [{"targets": ["127.0.0.1:9288"], "labels": {}}]
    (state / "reconciler" / "status.json").write_text("{half a fi")
    assert write_targets(StateStore(state), out) is True
    assert json.loads((out / RECONCILER_FILE).read_text()) == []


def test_write_targets_writes_both_files_from_the_records(tmp_path):
    store = StateStore(tmp_path / "state")
    store.write_gateway(gateway())
    store.write_replica(replica("chat-a"))
    out = tmp_path / "targets"
    assert write_targets(store, out) is True
    assert json.loads((out / GATEWAY_FILE).read_text()) == [{"targets": ["127.0.0.1:9199"], "labels": {}}]
    assert json.loads((out / REPLICAS_FILE).read_text()) == [
        {"targets": ["127.0.0.1:19300"], "labels": {"deployment": "chat", "replica": "chat-a", "runtime": "local"}}]
    assert sorted(p.name for p in out.iterdir()) == [GATEWAY_FILE, RECONCILER_FILE, REPLICAS_FILE]  # no temp file


def test_write_targets_leaves_unchanged_files_alone_and_replaces_a_changed_one_by_rename(tmp_path):
    store = StateStore(tmp_path / "state")
    store.write_replica(replica("chat-a"))
    out = tmp_path / "targets"
    write_targets(store, out)
    before = {name: os.stat(out / name) for name in (GATEWAY_FILE, REPLICAS_FILE)}
    assert write_targets(store, out) is False
    assert {name: os.stat(out / name).st_mtime_ns for name in before} == \
        {name: s.st_mtime_ns for name, s in before.items()}

    store.write_replica(replica("chat-b", port=19301))
    assert write_targets(store, out) is True
    assert os.stat(out / GATEWAY_FILE).st_ino == before[GATEWAY_FILE].st_ino      # untouched
    assert os.stat(out / REPLICAS_FILE).st_ino != before[REPLICAS_FILE].st_ino    # a new file renamed in place
    assert len(json.loads((out / REPLICAS_FILE).read_text())) == 2

    store.remove_replica("chat", "chat-a")
    store.remove_replica("chat", "chat-b")
    assert write_targets(store, out) is True
    assert json.loads((out / REPLICAS_FILE).read_text()) == []


def test_refresh_targets_writes_under_the_state_directory_and_reads_back(tmp_path):
    store = StateStore(tmp_path)
    store.write_replica(replica("chat-a"))
    assert refresh_targets(tmp_path) is True
    assert targets_dir(tmp_path) == tmp_path / "monitoring" / "targets"
    assert read_target_files(targets_dir(tmp_path)) == {
        "enova-gateway": [],
        "enova-replicas": [{"targets": ["127.0.0.1:19300"],
                            "labels": {"deployment": "chat", "replica": "chat-a", "runtime": "local"}}],
        "enova-reconciler": [],
    }
    assert refresh_targets(tmp_path) is False


def test_unreadable_target_files_read_as_no_targets(tmp_path):
    (tmp_path / GATEWAY_FILE).write_text("{not json")
    assert read_target_files(tmp_path) == {"enova-gateway": [], "enova-replicas": [], "enova-reconciler": []}
