"""`enova logs` reads a deployment's engine output through its runtime: the last lines of one
replica, every replica prefixed with its id, and clear errors for an unknown name or replica."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from enova.observe.state import ReplicaRecord, StateStore

_SCRIPT = Path(sys.executable).with_name("enova")
ENOVA = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "enova.cli"]


def run(state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ENOVA, "logs", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ENOVA_STATE_DIR": str(state)})


def replica(store: StateStore, rid: str, lines: list[str]) -> None:
    log = store.log_path("chat", rid)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"{line}\n" for line in lines))
    store.write_replica(ReplicaRecord(id=rid, deployment="chat", host="127.0.0.1", port=19300, config_hash="h",
                                      config={}, argv=[], log=str(log), runtime="local",
                                      handle={"pid": 999999, "create_time": 1.0}))


def test_the_last_lines_of_one_replica_and_every_replica_prefixed(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    replica(store, "chat-aaaaaa", [f"a{i}" for i in range(10)])
    replica(store, "chat-bbbbbb", ["b0", "b1"])
    one = run(tmp_path / "state", "chat", "--replica", "chat-aaaaaa", "--tail", "3")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines() == ["a7", "a8", "a9"]
    both = run(tmp_path / "state", "chat", "-n", "1")
    assert sorted(both.stdout.splitlines()) == ["chat-aaaaaa | a9", "chat-bbbbbb | b1"]


def test_an_unknown_deployment_or_replica_is_a_usage_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    replica(store, "chat-aaaaaa", ["x"])
    missing = run(tmp_path / "state", "nope")
    assert missing.returncode == 2 and "no replicas of 'nope'" in missing.stderr and "chat" in missing.stderr
    wrong = run(tmp_path / "state", "chat", "--replica", "chat-zzzzzz")
    assert wrong.returncode == 2 and "chat-zzzzzz" in wrong.stderr
