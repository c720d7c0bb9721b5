"""The gateway's live membership: every deployment's pool and queue, kept in step with the
state directory, plus the answers that depend on it (which deployment a request goes to, the
admin list of replicas, /health, /v1/models).

`apply(snapshot)` is level-triggered: each reload hands over the whole snapshot and the
registry makes its pools match (new replicas join, changed ones update, absent ones are
marked gone and forgotten when idle), bumps `generation`, and lets queued requests take
any new capacity. Passive health (`record_success`/`record_failure`) and probe results
come from `proxy` and `prober`. Runs on the event loop; `now` comes from an injected clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import errors
from .admission import Admission
from .config import GatewayConfig
from .membership import Snapshot, diff
from .metrics import GatewayMetrics
from .router import Pool, Replica

log = logging.getLogger("enova.gateway")


@dataclass
class Deployment:
    name: str
    pool: Pool
    admission: Admission
    default: bool = False
    present: bool = True        # its records exist; False while finishing requests after a delete
    scale_from_zero: bool = False   # with no ready replica its requests are held (see hold)


class Registry:
    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic, waker: Callable[[str], None] | None = None):
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.waker = waker          # asks for a replica of a deployment scaled to zero (hold.WakeFile)
        self.deployments: dict[str, Deployment] = {}
        self.snapshot = Snapshot()
        self.generation = 0
        self._warned_defaults: tuple[str, ...] = ()

    def reconfigure(self, config: GatewayConfig) -> None:
        """New queue settings (a reload): they apply to every deployment's next request."""
        self.config = config
        for dep in self.deployments.values():
            dep.admission.queue_size = config.queue_size
            dep.admission.queue_timeout = config.queue_timeout

    # membership
    def apply(self, snapshot: Snapshot) -> list[str]:
        """Make the pools match `snapshot`. Returns the changes, one line each (for the log)."""
        changes = [str(c) for c in diff(self.snapshot, snapshot)]
        for problem in snapshot.problems:
            if problem not in self.snapshot.problems:
                log.warning("state record %s", problem)
        self.snapshot = snapshot
        for name, view in snapshot.deployments.items():
            dep = self.deployments.get(name)
            if dep is None:
                pool = Pool(name, eject_after=self.config.eject_after, probe_interval=self.config.probe_interval)
                admission = Admission(pool, queue_size=self.config.queue_size, queue_timeout=self.config.queue_timeout,
                                      retry_after_busy=self.config.retry_after_busy,
                                      retry_after_unavailable=self.config.retry_after_unavailable,
                                      on_wake=self._waker_for(name), on_outcome=self._held_outcome_for(name))
                dep = self.deployments[name] = Deployment(name, pool, admission)
            dep.present = True
            dep.default = view.default
            dep.scale_from_zero = view.scale_from_zero
            dep.admission.hold_timeout = view.hold_timeout if view.scale_from_zero else None
            dep.pool.sync(view)
            dep.admission.dispatch()
        for name, dep in list(self.deployments.items()):
            if name not in snapshot.deployments:
                dep.present = False
                dep.scale_from_zero = False
                dep.admission.hold_timeout = None     # held requests get 503 with the others
                dep.pool.sync(None)
                dep.admission.dispatch()
                self._forget_if_idle(dep)
        if self.metrics is not None:
            self.metrics.declare(snapshot.deployments)
            self.metrics.retain((name, r.id) for name, view in snapshot.deployments.items() for r in view.replicas)
        self.generation += 1
        return changes

    def _waker_for(self, name: str) -> Callable[[], None]:
        def wake() -> None:
            if self.waker is not None:
                self.waker(name)
        return wake

    def _held_outcome_for(self, name: str) -> Callable[[str], None]:
        def count(outcome: str) -> None:
            if self.metrics is not None:
                self.metrics.held.labels(name, outcome).inc()
        return count

    def _forget_if_idle(self, dep: Deployment) -> None:
        if not dep.present and not dep.pool.replicas and dep.admission.depth == 0:
            self.deployments.pop(dep.name, None)

    def release(self, dep: Deployment, replica: Replica) -> None:
        dep.admission.release(replica)
        self._forget_if_idle(dep)

    # routing
    def served(self) -> list[str]:
        return sorted(name for name, d in self.deployments.items() if d.present)

    def get(self, name: str) -> Deployment | None:
        dep = self.deployments.get(name)
        return dep if dep is not None and dep.present else None

    def resolve(self, model: Any, *, param: str = "model") -> Deployment:
        """The deployment named by a request's `model` (or header/query), or raise 404."""
        if not isinstance(model, str) or not model:
            raise errors.bad_request(f"`{param}` must be a non-empty string naming a served model",
                                     param=param)
        dep = self.get(model)
        if dep is None:
            raise errors.unknown_model(model, self.served(), param=param)
        return dep

    def default(self) -> Deployment:
        """Where a request that names no model goes: the deployment marked default, else the only
        one. Raises 503 with none served, 400 when several are served and none is default."""
        served = self.served()
        marked = [n for n in served if self.deployments[n].default]
        if marked:
            if len(marked) > 1 and tuple(marked) != self._warned_defaults:
                self._warned_defaults = tuple(marked)
                log.warning("several deployments are marked default (%s); using %s", ", ".join(marked), marked[0])
            return self.deployments[marked[0]]
        if len(served) == 1:
            return self.deployments[served[0]]
        if not served:
            raise errors.GatewayError(503, "no deployment is served (nothing is applied yet)",
                                      reason="no_ready_replica", type="service_unavailable_error",
                                      code="no_deployment", retry_after=self.config.retry_after_unavailable)
        raise errors.bad_request(
            f"several deployments are served ({', '.join(served)}) and none is marked default "
            "(serving.default); name one with the X-Enova-Deployment header or ?deployment=",
            param="deployment", code="no_default_deployment")

    # passive health
    def record_success(self, replica: Replica) -> None:
        replica.health.record_success(self.clock())

    def record_failure(self, dep: Deployment, replica: Replica, why: str) -> None:
        if replica.health.record_failure(self.clock()):
            log.warning("replica %s/%s ejected after %d consecutive failures (last: %s); probing its /health "
                        "every %g s", dep.name, replica.id, replica.health.consecutive_failures, why,
                        self.config.probe_interval)
            if self.metrics is not None:
                self.metrics.replica_ejected(dep.name, replica.id)
            dep.admission.dispatch()

    def due_probes(self) -> list[Replica]:
        """Ejected replicas whose record still says ready and whose probe is due (marked started)."""
        now = self.clock()
        due = []
        for dep in self.deployments.values():
            for r in dep.pool.replicas.values():
                if not r.gone and r.view.state == "ready" and r.health.probe_due(now):
                    r.health.probe_started(now)
                    due.append(r)
        return due

    def probe_result(self, replica: Replica, ok: bool) -> None:
        if replica.health.probe_result(ok, self.clock()):
            log.info("replica %s/%s re-admitted: its /health passed", replica.deployment, replica.id)
            dep = self.deployments.get(replica.deployment)
            if dep is not None:
                dep.admission.dispatch()

    # views
    def admin_replicas(self) -> dict[str, Any]:
        """GET /admin/v1/replicas: every replica the gateway knows, sorted by deployment and id."""
        rows = []
        for name in sorted(self.deployments):
            dep = self.deployments[name]
            for rid in sorted(dep.pool.replicas):
                r = dep.pool.replicas[rid]
                rows.append({"id": r.id, "deployment": name, "state": r.status, "in_flight": r.in_flight,
                             "limit": r.view.limit, "url": r.base_url,
                             "consecutive_failures": r.health.consecutive_failures})
        queues = {name: dep.admission.queued for name, dep in sorted(self.deployments.items())}
        held = {name: dep.admission.held for name, dep in sorted(self.deployments.items())}
        return {"replicas": rows, "queues": queues, "held": held, "generation": self.generation}

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(any deployment has a routable replica or can start one for a request, detail per
        deployment). A deployment scaled to zero counts as available: a load balancer that took
        the gateway out would keep away the very request that wakes it."""
        detail = {}
        for name in self.served():
            dep = self.deployments[name]
            pool = dep.pool
            detail[name] = {"ready": sum(1 for r in pool.replicas.values() if r.routable),
                            "replicas": len(pool.replicas), "in_flight": pool.in_flight(),
                            "queued": dep.admission.queued, "held": dep.admission.held,
                            "scale_from_zero": dep.scale_from_zero, "default": dep.default}
        ok = any(d["ready"] > 0 or d["scale_from_zero"] for d in detail.values())
        return ok, {"status": "ok" if ok else "unavailable", "deployments": detail, "generation": self.generation}

    def live(self):
        """(dep, replica, in flight), (dep, queued) and (dep, held), for the metrics collector."""
        replicas = [(name, rid, r.in_flight) for name, dep in self.deployments.items()
                    for rid, r in dep.pool.replicas.items()]
        queues = [(name, dep.admission.queued) for name, dep in self.deployments.items()]
        held = [(name, dep.admission.held) for name, dep in self.deployments.items()]
        return replicas, queues, held
