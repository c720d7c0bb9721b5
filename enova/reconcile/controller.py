"""The long-running controller behind `enova reconcile`: level-triggered passes per deployment.

A file event or a timer tick only marks subjects (deployments, and the gateway) as *due*;
each pass re-reads the specs and the world, plans for that one subject, applies, and records
the outcome as status and events. Passes for one subject never overlap; passes for different
subjects run in parallel workers; one subject's failure never stops the others.

Errors are retried by kind: a spec error stalls (the last good specs keep being enforced); a
permanent error stalls that subject until its spec changes or the controller is reloaded
(SIGHUP); a replica that crashes at start, or keeps exiting, backs off exponentially with
jitter (CrashLoopBackOff); anything temporary backs off the same way. Time comes from an
injected clock; the pure pieces (`backoff_delay`, `health_verdicts`) are tested with fake ones.
Called by the CLI (`enova reconcile`), which wires the real drivers and the signals.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from enova.apply.executor import Applier
from enova.apply.facts import FactsCache, gather_facts
from enova.errors import EnovaError, PermanentError, SpecError
from enova.observe.lock import StateLock
from enova.autoscale.signals import Scraper
from enova.observe.logs import rotate_logs
from enova.observe.scaler import ScalerStore
from enova.observe.state import StateStore, write_json
from enova.plan.desired import desired_gateway, desired_state
from enova.monitor.targets import refresh_targets
from enova.plan.auto import PlanFacts
from enova.plan.diff import compute_plan
from enova.plan.model import GATEWAY, Action, ObservedReplica, Plan, ReplicaState
from enova.runtime.base import ReplicaStartError, Runtime, StartInterrupted
from enova.runtime.select import Runtimes, spec_docker_hosts
from enova.runtime.world import observe
from enova.settings import Settings
from enova.spec.loader import SpecSet, load_specs

from .autoscaler import Autoscaler
from .events import EventLog
from .gitsource import committed_snapshot, git_info, pull_fast_forward
from .metrics import METRICS_HOST, ReconcilerMetrics
from .notify import Notifier

Progress = Callable[[str], None]

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"
REASONS = {Action.CREATE: "Created", Action.SCALE: "Scaled", Action.REPLACE: "Replaced", Action.DELETE: "Deleted"}


def backoff_delay(failures: int, base: float = 2.0, cap: float = 300.0,
                  rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: base * 2^(failures-1), capped, times 1..1.5 (full
    determinism with a fixed rng). failures >= 1."""
    return min(cap, base * 2 ** max(0, failures - 1)) * (1 + 0.5 * rng())


def health_verdicts(replicas: tuple[ObservedReplica, ...], unhealthy_since: dict[str, float], now: float,
                    threshold: float) -> tuple[ObservedReplica, ...]:
    """Mark ready replicas that have failed /health for longer than `threshold` seconds as FAILED
    (so the planner replaces them). Updates `unhealthy_since` (replica id -> first failure)."""
    out = []
    for r in replicas:
        if r.state is ReplicaState.READY and r.healthy is False:
            since = unhealthy_since.setdefault(r.id, now)
            if now - since >= threshold:
                r = replace(r, state=ReplicaState.FAILED, detail=f"failing /health for {now - since:.0f} s")
        else:
            unhealthy_since.pop(r.id, None)
        out.append(r)
    return tuple(out)


@dataclass
class SubjectStatus:
    """The controller's status of one deployment (or the gateway), as `enova status` shows it."""

    condition: str = RECONCILING
    reason: str = "Pending"
    message: str = "not reconciled yet"
    last_applied: str | None = None
    last_attempted: str | None = None
    revision: str = ""               # git revision of the specs when last applied
    last_pass: float | None = None
    failures: int = 0
    next_attempt: float | None = None
    restarts: list[float] = field(default_factory=list)  # when exited replicas were restarted
    stalled_hash: str | None = None  # a permanent error holds until the desired hash changes


