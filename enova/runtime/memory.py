"""An in-memory runtime: replicas that exist only in this process, for fast tests of the
decision logic (apply, reconcile, autoscale) without engines.

Records are written to a real StateStore like every runtime does, so the planner, the
gateway's endpoint source and status read them as usual. Each replica's behaviour is
scripted per deployment: healthy after `ready_after` seconds of the injected clock, exiting
at start (`crash`), or never healthy (`hang`); tests can also kill a replica, make it fail
its health checks, or make a stop fail. Every call is recorded in `calls` so that tests can
assert on the order of starts and stops. Thread-safe. Implements enova.runtime.base.Runtime.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from dataclasses import dataclass, field

from enova.observe.state import ReplicaRecord, StateStore

from .base import Discovered, Liveness, ReplicaStartError, StartRequest


@dataclass
class Behaviour:
    """How the replicas of one deployment behave once started."""

    ready_after: float = 0.0   # seconds of the clock until /health answers 200
    crash: bool = False        # exits at once after starting
    hang: bool = False         # runs, never healthy
    fail_spawn: bool = False   # cannot even be started


@dataclass
class Instance:
    record_id: str
    deployment: str
    started: float
    behaviour: Behaviour
    alive: bool = True
    unhealthy: bool = False    # set by tests: running but failing /health
    exit_detail: str = ""
    log: list[str] = field(default_factory=list)


class MemoryRuntime:
    name = "memory"

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock
        self.behaviours: dict[str, Behaviour] = {}
        self.instances: dict[str, Instance] = {}
        self.calls: list[tuple[str, str]] = []   # ("start" | "stop" | "forget", replica id)
        self.unrecorded: dict[str, Discovered] = {}  # running, owned, but with no record (see plant)
        self.problems: dict[str, list[str]] = {}     # check() answers, by config["runtime"]
        self._lock = threading.Lock()
        self._next = 0

    # ---- scripting (tests) ----------------------------------------------------------------
    def behave(self, deployment: str, **kwargs) -> None:
        self.behaviours[deployment] = Behaviour(**kwargs)

    def kill(self, replica_id: str, detail: str = "killed") -> None:
        with self._lock:
            inst = self.instances[replica_id]
            inst.alive, inst.exit_detail = False, detail

    def set_unhealthy(self, replica_id: str, unhealthy: bool = True) -> None:
        with self._lock:
            self.instances[replica_id].unhealthy = unhealthy

    def adopt(self, record: ReplicaRecord, behaviour: Behaviour | None = None) -> ReplicaRecord:
        """Put a replica into the world as if an earlier enova had started it (and write its record)."""
        with self._lock:
            self._next += 1
            record.runtime, record.handle = self.name, {"instance": self._next}
            self.instances[record.id] = Instance(record.id, record.deployment, record.started_at,
                                                 behaviour or self.behaviours.get(record.deployment, Behaviour()))
        self.store.write_replica(record)
        return record

    def plant(self, record: ReplicaRecord, serving: dict | None = None, settings: dict | None = None) -> None:
        """A replica that runs and is enova's but has no record (as a labelled container a fresh
        state directory knows nothing of): discover() reports it."""
        with self._lock:
            self._next += 1
            record.runtime, record.handle = self.name, {"instance": self._next}
            self.instances[record.id] = Instance(record.id, record.deployment, record.started_at,
                                                 self.behaviours.get(record.deployment, Behaviour()))
            self.unrecorded[record.id] = Discovered(record, dict(serving or {}), dict(settings or {}))

    def running(self, deployment: str | None = None) -> list[str]:
        with self._lock:
            return sorted(i.record_id for i in self.instances.values()
                          if i.alive and (deployment is None or i.deployment == deployment))

    def ids(self, kind: str) -> list[str]:
        return [rid for k, rid in self.calls if k == kind]

    # ---- the Runtime interface ------------------------------------------------------------
    def start(self, request: StartRequest) -> ReplicaRecord:
        behaviour = self.behaviours.get(request.deployment, Behaviour())
        if behaviour.fail_spawn:
            raise ReplicaStartError(f"{request.deployment}: cannot start {request.launch.argv[0]}: scripted")
        now = self.clock()
        with self._lock:
            self._next += 1
            handle = {"instance": self._next}
            inst = Instance(request.replica_id, request.deployment, now, behaviour)
            if behaviour.crash:
                inst.alive, inst.exit_detail = False, "exited with code 1"
                inst.log.append("RuntimeError: scripted crash at start")
            self.instances[request.replica_id] = inst
            self.calls.append(("start", request.replica_id))
        record = ReplicaRecord(
            id=request.replica_id, deployment=request.deployment, host=request.endpoint.host,
            port=request.endpoint.port, config_hash=request.config_hash, config=request.config,
            argv=list(request.launch.argv), log=f"memory:{request.replica_id}", runtime=self.name,
            handle=handle, state="starting", started_at=now, start_timeout=request.start_timeout,
            cpus=list(request.cpus), gpus=list(request.gpus), model_path=request.model_path)
        self.store.write_replica(record)
        return record

    def liveness(self, record: ReplicaRecord) -> Liveness:
        with self._lock:
            inst = self.instances.get(record.id)
            if inst is None:
                return Liveness(False, "not in this runtime")
            return Liveness(inst.alive, "" if inst.alive else inst.exit_detail)

    def probe(self, records: Iterable[ReplicaRecord], timeout: float = 2.0) -> dict[str, bool]:
        now = self.clock()
        out = {}
        with self._lock:
            for r in records:
                inst = self.instances.get(r.id)
                out[r.id] = bool(inst and inst.alive and not inst.unhealthy and not inst.behaviour.hang
                                 and now - inst.started >= inst.behaviour.ready_after)
        return out

    def stop(self, record: ReplicaRecord, grace: float = 30.0) -> float:
        with self._lock:
            inst = self.instances.get(record.id)
            if inst is not None:
                inst.alive, inst.exit_detail = False, "stopped by enova"
            self.calls.append(("stop", record.id))
        self.store.remove_replica(record.deployment, record.id)
        return 0.0

    def forget(self, record: ReplicaRecord) -> None:
        with self._lock:
            self.calls.append(("forget", record.id))
        self.store.remove_replica(record.deployment, record.id)

    def log_tail(self, record: ReplicaRecord, lines: int = 25) -> str:
        with self._lock:
            inst = self.instances.get(record.id)
            return "\n".join(inst.log[-lines:]) if inst else "(no log)"

    def describe(self, record: ReplicaRecord) -> str:
        return f"instance {record.handle.get('instance', '?')}"

    def logs(self, record: ReplicaRecord, tail: int = 100, follow: bool = False) -> Iterator[str]:
        with self._lock:
            inst = self.instances.get(record.id)
            lines = list(inst.log[-tail:]) if inst else []
        return iter(lines)

    def check(self, config: dict[str, Any]) -> list[str]:
        return list(self.problems.get(config.get("runtime", "local"), []))

    def inventory(self, config: dict[str, Any]) -> None:
        return None

    def discover(self, known: set[str]) -> list[Discovered]:
        with self._lock:
            return [d for rid, d in sorted(self.unrecorded.items())
                    if rid not in known and self.instances.get(rid) and self.instances[rid].alive]
