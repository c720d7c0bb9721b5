"""`engine.args: auto` through apply and the reconciler on the in-memory runtime: the chosen
values reach the launch; a deployment that cannot be resolved is blocked (Stalled, reason
Blocked, one event) while its running replica is kept; a new inventory rolls the replicas."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from enova.plan.auto import GpuFact, HostFacts, PlanFacts
from enova.reconcile.controller import Reconciler
from enova.recommend.geometry import parse_config

from .memworld import MemWorld, deployment_doc

CONFIGS = Path(__file__).resolve().parents[1] / "recommend" / "configs"
SMOL = "builtin:smollm2-135m-instruct"
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.1"
GiB = 1024 ** 3


def facts(models: dict | None = None, gpus: tuple = ()) -> PlanFacts:
    known = {SMOL: parse_config(json.loads((CONFIGS / "smollm2-135m-instruct.json").read_text()), source=SMOL),
             MISTRAL: parse_config(json.loads((CONFIGS / "mistral-7b-instruct-v0.1.json").read_text()), source=MISTRAL)}
    return PlanFacts(host=HostFacts(gpus=gpus, memory_total=24 * GiB, memory_available=20 * GiB, cores=16),
                     models=known if models is None else models)


@pytest.fixture
def w(tmp_path) -> MemWorld:
    return MemWorld(tmp_path)


def reconciler(w: MemWorld) -> Reconciler:
    rec = Reconciler(w.specs_dir, w.settings, stop=threading.Event(), clock=w.clock, runtime=w.runtime,
                     applier_options=w.applier_options(), validate=lambda specs: None,
                     facts=lambda specs: w.facts)
    rec._load_specs("test")
    return rec


def test_apply_starts_replicas_with_the_values_auto_chose(w):
    w.facts = facts()
    w.write(deployment_doc("a", args={"auto": True}))
    plan, result = w.apply()
    assert not result.failed
    chosen = plan.desired["a"].config["engine"]["args"]
    [record] = w.store.replicas("a")
    assert record.config_hash == plan.desired["a"].config_hash
    assert record.config["engine"]["args"] == chosen and "auto" not in chosen


def test_a_blocked_deployment_keeps_its_replica_and_is_reported_once(w):
    w.facts = facts()
    w.write(deployment_doc("a", args={"auto": True}))
    rec = reconciler(w)
    rec.reconcile_once("a")
    [running] = w.store.replicas("a")
    w.facts = facts(models={SMOL: "the Hub could not be reached"})
    rec._load_specs("timer")
    for _ in range(3):
        rec.reconcile_once("a")
    assert [r.id for r in w.store.replicas("a")] == [running.id]
    assert w.runtime.ids("stop") == []
    status = rec.statuses["a"]
    assert (status.condition, status.reason) == ("Stalled", "Blocked")
    assert "the Hub could not be reached" in status.message
    blocked_events = [e for e in rec.events.read() if e.reason == "Blocked"]
    assert len(blocked_events) == 1
    w.facts = facts()  # the Hub is back: the next load plans it again, and nothing needs doing
    rec._load_specs("timer")
    rec.reconcile_once("a")
    assert rec.statuses["a"].condition == "Ready" and w.runtime.ids("stop") == []


def test_a_new_gpu_inventory_rolls_the_replicas_onto_new_settings(w):
    small = (GpuFact(0, "NVIDIA A10G", 23028 * 1024 ** 2),)
    w.facts = facts(gpus=small)
    w.write({**deployment_doc("a", args={"auto": True}, gpus=1),
             "spec": {**deployment_doc("a", gpus=1)["spec"], "model": MISTRAL, "engine": {"args": {"auto": True}}}})
    plan = w.plan()
    assert not plan.desired["a"].blocked
    before = plan.desired["a"].config_hash
    w.facts = facts(gpus=(GpuFact(0, "NVIDIA H100 80GB HBM3", 81559 * 1024 ** 2),))
    after = w.plan().desired["a"].config_hash
    assert after != before
