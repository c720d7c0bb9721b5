"""Observation: state records joined with what the runtime reports into the planner's values.

A record says what enova last did; the world decides what is. A replica whose record still
says `starting` (an apply or reconciler was interrupted, or is still waiting on it) is judged
from the world on every observation: healthy -> READY (apply then records it ready), past its
start timeout and never healthy -> FAILED (replaced), otherwise STARTING (adopted and waited
for). Starting replicas are always probed; the others only when `probe_health` is asked.
Read-only, except adoption: replicas a runtime owns by its labels but the state directory does
not know are written back first (see adopt). Called by the CLI (diff, apply), enode, the
reconciler and enova.status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from enova.observe.processes import check_process
from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore
from enova.plan.model import ObservedDeployment, ObservedGateway, ObservedReplica, ReplicaState

from .base import Runtime

_STATES = {"starting": ReplicaState.STARTING, "ready": ReplicaState.READY,
           "draining": ReplicaState.STOPPING, "stopping": ReplicaState.STOPPING}


@dataclass(frozen=True)
class ReplicaDetail:
    """A replica as status shows it: its record and what observation found."""

    record: ReplicaRecord
    observed: ObservedReplica


@dataclass(frozen=True)
class World:
    deployments: dict[str, ObservedDeployment] = field(default_factory=dict)
    details: dict[str, list[ReplicaDetail]] = field(default_factory=dict)
    gateway: ObservedGateway | None = None


def judge(record: ReplicaRecord, alive: bool, exit_detail: str, healthy: bool | None, now: float,
          where: str = "") -> ObservedReplica:
    """What one replica is, from its record and the world. Pure."""
    state = _STATES.get(record.state, ReplicaState.STARTING)
    detail = ""
    if not alive:
        state, detail, healthy = ReplicaState.EXITED, exit_detail, False
    elif state is ReplicaState.STARTING:
        if healthy:
            state, detail = ReplicaState.READY, "healthy; recorded as starting"
        elif now - record.started_at > record.start_timeout:
            state = ReplicaState.FAILED
            detail = (f"not healthy {now - record.started_at:.0f} s after start "
                      f"(engine.startup_timeout {record.start_timeout:g} s)")
    return ObservedReplica(
        id=record.id, config_hash=record.config_hash, config=record.config, state=state,
        started_at=record.started_at, where=where, port=record.port, healthy=healthy, detail=detail,
        recorded=record.state)


def observe(store: StateStore, runtime: Runtime, *, now: float, probe_health: bool = False,
            names: list[str] | None = None, probe_timeout: float = 2.0,
            gateway: bool = True) -> World:
    """Every deployment with records in the state directory (or those in `names`), its replicas
    judged, and the gateway's record. Blocks for the probes."""
    def read() -> tuple[list[str], dict[str, list[ReplicaRecord]]]:
        wanted = store.deployment_names() if names is None else [n for n in names if store.has_deployment(n)]
        return wanted, {name: store.replicas(name) for name in wanted}

    wanted, records = read()
    if adopt(store, runtime, now, names, known={r.id for rs in records.values() for r in rs}):
        wanted, records = read()
    alive = {r.id: runtime.liveness(r) for rs in records.values() for r in rs}
    to_probe = [r for rs in records.values() for r in rs
                if alive[r.id].alive and (probe_health or r.state == "starting")]
    health = runtime.probe(to_probe, probe_timeout) if to_probe else {}
    details: dict[str, list[ReplicaDetail]] = {}
    deployments: dict[str, ObservedDeployment] = {}
    for name, rs in records.items():
        items = [ReplicaDetail(r, judge(r, alive[r.id].alive, alive[r.id].detail, health.get(r.id), now,
                                        runtime.describe(r)))
                 for r in rs]
        details[name] = items
        record = store.read_deployment(name)
        deployments[name] = ObservedDeployment(
            name=name, replicas=tuple(d.observed for d in items),
            serving=dict(record.serving) if record is not None else None,
            settings=dict(record.settings) if record is not None else None)
    return World(deployments, details, observe_gateway(store) if gateway else None)


def adopt(store: StateStore, runtime: Runtime, now: float, names: list[str] | None = None,
          known: set[str] | None = None) -> list[str]:
    """Write the records of replicas the runtime runs and owns but the state directory does not
    know (labelled containers after the state directory was lost or moved), with their
    deployment's record when it is missing too, so a fresh enova plans them as running and
    takes no action. `known`: the recorded ids of the deployments in `names` (read here when
    not given). Returns the adopted ids. Idempotent."""
    if known is None:
        known = {r.id for r in store.all_replicas()}
    found = [d for d in runtime.discover(known) if names is None or d.record.deployment in names]
    starting = [d.record for d in found if d.record.state == "starting"]
    healthy = runtime.probe(starting) if starting else {}
    for item in found:
        if healthy.get(item.record.id):  # it answers: recorded ready, as the apply that started it would have
            item.record.state, item.record.ready_at = "ready", now
        store.write_replica(item.record)
    for name in sorted({d.record.deployment for d in found}):
        if store.read_deployment(name) is None:
            mine = [d for d in found if d.record.deployment == name]
            first = mine[0]
            store.write_deployment(DeploymentRecord(
                name=name, replicas=len(mine), config_hash=first.record.config_hash, config=first.record.config,
                applied_at=now, source="adopted from the runtime's labels", serving=dict(first.serving),
                settings=dict(first.settings)))
    return [d.record.id for d in found]


def observe_gateway(store: StateStore) -> ObservedGateway | None:
    """The gateway enova started, if it has a record, and whether that process still runs."""
    record = store.read_gateway()
    if record is None:
        return None
    check = check_process(record.pid, record.create_time)
    return ObservedGateway(config_hash=record.config_hash, config=record.config, alive=check.alive,
                           where=f"pid {record.pid}", detail="" if check.alive else check.detail)


RuntimeFactory = Callable[[StateStore], Runtime]
