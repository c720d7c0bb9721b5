"""Observe the local runtime: state records joined with the process table (and, when
asked, health probes) into the planner's ObservedDeployment values.

Called by the CLI (diff, apply, status) and the reconciler. Read-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from enova.plan.model import ObservedDeployment, ObservedGateway, ObservedReplica, ReplicaState

from .health import probe_many
from .processes import check_process
from .state import ReplicaRecord, StateStore

_STATES = {"starting": ReplicaState.STARTING, "ready": ReplicaState.READY,
           "draining": ReplicaState.STOPPING, "stopping": ReplicaState.STOPPING}


@dataclass(frozen=True)
class ObservedReplicaDetail:
    """A replica as status shows it: its record and what observation found."""

    record: ReplicaRecord
    observed: ObservedReplica


def observe_replica(record: ReplicaRecord, healthy: bool | None = None) -> ObservedReplica:
    check = check_process(record.pid, record.create_time)
    state = _STATES.get(record.state, ReplicaState.STARTING) if check.alive else ReplicaState.EXITED
    return ObservedReplica(
        id=record.id, config_hash=record.config_hash, config=record.config, state=state,
        started_at=record.started_at, pid=record.pid, port=record.port,
        healthy=healthy if check.alive else False,
        detail="" if check.alive else check.detail,
    )


def observe(store: StateStore, *, probe_health: bool = False,
            probe_timeout: float = 2.0) -> dict[str, ObservedDeployment]:
    """Every deployment with records in the state directory, with its replicas' liveness
    (and health, if `probe_health`). Blocks for the probes when asked for them."""
    details = observe_details(store, probe_health=probe_health, probe_timeout=probe_timeout)
    return {
        name: ObservedDeployment(name=name, replicas=tuple(d.observed for d in items))
        for name, items in details.items()
    }


def observe_details(store: StateStore, *, probe_health: bool = False, probe_timeout: float = 2.0,
                    names: list[str] | None = None) -> dict[str, list[ObservedReplicaDetail]]:
    """Records joined with liveness (and health) for `names` (default: every deployment)."""
    wanted = store.deployment_names() if names is None else [n for n in names if store.has_deployment(n)]
    records = {name: store.replicas(name) for name in wanted}
    health: dict[tuple[str, int], bool] = {}
    if probe_health:
        health = probe_many(((r.host, r.port) for rs in records.values() for r in rs), probe_timeout)
    return {
        name: [ObservedReplicaDetail(r, observe_replica(r, health.get((r.host, r.port)) if probe_health else None))
               for r in rs]
        for name, rs in records.items()
    }


def observe_gateway(store: StateStore) -> ObservedGateway | None:
    """The gateway enova started, if it has a record, and whether that process still runs."""
    record = store.read_gateway()
    if record is None:
        return None
    check = check_process(record.pid, record.create_time)
    return ObservedGateway(config_hash=record.config_hash, config=record.config, alive=check.alive,
                           pid=record.pid, detail="" if check.alive else check.detail)
