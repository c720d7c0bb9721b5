"""Sync status and health status of each deployment, kept apart (as Argo CD does).

Sync: does what runs match the specs? (Synced / OutOfSync / Unknown when no specs were read.)
Health: is what runs working? (Healthy / Progressing / Degraded / Missing.)
Pure: derived from a Plan and observed replicas. Called by enova.status (the view `enova status` prints).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from .model import Action, ObservedDeployment, Plan, ReplicaState


class Sync(str, Enum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    UNKNOWN = "Unknown"


class Health(str, Enum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    MISSING = "Missing"


@dataclass(frozen=True)
class DeploymentStatus:
    name: str
    sync: Sync
    sync_reason: str
    health: Health
    health_reason: str
    desired: int | None
    running: int


def health_of(observed: ObservedDeployment | None, desired: int | None) -> tuple[Health, str]:
    replicas = observed.replicas if observed else ()
    live = [r for r in replicas if r.alive]
    exited = [r for r in replicas if not r.alive]
    want = desired if desired is not None else len(live)
    if not live:
        if want == 0 and not exited:
            return Health.HEALTHY, "scaled to zero"
        detail = f"; {len(exited)} exited ({', '.join(r.detail or r.id for r in exited)})" if exited else ""
        return Health.MISSING, f"no replica running{detail}"
    starting = [r for r in live if r.state in (ReplicaState.STARTING, ReplicaState.STOPPING)]
    if starting:
        return Health.PROGRESSING, f"{len(starting)} replica(s) starting or stopping"
    unhealthy = [r for r in live if r.healthy is False]
    if exited or unhealthy or len(live) < want:
        parts = []
        if exited:
            parts.append(f"{len(exited)} exited ({', '.join(f'{r.id}: {r.detail}' for r in exited)})")
        if unhealthy:
            parts.append(f"{len(unhealthy)} failing health checks ({', '.join(r.id for r in unhealthy)})")
        if len(live) < want:
            parts.append(f"{len(live)} of {want} running")
        return Health.DEGRADED, "; ".join(parts)
    return Health.HEALTHY, f"{len(live)} replica(s) ready"


def deployment_statuses(plan: Plan | None,
                        observed: Mapping[str, ObservedDeployment]) -> list[DeploymentStatus]:
    """One status per deployment in the plan (or, without specs, per observed deployment)."""
    out = []
    if plan is None:
        for name in sorted(observed):
            health, why = health_of(observed[name], None)
            out.append(DeploymentStatus(name, Sync.UNKNOWN, "no specs given", health, why, None,
                                        sum(1 for r in observed[name].replicas if r.alive)))
        return out
    for change in plan.deployment_changes:
        want = plan.desired.get(change.deployment)
        have = observed.get(change.deployment)
        synced = change.action is Action.NOOP and not change.orphaned
        health, why = health_of(have, want.replicas if want else None)
        out.append(DeploymentStatus(
            change.deployment, Sync.SYNCED if synced else Sync.OUT_OF_SYNC,
            change.reason if not synced else "matches the specs",
            health, why, want.replicas if want else None,
            sum(1 for r in (have.replicas if have else ()) if r.alive)))
    return out
