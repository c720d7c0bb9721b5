"""The reconciler's own metrics on the in-memory runtime: passes by the condition they leave,
failures by their event's reason, applied actions, autoscaler decisions; a /metrics page on
127.0.0.1 that becomes the `enova-reconciler` scrape target; a port in use is a Warning and the
loop runs on. Every Reconciler has its own registry."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest

from enova.errors import PermanentError
from enova.monitor.targets import RECONCILER_FILE, targets_dir
from enova.reconcile.controller import Reconciler

from .memworld import MemWorld, deployment_doc, reconciler


@pytest.fixture
def w(tmp_path) -> MemWorld:
    return MemWorld(tmp_path)



def sample(rec: Reconciler, name: str, **labels) -> float:
    return rec.metrics.registry.get_sample_value(name, labels) or 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_pass_that_creates_counts_the_action_and_a_ready_pass_then_an_in_sync_one(w):
    w.write(deployment_doc("a"))
    rec = reconciler(w)
    rec.reconcile_once("a")
    assert sample(rec, "enova_reconciler_actions_total", deployment="a", action="create") == 1
    assert sample(rec, "enova_reconciler_passes_total", deployment="a", result="Ready") == 1
    rec.reconcile_once("a")   # in sync: a pass, no action
    assert sample(rec, "enova_reconciler_passes_total", deployment="a", result="Ready") == 2
    assert sample(rec, "enova_reconciler_actions_total", deployment="a", action="create") == 1
    assert sample(rec, "enova_reconciler_errors_total", deployment="a", reason="Retrying") == 0


def test_failures_are_counted_by_the_reason_of_their_event(w):
    w.write(deployment_doc("a", replicas=2))
    w.runtime.behave("a", crash=True)
    rec = reconciler(w)
    rec.reconcile_once("a")
    assert sample(rec, "enova_reconciler_errors_total", deployment="a", reason="StartFailed") == 1
    assert sample(rec, "enova_reconciler_passes_total", deployment="a", result="Reconciling") == 1
    w.clock.advance(rec.statuses["a"].next_attempt - w.clock() + 0.1)
    rec.reconcile_once("a")
    assert sample(rec, "enova_reconciler_errors_total", deployment="a", reason="CrashLoopBackOff") == 1
    rec._fail("a", PermanentError("the model cannot be loaded"))
    assert sample(rec, "enova_reconciler_errors_total", deployment="a", reason="Stalled") == 1


def test_a_pass_that_raises_counts_as_error(w, monkeypatch):
    w.write(deployment_doc("a"))
    rec = reconciler(w)
    monkeypatch.setattr(rec, "_plan_for", lambda *a: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError):
        rec.reconcile_once("a")
    assert sample(rec, "enova_reconciler_passes_total", deployment="a", result="Error") == 1


def test_autoscaler_decisions_are_counted_by_direction(w):
    w.write(deployment_doc("a"))
    rec = reconciler(w)
    for previous, target in ((1, 3), (3, 2), (2, 1)):
        rec._on_scale(SimpleNamespace(deployment="a", decision=SimpleNamespace(previous=previous, target=target,
                                                                                reason="test")))
    assert sample(rec, "enova_reconciler_autoscaler_decisions_total", deployment="a", direction="up") == 1
    assert sample(rec, "enova_reconciler_autoscaler_decisions_total", deployment="a", direction="down") == 2


def test_two_reconcilers_keep_their_own_counts(w):
    w.write(deployment_doc("a"))
    first, second = reconciler(w), reconciler(w)
    first.reconcile_once("a")
    assert sample(first, "enova_reconciler_passes_total", deployment="a", result="Ready") == 1
    assert sample(second, "enova_reconciler_passes_total", deployment="a", result="Ready") == 0


def run_in_thread(w: MemWorld, port: int):
    stop = threading.Event()
    rec = Reconciler(w.specs_dir, w.settings, stop=stop, runtime=w.runtime, interval=0.2, metrics_port=port,
                     applier_options=w.applier_options(), validate=lambda s: None)
    thread = threading.Thread(target=rec.run)
    thread.start()
    return rec, stop, thread


def stop_thread(rec, stop, thread):
    stop.set()
    rec.wake.set()
    thread.join(20)
    assert not thread.is_alive()


def wait_for(predicate, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_running_reconciler_serves_metrics_and_becomes_a_scrape_target(w):
    w.write(deployment_doc("a"))
    port = free_port()
    rec, stop, thread = run_in_thread(w, port)
    try:
        target = targets_dir(w.settings.state_dir) / RECONCILER_FILE
        assert wait_for(lambda: target.exists() and json.loads(target.read_text()))
        assert json.loads(target.read_text()) == [{"targets": [f"127.0.0.1:{port}"], "labels": {}}]
        assert wait_for(lambda: sample(rec, "enova_reconciler_passes_total", deployment="a", result="Ready") >= 1)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "enova_reconciler_up 1.0" in page
        assert 'enova_reconciler_passes_total{deployment="a",result="Ready"}' in page
        assert "enova_gpu_available 0.0" in page and "enova_gpu_info{reason=" in page
    finally:
        stop_thread(rec, stop, thread)
    with pytest.raises(OSError):   # the server went with the loop
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_port_in_use_is_a_warning_and_the_loop_keeps_running(w):
    w.write(deployment_doc("a"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rec, stop, thread = run_in_thread(w, port)
        try:
            assert wait_for(lambda: sample(rec, "enova_reconciler_passes_total", deployment="a", result="Ready") >= 1)
            warnings = [e for e in rec.events.read() if e.reason == "MetricsUnavailable"]
            assert len(warnings) == 1 and warnings[0].type == "Warning" and str(port) in warnings[0].message
            assert thread.is_alive()
        finally:
            stop_thread(rec, stop, thread)
    status = json.loads((w.settings.state_dir / "reconciler" / "status.json").read_text())
    assert status["metrics"] is None
    assert json.loads((targets_dir(w.settings.state_dir) / RECONCILER_FILE).read_text()) == []


def test_each_replica_is_exported_with_its_state_and_start_failures_exist_at_zero_from_the_first_pass(w):
    """enova_replica_state lets EnovaReplicaDown leave starting replicas alone; the start-failure
    series at 0 let EnovaReplicaStartFailing see the first failure as an increase."""
    w.write(deployment_doc("a", replicas=2))
    rec = reconciler(w)
    value = rec.metrics.registry.get_sample_value
    assert value("enova_reconciler_errors_total", {"deployment": "a", "reason": "StartFailed"}) is None
    w.runtime.behave("a", ready_after=30.0)
    w.clock.stop_after_sleeps = 2           # the pass is stopped while both replicas start
    rec.reconcile_once("a")
    w.clock.stop_after_sleeps = None
    starting = sorted(r.id for r in w.store.replicas("a") if r.state == "starting")
    assert len(starting) == 2
    for rid in starting:
        assert value("enova_replica_state", {"deployment": "a", "replica": rid, "state": "starting"}) == 1
        assert value("enova_replica_state", {"deployment": "a", "replica": rid, "state": "ready"}) is None
    for reason in ("StartFailed", "CrashLoopBackOff"):
        assert value("enova_reconciler_errors_total", {"deployment": "a", "reason": reason}) == 0.0
    record = w.store.replicas("a")[0]
    record.state = "ready"
    w.store.write_replica(record)
    assert value("enova_replica_state", {"deployment": "a", "replica": record.id, "state": "ready"}) == 1
    assert value("enova_replica_state", {"deployment": "a", "replica": record.id, "state": "starting"}) is None


def test_an_unreadable_replica_record_empties_the_state_family_and_the_page_still_renders(w):
    from prometheus_client import generate_latest
    w.write(deployment_doc("a"))
    rec = reconciler(w)
    rec.reconcile_once("a")
    [record] = w.store.replicas("a")
    value = rec.metrics.registry.get_sample_value
    assert value("enova_replica_state", {"deployment": "a", "replica": record.id, "state": "ready"}) == 1
    w.store.replica_path("a", record.id).write_text("{not json")
    page = generate_latest(rec.metrics.registry).decode()
    assert "enova_reconciler_up" in page and 'enova_replica_state{' not in page
