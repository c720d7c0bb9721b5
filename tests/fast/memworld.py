"""A test harness for the decision logic: specs on disk, a real StateStore, the in-memory
runtime, a fake clock whose sleep advances time, and fakes for model resolution, the engine
check, cores, ports and GPUs. Applier and Reconciler run unchanged on top of it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import yaml

from enova.apply.executor import Applier
from enova.modelstore import ResolvedModel
from enova.observe.gpus import Gpu, GpuInventory
from enova.observe.state import StateStore
from enova.plan.desired import desired_gateway, desired_state
from enova.plan.diff import compute_plan
from enova.plan.model import Plan
from enova.runtime.memory import MemoryRuntime
from enova.runtime.world import observe
from enova.settings import Settings
from enova.spec.loader import load_specs


class FakeClock:
    """Wall-clock seconds; `sleep` advances it (and says whether a stop was requested)."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start
        self._lock = threading.Lock()
        self.stop_after_sleeps: int | None = None  # interrupt: sleep returns True after this many

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> bool:
        self.advance(seconds)
        if self.stop_after_sleeps is not None:
            self.stop_after_sleeps -= 1
            return self.stop_after_sleeps < 0
        return False


def deployment_doc(name: str, *, replicas: int = 1, args: dict[str, Any] | None = None,
                   serving: dict[str, Any] | None = None, gpus: int = 0, cpus: int = 1,
                   startup_timeout: str = "60s") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": "builtin:smollm2-135m-instruct",
        "engine": {"name": "vllm", "args": args or {"max_num_seqs": 16}, "startup_timeout": startup_timeout},
        "replicas": replicas, "resources": {"gpus": gpus, "cpus": cpus}}
    if serving:
        spec["serving"] = serving
    return {"apiVersion": "enova/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


class MemWorld:
    def __init__(self, tmp_path: Path, *, gpus: int = 0, host_cpus: int = 16):
        self.root = tmp_path
        self.clock = FakeClock()
        self.store = StateStore(tmp_path / "state")
        self.runtime = MemoryRuntime(self.store, clock=self.clock)
        self.settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
        self.specs_dir = tmp_path / "specs"
        self.specs_dir.mkdir(parents=True, exist_ok=True)
        self.gpus = GpuInventory(gpus=tuple(Gpu(i, f"GPU-{i:04d}", "Fake GPU", 81920, 0) for i in range(gpus)),
                                 driver="fake") if gpus else GpuInventory(reason="no GPU (fake)")
        self.host_cpus = list(range(host_cpus))
        self.facts = None  # enova.plan.auto.PlanFacts for engine.args auto (None: auto deployments are blocked)
        self.resolved: list[str] = []
        self.resolve_error: Exception | None = None

    # ---- specs --------------------------------------------------------------------------
    def write(self, *deployments: dict[str, Any]) -> None:
        """Replace the spec folder's content with these Deployment documents (gateway disabled)."""
        for old in self.specs_dir.glob("*.yaml"):
            old.unlink()
        docs = [*deployments, {"apiVersion": "enova/v1", "kind": "Gateway", "metadata": {"name": "g"},
                               "spec": {"enabled": False}}]
        (self.specs_dir / "specs.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))

    # ---- fakes --------------------------------------------------------------------------
    def resolve(self, ref: str, **kwargs) -> ResolvedModel:
        self.resolved.append(ref)
        if self.resolve_error is not None:
            raise self.resolve_error
        return ResolvedModel(ref=ref, kind="builtin", path="/models/fake", cached=True)

    def applier_options(self) -> dict[str, Any]:
        return {"resolve": self.resolve, "inventory": lambda: self.gpus, "engine_check": lambda device: None,
                "cpus": lambda: self.host_cpus, "port_free": lambda host, port: True, "sleep": self.clock.sleep}

    def applier(self) -> Applier:
        return Applier(store=self.store, settings=self.settings, runtime=self.runtime, clock=self.clock,
                       **self.applier_options())

    # ---- plan and apply -----------------------------------------------------------------
    def plan(self, *, prune: bool = False) -> Plan:
        specs = load_specs(self.specs_dir)
        world = observe(self.store, self.runtime, now=self.clock(), probe_health=True)
        return compute_plan(desired_state(specs, facts=self.facts), world.deployments, prune=prune, gateway=desired_gateway(specs),
                            observed_gateway=world.gateway)

    def apply(self, *, prune: bool = False):
        plan = self.plan(prune=prune)
        applier = self.applier()
        applier.preflight(plan)
        return plan, applier.apply(plan)

    def records(self, name: str) -> dict[str, Any]:
        return {r.id: r for r in self.store.replicas(name)}


def reconciler(w: MemWorld, stop: threading.Event | None = None, **kwargs) -> "Reconciler":
    """A Reconciler on the world's specs, state, in-memory runtime and fake clock, specs loaded."""
    from enova.reconcile.controller import Reconciler
    rec = Reconciler(w.specs_dir, w.settings, stop=stop or threading.Event(), clock=w.clock, runtime=w.runtime,
                     applier_options=w.applier_options(), validate=lambda specs: None, **kwargs)
    rec._load_specs("test")
    return rec
