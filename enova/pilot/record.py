"""`<state_dir>/pilot/pilot.json`: what a pilot started, so that it (or `enova pilot stop`, or the
next `enova pilot run` after a pilot that was killed) stops exactly that and nothing else.

A process is known by pid and start time (enova.observe.processes), never by pid alone. The
record names: the pilot process itself; the processes it spawned (reconciler, app server, web
UI), each in its own session; the deployments of its specs (their replicas are the
reconciler's records); and the gateway and Prometheus that ran before it started (those it
leaves running; any other gateway or Prometheus in the shared state was started for it and is
stopped with it). Written atomically. Called by enova.pilot.run and enova.pilot.stop.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from enova.errors import PermanentError
from enova.observe.processes import check_process, process_start_time, terminate_group
from enova.observe.state import write_json


@dataclass
class Handle:
    """One process: pid + start time, its argv and log."""

    pid: int
    create_time: float
    argv: list[str] = field(default_factory=list)
    log: str = ""

    @classmethod
    def of(cls, pid: int, argv: list[str] | None = None, log: str = "") -> "Handle":
        return cls(pid, process_start_time(pid), list(argv or []), log)

    def alive(self) -> bool:
        return check_process(self.pid, self.create_time).alive


@dataclass
class PilotRecord:
    pilot: Handle
    specs: str
    state_dir: str
    started_at: float
    deployments: list[str] = field(default_factory=list)
    # deployments in the shared state when pilot started that were not its own: never its to stop,
    # even when the specs are edited to name one
    others_before: list[str] = field(default_factory=list)
    processes: dict[str, Handle] = field(default_factory=dict)   # reconciler, app, webui
    # the gateway / Prometheus found running when pilot started (not pilot's: left running)
    gateway_before: Handle | None = None
    prometheus_before: Handle | None = None
    urls: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PilotRecord":
        def handle(value: Any) -> Handle | None:
            return Handle(**value) if isinstance(value, dict) else None
        return cls(pilot=handle(data["pilot"]), specs=data["specs"], state_dir=data["state_dir"],
                   started_at=float(data["started_at"]), deployments=list(data.get("deployments", [])),
                   others_before=list(data.get("others_before", [])),
                   processes={k: handle(v) for k, v in data.get("processes", {}).items()},
                   gateway_before=handle(data.get("gateway_before")),
                   prometheus_before=handle(data.get("prometheus_before")), urls=dict(data.get("urls", {})))


def record_path(state_dir: Path) -> Path:
    return Path(state_dir) / "pilot" / "pilot.json"


def read_record(state_dir: Path) -> PilotRecord | None:
    """The pilot record, or None. Raises PermanentError naming the file when it is unreadable."""
    path = record_path(state_dir)
    if not path.exists():
        return None
    try:
        return PilotRecord.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"{path}: unreadable pilot record ({exc}); if no pilot runs, remove it") from None


def write_record(state_dir: Path, record: PilotRecord) -> None:
    write_json(record_path(state_dir), record.to_dict())


def remove_record(state_dir: Path) -> None:
    record_path(state_dir).unlink(missing_ok=True)


def terminate(handle: Handle, grace: float) -> bool:
    """SIGTERM to the process's group (each child pilot starts leads its own session), SIGKILL
    after `grace`; blocks until the group is gone. Processes it started in sessions of their own
    (the reconciler's replicas, gateway and Prometheus) are neither signalled nor waited for.
    Never signals a process whose identity does not match. Returns whether it had to be killed."""
    if not handle.alive():
        return False
    killed = terminate_group(handle.pid, grace, own_group_only=True)
    _reap(handle.pid)
    return killed


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_gone(handle: Handle, timeout: float) -> bool:
    """Wait until the process has exited; True when it did within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not handle.alive():
            return True
        time.sleep(0.1)
    return not handle.alive()
