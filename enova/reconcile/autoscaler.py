"""The autoscaler inside `enova reconcile`: every `interval` seconds (at once when the gateway asks
for a replica of a deployment scaled to zero) it scrapes the signals of the deployments that have
`scaling`, asks their policy for a decision, persists the autoscaler's state, and when the target
changes records an event with the decision's numbers and marks the deployment due. The change
then goes through the same plan and apply path as any other (scale-down drains: no stream is
cut), because the desired replica count of a deployment with `scaling` is the persisted target.

`tick(now)` is one round and is what tests drive (with a fake scraper and clock); `run(stop)`
loops it on its own thread. The pure decision is enova.autoscale.policies.decide.
Called by enova.reconcile.controller.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from enova.autoscale.model import Capacity, Decision, Sample, ScalerState
from enova.autoscale.policies import decide
from enova.observe.scaler import ScalerStore
from enova.observe.state import StateStore
from enova.runtime.base import Runtime
from enova.spec.loader import SpecSet

WINDOW_SECONDS = 600.0   # samples kept per deployment (the longest policy window, with room)
REFRESH_SECONDS = 10.0   # the persisted signals and last decision are rewritten at least this often


@dataclass(frozen=True)
class Scaled:
    """One deployment's decision in a tick, with what it was decided from."""

    deployment: str
    decision: Decision
    sample: Sample | None


class Autoscaler:
    def __init__(self, store: StateStore, runtime: Runtime, scraper, *,
                 specs: Callable[[], SpecSet | None],
                 on_change: Callable[[Scaled], None] = lambda s: None,
                 clock: Callable[[], float] = time.time, interval: float = 2.0):
        self.store = store
        self.runtime = runtime
        self.scraper = scraper
        self.specs = specs
        self.on_change = on_change
        self.clock = clock
        self.interval = interval
        self.scalers = ScalerStore(store.root)
        self.samples: dict[str, deque[Sample]] = {}
        self.wake = threading.Event()
        self._written: dict[str, dict] = {}

    # ---- one round ---------------------------------------------------------------------------
    def scaled_deployments(self, specs: SpecSet) -> dict[str, tuple[dict, dict | None]]:
        """name -> (scaling, slo) for every deployment with `scaling`, as plain data."""
        out = {}
        for name, located in specs.deployments.items():
            spec = located.doc.spec
            if getattr(spec, "scaling", None) is None:
                continue
            slo = specs.slos[spec.slo].doc.spec.model_dump(mode="json") if spec.slo in specs.slos else None
            scaling = spec.scaling.model_dump(mode="json")
            # enova-original bounds running requests by the engine's max_num_seqs (vLLM's default 256)
            scaling.setdefault("max_num_seqs", spec.engine.args.get("max_num_seqs", 256))
            out[name] = (scaling, slo)
        return out

    def capacity(self, name: str) -> Capacity:
        ready = starting = 0
        start_seconds = None
        for record in self.store.replicas(name):
            if record.ready_at is not None and record.started_at:
                start_seconds = max(start_seconds or 0.0, record.ready_at - record.started_at)
            if not self.runtime.liveness(record).alive:
                continue
            if record.state == "ready":
                ready += 1
            elif record.state == "starting":
                starting += 1
        if start_seconds is None:
            previous = self._persisted(name) or {}
            start_seconds = previous.get("start_seconds")
        return Capacity(ready=ready, starting=starting, start_seconds=start_seconds)

    def tick(self, now: float | None = None) -> list[Scaled]:
        """Scrape, decide, persist; returns every deployment's decision (changed or not)."""
        now = self.clock() if now is None else now
        specs = self.specs()
        if specs is None:
            return []
        scaled = self.scaled_deployments(specs)
        for gone in set(self.samples) - set(scaled):
            del self.samples[gone]
        for gone in set(self.scalers.names()) - set(scaled):
            self.scalers.remove(gone)   # scaling removed (the count is the spec's again) or the deployment gone
            self._written.pop(gone, None)
        if not scaled:
            return []
        fresh = self.scraper.scrape(sorted(scaled), now)
        wakes = self.scalers.wakes()
        out = []
        for name, (scaling, slo) in sorted(scaled.items()):
            window = self.samples.setdefault(name, deque())
            sample = fresh.get(name)
            if sample is not None:
                if name in wakes and sample.held <= 0:   # the gateway asked before its gauge showed it
                    sample = _with_held(sample, 1.0)
                window.append(sample)
            while window and now - window[0].at > WINDOW_SECONDS:
                window.popleft()
            capacity = self.capacity(name)
            stored = self._persisted(name)
            state = ScalerState.from_dict(stored) if stored else ScalerState(
                target=_clamp(specs.deployments[name].doc.spec.replicas, scaling), policy=scaling.get("policy", ""))
            decision = decide(scaling, slo, list(window), capacity, state, now)
            record = {**decision.state.to_dict(), "start_seconds": capacity.start_seconds, "updated_at": now,
                      "last_decision": {"at": now, "target": decision.target, "previous": decision.previous,
                                        "reason": decision.reason, "numbers": decision.numbers},
                      "signals": _signals(sample)}
            written = self._written.get(name)
            if (decision.changed or stored is None or _essential(record) != _essential(written or {})
                    or now - (written or {}).get("updated_at", 0.0) >= REFRESH_SECONDS):
                self.scalers.write(name, record)   # what `enova scale status` shows, and what a restart resumes
                self._written[name] = record
            if name in wakes and decision.target >= 1:
                self.scalers.clear_wake(name, seen=wakes[name])  # a newer request, written since, is kept
            scaled_one = Scaled(name, decision, sample)
            if decision.changed:
                self.on_change(scaled_one)
            out.append(scaled_one)
        return out

    def _persisted(self, name: str) -> dict | None:
        """The state last written for `name`: this process is its only writer, so the file is read
        once (after a restart) and not on every tick."""
        if name not in self._written:
            stored = self.scalers.read(name)
            if stored is None:
                return None
            self._written[name] = stored
        return self._written[name]

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, on_error: Callable[[BaseException], None] = lambda e: None) -> None:
        """Tick every `interval` seconds (or at once when `wake` is set) until `stop` is set."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # one bad round must not end autoscaling
                on_error(exc)
            self.wake.wait(self.interval)
            self.wake.clear()

    def watch_wakes(self, stop: threading.Event) -> None:
        """Wake the loop at once when the gateway writes a wake file (watchfiles)."""
        import watchfiles
        folder = self.scalers.wake_path("x").parent
        folder.mkdir(parents=True, exist_ok=True)
        for _ in watchfiles.watch(folder, stop_event=stop, debounce=10, step=10, rust_timeout=1000,
                                  yield_on_timeout=False, raise_interrupt=False):
            self.wake.set()


def _clamp(replicas: int, scaling: dict) -> int:
    return max(int(scaling.get("min", 0)), min(int(scaling.get("max", replicas)), replicas))


def _with_held(sample: Sample, held: float) -> Sample:
    from dataclasses import replace
    return replace(sample, held=held)


def _signals(sample: Sample | None) -> dict | None:
    if sample is None:
        return None
    return {"at": sample.at, "ready": sample.ready, "in_flight": sample.in_flight, "queued": sample.queued,
            "held": sample.held, "rps": round(sample.rps, 3), "engine_running": sample.engine_running,
            "engine_waiting": sample.engine_waiting, "kv_cache_usage": sample.kv_cache_usage}


def _essential(record: dict) -> dict:
    """What must survive a restart (not the running signals): written when it changes."""
    return {k: v for k, v in record.items() if k not in ("signals", "updated_at", "last_decision")}
