"""reconcile_once and the controller loop on the in-memory runtime: per-deployment passes that
still see the whole spec set, backoff by kind of error, adoption after a stop, concurrency."""

from __future__ import annotations

import threading
import time

import pytest

from enova.errors import TemporaryError
from enova.reconcile.controller import Reconciler

from .memworld import MemWorld, deployment_doc, reconciler


@pytest.fixture
def w(tmp_path) -> MemWorld:
    return MemWorld(tmp_path)



def test_per_deployment_passes_keep_the_default_of_the_whole_spec_set(w):
    w.write(deployment_doc("a"), deployment_doc("b"))
    rec = reconciler(w)
    rec.reconcile_once("a")
    rec.reconcile_once("b")
    # neither is marked default and there are two: /generate must answer 400, not pick one
    assert [w.store.read_deployment(n).serving["default"] for n in ("a", "b")] == [False, False]
    w.write(deployment_doc("a"), deployment_doc("b", serving={"default": True}))
    rec._load_specs("test")
    rec.reconcile_once("a")
    rec.reconcile_once("b")
    assert [w.store.read_deployment(n).serving["default"] for n in ("a", "b")] == [False, True]
    assert rec.statuses["b"].condition == "Ready"


def test_a_serving_change_is_applied_by_the_reconciler_without_a_restart(w):
    w.write(deployment_doc("a"))
    rec = reconciler(w)
    rec.reconcile_once("a")
    started = w.runtime.ids("start")
    w.write(deployment_doc("a", serving={"max_concurrency": 3}))
    rec._load_specs("test")
    rec.reconcile_once("a")
    assert w.store.read_deployment("a").serving["max_concurrency"] == 3
    assert w.runtime.ids("start") == started and w.runtime.ids("stop") == []
    assert rec.statuses["a"].condition == "Ready"


def test_a_crash_at_start_with_two_replicas_backs_off_as_crashloop_not_a_stall(w):
    w.write(deployment_doc("a", replicas=2))
    w.runtime.behave("a", crash=True)
    rec = reconciler(w)
    rec.reconcile_once("a")
    first = rec.statuses["a"]
    assert (first.condition, first.reason) == ("Reconciling", "StartFailed")
    assert first.next_attempt is not None and first.stalled_hash is None
    w.clock.advance(first.next_attempt - w.clock() + 0.1)
    rec.reconcile_once("a")
    second = rec.statuses["a"]
    assert (second.condition, second.reason) == ("Reconciling", "CrashLoopBackOff")
    assert second.failures == 2 and "a" in rec.due


def test_a_hub_outage_is_retried_with_backoff(w):
    w.write(deployment_doc("a"))
    w.resolve_error = TemporaryError("model 'x': the Hugging Face Hub could not be reached", delay=30)
    rec = reconciler(w)
    rec.reconcile_once("a")
    status = rec.statuses["a"]
    assert (status.condition, status.reason) == ("Reconciling", "Retrying") and status.stalled_hash is None
    w.resolve_error = None
    w.clock.advance(status.next_attempt - w.clock() + 0.1)
    rec.reconcile_once("a")
    assert rec.statuses["a"].condition == "Ready" and len(w.runtime.running("a")) == 1


def test_a_reconciler_stopped_while_a_replica_starts_leaves_it_for_the_next_to_adopt(w):
    w.write(deployment_doc("a", startup_timeout="10m"))   # a model load of minutes, as on a GPU host
    w.runtime.behave("a", ready_after=120.0)
    stop = threading.Event()
    rec = reconciler(w, stop=stop)
    sleeps = []

    def sleep_then_sigterm(seconds: float) -> bool:   # SIGTERM arrives while the model loads
        w.clock.advance(seconds)
        sleeps.append(seconds)
        if len(sleeps) == 3:
            stop.set()
        return stop.is_set()
    rec.applier_options["sleep"] = sleep_then_sigterm
    rec.reconcile_once("a")
    assert rec.statuses["a"].reason == "Interrupted"
    (rid,) = w.runtime.running("a")
    assert w.records("a")[rid].state == "starting" and w.runtime.ids("stop") == []

    after = reconciler(w)                 # a new reconciler (an upgrade of enova) adopts it
    after.reconcile_once("a")
    assert w.runtime.ids("start") == [rid] and w.records("a")[rid].state == "ready"
    assert after.statuses["a"].condition == "Ready"


def test_concurrent_passes_lose_no_status_while_status_is_written(w):
    names = [f"d{i:02d}" for i in range(24)]
    w.write(*(deployment_doc(n) for n in names))
    w.host_cpus = list(range(32))
    rec = reconciler(w, workers=4)
    errors = []
    done = threading.Event()

    def writer():
        while not done.is_set():
            try:
                rec._write_status()
                rec._summary()
            except Exception as exc:  # noqa: BLE001 - the race this test is about
                errors.append(exc)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        rec._mark_all_due()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rec._dispatch()
            with rec.lock:
                if not rec.due and not rec.running:
                    break
            rec.wake.wait(0.01)
            rec.wake.clear()
    finally:
        done.set()
        thread.join()
        rec.pool.shutdown()
    assert not errors
    assert {n: rec.statuses[n].condition for n in names} == {n: "Ready" for n in names}
    ports = [r.port for r in w.store.all_replicas()]
    cpus = [c for r in w.store.all_replicas() for c in r.cpus]
    assert len(ports) == len(set(ports)) == 24 and len(cpus) == len(set(cpus))


def test_a_hanging_git_remote_does_not_stop_the_watchdog(w, monkeypatch):
    import enova.reconcile.controller as controller
    w.write(deployment_doc("a"))
    release = threading.Event()
    pulls = []

    def hanging_pull(path, branch):
        pulls.append(branch)
        release.wait(30)
        raise TemporaryError("git fetch timed out")
    monkeypatch.setattr(controller, "pull_fast_forward", hanging_pull)

    class Dog:
        watchdog_interval = 0.05
        beats: list[float] = []

        def watchdog(self):
            self.beats.append(time.monotonic())

        def __getattr__(self, name):
            return lambda *a, **k: None
    dog = Dog()
    stop = threading.Event()
    rec = Reconciler(w.specs_dir, w.settings, stop=stop, runtime=w.runtime, interval=0.05, git_pull="main",
                     notifier=dog, applier_options=w.applier_options(), validate=lambda s: None)
    thread = threading.Thread(target=rec.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not pulls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pulls, "the timer never pulled"
        beats_before = len(dog.beats)
        time.sleep(1.0)                       # the pull is hanging all this time
        assert len(dog.beats) - beats_before >= 5
    finally:
        release.set()
        stop.set()
        rec.wake.set()
        thread.join(20)
    assert not thread.is_alive()
