"""Building the status view: records and the runtime (enova.runtime.world), the plan against
the specs (sync), health (enova.plan.status), the reconciler's own status file, GPUs.

Called by the CLI (`enova status`); the application server and `pilot` call the same function
and serve `StatusView.to_dict()`. Blocks for health probes (about 2 s at most).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enova.observe.gpus import GpuInventory, gpu_inventory
from enova.observe.scaler import ScalerStore
from enova.observe.state import StateStore
from enova.plan.auto import PlanFacts
from enova.plan.desired import desired_gateway, desired_state
from enova.plan.diff import compute_plan
from enova.plan.model import Action, Plan
from enova.plan.status import deployment_statuses
from enova.runtime.base import Runtime
from enova.runtime.world import World, observe
from enova.spec.loader import SpecSet


@dataclass(frozen=True)
class StatusView:
    state_dir: str
    deployments: list[dict[str, Any]]
    gateway: dict[str, Any] | None
    reconciler: dict[str, Any] | None
    gpus: dict[str, Any]
    spec_error: str | None = None       # the specs given could not be read (shown, not raised)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"state_dir": self.state_dir, "gateway": self.gateway, "reconciler": self.reconciler,
                "gpus": self.gpus, "spec_error": self.spec_error, "deployments": self.deployments}


def _gateway_info(store: StateStore, world: World, plan: Plan | None, now: float) -> dict[str, Any] | None:
    record = store.read_gateway()
    if record is None:
        return None
    observed = world.gateway
    change = plan.gateway_change if plan else None
    return {
        "pid": record.pid, "host": record.config["host"], "port": record.config["port"],
        "alive": bool(observed and observed.alive), "detail": observed.detail if observed else "",
        "config_hash": record.config_hash, "log": record.log,
        "uptime_seconds": round(now - record.started_at, 1),
        "sync": ("Unknown" if plan is None else
                 "Synced" if change is not None and change.action is Action.NOOP else "OutOfSync"),
    }


def _replica_rows(world: World, name: str, now: float) -> list[dict[str, Any]]:
    rows = []
    for d in world.details.get(name, []):
        r, o = d.record, d.observed
        if not o.alive:
            health = "exited"
        elif o.healthy:
            health = "healthy"
        elif o.state.value == "starting":
            health = "starting"
        else:
            health = "unhealthy"
        rows.append({"id": r.id, "runtime": r.runtime, "where": o.where, "pid": r.handle.get("pid"),
                     "container": r.handle.get("container"),
                     "port": r.port, "host": r.host, "state": o.state.value, "health": health,
                     "detail": o.detail, "uptime_seconds": round(now - r.started_at, 1),
                     "config_hash": r.config_hash, "cpus": r.cpus, "gpus": r.gpus, "log": r.log})
    return rows


def build_status(store: StateStore, runtime: Runtime, specs: SpecSet | None, *,
                 reconciler: dict[str, Any] | None = None,
                 inventory: Callable[[], GpuInventory] = gpu_inventory,
                 clock: Callable[[], float] = time.time, spec_error: str | None = None,
                 facts: PlanFacts | None = None) -> StatusView:
    """The whole view. `specs` None: sync is Unknown. `reconciler`: the reconciler's status file
    (enova.reconcile.controller.read_status), shown when it runs."""
    now = clock()
    world = observe(store, runtime, now=now, probe_health=True)
    plan = None
    if specs is not None:
        plan = compute_plan(desired_state(specs, ScalerStore(store.root).targets(), facts=facts), world.deployments,
                            prune=False,
                            gateway=desired_gateway(specs), observed_gateway=world.gateway)
    statuses = deployment_statuses(plan, world.deployments)
    subjects = (reconciler or {}).get("subjects", {}) if reconciler and reconciler.get("alive") else {}
    gpus = inventory()
    deployments = [{
        "name": s.name,
        "sync": {"status": s.sync.value, "reason": s.sync_reason},
        "health": {"status": s.health.value, "reason": s.health_reason},
        "replicas": {"desired": s.desired, "running": s.running, "managed_by": (
            plan.desired[s.name].replicas_from if plan and s.name in plan.desired else None)},
        "reconciler": subjects.get(s.name),
        "config_hash": plan.desired[s.name].config_hash if plan and s.name in plan.desired else None,
        "replica_details": _replica_rows(world, s.name, now),
    } for s in statuses]
    return StatusView(
        state_dir=str(store.root), deployments=deployments, gateway=_gateway_info(store, world, plan, now),
        reconciler=reconciler,
        gpus={"available": gpus.available, "description": gpus.describe(), "devices": [g.__dict__ for g in gpus.gpus]},
        spec_error=spec_error)


def uptime(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def render_text(view: StatusView) -> str:
    out: list[str] = []
    controller = view.reconciler
    if controller:
        git = controller.get("git") or {}
        where = f", specs {git.get('short')}" if git.get("short") else ""
        state = f"running (pid {controller['pid']})" if controller.get("alive") else "not running (last status shown)"
        out.append(f"reconciler: {state}{where}" + (f"; SPECS INVALID: {controller['spec_error']}"
                                                     if controller.get("spec_error") else ""))
    g = view.gateway
    if g:
        state = "running" if g["alive"] else f"not running ({g['detail']})"
        out.append(f"gateway: {state} on {g['host']}:{g['port']} (pid {g['pid']}, up {uptime(g['uptime_seconds'])}); "
                   f"sync {g['sync']}")
    if not view.deployments:
        out.append("No deployments.")
    for d in view.deployments:
        desired = "-" if d["replicas"]["desired"] is None else str(d["replicas"]["desired"])
        out.append(f"{d['name']}: sync {d['sync']['status']} ({d['sync']['reason']}); health "
                   f"{d['health']['status']} ({d['health']['reason']}); replicas {d['replicas']['running']}/{desired}"
                   + (" (managed by the autoscaler)" if d["replicas"].get("managed_by") == "autoscaler" else ""))
        sub = d["reconciler"]
        if sub:
            out.append(f"  reconciler: {sub['condition']} ({sub['reason']}: {sub['message']}); "
                       f"applied {sub['last_applied'] or '-'}" + (f" at {sub['revision']}" if sub.get('revision') else "")
                       + f", attempted {sub['last_attempted'] or '-'}")
        rows = d["replica_details"]
        if rows:
            out.append(f"  {'REPLICA':<22} {'WHERE':>10} {'PORT':>6} {'HEALTH':<10} {'UPTIME':>8} {'CONFIG':<13} BOUND")
            for r in rows:
                bound = ("cpus " + ",".join(map(str, r["cpus"]))) if r["cpus"] else ("gpus " + ",".join(r["gpus"]))
                health = r["health"] + (f" ({r['detail']})" if r["detail"] else "")
                out.append(f"  {r['id']:<22} {r['where']:>10} {r['port']:>6} {health:<10} "
                           f"{uptime(r['uptime_seconds']):>8} {r['config_hash']:<13} {bound}")
    out.append(f"GPUs: {view.gpus['description']}")
    return "\n".join(out) + "\n"
