"""State records survive a power cut: the record's bytes and the rename are fsynced, and a write
that fails half-way leaves the previous record and no temporary file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from enova.observe.state import write_json


@pytest.fixture
def fsynced(monkeypatch) -> list[str]:
    """The targets (paths, as /proc/self/fd names them) of every fsync, in order; the real fsync still runs."""
    targets: list[str] = []
    real = os.fsync

    def recording_fsync(fd):
        targets.append(os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return targets


def test_a_record_is_written_whole_and_reads_back(tmp_path):
    path = tmp_path / "deployments" / "llama" / "deployment.json"
    data = {"name": "llama", "replicas": 3, "args": ["--x"] * 1000, "note": "ünïcode"}
    write_json(path, data)
    assert json.loads(path.read_text()) == data
    assert path.read_text().endswith("}\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["deployment.json"]


def test_the_temp_file_is_fsynced_before_the_rename_and_the_folder_after_it(tmp_path, fsynced):
    path = tmp_path / "gateway" / "gateway.json"
    write_json(path, {"pid": 1})
    assert len(fsynced) == 2, fsynced
    file_target, dir_target = fsynced
    # The file is fsynced while it still has its temporary name, in the record's own folder.
    assert Path(file_target).parent == path.parent
    assert Path(file_target).name.startswith(".gateway.json.") and file_target.endswith(".tmp")
    assert dir_target == str(path.parent)


def test_a_failing_fsync_leaves_the_previous_record_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "replicas" / "r1.json"
    write_json(path, {"state": "ready"})

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_json(path, {"state": "stopping"})
    assert json.loads(path.read_text()) == {"state": "ready"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r1.json"]


def test_data_that_cannot_be_serialised_half_way_leaves_no_temp_file(tmp_path):
    path = tmp_path / "r2.json"
    with pytest.raises(TypeError):
        write_json(path, {"a": "fine", "z": object()})      # sort_keys: "a" is written before "z" fails
    assert list(tmp_path.iterdir()) == []


def test_listing_replicas_while_another_thread_removes_them_never_fails(tmp_path):
    """Passes for different deployments run in parallel: one lists every record (to allocate
    cores, ports, GPUs) while another stops a replica and removes its record."""
    import threading

    from enova.observe.state import ReplicaRecord, StateStore
    store = StateStore(tmp_path)
    errors = []
    done = threading.Event()

    def churn():
        i = 0
        while not done.is_set():
            record = ReplicaRecord(id=f"r{i % 20}", deployment="d", host="127.0.0.1", port=1, config_hash="h",
                                   config={}, argv=[], log="")
            store.write_replica(record)
            store.remove_replica("d", record.id)
            i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(2000):
            try:
                store.all_replicas()
            except Exception as exc:  # noqa: BLE001 - the race under test
                errors.append(exc)
    finally:
        done.set()
        thread.join()
    assert not errors, errors[:3]
