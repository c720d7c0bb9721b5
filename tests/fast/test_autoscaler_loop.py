"""The autoscaler inside the reconciler, on the in-memory runtime with a scripted scraper and a
fake clock: a decision goes through the ordinary plan and apply path, is an event with its
numbers, is persisted so a restarted reconciler makes no event, and a wake request from the
gateway brings a deployment at zero back at once."""

from __future__ import annotations

import threading

import pytest

from enova.autoscale.model import Sample
from enova.observe.scaler import ScalerStore
from enova.reconcile.controller import Reconciler
from enova.reconcile.events import EventLog

from .memworld import MemWorld, deployment_doc

SCALING = {"min": 1, "max": 3, "policy": "concurrency", "target": {"concurrency": 4},
           "scale_up_delay": "0s", "scale_down_delay": "30s"}


class ScriptedScraper:
    """Returns the in-flight count the test sets, as the gateway's metrics would show it."""

    def __init__(self, w: MemWorld):
        self.w = w
        self.in_flight = 0.0
        self.held = 0.0
        self.last: float | None = None

    def scrape(self, names, now):
        interval = 0.0 if self.last is None else now - self.last
        self.last = now
        ready = {n: sum(1 for r in self.w.store.replicas(n) if r.state == "ready") for n in names}
        return {n: Sample(at=now, interval=interval, ready=ready[n], in_flight=self.in_flight,
                          held=self.held, arrivals=self.in_flight * interval, completed=self.in_flight * interval)
                for n in names}


def scaled_doc(name, scaling, **kw):
    doc = deployment_doc(name, **kw)
    doc["spec"]["scaling"] = scaling
    return doc


@pytest.fixture
def w(tmp_path) -> MemWorld:
    return MemWorld(tmp_path)


def reconciler(w: MemWorld, scraper) -> Reconciler:
    rec = Reconciler(w.specs_dir, w.settings, stop=threading.Event(), clock=w.clock, runtime=w.runtime,
                     applier_options=w.applier_options(), validate=lambda s: None, scraper=scraper)
    rec._load_specs("test")
    return rec


def run_for(rec: Reconciler, w: MemWorld, seconds: float, step: float = 2.0) -> None:
    """Autoscaler ticks every `step` seconds of fake time; passes for whatever became due."""
    t = 0.0
    while t < seconds:
        rec.autoscaler.tick()
        with rec.lock:
            due, rec.due = set(rec.due), set()
        for name in sorted(due):
            rec.reconcile_once(name)
        w.clock.advance(step)
        t += step


def events(w: MemWorld, reason: str) -> list:
    return [e for e in EventLog(w.settings.state_dir / "events.jsonl").read() if e.reason == reason]


def test_a_burst_scales_up_through_plan_and_apply_with_an_event_that_has_the_numbers(w):
    w.write(scaled_doc("a", SCALING))
    scraper = ScriptedScraper(w)
    rec = reconciler(w, scraper)
    rec.reconcile_once("a")
    assert len(w.runtime.running("a")) == 1
    scraper.in_flight = 10.0                        # 10 in flight against a target of 4 per replica
    run_for(rec, w, 20)
    assert len(w.runtime.running("a")) == 3
    assert ScalerStore(w.settings.state_dir).targets() == {"a": 3}
    [up] = events(w, "ScaledUp")
    assert "1 -> 3" in up.message                   # sized to the burst, not +1
    assert any(ch.isdigit() for ch in up.message.split(":", 1)[1])


def test_a_restarted_reconciler_with_persisted_state_makes_no_scale_event(w):
    w.write(scaled_doc("a", SCALING))
    scraper = ScriptedScraper(w)
    rec = reconciler(w, scraper)
    rec.reconcile_once("a")
    scraper.in_flight = 10.0
    run_for(rec, w, 20)
    before = len(events(w, "ScaledUp")) + len(events(w, "ScaledDown"))
    again = reconciler(w, scraper)                  # a new process: state from the state directory
    run_for(again, w, 10)
    assert len(events(w, "ScaledUp")) + len(events(w, "ScaledDown")) == before
    assert len(w.runtime.running("a")) == 3 and w.runtime.ids("stop") == []


def test_load_gone_scales_down_one_step_after_the_delay_and_drains(w):
    w.write(scaled_doc("a", SCALING))
    scraper = ScriptedScraper(w)
    rec = reconciler(w, scraper)
    rec.reconcile_once("a")
    scraper.in_flight = 10.0
    run_for(rec, w, 20)
    scraper.in_flight = 1.0
    run_for(rec, w, 20)                             # shorter than scale_down_delay + the stable window
    assert len(w.runtime.running("a")) == 3
    run_for(rec, w, 240)
    assert len(w.runtime.running("a")) < 3
    downs = events(w, "ScaledDown")
    assert downs and all("-> " in e.message for e in downs)


def test_a_wake_request_brings_a_deployment_at_zero_back_at_once(w):
    scaling = {**SCALING, "min": 0, "scale_to_zero_after": "60s"}
    w.write(scaled_doc("a", scaling))
    scraper = ScriptedScraper(w)
    rec = reconciler(w, scraper)
    rec.reconcile_once("a")
    run_for(rec, w, 200)                            # idle past scale_to_zero_after
    assert w.runtime.running("a") == [] and ScalerStore(w.settings.state_dir).targets() == {"a": 0}
    ScalerStore(w.settings.state_dir).wake("a", at=w.clock())   # the gateway holds a request
    run_for(rec, w, 2)                              # one tick: no delay for held requests
    assert len(w.runtime.running("a")) == 1
    assert ScalerStore(w.settings.state_dir).wakes() == {}
