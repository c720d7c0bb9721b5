"""Carrying out a Plan through a runtime (enova.runtime): the plan carries everything needed.

`Applier.preflight` checks everything that can be checked before anything is touched (engine
installed, impossible resources, GPUs present, enough CPU cores, the gateway's new settings,
every model resolvable — converting a builtin model once if needed); `Applier.apply` then
executes the changes: deletes first, then scales, updates, replaces and creates. Rules:
- a ready replica of a deployment that wants replicas is never stopped before a successor (a
  waited-for starting replica, or a new one) is ready: a replace is rolling;
- replicas an interrupted run left starting are adopted (waited for, recorded ready), not
  restarted; if enova is stopped while waiting, they are left starting for the next run;
- the deployment record (in-place fields: serving, startup timeout, slo) is written first.
One deployment's failure does not stop the others; failures are reported together at the end.
Called by the CLI (apply, delete), enode and the reconciler.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from threading import Event

from enova.engines.container import container_launch
from enova.engines.vllm import device_for, engine_problem, launch_problems, render_launch
from enova.errors import EnovaError, PermanentError
from enova.modelstore import ResolvedModel, resolve_model
from enova.observe.gpus import GpuInventory, gpu_inventory
from enova.observe.ports import port_is_free
from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore
from enova.plan.model import GATEWAY, Action, Change, DesiredDeployment, Plan
from enova.runtime.base import Endpoint, ReplicaStartError, Runtime, StartInterrupted, StartRequest
from enova.runtime.select import Runtimes
from enova.settings import Settings

from .gateway import Drainer, GatewayConverger, stop_gateway
from .resources import choose_cpus, choose_gpus, choose_port

Progress = Callable[[str], None]
PHASES = {Action.DELETE: 0, Action.SCALE: 1, Action.UPDATE: 2, Action.REPLACE: 3, Action.CREATE: 4, Action.NOOP: 5}
STOP_GRACE = 30.0
DEFAULT_DRAIN_TIMEOUT = 30.0
READY_POLL = 0.1
# Choosing a port, cores and GPUs and recording the new replica must be one step: the reconciler
# runs passes for different deployments in parallel threads of one process.
_ALLOCATION = threading.Lock()


def _order(change: Change) -> tuple[int, str]:
    """The gateway comes up before the replicas it serves and goes away after them."""
    if change.kind == GATEWAY:
        return (9, "") if change.action is Action.DELETE else (-1, "")
    return (PHASES[change.action], change.deployment)


def new_replica_id(deployment: str) -> str:
    return f"{deployment}-{os.urandom(3).hex()}"


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
                f"{counts[Action.SCALE]} scaled, {counts[Action.UPDATE]} updated in place, "
                f"{counts[Action.DELETE]} deleted")
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text + "."


def host_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


class Applier:
    def __init__(self, *, store: StateStore, settings: Settings, runtime: Runtime | None = None,
                 progress: Progress = lambda m: None,
                 resolve: Callable[..., ResolvedModel] = resolve_model,
                 inventory: Callable[[], GpuInventory] = gpu_inventory,
                 engine_check: Callable[[str], str | None] = engine_problem,
                 cpus: Callable[[], list[int]] = host_cpus,
                 port_free: Callable[[str, int], bool] = port_is_free,
                 gateway: GatewayConverger | None = None,
                 host: str = "127.0.0.1", stop: Event | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], bool] | None = None, revision: str = "",
                 on_change: Callable[[], None] | None = None):
        self.store = store
        self.settings = settings
        self.progress = progress
        self.resolve = resolve
        self._inventory_fn = inventory
        self._inventory: GpuInventory | None = None
        self.engine_check = engine_check
        self.host_cpus = cpus
        self.port_free = port_free
        self.host = host
        self.stop_event = stop
        self.clock = clock
        self.sleep = sleep or self._default_sleep
        self.runtime = runtime or Runtimes(store, clock=clock, progress=progress)
        self.gateway = gateway or GatewayConverger(store, progress=progress, clock=clock)
        self.drainer = Drainer(store, progress)
        self.models: dict[str, ResolvedModel] = {}
        self.revision = revision  # the spec revision (git commit) replicas are labelled with
        # called when a replica or the gateway was started or stopped (the monitoring targets
        # follow); a failure there is reported, never fatal
        self.on_change = on_change

    def _default_sleep(self, seconds: float) -> bool:
        """Sleep; True when enova is asked to stop."""
        if self.stop_event is not None:
            return self.stop_event.wait(seconds)
        time.sleep(seconds)
        return False

    # ---- checks before anything starts -------------------------------------------------
    def inventory(self, config: dict | None = None) -> GpuInventory:
        """The GPUs replicas of `config` get: those of the engine that runs them when its runtime
        knows them (a remote Docker engine), else this host's (NVML). Read once per apply."""
        remote = self.runtime.inventory(config) if config is not None else None
        if remote is not None:
            return remote
        if self._inventory is None:
            self._inventory = self._inventory_fn()
        return self._inventory

    def preflight(self, plan: Plan) -> None:
        """Raise PermanentError naming every problem if the plan cannot be carried out; nothing
        is touched before. May block while a builtin model is fetched and converted (first use);
        a model hub that cannot be reached is a TemporaryError."""
        problems: list[str] = []
        starting = [c for c in plan.deployment_changes if c.start > 0 or c.roll]
        local = [c for c in starting if plan.desired[c.deployment].config.get("runtime", "local") == "local"]
        for device in sorted({device_for(plan.desired[c.deployment].config) for c in local}):
            problem = self.engine_check(device)  # a container brings its own engine build
            if problem:
                problems.append(problem)
        for c in starting:
            problems += [f"{c.deployment}: {p}" for p in self.runtime.check(plan.desired[c.deployment].config)]
        for c in starting:
            problems += [f"{c.deployment}: {p}" for p in launch_problems(plan.desired[c.deployment].config)]
        cpu_demand = 0
        for c in plan.deployment_changes:
            want = plan.desired.get(c.deployment)
            if want is not None and device_for(want.config) == "cpu":
                cpu_demand += want.replicas * want.config["resources"]["cpus"]
            elif want is None and c.orphaned:
                cpu_demand += sum(len(r.cpus) for r in self.store.replicas(c.deployment))
        if cpu_demand > len(self.host_cpus()):
            problems.append(
                f"the specs bind {cpu_demand} CPU core(s) (replicas x resources.cpus of the CPU "
                f"engine) but this host has {len(self.host_cpus())}")
        for c in starting:
            gpus = plan.desired[c.deployment].config["resources"]["gpus"]
            inventory = self.inventory(plan.desired[c.deployment].config)
            if gpus and not inventory.available:
                problems.append(f"{c.deployment}: resources.gpus is {gpus} but this host has "
                                f"{inventory.describe()}")
        if plan.gateway_change is not None:
            problems += [f"gateway: {p}" for p in self.gateway.check(plan.gateway_change, plan.gateway)]
        if problems:
            raise PermanentError("cannot apply:\n" + "\n".join(f"  {p}" for p in problems))
        for c in starting:
            want = plan.desired[c.deployment]
            try:
                self.models[c.deployment] = self.resolve(
                    want.config["model"], base_dir=want.base_dir or os.getcwd(),
                    cache_dir=self.settings.cache_dir,
                    progress=lambda m, n=c.deployment: self.progress(f"{n}: {m}"))
            except PermanentError as exc:
                problems.append(f"{c.deployment}: model {want.config['model']}: {exc}")
        if problems:
            raise PermanentError("cannot apply:\n" + "\n".join(f"  {p}" for p in problems))

    # ---- execution ---------------------------------------------------------------------
    def apply(self, plan: Plan) -> ApplyResult:
        """Execute every change; blocks until replicas are healthy or have failed."""
        result = ApplyResult()
        pending = None
        gateway_change = None
        for change in sorted(plan.changes, key=_order):
            if change.orphaned:
                continue
            try:
                if change.kind == GATEWAY:
                    gateway_change = change
                    pending = self.gateway.begin(change, plan.gateway)
                    message = change.reason
                else:
                    message = self.apply_change(change, plan.desired.get(change.deployment))
                result.outcomes.append(Outcome(change.deployment, change.action, True, message))
            except EnovaError as exc:
                text = str(exc).removeprefix(f"{change.deployment}: ")
                self.progress(f"{change.deployment}: FAILED: {text}")
                result.outcomes.append(Outcome(change.deployment, change.action, False, text, exc))
        if pending is not None and gateway_change is not None:
            try:
                self.progress(f"gateway: {self.gateway.finish(pending)}")
            except EnovaError as exc:
                text = str(exc).removeprefix("gateway: ")
                self.progress(f"gateway: FAILED: {text}")
                result.outcomes = [o for o in result.outcomes if o.deployment != GATEWAY]
                result.outcomes.append(Outcome(GATEWAY, gateway_change.action, False, text, exc))
        self.changed()
        return result

    def changed(self) -> None:
        """Tell on_change that replicas came or went; its failure is reported, never raised."""
        if self.on_change is None:
            return
        try:
            self.on_change()
        except (EnovaError, OSError) as exc:
            self.progress(f"monitoring targets not updated: {exc}")

    def apply_change(self, change: Change, want: DesiredDeployment | None) -> str:
        """Carry out one deployment's change. Raises EnovaError (ReplicaStartError when a replica
        crashed or never became healthy; StartInterrupted when asked to stop while waiting)."""
        name = change.deployment
        records = {r.id: r for r in self.store.replicas(name)}
        for rid in change.forget:
            if rid in records:
                self.progress(f"{name}: forgetting exited replica {rid}")
                self.runtime.forget(records.pop(rid))
        if change.action is Action.DELETE:
            for rid in change.stop:
                if rid in records:
                    self._stop(records[rid], self._drain_timeout(name))
            self.store.remove_deployment(name)
            return f"deleted {len(change.stop)} replica(s)"
        assert want is not None
        self.store.write_deployment(DeploymentRecord(
            name=name, replicas=want.replicas, config_hash=want.config_hash, config=want.config,
            applied_at=self.clock(), source=want.source, serving=dict(want.serving),
            settings=dict(want.settings)))
        if change.action is Action.NOOP:
            return change.reason
        for rid in change.stop:  # failed, left stopping, or surplus: none is needed for serving
            if rid in records:
                self._stop(records.pop(rid), want.drain_timeout)
        waiting = [records[rid] for rid in change.wait if rid in records]
        to_start = change.start
        errors: list[EnovaError] = []
        for rid in change.roll:
            old = records.get(rid)
            if old is None:
                continue
            if want.replicas == 0 or old.state != "ready":
                self._stop(old, want.drain_timeout)
            elif waiting:
                self._await(waiting.pop(0))   # raises: the old replica keeps serving
                self._stop(old, want.drain_timeout)
            elif to_start > 0:
                self._roll(want, old)
                to_start -= 1
            else:
                self._stop(old, want.drain_timeout)  # more stale replicas than wanted
        started = [self._spawn(want) for _ in range(to_start)]
        errors += self._await_all(waiting + started)
        if errors:
            if any(isinstance(e, StartInterrupted) for e in errors):
                raise next(e for e in errors if isinstance(e, StartInterrupted))
            if len(errors) == 1:
                raise errors[0]
            raise ReplicaStartError(f"{name}: {len(errors)} replicas failed to start:\n"
                                    + "\n".join(str(e) for e in errors))
        return change.reason

    def _roll(self, want: DesiredDeployment, old: ReplicaRecord) -> None:
        """Replace one ready replica: start its successor (on the same cores), wait until it is
        healthy, then stop the old one. On GPUs, where two replicas cannot share devices, the
        old one is stopped first when no free GPU is left (decided under the allocation lock)."""
        new = self._spawn(want, prefer_cpus=old.cpus, releasing={old.id}, surge=True)
        if new is None:
            self.progress(f"{want.name}: no free GPU for a surge replica; stopping {old.id} first")
            self._stop(old, want.drain_timeout)
            self._await(self._spawn(want))
            return
        self._await(new)
        self._stop(old, want.drain_timeout)

    def _await_all(self, records: list[ReplicaRecord]) -> list[EnovaError]:
        if not records:
            return []
        if len(records) == 1:
            try:
                self._await(records[0])
                return []
            except EnovaError as exc:
                return [exc]
        errors = []
        with ThreadPoolExecutor(max_workers=len(records)) as pool:
            for fut in [pool.submit(self._await, r) for r in records]:
                try:
                    fut.result()
                except EnovaError as exc:
                    errors.append(exc)
        return errors

    def _await(self, record: ReplicaRecord) -> None:
        """Block until the replica answers /health (then record it ready), it exits, its start
        timeout (counted from its start, so an adopted replica gets only what is left) passes, or
        enova is asked to stop. On exit or timeout it is stopped and ReplicaStartError raised with
        its last log lines; on a stop request it is left running and StartInterrupted raised."""
        began = time.monotonic()
        deadline = record.started_at + record.start_timeout
        while True:
            alive = self.runtime.liveness(record)
            if not alive.alive:
                self.runtime.forget(record)
                raise ReplicaStartError(
                    f"{record.deployment}: replica {record.id} exited before becoming healthy "
                    f"({alive.detail}); last lines of {record.log}:\n{self.runtime.log_tail(record)}")
            if self.runtime.probe([record]).get(record.id):
                record.state, record.ready_at = "ready", self.clock()
                self.store.write_replica(record)
                self.progress(f"{record.deployment}: replica {record.id} ready on {record.host}:{record.port} "
                              f"in {time.monotonic() - began:.1f} s")
                return
            if self.clock() >= deadline:
                tail = self.runtime.log_tail(record)
                self.runtime.stop(record, grace=10)
                raise ReplicaStartError(
                    f"{record.deployment}: replica {record.id} was not healthy {record.start_timeout:.0f} s "
                    f"after its start (engine.startup_timeout); last lines of {record.log}:\n{tail}", delay=30.0)
            if self.sleep(READY_POLL):
                raise StartInterrupted(f"{record.deployment}: interrupted while {record.id} was starting; "
                                       "it is left starting for the next run to adopt")

    def _drain_timeout(self, deployment: str) -> float:
        record = self.store.read_deployment(deployment)
        if record is not None and record.serving.get("drain_timeout") is not None:
            return float(record.serving["drain_timeout"])
        return DEFAULT_DRAIN_TIMEOUT

    def _stop(self, record: ReplicaRecord, drain_timeout: float) -> None:
        """Drain (through the gateway), then stop the replica."""
        if record.state == "ready":
            began = time.monotonic()
            self.drainer.drain(record, drain_timeout)
            self.progress(f"{record.deployment}: drained {record.id} in {time.monotonic() - began:.1f} s")
        self.progress(f"{record.deployment}: stopping replica {record.id} ({self.runtime.describe(record)})")
        took = self.runtime.stop(record, grace=STOP_GRACE)
        self.changed()
        self.progress(f"{record.deployment}: stopped {record.id} in {took:.1f} s")

    def _live_records(self) -> list[ReplicaRecord]:
        return [r for r in self.store.all_replicas() if self.runtime.liveness(r).alive]

    def _spawn(self, want: DesiredDeployment, prefer_cpus: list[int] = (),
               releasing: set[str] = frozenset(), surge: bool = False) -> ReplicaRecord | None:
        """Allocate a port, cores or GPUs, render the launch and start the replica, as one step
        under the allocation lock. With `surge`, returns None instead of raising when no free GPU
        is left for a second replica beside the one it replaces. Starts nothing once enova is
        asked to stop (StartInterrupted)."""
        if self.stop_event is not None and self.stop_event.is_set():
            raise StartInterrupted(f"{want.name}: not starting a replica: enova is stopping")
        with _ALLOCATION:
            live = self._live_records()
            replica_id = new_replica_id(want.name)
            device = device_for(want.config)
            cpus: list[int] = []
            gpus: list[str] = []
            if device == "cpu":
                used = {c: r.id for r in live if r.id not in releasing for c in r.cpus}
                cpus = choose_cpus(self.host_cpus(), used, want.config["resources"]["cpus"], prefer_cpus)
            else:
                needed = want.config["resources"]["gpus"]
                in_use = {g: r.id for r in live for g in r.gpus}
                host = [g.uuid for g in self.inventory(want.config).gpus]
                if surge and len([g for g in host if g not in in_use]) < needed:
                    return None
                gpus = choose_gpus(host, in_use, needed)
            model = self.models.get(want.name)
            if model is None:
                raise PermanentError(f"{want.name}: model was not resolved before starting")
            host, port_free = self._endpoint_host(want.config)
            taken = {r.port for r in self.store.all_replicas()}
            port = choose_port(self.settings.port_range, taken, port_free)
            if want.config.get("runtime", "local") == "docker":
                launch = container_launch(
                    deployment=want.name, replica_id=replica_id, config=want.config, config_hash=want.config_hash,
                    model_kind=model.kind, model_path=model.path, cpus=cpus, gpus=gpus)
            else:
                launch = render_launch(
                    deployment=want.name, replica_id=replica_id, config=want.config,
                    config_hash=want.config_hash, model_path=model.path, offline=model.kind != "hub",
                    host=host, port=port, cpus=cpus, gpus=gpus)
            where = f"cpus {','.join(map(str, cpus))}" if cpus else f"gpus {','.join(gpus)}"
            self.progress(f"{want.name}: starting replica {replica_id} on {host}:{port} ({where})")
            record = self.runtime.start(StartRequest(
                deployment=want.name, replica_id=replica_id, launch=launch, endpoint=Endpoint(host, port),
                config=want.config, config_hash=want.config_hash, model_path=model.path,
                start_timeout=want.start_timeout, cpus=cpus, gpus=gpus, model_kind=model.kind,
                revision=self.revision, serving=dict(want.serving), settings=dict(want.settings)))
        self.changed()
        return record

    def _endpoint_host(self, config: dict) -> tuple[str, Callable[[int], bool]]:
        """Where the replica's port is reached, and how to tell that a port there is free: this
        host's bind address for processes and local containers; a remote Docker engine's host
        name, whose ports cannot be checked from here (the engine refuses a taken one)."""
        if config.get("runtime", "local") != "docker":
            return self.host, lambda p: self.port_free(self.host, p)
        from enova.runtime.docker import default_host, endpoint_host, is_local
        docker = config.get("docker") or {}
        engine = docker.get("host") or default_host()
        host = endpoint_host(engine, docker.get("bind") or "127.0.0.1")
        if is_local(engine):
            return host, lambda p: self.port_free(host, p)
        return host, lambda p: True

    # ---- delete by name ------------------------------------------------------------------
    def delete(self, name: str) -> int:
        """Stop every replica of `name` and remove its records. Returns how many were stopped."""
        records = self.store.replicas(name)
        drain = self._drain_timeout(name)
        for record in records:
            if self.runtime.liveness(record).alive:
                self._stop(record, drain)
            else:
                self.runtime.forget(record)
        self.store.remove_deployment(name)
        self.changed()
        return len(records)

    def stop_gateway_if_idle(self) -> bool:
        """Stop the gateway when no deployment is left for it to serve (after a delete)."""
        record = self.store.read_gateway()
        if record is None or self.store.deployment_names():
            return False
        self.progress(f"gateway: stopping pid {record.pid} (no deployment left)")
        stop_gateway(self.store, record)
        return True
