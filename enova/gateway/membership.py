"""What the gateway may route to: a snapshot of the state directory, and what changed.

`read_snapshot` reads every deployment and replica record that `enova apply` wrote (through
`enova.observe.state`) into frozen views; `diff` compares two snapshots for the log. A record
that cannot be read is skipped with a problem message (the replica keeps its last readable
view, if it had one), so one corrupt file never stops the gateway. Called by `watch` on every
change of the directory and on a timer; blocks only on the disk; raises nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore, record_from_dict


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


def _load(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def read_snapshot(store: StateStore, previous: Snapshot | None = None, default_limit: int = 256) -> Snapshot:
    """Every deployment and replica under the store's root. Never raises for a bad record."""
    problems: list[str] = []
    deployments: dict[str, DeploymentView] = {}
    try:
        names = store.deployment_names()
    except OSError as exc:
        return Snapshot(previous.deployments if previous else {}, (f"{store.root}: {exc}",))
    for name in names:
        serving: dict[str, Any] = {}
        dep_path = store.root / "deployments" / name / "deployment.json"
        if dep_path.exists():
            try:
                record = record_from_dict(DeploymentRecord, _load(dep_path))
                serving = record.serving if isinstance(record.serving, dict) else {}
            except (OSError, ValueError, TypeError) as exc:
                problems.append(f"{dep_path}: skipped ({exc}); serving defaults used")
        replicas: list[ReplicaView] = []
        for path in sorted(store.replica_path(name, "x").parent.glob("*.json")):
            try:
                rec = record_from_dict(ReplicaRecord, _load(path))
                replicas.append(ReplicaView(
                    id=rec.id, deployment=name, host=rec.host, port=int(rec.port), state=rec.state,
                    limit=replica_limit(serving, rec.config, default_limit)))
            except (OSError, ValueError, TypeError) as exc:
                kept = previous.replica(name, path.stem) if previous else None
                problems.append(f"{path}: skipped ({exc})" + ("; its last readable record is kept" if kept else ""))
                if kept is not None:
                    replicas.append(kept)
        max_c = serving.get("max_concurrency")
        deployments[name] = DeploymentView(
            name=name, default=serving.get("default") is True,
            max_concurrency=max_c if isinstance(max_c, int) and not isinstance(max_c, bool) else None,
            replicas=tuple(replicas))
    return Snapshot(deployments, tuple(problems))


@dataclass(frozen=True)
class Change:
    subject: str        # "deployment smollm2" or "replica smollm2/smollm2-ab12cd"
    before: str         # "absent", a state, or a short description
    after: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.before} -> {self.after}"


def _describe(r: ReplicaView) -> str:
    return f"{r.state} {r.host}:{r.port} limit {r.limit}"


def diff(old: Snapshot, new: Snapshot) -> list[Change]:
    """What differs between two snapshots, sorted by subject (deployments before their replicas)."""
    changes: list[Change] = []
    for name in sorted(set(old.deployments) | set(new.deployments)):
        a, b = old.deployments.get(name), new.deployments.get(name)
        subject = f"deployment {name}"
        if a is None or b is None:
            changes.append(Change(subject, "absent" if a is None else "present", "present" if b else "absent"))
        elif (a.default, a.max_concurrency) != (b.default, b.max_concurrency):
            changes.append(Change(subject, f"default={a.default} max_concurrency={a.max_concurrency}",
                                  f"default={b.default} max_concurrency={b.max_concurrency}"))
        ra = {r.id: r for r in (a.replicas if a else ())}
        rb = {r.id: r for r in (b.replicas if b else ())}
        for rid in sorted(set(ra) | set(rb)):
            x, y = ra.get(rid), rb.get(rid)
            if x != y:
                changes.append(Change(f"replica {name}/{rid}", _describe(x) if x else "absent",
                                      _describe(y) if y else "absent"))
    return changes
