"""What the gateway may route to: frozen views of deployments and their replicas' endpoints,
and what changed between two of them.

A `Snapshot` is what an endpoint source (`source`) reads; views carry endpoints (host, port)
and serving state, never process details, so any source (the state directory today;
containers or cluster endpoints later) fills them the same way. `diff` compares two
snapshots for the log; `replica_limit` is the concurrency rule every source applies. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReplicaView:
    """One replica as its record describes it. `state`: starting | ready | draining | stopping."""

    id: str
    deployment: str
    host: str
    port: int
    state: str
    limit: int          # requests in flight before the gateway queues


@dataclass(frozen=True)
class DeploymentView:
    name: str
    default: bool = False
    max_concurrency: int | None = None
    replicas: tuple[ReplicaView, ...] = ()
    scale_from_zero: bool = False       # hold requests while no replica is ready (see hold)
    hold_timeout: float | None = None   # seconds a request may be held; set with scale_from_zero


@dataclass(frozen=True)
class Snapshot:
    deployments: dict[str, DeploymentView] = field(default_factory=dict)
    problems: tuple[str, ...] = ()      # records skipped, one message each

    def replica(self, deployment: str, replica_id: str) -> ReplicaView | None:
        dep = self.deployments.get(deployment)
        return next((r for r in dep.replicas if r.id == replica_id), None) if dep else None


def replica_limit(serving: dict[str, Any], config: dict[str, Any], default: int) -> int:
    """serving.max_concurrency if set, else the engine's max_num_seqs, else `default`."""
    limit = serving.get("max_concurrency")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        args = ((config or {}).get("engine") or {}).get("args") or {}
        limit = args.get("max_num_seqs")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        limit = default
    return limit


@dataclass(frozen=True)
class Change:
    subject: str        # "deployment smollm2" or "replica smollm2/smollm2-ab12cd"
    before: str         # "absent", a state, or a short description
    after: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.before} -> {self.after}"


def _describe(r: ReplicaView) -> str:
    return f"{r.state} {r.host}:{r.port} limit {r.limit}"


def _settings(d: DeploymentView) -> str:
    text = f"default={d.default} max_concurrency={d.max_concurrency}"
    if d.scale_from_zero:
        text += f" scale_from_zero hold_timeout={d.hold_timeout}"
    return text


def diff(old: Snapshot, new: Snapshot) -> list[Change]:
    """What differs between two snapshots, sorted by subject (deployments before their replicas)."""
    changes: list[Change] = []
    for name in sorted(set(old.deployments) | set(new.deployments)):
        a, b = old.deployments.get(name), new.deployments.get(name)
        subject = f"deployment {name}"
        if a is None or b is None:
            changes.append(Change(subject, "absent" if a is None else "present", "present" if b else "absent"))
        elif _settings(a) != _settings(b):
            changes.append(Change(subject, _settings(a), _settings(b)))
        ra = {r.id: r for r in (a.replicas if a else ())}
        rb = {r.id: r for r in (b.replicas if b else ())}
        for rid in sorted(set(ra) | set(rb)):
            x, y = ra.get(rid), rb.get(rid)
            if x != y:
                changes.append(Change(f"replica {name}/{rid}", _describe(x) if x else "absent",
                                      _describe(y) if y else "absent"))
    return changes
