"""The local runtime: engine replicas as processes on this machine that outlive enova.

Each replica runs in its own session (so it survives the enova command and can be signalled
as a group), logs to its own file (opened O_APPEND, so enova.observe.logs can rotate it by
copy-and-truncate), and is recorded in the state directory before anyone waits on it. Its
handle is {"pid", "create_time"}: a pid alone is not an identity, so only a recorded process
whose start time still matches is ever signalled. Implements enova.runtime.base.Runtime.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from threading import Lock

import psutil

from enova.observe.health import probe_many
from enova.observe.processes import check_process, process_start_time, terminate_group
from enova.observe.state import ReplicaRecord, StateStore

from .base import Discovered, Liveness, ReplicaStartError, StartRequest
from .procs import child_environment, follow_file, log_tail

Progress = Callable[[str], None]


def _pid(record: ReplicaRecord) -> tuple[int, float]:
    handle = record.handle or {}
    return int(handle.get("pid", -1)), float(handle.get("create_time", 0.0))


class LocalRuntime:
    """Starts, probes and stops replica processes. Different replicas may be driven from
    different threads."""

    name = "local"

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, progress: Progress = lambda m: None):
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.progress = progress
        self._children: dict[int, subprocess.Popen] = {}
        self._lock = Lock()

    def start(self, request: StartRequest) -> ReplicaRecord:
        log_path = self.store.log_path(request.deployment, request.replica_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = child_environment(request.launch.env)
        with open(log_path, "ab") as log:
            log.write(f"--- enova: starting {request.replica_id}: {request.launch.argv}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    request.launch.argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                    cwd=self.store.root,
                )
            except OSError as exc:
                raise ReplicaStartError(
                    f"{request.deployment}: cannot start {request.launch.argv[0]}: {exc}") from exc
        with self._lock:
            self._children[proc.pid] = proc
        try:
            create_time = process_start_time(proc.pid)
        except psutil.NoSuchProcess:
            create_time = 0.0
        record = ReplicaRecord(
            id=request.replica_id, deployment=request.deployment, host=request.endpoint.host,
            port=request.endpoint.port, config_hash=request.config_hash, config=request.config,
            argv=request.launch.argv, log=str(log_path), runtime=self.name,
            handle={"pid": proc.pid, "create_time": create_time}, state="starting",
            started_at=self.clock(), start_timeout=request.start_timeout, cpus=list(request.cpus),
            gpus=list(request.gpus), model_path=request.model_path,
        )
        self.store.write_replica(record)
        return record

    def liveness(self, record: ReplicaRecord) -> Liveness:
        pid, create_time = _pid(record)
        check = check_process(pid, create_time)
        if not check.alive:
            self._reap(pid)
        return Liveness(check.alive, "" if check.alive else check.detail)

    def probe(self, records: Iterable[ReplicaRecord], timeout: float = 2.0) -> dict[str, bool]:
        records = list(records)
        health = probe_many(((r.host, r.port) for r in records), timeout)
        return {r.id: health.get((r.host, r.port), False) for r in records}

    def stop(self, record: ReplicaRecord, grace: float = 30.0) -> float:
        """SIGTERM to the process group, SIGKILL after `grace`; never signals a process whose
        identity does not match the record."""
        began = self.monotonic()
        pid, create_time = _pid(record)
        if check_process(pid, create_time).alive:
            record.state = "stopping"
            self.store.write_replica(record)
            terminate_group(pid, grace, on_kill=lambda: self.progress(
                f"{record.deployment}: {record.id} did not stop in {grace:.0f} s; killing it"))
        self._reap(pid)
        self.store.remove_replica(record.deployment, record.id)
        return self.monotonic() - began

    def forget(self, record: ReplicaRecord) -> None:
        self._reap(_pid(record)[0])
        self.store.remove_replica(record.deployment, record.id)

    def log_tail(self, record: ReplicaRecord, lines: int = 25) -> str:
        return log_tail(record.log, lines)

    def describe(self, record: ReplicaRecord) -> str:
        return f"pid {_pid(record)[0]}"

    def logs(self, record: ReplicaRecord, tail: int = 100, follow: bool = False) -> Iterator[str]:
        return follow_file(record.log, tail, follow, lambda: self.liveness(record).alive)

    def check(self, config: dict[str, Any]) -> list[str]:
        return []  # the engine build is checked by apply (engine_problem) for local replicas

    def inventory(self, config: dict[str, Any]) -> None:
        return None  # processes run here: NVML's inventory

    def discover(self, known: set[str]) -> list[Discovered]:
        return []  # a process carries no label to be found by; its record is its only trace

    def _reap(self, pid: int) -> None:
        with self._lock:
            proc = self._children.pop(pid, None)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                with self._lock:
                    self._children[pid] = proc
