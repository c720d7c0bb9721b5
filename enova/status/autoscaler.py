"""The autoscaler's view, as `enova scale status -o json` prints it and the application server
serves it: per autoscaled deployment, its policy, target, replicas ready and starting, the last
signals and decision, as the running reconciler persisted them (enova.observe.scaler)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enova.errors import UsageError
from enova.observe.scaler import ScalerStore
from enova.observe.state import StateStore

_STATE_KEYS = ("last_up", "last_down", "shortage_since", "surplus_since", "idle_since", "panic_until", "learned")


class UnknownAutoscaler(UsageError):
    """No autoscaler state for the deployment asked about."""


def autoscaler_rows(state_dir: Path, name: str | None = None) -> list[dict[str, Any]]:
    """One row per autoscaled deployment (just `name` when given). Raises UnknownAutoscaler,
    naming the deployments that are autoscaled, when `name` has no state."""
    store = StateStore(state_dir)
    scalers = ScalerStore(store.root)
    known = scalers.names()
    if name is not None and name not in known:
        raise UnknownAutoscaler(f"no autoscaler state for {name!r} (autoscaled deployments: "
                                f"{', '.join(known) or 'none'}); is `enova reconcile` running with `scaling` "
                                "in that deployment's spec?")
    recorded = set(store.deployment_names())
    rows = []
    for n in [name] if name is not None else known:
        data = scalers.read(n)
        if data is None:  # removed since listed
            continue
        replicas = store.replicas(n) if n in recorded else []
        rows.append({"deployment": n, "policy": data.get("policy"), "target": data.get("target"),
                     "ready": sum(1 for r in replicas if r.state == "ready"),
                     "starting": sum(1 for r in replicas if r.state == "starting"),
                     "start_seconds": data.get("start_seconds"), "updated_at": data.get("updated_at"),
                     "signals": data.get("signals"), "last_decision": data.get("last_decision"),
                     "state": {k: data.get(k) for k in _STATE_KEYS}})
    if name is not None and not rows:
        raise UnknownAutoscaler(f"no autoscaler state for {name!r}")
    return rows
