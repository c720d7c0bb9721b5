"""Carrying out a Plan on the local runtime.

`Applier.preflight` checks everything that can be checked before a process is touched
(engine installed, GPUs present, enough CPU cores, every model resolvable — converting a
builtin model once if needed); `Applier.apply` then executes the changes: deletes first,
then scales, replaces and creates. A replace is rolling: each new replica is started and
healthy before an old one is stopped, so a deployment keeps serving. One deployment's
failure does not stop the others; all failures are reported together at the end.
Called by the CLI (apply, delete) and, later, the reconciler.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event

from enova.engines.vllm import device_for, engine_problem, render_launch
from enova.errors import EnovaError, PermanentError
from enova.modelstore import ResolvedModel, resolve_model
from enova.observe.gpus import GpuInventory, gpu_inventory
from enova.observe.processes import check_process
from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore
from enova.plan.desired import serving_of
from enova.plan.model import GATEWAY, Action, Change, DesiredDeployment, Plan
from enova.settings import Settings
from enova.spec.loader import SpecSet

from .gateway import Drainer, spawn_gateway, stop_gateway, wait_gateway
from .local import LocalRuntime, new_replica_id, port_is_free
from .resources import choose_cpus, choose_gpus, choose_port

Progress = Callable[[str], None]
PHASES = {Action.DELETE: 0, Action.SCALE: 1, Action.REPLACE: 2, Action.CREATE: 3, Action.NOOP: 4}
STOP_GRACE = 30.0
DEFAULT_DRAIN_TIMEOUT = 30.0
# Choosing a port and cores and recording the new replica must be one step: the reconciler
# runs passes for different deployments in parallel threads of one process.
_ALLOCATION = threading.Lock()


def _order(change: Change) -> tuple[int, int, str]:
    """The gateway comes up before the replicas it serves and goes away after them."""
    if change.kind == GATEWAY:
        return (9, 0, "") if change.action is Action.DELETE else (-1, 0, "")
    return (PHASES[change.action], 0, change.deployment)


@dataclass
class Outcome:
    deployment: str
    action: Action
    ok: bool
    message: str
    error: EnovaError | None = None  # the failure, so callers can retry by kind


@dataclass
class ApplyResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def summary(self) -> str:
        done = [o for o in self.outcomes if o.ok and o.action is not Action.NOOP]
        counts = {a: sum(1 for o in done if o.action is a) for a in Action}
        text = (f"Apply complete: {counts[Action.CREATE]} created, {counts[Action.REPLACE]} replaced, "
                f"{counts[Action.SCALE]} scaled, {counts[Action.DELETE]} deleted")
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text + "."


def host_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


class Applier:
    def __init__(self, *, store: StateStore, settings: Settings, specs: SpecSet | None,
                 progress: Progress = lambda m: None,
                 resolve: Callable[..., ResolvedModel] = resolve_model,
                 inventory: Callable[[], GpuInventory] = gpu_inventory,
                 host: str = "127.0.0.1", stop: Event | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings
        self.specs = specs
        self.progress = progress
        self.resolve = resolve
        self._inventory_fn = inventory
        self._inventory: GpuInventory | None = None
        self.host = host
        self.stop_event = stop
        self.clock = clock
        self.runtime = LocalRuntime(store, clock=clock, progress=progress)
        self.drainer = Drainer(store, progress)
        self.models: dict[str, ResolvedModel] = {}

    # ---- checks before anything starts -------------------------------------------------
    def inventory(self) -> GpuInventory:
        if self._inventory is None:
            self._inventory = self._inventory_fn()
        return self._inventory

    def _spec_dir(self, name: str) -> Path:
        assert self.specs is not None
        return Path(self.specs.deployments[name].file).resolve().parent

    def preflight(self, plan: Plan) -> None:
        """Raise PermanentError naming every problem if the plan cannot be carried out.
        May block while a builtin model is fetched and converted (first use only)."""
        problems: list[str] = []
        starting = [c for c in plan.deployment_changes if c.start > 0]
        for device in sorted({device_for(plan.desired[c.deployment].config) for c in starting}):
            problem = engine_problem(device)
            if problem:
                problems.append(problem)
        cpu_demand = 0
        for c in plan.deployment_changes:
            want = plan.desired.get(c.deployment)
            if want is not None and device_for(want.config) == "cpu":
                cpu_demand += want.replicas * want.config["resources"]["cpus"]
            elif want is None and c.orphaned:
                cpu_demand += sum(len(r.cpus) for r in self.store.replicas(c.deployment))
        if cpu_demand > len(host_cpus()):
            problems.append(
                f"the specs bind {cpu_demand} CPU core(s) (replicas x resources.cpus of the CPU "
                f"engine) but this host has {len(host_cpus())}")
        for c in starting:
            want = plan.desired[c.deployment]
            gpus = want.config["resources"]["gpus"]
            if gpus and not self.inventory().available:
                problems.append(f"{c.deployment}: resources.gpus is {gpus} but this host has "
                                f"{self.inventory().describe()}")
        if problems:
            raise PermanentError("cannot apply:\n" + "\n".join(f"  {p}" for p in problems))
        for c in starting:
            want = plan.desired[c.deployment]
            try:
                self.models[c.deployment] = self.resolve(
                    want.config["model"], base_dir=self._spec_dir(c.deployment),
                    cache_dir=self.settings.cache_dir,
                    progress=lambda m, n=c.deployment: self.progress(f"{n}: {m}"))
            except EnovaError as exc:
                problems.append(f"{c.deployment}: model {want.config['model']}: {exc}")
        if problems:
            raise PermanentError("cannot apply:\n" + "\n".join(f"  {p}" for p in problems))

    # ---- execution ---------------------------------------------------------------------
    def apply(self, plan: Plan) -> ApplyResult:
        """Execute every change; blocks until replicas are healthy or have failed."""
        result = ApplyResult()
        self._default = next((n for n, d in (self.specs.deployments.items() if self.specs else ())
                              if d.doc.spec.serving.default), None)
        if self._default is None and len(plan.desired) == 1:
            self._default = next(iter(plan.desired))
        self._gateway_pending = None
        for change in sorted(plan.changes, key=_order):
            if change.orphaned:
                continue
            try:
                if change.kind == GATEWAY:
                    message = self._apply_gateway(change, plan)
                else:
                    message = self._apply_change(change, plan.desired.get(change.deployment))
                result.outcomes.append(Outcome(change.deployment, change.action, True, message))
            except EnovaError as exc:
                self.progress(f"{change.deployment}: FAILED: {exc}")
                result.outcomes.append(Outcome(change.deployment, change.action, False, str(exc), exc))
        if self._gateway_pending is not None:
            change, record = self._gateway_pending
            try:
                wait_gateway(self.store, record)
                self.progress(f"gateway: listening on {record.config['host']}:{record.config['port']} "
                              f"(pid {record.pid})")
            except EnovaError as exc:
                self.progress(f"gateway: FAILED: {exc}")
                result.outcomes = [o for o in result.outcomes if o.deployment != GATEWAY]
                result.outcomes.append(Outcome(GATEWAY, change.action, False, str(exc), exc))
        return result

    def _records(self, name: str) -> dict[str, ReplicaRecord]:
        return {r.id: r for r in self.store.replicas(name)}

    def _apply_change(self, change: Change, want: DesiredDeployment | None) -> str:
        name = change.deployment
        records = self._records(name)
        for rid in change.forget:
            if rid in records:
                self.progress(f"{name}: forgetting exited replica {rid}")
                self.runtime.forget(records[rid])
        if change.action is Action.DELETE:
            for rid in change.stop:
                self._stop(records[rid])
            self.store.remove_deployment(name)
            return f"deleted {len(change.stop)} replica(s)"
        assert want is not None
        serving = (serving_of(self.specs.deployments[name].doc.spec, name == self._default)
                   if self.specs and name in self.specs.deployments else {})
        self.store.write_deployment(DeploymentRecord(
            name=name, replicas=want.replicas, config_hash=want.config_hash, config=want.config,
            applied_at=self.clock(), source=want.source, serving=serving))
        if change.action is Action.NOOP:
            return change.reason
        timeout = self.specs.deployments[name].doc.spec.engine.startup_timeout if self.specs else 600.0
        to_start = change.start
        if change.action is Action.REPLACE:
            for rid in change.stop:
                old = records[rid]
                if to_start > 0 and old.config_hash != want.config_hash:
                    self._roll(want, old, timeout)
                    to_start -= 1
                else:
                    self._stop(old)
        else:
            for rid in change.stop:
                self._stop(records[rid])
        if to_start > 0:
            self._start_many(want, to_start, timeout)
        return change.reason

    def _roll(self, want: DesiredDeployment, old: ReplicaRecord, timeout: float) -> None:
        """Replace one replica: start its successor on the same cores, wait until it is
        healthy, then stop the old one. On GPUs, where two replicas cannot share devices,
        the old one is stopped first when no free GPU is left."""
        gpus_needed = want.config["resources"]["gpus"]
        if gpus_needed:
            used = self._used_gpus()
            free = [g.uuid for g in self.inventory().gpus if g.uuid not in used]
            if len(free) < gpus_needed:
                self.progress(f"{want.name}: no free GPU for a surge replica; stopping {old.id} first")
                self._stop(old)
                self._start_many(want, 1, timeout)
                return
        new = self._spawn(want, prefer_cpus=old.cpus, releasing={old.id})
        self._await(new, timeout)
        self._stop(old)

    def _start_many(self, want: DesiredDeployment, count: int, timeout: float) -> None:
        records = [self._spawn(want) for _ in range(count)]
        errors: list[EnovaError] = []
        with ThreadPoolExecutor(max_workers=count) as pool:
            for fut in [pool.submit(self._await, r, timeout) for r in records]:
                try:
                    fut.result()
                except EnovaError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0] if len(errors) == 1 else PermanentError("\n".join(str(e) for e in errors))

    def _await(self, record: ReplicaRecord, timeout: float) -> None:
        began = time.monotonic()
        try:
            self.runtime.wait_ready(record, timeout, stop=self.stop_event)
        except EnovaError:
            self.runtime.stop(record, grace=10)
            raise
        self.progress(f"{record.deployment}: replica {record.id} ready on {record.host}:{record.port} "
                      f"in {time.monotonic() - began:.1f} s")

    def _apply_gateway(self, change: Change, plan: Plan) -> str:
        existing = self.store.read_gateway()
        if existing is not None and (change.stop or change.forget):
            self.progress(f"gateway: stopping pid {existing.pid} ({change.reason})")
            stop_gateway(self.store, existing)
        if change.start:
            # spawned now, waited for after the replicas were started: the two start-ups overlap
            assert plan.gateway is not None
            record = spawn_gateway(self.store, plan.gateway.config, plan.gateway.config_hash, clock=self.clock)
            self._gateway_pending = (change, record)
        return change.reason

    def _drain_timeout(self, deployment: str) -> float:
        if self.specs and deployment in self.specs.deployments:
            return self.specs.deployments[deployment].doc.spec.serving.drain_timeout
        record = self.store.read_deployment(deployment)
        if record is not None and record.serving.get("drain_timeout") is not None:
            return float(record.serving["drain_timeout"])
        return DEFAULT_DRAIN_TIMEOUT

    def _stop(self, record: ReplicaRecord) -> None:
        """Drain (through the gateway), then stop the replica."""
        if record.state == "ready":
            began = time.monotonic()
            self.drainer.drain(record, self._drain_timeout(record.deployment))
            self.progress(f"{record.deployment}: drained {record.id} in {time.monotonic() - began:.1f} s")
        self.progress(f"{record.deployment}: stopping replica {record.id} (pid {record.pid})")
        took = self.runtime.stop(record, grace=STOP_GRACE)
        self.progress(f"{record.deployment}: stopped {record.id} in {took:.1f} s")

    def _live_records(self) -> list[ReplicaRecord]:
        return [r for r in self.store.all_replicas() if check_process(r.pid, r.create_time).alive]

    def _used_gpus(self, releasing: set[str] = frozenset()) -> dict[str, str]:
        return {g: r.id for r in self._live_records() if r.id not in releasing for g in r.gpus}

    def _spawn(self, want: DesiredDeployment, prefer_cpus: list[int] = (),
               releasing: set[str] = frozenset()) -> ReplicaRecord:
        """Allocate a port, cores or GPUs, render the launch and start the process."""
        with _ALLOCATION:
            return self._spawn_locked(want, prefer_cpus, releasing)

    def _spawn_locked(self, want: DesiredDeployment, prefer_cpus: list[int],
                      releasing: set[str]) -> ReplicaRecord:
        live = self._live_records()
        replica_id = new_replica_id(want.name)
        device = device_for(want.config)
        cpus: list[int] = []
        gpus: list[str] = []
        if device == "cpu":
            used = {c: r.id for r in live if r.id not in releasing for c in r.cpus}
            cpus = choose_cpus(host_cpus(), used, want.config["resources"]["cpus"], prefer_cpus)
        else:
            gpus = choose_gpus([g.uuid for g in self.inventory().gpus],
                               self._used_gpus(releasing), want.config["resources"]["gpus"])
        taken = {r.port for r in self.store.all_replicas()}
        port = choose_port(self.settings.port_range, taken, lambda p: port_is_free(self.host, p))
        model = self.models.get(want.name)
        if model is None:
            raise PermanentError(f"{want.name}: model was not resolved before starting")
        launch = render_launch(
            deployment=want.name, replica_id=replica_id, config=want.config,
            config_hash=want.config_hash, model_path=model.path, offline=model.kind != "hub",
            host=self.host, port=port, cpus=cpus, gpus=gpus)
        where = f"cpus {','.join(map(str, cpus))}" if cpus else f"gpus {','.join(gpus)}"
        self.progress(f"{want.name}: starting replica {replica_id} on {self.host}:{port} ({where})")
        return self.runtime.start(
            replica_id=replica_id, deployment=want.name, launch=launch, host=self.host, port=port,
            config=want.config, config_hash=want.config_hash, model_path=model.path,
            cpus=cpus, gpus=gpus)

    # ---- delete by name ------------------------------------------------------------------
    def delete(self, name: str) -> int:
        """Stop every replica of `name` and remove its records. Returns how many were stopped."""
        records = self.store.replicas(name)
        for record in records:
            if check_process(record.pid, record.create_time).alive:
                self._stop(record)
            else:
                self.runtime.forget(record)
        self.store.remove_deployment(name)
        return len(records)

    def stop_gateway_if_idle(self) -> bool:
        """Stop the gateway when no deployment is left for it to serve (after a delete)."""
        record = self.store.read_gateway()
        if record is None or self.store.deployment_names():
            return False
        self.progress(f"gateway: stopping pid {record.pid} (no deployment left)")
        stop_gateway(self.store, record)
        return True