class Reconciler:
    def __init__(self, specs_path: Path, settings: Settings, *, stop: threading.Event,
                 interval: float = 30.0, unhealthy_after: float = 60.0, prune: bool = False,
                 workers: int = 4, git_pull: str | None = None, committed_only: bool = False,
                 notifier: Notifier | None = None, progress: Progress = lambda m: None,
                 clock: Callable[[], float] = time.time, crashloop_window: float = 600.0,
                 runtime: Runtime | None = None, applier_options: dict | None = None,
                 validate: Callable[[SpecSet], None] | None = None, scraper=None,
                 scale_interval: float = 2.0, facts: Callable[[SpecSet], PlanFacts] | None = None,
                 metrics_port: int = 0, metrics: ReconcilerMetrics | None = None):
        self.specs_path = Path(specs_path)
        self.settings = settings
        self.stop = stop
        self.interval = interval
        self.unhealthy_after = unhealthy_after
        self.prune = prune
        self.git_pull = git_pull
        self.committed_only = committed_only
        self.notifier = notifier or Notifier({})
        self.progress = progress
        self.clock = clock
        self.crashloop_window = crashloop_window
        self.store = StateStore(settings.state_dir)
        self.scalers = ScalerStore(settings.state_dir)   # the autoscaler's persisted targets
        self.runtime = runtime or Runtimes(self.store, clock=clock, progress=progress,
                                           docker_hosts=lambda: spec_docker_hosts(self.specs))
        self.applier_options = dict(applier_options or {})  # extra Applier arguments (tests: fakes)
        # checks beyond the spec schema, e.g. engine args against vLLM's own parser (raise SpecError)
        self.validate = validate or self._validate_engine_args
        # what engine.args auto is planned against (GPUs, memory, model geometries); gathered
        # with every load of the specs, model geometries read once per process
        self.facts_cache = FactsCache()
        self.gather_facts = facts or (lambda specs: gather_facts(specs, cache_dir=settings.cache_dir,
                                                                 cache=self.facts_cache))
        self.facts: PlanFacts | None = None
        self.events = EventLog(settings.state_dir / "events.jsonl", clock=clock)
        self.status_path = settings.state_dir / "reconciler" / "status.json"
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enova-pass")
        self.wake = threading.Event()
        self.reload_requested = threading.Event()
        self.lock = threading.Lock()      # guards the fields below
        self.specs: SpecSet | None = None  # the last good specs
        self.desired: dict = {}            # desired_state(self.specs), computed once per load
        self.status_dirty = threading.Event()
        self._last_flush = 0.0                   # monotonic time status.json was last written
        self.spec_error: str | None = None
        self.git: dict | None = None
        self.due: set[str] = set()
        self.running: set[str] = set()
        self.statuses: dict[str, SubjectStatus] = {}
        self.unhealthy_since: dict[str, float] = {}
        self.first_pass_done = False
        self.sweep: set[str] | None = None  # subjects still owed their first pass (READY=1 after)
        self.started_at = clock()
        self._puller: threading.Thread | None = None
        self._monitor: threading.Thread | None = None   # starting/checking Prometheus (Monitoring document)
        self._monitor_error: str | None = None
        # the reconciler's own /metrics on 127.0.0.1:metrics_port while run() runs (0: not served)
        self.metrics = metrics or ReconcilerMetrics()
        self.metrics.watch_replicas(self.store.all_replicas)
        self.metrics_port = metrics_port
        self.metrics_address: dict | None = None   # {"host", "port"} once served; in status.json
        self.autoscaler = Autoscaler(self.store, self.runtime, scraper if scraper is not None else Scraper(self.store),
                                     specs=lambda: self.specs, on_change=self._on_scale, clock=clock,
                                     interval=scale_interval)

    # ---- entry ---------------------------------------------------------------------------
    def run(self) -> int:
        """Block until `stop` is set. Holds the state lock throughout. Returns the exit code."""
        with StateLock(self.settings.state_dir, "enova reconcile"):
            self.events.record("Normal", "Started", "reconciler",
                               f"watching {self.specs_path} (interval {self.interval:g} s, pid {os.getpid()})")
            watcher = threading.Thread(target=self._watch, name="enova-watch", daemon=True)
            watcher.start()
            threading.Thread(target=self.autoscaler.run, args=(self.stop, self._scale_failed),
                             name="enova-autoscale", daemon=True).start()
            threading.Thread(target=self._watch_wakes, name="enova-wake", daemon=True).start()
            self._serve_metrics()
            self._load_specs("start")
            self._mark_all_due()
            self._ensure_monitoring()
            next_tick = time.monotonic() + self.interval
            next_dog = 0.0
            try:
                while not self.stop.is_set():
                    now_mono = time.monotonic()
                    if self.reload_requested.is_set():
                        self.reload_requested.clear()
                        self._reload()
                    if now_mono >= next_tick:
                        next_tick = now_mono + self.interval
                        if self.git_pull:
                            self._pull_in_background()  # a hanging remote must not stall the loop
                        else:
                            self._load_specs("timer")
                            self._mark_all_due()
                        self._rotate_logs_in_background()
                        try:  # also when nothing was applied: a replica that exited leaves the targets
                            self._refresh_targets()
                        except (EnovaError, OSError) as exc:
                            self.progress(f"monitoring targets not updated: {exc}")
                        self._ensure_monitoring()
                    self._dispatch()
                    self._flush_status()
                    dog = self.notifier.watchdog_interval
                    if dog and now_mono >= next_dog:
                        self.notifier.watchdog()
                        next_dog = now_mono + dog
                    timeout = min(next_tick - time.monotonic(), self._next_attempt_in(), dog or 3600,
                                  self._flush_in())
                    self.wake.wait(max(0.01, timeout))
                    self.wake.clear()
            finally:
                self.notifier.stopping()
                self.events.record("Normal", "Stopping", "reconciler", "stopping; replicas keep serving")
                self.pool.shutdown(wait=True, cancel_futures=True)
                self._write_status()
                self.metrics.up.set(0)
                self.metrics.close()
        return 0

    def _serve_metrics(self) -> None:
        """Serve the reconciler's /metrics and make it a scrape target (status.json's `metrics`).
        A port in use is one Warning event; the loop runs on without it."""
        self.metrics.up.set(1)
        if not self.metrics_port:
            return
        try:
            port = self.metrics.serve(self.metrics_port)
        except OSError as exc:
            self.events.record("Warning", "MetricsUnavailable", "reconciler",
                               f"/metrics not served: port {self.metrics_port} on {METRICS_HOST} is in use or "
                               f"refused ({exc}); set --metrics-port to another port, or 0")
            return
        self.metrics_address = {"host": METRICS_HOST, "port": port}
        self.progress(f"metrics on http://{METRICS_HOST}:{port}/metrics")
        self._write_status()
        try:
            self._refresh_targets()
        except (EnovaError, OSError) as exc:
            self.progress(f"monitoring targets not updated: {exc}")

    # ---- the autoscaler --------------------------------------------------------------------------
    def _on_scale(self, scaled) -> None:
        """A decision changed a deployment's target: re-derive the desired state from the persisted
        targets, record the event with its numbers, and run that deployment's pass now."""
        decision = scaled.decision
        with self.lock:
            if self.specs is not None:
                self.desired = desired_state(self.specs, scaled=self.scalers.targets(), facts=self.facts)
            self.due.add(scaled.deployment)
        reason = "ScaledUp" if decision.target > decision.previous else "ScaledDown"
        self.metrics.decisions.labels(scaled.deployment, "up" if reason == "ScaledUp" else "down").inc()
        self.events.record("Normal", reason, _subject(scaled.deployment),
                           f"{decision.previous} -> {decision.target}: {decision.reason}", self._revision())
        self.progress(f"{scaled.deployment}: autoscaler {decision.previous} -> {decision.target}: {decision.reason}")
        self.wake.set()

    def _scale_failed(self, exc: BaseException) -> None:
        self.events.record("Warning", "AutoscalerFailed", "autoscaler", f"{type(exc).__name__}: {exc}")

    def _watch_wakes(self) -> None:
        try:
            self.autoscaler.watch_wakes(self.stop)
        except Exception as exc:  # the autoscaler's own interval still sees wake files
            self.events.record("Warning", "WatchFailed", "autoscaler", f"watching wake requests stopped: {exc}")

    def _validate_engine_args(self, specs: SpecSet) -> None:
        from enova.engines.argspec import validate_engine_args
        validate_engine_args(specs, self.settings.cache_dir)

    def request_reload(self) -> None:
        """From a signal handler: re-read specs and settings, clear stalls and backoffs."""
        self.reload_requested.set()
        self.wake.set()

    # ---- triggers --------------------------------------------------------------------------
    def _watch(self) -> None:
        import watchfiles
        target = self.specs_path if self.specs_path.exists() else self.specs_path.parent
        try:
            for changes in watchfiles.watch(target, stop_event=self.stop, debounce=300, step=20,
                                            rust_timeout=1000, yield_on_timeout=False, raise_interrupt=False):
                names = sorted({Path(p).name for _, p in changes})[:5]
                self.progress(f"specs changed: {', '.join(names)}")
                self._load_specs("file change")
                self._mark_all_due()
        except Exception as exc:  # the timer still drives passes; say why watching stopped
            self.events.record("Warning", "WatchFailed", "specs", f"file watching stopped: {exc}")

    def _mark_all_due(self) -> None:
        with self.lock:
            names = set(self.specs.deployments) if self.specs else set()
            names |= set(self.store.deployment_names())
            self.due |= names | {GATEWAY}
            if not self.first_pass_done and self.sweep is None:
                self.sweep = names | {GATEWAY}
        self.wake.set()

    def _next_attempt_in(self) -> float:
        with self.lock:
            waits = [s.next_attempt - self.clock() for n, s in self.statuses.items()
                     if n in self.due and s.next_attempt is not None]
        return max(0.05, min(waits)) if waits else 3600.0

    # ---- specs -----------------------------------------------------------------------------
    def _load_specs(self, why: str) -> None:
        try:
            if self.committed_only:
                with committed_snapshot(self.specs_path) as snap:
                    try:  # named and resolved as the specs folder, so relative paths outlive the snapshot
                        specs = load_specs(snap.path, present_as=self.specs_path)
                    except SpecError:
                        try:  # errors name the commit (abc1234:specs/x.yaml:3), as `git show` takes them
                            load_specs(snap.path)
                        except SpecError as exc:
                            raise _Rewritten(snap.rewrite(str(exc))) from exc
                        raise
            else:
                specs = load_specs(self.specs_path)
            self.validate(specs)
        except (SpecError, _Rewritten, PermanentError) as exc:
            message = str(exc)
            with self.lock:
                changed = message != self.spec_error
                self.spec_error = message
            if changed:
                self.progress(f"specs invalid ({why}); the last good specs stay enforced:\n{message}")
                self.events.record("Warning", "SpecInvalid", "specs", message, self._revision())
            self._refresh_git()
            return
        facts = self.gather_facts(specs)
        desired = desired_state(specs, scaled=self.scalers.targets(), facts=facts)
        with self.lock:
            was_invalid = self.spec_error is not None
            self.spec_error = None
            self.specs, self.desired, self.facts = specs, desired, facts
        if was_invalid:
            self.events.record("Normal", "SpecValid", "specs", "the specs are valid again", self._revision())
        self._refresh_git()

    def _refresh_git(self) -> None:
        try:
            info = git_info(self.specs_path)
        except EnovaError as exc:  # git timed out or refused the repository: say so, keep going
            with self.lock:
                self.git = {"error": str(exc)}
            return
        with self.lock:
            self.git = None if info is None else {"revision": info.revision, "branch": info.branch,
                                                  "dirty": info.dirty, "short": info.short()}

    def _revision(self) -> str:
        with self.lock:
            return (self.git or {}).get("short", "")

    def _pull_in_background(self) -> None:
        """Fetch and fast-forward in a thread, then re-read the specs and mark everything due.
        The main loop keeps dispatching passes and beating the watchdog while git waits on the
        network (up to its own timeout). At most one pull runs at a time."""
        if self._puller is not None and self._puller.is_alive():
            return

        def pull() -> None:
            self._pull()
            self._load_specs("timer")
            self._mark_all_due()
        self._puller = threading.Thread(target=pull, name="enova-git-pull", daemon=True)
        self._puller.start()

    def _rotate_logs_in_background(self) -> None:
        """Copy-and-truncate replica and gateway logs that grew past their limit."""
        self.pool.submit(_rotate_logs, self.settings.state_dir / "logs", self.events)

    def _pull(self) -> None:
        try:
            result = pull_fast_forward(self.specs_path, self.git_pull)
            if result.changed:
                self.events.record("Normal", "Pulled", "specs", f"{result.before[:7]} -> {result.after[:7]}")
        except EnovaError as exc:
            self.events.record("Warning", "PullFailed", "specs", str(exc), self._revision())

    def _reload(self) -> None:
        self.notifier.reloading()
        with self.lock:
            for status in self.statuses.values():
                status.failures, status.next_attempt, status.stalled_hash = 0, None, None
        self.events.record("Normal", "Reloaded", "reconciler", "SIGHUP: specs re-read, stalls and backoffs cleared")
        self.first_pass_done = False  # READY=1 again after this sweep
        self.sweep = None
        self._load_specs("reload")
        self._mark_all_due()

    # ---- passes ----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        now = self.clock()
        with self.lock:
            ready = sorted(n for n in self.due - self.running
                           if (self.statuses.get(n) is None or self.statuses[n].next_attempt is None
                               or self.statuses[n].next_attempt <= now))
            if GATEWAY in ready:  # the gateway first, so it is up before the replicas it serves
                ready = [GATEWAY] + [n for n in ready if n != GATEWAY]
            for name in ready:
                self.due.discard(name)
                self.running.add(name)
        for name in ready:
            self.pool.submit(self._pass_guarded, name)
        with self.lock:
            swept = self.sweep is not None and not self.sweep
        if swept and not self.first_pass_done:
            self.first_pass_done = True
            self.sweep = None
            self._write_status()
            self.notifier.ready(self._summary())

    def _pass_guarded(self, name: str) -> None:
        try:
            self.reconcile_once(name)
        except Exception as exc:  # a bug in one pass must not kill the loop
            self._set(name, condition=RECONCILING, reason="Error", message=f"{type(exc).__name__}: {exc}")
            self._fail(name, exc)
            self.events.record("Warning", "PassFailed", _subject(name), f"{type(exc).__name__}: {exc}")
        finally:
            with self.lock:
                self.running.discard(name)
                if self.sweep is not None:
                    self.sweep.discard(name)
            self.status_dirty.set()  # written by the main loop, at most a few times a second
            self.wake.set()

    def reconcile_once(self, name: str) -> None:
        """One level-triggered pass for one subject: re-read the world, plan, apply, record.
        Counted by the condition it leaves (enova_reconciler_passes_total)."""
        result = "Error"
        try:
            self._reconcile_once(name)
            with self.lock:
                status = self.statuses.get(name)
                result = status.condition if status is not None else "Absent"
        finally:
            self.metrics.seen(name)
            self.metrics.passes.labels(name, result).inc()

    def _reconcile_once(self, name: str) -> None:
        with self.lock:
            specs, spec_error, desired = self.specs, self.spec_error, self.desired
        if specs is None:
            self._set(name, condition=STALLED, reason="SpecInvalid", message=spec_error or "no valid specs yet")
            return
        plan = self._plan_for(name, specs, desired)
        change = plan.changes[0] if plan.changes else None
        desired_hash = change.config_after if change else None
        if change is None and name != GATEWAY:
            with self.lock:  # neither wanted nor running: nothing left to report
                self.statuses.pop(name, None)
            return
        now = self.clock()
        with self.lock:
            status = self.statuses.setdefault(name, SubjectStatus())
            if status.stalled_hash is not None and status.stalled_hash == desired_hash and change is not None \
                    and change.action is not Action.NOOP:
                return  # stalled by a permanent error until the spec changes (or SIGHUP)
            status.stalled_hash = None
            deferred = status.next_attempt is not None  # the dispatcher only runs it once that time came
            status.next_attempt = None
            last_applied, revision = status.last_applied, status.revision
            crashloop = None
            if change is not None and plan.has_changes and change.forget and not deferred:
                status.restarts = [t for t in status.restarts if now - t < self.crashloop_window] + [now]
                if len(status.restarts) >= 3:  # keeps exiting: restart it, but not in a tight loop
                    crashloop = (len(status.restarts), backoff_delay(len(status.restarts) - 2))
                    status.next_attempt = now + crashloop[1]
        if change is not None and change.blocked:
            self._blocked(name, change, revision)
            return
        if change is None or not plan.has_changes:
            self._set(name, condition=STALLED if spec_error else READY,
                      reason="SpecInvalid" if spec_error else "InSync",
                      message=spec_error or (change.reason if change else "nothing to do"),
                      last_applied=desired_hash or last_applied, failures=0, next_attempt=None,
                      revision=revision or self._revision())
            return
        if crashloop is not None:
            count, delay = crashloop
            message = (f"replicas exited {count} times in the last {self.crashloop_window:.0f} s; "
                       f"next restart in {delay:.0f} s")
            self._set(name, condition=RECONCILING, reason="CrashLoopBackOff", message=message)
            self.events.record("Warning", "CrashLoopBackOff", _subject(name), message, self._revision())
            self.metrics.errors.labels(name, "CrashLoopBackOff").inc()
            with self.lock:
                self.due.add(name)
            return
        self._set(name, condition=RECONCILING, reason="Progressing", message=change.reason,
                  last_attempted=desired_hash)
        self.events.record("Normal", REASONS.get(change.action, "Synced"), _subject(name), change.reason,
                           self._revision())
        applier = self._applier()
        began = time.monotonic()
        try:
            applier.preflight(plan)
            result = applier.apply(plan)
        except EnovaError as exc:
            self._fail(name, exc, desired_hash)
            return
        if result.failed:
            failure = result.failed[0]
            self._fail(name, failure.error or EnovaError(failure.message), desired_hash)
            return
        self._set(name, condition=STALLED if spec_error else READY,
                  reason="SpecInvalid" if spec_error else "Reconciled",
                  message=spec_error or change.reason, last_applied=desired_hash, failures=0,
                  revision=self._revision())
        self.metrics.actions.labels(name, change.action.value).inc()
        self.events.record("Normal", "Reconciled", _subject(name),
                           f"{REASONS.get(change.action, 'Synced').lower()} in {time.monotonic() - began:.1f} s",
                           self._revision())

    def _ensure_monitoring(self) -> None:
        """With a Monitoring document, keep Prometheus running as it says (restarted if it died,
        restarted with data kept when the document changed), off the main loop: a start blocks up
        to a minute. A failure is one Warning event per distinct message; serving is untouched."""
        specs = self.specs
        if specs is None or specs.monitoring is None:
            return
        if self._monitor is not None and self._monitor.is_alive():
            return

        def run() -> None:
            from enova.monitor.compose_engine import ensure_monitoring
            try:
                # the SLO alerts follow the SLO documents; local or compose mode, as the document says
                done = ensure_monitoring(self.settings.state_dir, specs, progress=self.progress)
            except (EnovaError, OSError) as exc:
                if str(exc) != self._monitor_error:
                    self._monitor_error = str(exc)
                    self.events.record("Warning", "MonitoringFailed", "monitoring", str(exc), self._revision())
                return
            self._monitor_error = None
            if done.changed:
                self.events.record("Normal", "Monitoring", "monitoring", done.line, self._revision())

        self._monitor = threading.Thread(target=run, name="enova-monitoring", daemon=True)
        self._monitor.start()

    def _refresh_targets(self) -> None:
        """The monitoring scrape targets follow the records (a replica started, stopped, exited)."""
        refresh_targets(self.settings.state_dir)

    def _blocked(self, name: str, change, revision: str | None) -> None:
        """The deployment's desired config cannot be computed (engine.args auto): what runs is
        kept; the facts are gathered again with every load of the specs (each timer tick)."""
        with self.lock:
            before = self.statuses.setdefault(name, SubjectStatus()).message
        self._set(name, condition=STALLED, reason="Blocked", message=change.blocked,
                  revision=revision or self._revision())
        if before != change.blocked:
            self.events.record("Warning", "Blocked", _subject(name), change.reason, self._revision())

    def _applier(self) -> Applier:
        return Applier(store=self.store, settings=self.settings, runtime=self.runtime, progress=self.progress,
                       stop=self.stop, clock=self.clock, revision=self._revision(), on_change=self._refresh_targets,
                       **self.applier_options)

    def _plan_for(self, name: str, specs: SpecSet, desired: dict) -> Plan:
        """The plan for one subject, from the desired state of the whole spec set (computed once
        per load: which deployment is the default belongs to the set, not to one pass)."""
        if name == GATEWAY:
            world = observe(self.store, self.runtime, now=self.clock())
            full = compute_plan(desired, world.deployments, prune=self.prune, gateway=desired_gateway(specs),
                                observed_gateway=world.gateway)
            change = full.gateway_change
            return Plan(changes=(change,) if change else (), prune=self.prune, desired={}, gateway=full.gateway)
        world = observe(self.store, self.runtime, now=self.clock(), probe_health=True, names=[name], gateway=False)
        observed = {}
        if name in world.deployments:
            have = world.deployments[name]
            with self.lock:
                replicas = health_verdicts(have.replicas, self.unhealthy_since, self.clock(), self.unhealthy_after)
            observed[name] = replace(have, replicas=replicas)
        wanted = {name: desired[name]} if name in desired else {}
        return compute_plan(wanted, observed, prune=self.prune)

    def _fail(self, name: str, exc: BaseException, desired_hash: str | None = None) -> None:
        if isinstance(exc, StartInterrupted) and self.stop.is_set():
            self._set(name, condition=RECONCILING, reason="Interrupted",
                      message=f"{exc}; the next reconciler adopts it")
            return
        if isinstance(exc, PermanentError):
            with self.lock:
                self.statuses.setdefault(name, SubjectStatus()).stalled_hash = desired_hash
            self._set(name, condition=STALLED, reason="ApplyFailed",
                      message=f"{exc} (retried when the spec changes, or on reload)")
            self.events.record("Warning", "Stalled", _subject(name), str(exc), self._revision())
            self.metrics.errors.labels(name, "Stalled").inc()
            return
        with self.lock:
            status = self.statuses.setdefault(name, SubjectStatus())
            status.failures += 1
            failures = status.failures
            delay = backoff_delay(failures)
            status.next_attempt = self.clock() + delay
        crash = isinstance(exc, ReplicaStartError)
        reason = "CrashLoopBackOff" if crash and failures >= 2 else ("StartFailed" if crash else "Retrying")
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self._set(name, condition=RECONCILING, reason=reason,
                  message=f"{first_line}; attempt {failures}, next in {delay:.0f} s")
        self.events.record("Warning", reason, _subject(name), f"{exc}; next attempt in {delay:.1f} s",
                           self._revision())
        self.metrics.errors.labels(name, reason).inc()
        with self.lock:
            self.due.add(name)

    # ---- status ----------------------------------------------------------------------------
    def _flush_status(self, min_gap: float = 0.25) -> None:
        """Write status.json and send STATUS= when passes finished, at most every `min_gap` s."""
        now = time.monotonic()
        if self.status_dirty.is_set() and now - self._last_flush >= min_gap:
            self.status_dirty.clear()
            self._last_flush = now
            self._write_status()
            self.notifier.status(self._summary())

    def _flush_in(self, min_gap: float = 0.25) -> float:
        if not self.status_dirty.is_set():
            return 3600.0
        return max(0.0, min_gap - (time.monotonic() - self._last_flush))

    def _set(self, name: str, **fields) -> None:
        with self.lock:
            status = self.statuses.setdefault(name, SubjectStatus())
            for key, value in fields.items():
                setattr(status, key, value)
            status.last_pass = self.clock()

    def _summary(self) -> str:
        with self.lock:
            conditions = [s.condition for n, s in self.statuses.items() if n != GATEWAY]
            rev = (self.git or {}).get("short", "")
        counts = ", ".join(f"{conditions.count(c)} {c}" for c in (READY, RECONCILING, STALLED) if conditions.count(c))
        return f"{len(conditions)} deployments: {counts or 'none'}" + (f"; specs {rev}" if rev else "")

    def _write_status(self) -> None:
        with self.lock:
            data = {
                "pid": os.getpid(), "started_at": self.started_at, "written_at": self.clock(),
                "specs": str(self.specs_path), "interval": self.interval, "git": self.git,
                "spec_error": self.spec_error, "first_pass_done": self.first_pass_done,
                "metrics": self.metrics_address,
                "subjects": {n: {k: v for k, v in asdict(s).items() if k not in ("restarts", "stalled_hash")}
                             | {"stalled": s.stalled_hash is not None}
                             for n, s in sorted(self.statuses.items())},
            }
        write_json(self.status_path, data)


def _rotate_logs(folder: Path, events: EventLog) -> None:
    try:
        rotate_logs(folder)
    except (OSError, EnovaError) as exc:
        events.record("Warning", "LogRotationFailed", "reconciler", f"{folder}: {exc}")


class _Rewritten(Exception):
    """A SpecError from a committed snapshot, its paths rewritten to the user's files."""


def _subject(name: str) -> str:
    return GATEWAY if name == GATEWAY else f"deployment/{name}"


def read_status(state_dir: Path) -> dict | None:
    """The last status the reconciler wrote, with `alive` telling whether it still runs."""
    path = Path(state_dir) / "reconciler" / "status.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    import psutil
    data["alive"] = psutil.pid_exists(data.get("pid", -1))
    return data
