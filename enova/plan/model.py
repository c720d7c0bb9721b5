"""The plan as data: desired and observed deployments in, a sorted list of Changes out.

Everything here is plain frozen data with no I/O, so golden tests can build it from JSON
files and the CLI can render it. Produced by plan.diff, consumed by apply and plan.render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Action(str, Enum):
    CREATE = "create"
    REPLACE = "replace"
    SCALE = "scale"
    UPDATE = "update"  # in place: records rewritten, replicas adopted; no process restarts
    DELETE = "delete"
    NOOP = "noop"


@dataclass(frozen=True)
class DesiredDeployment:
    """What the specs ask for one deployment, computed once over the whole spec set, carrying
    everything apply needs. `config` is the replica config (plan.fields REPLACE paths);
    `serving` is what the gateway reads (default, max_concurrency, drain_timeout) and
    `settings` the other in-place fields (startup_timeout, slo): both are written to the
    deployment record in place."""

    name: str
    replicas: int
    config: dict[str, Any]
    config_hash: str
    source: str = ""  # file:line of the document, for messages
    serving: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    base_dir: str = ""  # the spec file's folder: relative model paths resolve against it
    # who owns `replicas`: "spec" (spec.replicas) or "autoscaler" (spec.scaling is set: the
    # autoscaler's persisted target, clamped to [min, max]); replicas_why says how it was reached
    replicas_from: str = "spec"
    replicas_why: str = ""
    # engine.args auto (plan.auto): the recommendation behind the args, and which args it chose
    auto: Any = field(default=None, compare=False)  # enova.recommend.model.Recommendation | None
    auto_chosen: tuple[str, ...] = ()
    # why this deployment's desired config cannot be computed (auto unresolvable): the planner
    # keeps whatever runs for it and reports this
    blocked: str = ""

    @property
    def start_timeout(self) -> float:
        return float(self.settings.get("startup_timeout", 600.0))

    @property
    def drain_timeout(self) -> float:
        return float(self.serving.get("drain_timeout", 30.0))


class ReplicaState(str, Enum):
    """What observation found for one replica record."""

    STARTING = "starting"  # process alive, not yet reported healthy
    READY = "ready"        # process alive and passed its health check once
    STOPPING = "stopping"  # being drained/stopped by enova
    EXITED = "exited"      # the process is gone (or the pid now belongs to another process)
    FAILED = "failed"      # alive, but failing health checks for too long, or never healthy
                           # within its start timeout: to be replaced


@dataclass(frozen=True)
class ObservedReplica:
    id: str
    config_hash: str
    config: dict[str, Any]
    state: ReplicaState
    started_at: float = 0.0
    where: str = ""              # the runtime's name for it ("pid 1234")
    port: int | None = None
    healthy: bool | None = None  # None: not probed
    detail: str = ""             # why it is in that state (e.g. "pid 1234 exited")
    recorded: str = ""           # the state its record holds (starting, ready, draining, stopping)

    @property
    def alive(self) -> bool:
        """The process runs (it may still be FAILED)."""
        return self.state is not ReplicaState.EXITED

    @property
    def serving(self) -> bool:
        """Counts toward the desired replicas: alive, not given up on, not being stopped."""
        return self.state in (ReplicaState.STARTING, ReplicaState.READY)


@dataclass(frozen=True)
class ObservedDeployment:
    name: str
    replicas: tuple[ObservedReplica, ...] = ()
    managed: bool = True  # a deployment record exists (enova created it)
    # the in-place fields as last applied (from the deployment record); None: no record
    serving: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None


@dataclass(frozen=True)
class DesiredGateway:
    """The gateway the specs ask for (a Gateway document, or the defaults)."""

    config: dict[str, Any]
    config_hash: str


@dataclass(frozen=True)
class ObservedGateway:
    config_hash: str
    config: dict[str, Any]
    alive: bool
    where: str = ""
    detail: str = ""


GATEWAY = "gateway"  # the subject name of gateway changes


@dataclass(frozen=True)
class FieldChange:
    path: str  # dotted, under spec (e.g. engine.args.max_num_seqs)
    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    """One deployment's change. Replicas named in `wait` (current config, recorded as starting)
    are waited for until healthy and recorded ready; `start` new replicas are started (with
    config_after); replicas in `roll` (live, stale config) are each stopped only after a
    successor (waited-for or new) is ready; replicas in `stop` (failed, left stopping, surplus)
    are drained and stopped directly; records in `forget` (exited replicas) are removed;
    `update` names the in-place fields rewritten in the deployment record."""

    deployment: str
    action: Action
    reason: str
    replicas_before: int
    replicas_after: int
    config_before: str | None = None
    config_after: str | None = None
    fields: tuple[FieldChange, ...] = ()
    start: int = 0
    stop: tuple[str, ...] = ()
    forget: tuple[str, ...] = ()
    wait: tuple[str, ...] = ()
    roll: tuple[str, ...] = ()
    update: tuple[FieldChange, ...] = ()
    orphaned: bool = False  # not in the specs and kept running because prune is off
    kind: str = "deployment"  # "deployment" | "gateway" (then `deployment` is "gateway")
    replicas_from: str = "spec"  # "autoscaler": replicas_after is the autoscaler's count, not spec.replicas
    blocked: str = ""  # the desired config cannot be computed (DesiredDeployment.blocked): nothing is changed

    def to_dict(self) -> dict[str, Any]:
        replicas: dict[str, Any] = {"before": self.replicas_before, "after": self.replicas_after}
        if self.replicas_from != "spec":
            replicas["managed_by"] = self.replicas_from
        return {
            "kind": self.kind,
            "deployment": self.deployment,
            "action": self.action.value,
            "reason": self.reason,
            "replicas": replicas,
            "config": {"before": self.config_before, "after": self.config_after},
            "fields": [{"path": f.path, "before": f.before, "after": f.after} for f in self.fields],
            "start": self.start,
            "stop": list(self.stop),
            "forget": list(self.forget),
            "wait": list(self.wait),
            "roll": list(self.roll),
            "update": [{"path": f.path, "before": f.before, "after": f.after} for f in self.update],
            "orphaned": self.orphaned,
            **({"blocked": self.blocked} if self.blocked else {}),
        }


COUNTED = (Action.CREATE, Action.REPLACE, Action.SCALE, Action.UPDATE, Action.DELETE)


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    prune: bool = False
    desired: dict[str, DesiredDeployment] = field(default_factory=dict, compare=False, repr=False)
    gateway: DesiredGateway | None = field(default=None, compare=False, repr=False)

    @property
    def deployment_changes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.kind == "deployment")

    @property
    def gateway_change(self) -> Change | None:
        return next((c for c in self.changes if c.kind == GATEWAY), None)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    @property
    def has_changes(self) -> bool:
        """True when applying would change something (orphans kept without prune do not count)."""
        return any(c.action is not Action.NOOP for c in self.changes)

    @property
    def blocked(self) -> tuple[Change, ...]:
        """Deployments whose desired config cannot be computed; nothing is planned for them."""
        return tuple(c for c in self.changes if c.blocked)

    @property
    def orphans(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.orphaned)

    def summary(self) -> str:
        return (
            f"Plan: {self.count(Action.CREATE)} to create, {self.count(Action.REPLACE)} to replace, "
            f"{self.count(Action.SCALE)} to scale, {self.count(Action.UPDATE)} to update in place, "
            f"{self.count(Action.DELETE)} to delete."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "prune": self.prune,
            "has_changes": self.has_changes,
            "summary": {a.value: self.count(a) for a in Action},
            "changes": [c.to_dict() for c in self.changes],
        }
