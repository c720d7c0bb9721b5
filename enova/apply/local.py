"""The local runtime: engine replicas as processes on this machine that outlive enova.

Each replica runs in its own session (so it survives the enova command and can be
signalled as a group), logs to its own file, and is recorded in the state directory
before enova waits on it. Only recorded processes whose identity still matches are ever
signalled. Called by apply.executor; the reconciler will drive it the same way.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from threading import Event

import psutil

from enova.engines.vllm import Launch
from enova.errors import TemporaryError
from enova.observe.health import probe
from enova.observe.processes import check_process, process_start_time
from enova.observe.state import ReplicaRecord, StateStore

Progress = Callable[[str], None]


class ReplicaStartError(TemporaryError):
    """A replica exited or did not become healthy in time. The message carries its last log lines."""


# systemd's notify variables belong to the controller; a replica or gateway must not inherit them.
SERVICE_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ONLY_ENV}
    env.update(extra or {})
    return env


def log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return "(no log)"


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def new_replica_id(deployment: str) -> str:
    return f"{deployment}-{secrets.token_hex(3)}"


class LocalRuntime:
    """Starts, probes and stops replica processes. Not thread-safe per replica, but different
    replicas may be driven from different threads."""

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, progress: Progress = lambda m: None):
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.progress = progress
        self._children: dict[int, subprocess.Popen] = {}

    def start(self, *, replica_id: str, deployment: str, launch: Launch, host: str, port: int,
              config: dict, config_hash: str, model_path: str, cpus: list[int],
              gpus: list[str]) -> ReplicaRecord:
        """Start the process and record it (state "starting"). Returns at once; does not wait
        for health. Raises ReplicaStartError if the process cannot be spawned."""
        log_path = self.store.log_path(deployment, replica_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = child_environment(launch.env)
        with open(log_path, "ab") as log:
            log.write(f"--- enova: starting {replica_id}: {launch.argv}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    launch.argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                    cwd=self.store.root,
                )
            except OSError as exc:
                raise ReplicaStartError(f"{deployment}: cannot start {launch.argv[0]}: {exc}") from exc
        self._children[proc.pid] = proc
        try:
            create_time = process_start_time(proc.pid)
        except psutil.NoSuchProcess:
            create_time = 0.0
        record = ReplicaRecord(
            id=replica_id, deployment=deployment, pid=proc.pid, create_time=create_time,
            host=host, port=port, config_hash=config_hash, config=config, argv=launch.argv,
            log=str(log_path), state="starting", started_at=self.clock(), cpus=cpus, gpus=gpus,
            model_path=model_path,
        )
        self.store.write_replica(record)
        return record

    def wait_ready(self, record: ReplicaRecord, timeout: float, stop: Event | None = None,
                   interval: float = 0.1) -> ReplicaRecord:
        """Block until the replica answers /health with 200 (then record it "ready"), its
        process exits, `timeout` seconds pass, or `stop` is set. Raises ReplicaStartError
        with the last log lines on exit or timeout."""
        deadline = self.monotonic() + timeout
        while True:
            check = check_process(record.pid, record.create_time)
            if not check.alive:
                self._reap(record.pid)
                raise ReplicaStartError(
                    f"{record.deployment}: replica {record.id} exited before becoming healthy "
                    f"({check.detail}); last lines of {record.log}:\n{log_tail(record.log)}")
            if probe(record.host, record.port, timeout=min(2.0, interval * 4)):
                record.state = "ready"
                record.ready_at = self.clock()
                self.store.write_replica(record)
                return record
            if self.monotonic() >= deadline:
                raise ReplicaStartError(
                    f"{record.deployment}: replica {record.id} was not healthy after {timeout:.0f} s "
                    f"(engine.startup_timeout); last lines of {record.log}:\n{log_tail(record.log)}",
                    delay=30.0)
            if stop is not None and stop.wait(interval):
                raise ReplicaStartError(f"{record.deployment}: interrupted while {record.id} was starting")
            elif stop is None:
                time.sleep(interval)

    def stop(self, record: ReplicaRecord, grace: float = 30.0) -> float:
        """Stop the replica's process group (SIGTERM, then SIGKILL after `grace`) and remove
        its record. Idempotent: a replica already gone is just forgotten. Never signals a
        process whose identity does not match the record. Returns seconds taken."""
        began = self.monotonic()
        check = check_process(record.pid, record.create_time)
        if check.alive:
            record.state = "stopping"
            self.store.write_replica(record)
            try:
                group = [psutil.Process(record.pid), *psutil.Process(record.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                group = []
            self._signal(record.pid, signal.SIGTERM)
            _, alive = psutil.wait_procs(group, timeout=grace)
            if alive:
                self.progress(f"{record.deployment}: {record.id} did not stop in {grace:.0f} s; killing it")
                self._signal(record.pid, signal.SIGKILL)
                for proc in alive:
                    try:
                        proc.kill()
                    except psutil.NoSuchProcess:
                        pass
                psutil.wait_procs(alive, timeout=5)
        self._reap(record.pid)
        self.store.remove_replica(record.deployment, record.id)
        return self.monotonic() - began

    def forget(self, record: ReplicaRecord) -> None:
        """Remove the record of a replica whose process is gone."""
        self._reap(record.pid)
        self.store.remove_replica(record.deployment, record.id)

    @staticmethod
    def _signal(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pgid, sig)

    def _reap(self, pid: int) -> None:
        proc = self._children.pop(pid, None)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._children[pid] = proc
