"""The reconciler keeps Prometheus running when the specs hold a Monitoring document; a
monitoring failure is one Warning event per distinct message and never touches replicas."""

from __future__ import annotations

import threading
import time

from enova.reconcile.controller import Reconciler

from .memworld import MemWorld, deployment_doc


def reconciler_with_monitoring(tmp_path, spec: str):
    """A reconciler on the in-memory world with deployment `a` reconciled and a Monitoring
    document whose spec is `spec`; returns (world, reconciler, the replicas started so far)."""
    w = MemWorld(tmp_path)
    w.write(deployment_doc("a"))
    (w.specs_dir / "monitoring.yaml").write_text(
        f"apiVersion: enova/v1\nkind: Monitoring\nmetadata: {{name: m}}\nspec: {spec}\n")
    rec = Reconciler(w.specs_dir, w.settings, stop=threading.Event(), clock=w.clock, runtime=w.runtime,
                     applier_options=w.applier_options(), validate=lambda specs: None)
    rec._load_specs("test")
    rec.reconcile_once("a")
    return w, rec, w.runtime.ids("start")



def test_a_monitoring_failure_is_reported_once_and_replicas_keep_serving(tmp_path):
    w, rec, started = reconciler_with_monitoring(tmp_path, "{prometheus: {binary: /nonexistent/prometheus, port: 19795}}")
    for _ in range(3):
        rec._ensure_monitoring()
        rec._monitor.join(30)
    failures = [e for e in rec.events.read() if e.reason == "MonitoringFailed"]
    assert len(failures) == 1 and "/nonexistent/prometheus" in failures[0].message
    rec.reconcile_once("a")
    assert w.runtime.ids("start") == started and w.runtime.ids("stop") == []
    assert rec.statuses["a"].condition == "Ready"


def test_without_a_monitoring_document_nothing_is_started(tmp_path):
    w = MemWorld(tmp_path)
    w.write(deployment_doc("a"))
    rec = Reconciler(w.specs_dir, w.settings, stop=threading.Event(), clock=w.clock, runtime=w.runtime,
                     applier_options=w.applier_options(), validate=lambda specs: None)
    rec._load_specs("test")
    rec._ensure_monitoring()
    assert rec._monitor is None
    time.sleep(0.1)
    assert not (w.settings.state_dir / "monitoring" / "prometheus.json").exists()


def test_compose_mode_is_kept_by_the_reconciler_too_and_its_failure_is_one_warning(tmp_path, monkeypatch):
    """mode: compose goes through the same entry point as local mode (enova.monitor.compose_engine):
    with no Docker engine to run it on, one Warning names the engine and replicas keep serving."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    w, rec, started = reconciler_with_monitoring(tmp_path, "{mode: compose}")
    for _ in range(2):
        rec._ensure_monitoring()
        rec._monitor.join(30)
    failures = [e for e in rec.events.read() if e.reason == "MonitoringFailed"]
    assert len(failures) == 1 and "no-such-docker.sock" in failures[0].message, [e.message for e in failures]
    assert not (w.settings.state_dir / "monitoring" / "prometheus.json").exists()  # not local mode instead
    assert w.runtime.ids("start") == started and w.runtime.ids("stop") == []
