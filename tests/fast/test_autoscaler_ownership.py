"""With `scaling` set the replica count belongs to the autoscaler: diff, apply and status plan at
its persisted target (clamped to min..max), never at spec.replicas; removing `scaling` hands the
count back. On the in-memory runtime, through the same planner and Applier the CLI uses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enova.observe.scaler import ScalerStore
from enova.plan.desired import desired_gateway, desired_state
from enova.plan.diff import compute_plan
from enova.plan.model import Action, Plan
from enova.runtime.world import observe
from enova.spec.loader import load_specs
from enova.status import build_status, render_text

from .memworld import MemWorld, deployment_doc

CONCURRENCY = {"min": 1, "max": 4, "policy": "concurrency", "target": {"concurrency": 8}}


@pytest.fixture
def w(tmp_path) -> MemWorld:
    return MemWorld(tmp_path)


def scaled_doc(name: str, scaling: dict[str, Any] | None, *, replicas: int = 1) -> dict[str, Any]:
    doc = deployment_doc(name, replicas=replicas)
    if scaling is not None:
        doc["spec"]["scaling"] = scaling
    return doc


def plan(w: MemWorld) -> Plan:
    """The plan as `enova diff` and `apply` make it: with the autoscaler's persisted targets."""
    specs = load_specs(w.specs_dir)
    world = observe(w.store, w.runtime, now=w.clock(), probe_health=True)
    return compute_plan(desired_state(specs, ScalerStore(w.settings.state_dir).targets()), world.deployments,
                        gateway=desired_gateway(specs), observed_gateway=world.gateway)


def apply(w: MemWorld) -> Plan:
    p = plan(w)
    applier = w.applier()
    applier.preflight(p)
    assert not applier.apply(p).failed
    return p


def hold(w: MemWorld, name: str, target: int) -> None:
    """What the reconciler's autoscaler persists after a decision."""
    ScalerStore(w.settings.state_dir).write(name, {"target": target, "policy": "concurrency", "updated_at": w.clock()})


def change(p: Plan, name: str):
    return next(c for c in p.deployment_changes if c.deployment == name)


def test_diff_is_in_sync_while_the_autoscaler_holds_two_replicas_and_the_spec_says_one(w):
    w.write(scaled_doc("a", CONCURRENCY, replicas=1))
    apply(w)
    hold(w, "a", 2)
    scaled = apply(w)  # the reconciler acts on the decision through the same plan and apply path
    assert change(scaled, "a").action is Action.SCALE and change(scaled, "a").replicas_after == 2
    assert len(w.runtime.running("a")) == 2

    again = plan(w)
    assert not again.has_changes  # `enova diff` exits 0
    c = change(again, "a")
    assert (c.replicas_after, c.replicas_from) == (2, "autoscaler")
    stops = list(w.runtime.ids("stop"))
    apply(w)
    assert w.runtime.ids("stop") == stops and len(w.runtime.running("a")) == 2  # apply leaves the count alone


def test_the_plan_says_the_count_is_managed_by_the_autoscaler(w):
    from enova.plan.render import render_json, render_text as render_plan
    w.write(scaled_doc("a", CONCURRENCY))
    apply(w)
    hold(w, "a", 2)
    apply(w)
    p = plan(w)
    assert "  # deployment a: replicas: 2 (managed by the autoscaler)" in render_plan(p)
    (dep,) = [c for c in json.loads(render_json(p))["changes"] if c["kind"] == "deployment"]
    assert dep["replicas"] == {"before": 2, "after": 2, "managed_by": "autoscaler"}


def test_before_the_autoscaler_decides_the_count_starts_at_replicas_clamped_to_min_and_max(w):
    w.write(scaled_doc("a", {**CONCURRENCY, "min": 2, "max": 3}, replicas=5))
    created = apply(w)
    assert change(created, "a").replicas_after == 3
    assert "lowered to max 3" in change(created, "a").reason
    assert len(w.runtime.running("a")) == 3


def test_raising_min_above_the_autoscalers_target_scales_up_at_once(w):
    w.write(scaled_doc("a", CONCURRENCY))
    apply(w)
    w.write(scaled_doc("a", {**CONCURRENCY, "min": 3}))
    p = apply(w)
    c = change(p, "a")
    assert c.action is Action.SCALE and c.replicas_after == 3 and c.start == 2
    assert [f.path for f in c.update] == ["scaling.min"]
    assert len(w.runtime.running("a")) == 3
    assert w.store.read_deployment("a").settings["scaling"]["min"] == 3  # the autoscaler reads the new bounds


def test_lowering_max_below_the_autoscalers_target_scales_down_at_once(w):
    w.write(scaled_doc("a", CONCURRENCY))
    apply(w)
    hold(w, "a", 3)
    apply(w)
    w.write(scaled_doc("a", {**CONCURRENCY, "max": 2}))
    c = change(apply(w), "a")
    assert c.action is Action.SCALE and c.replicas_after == 2 and len(c.stop) == 1
    assert len(w.runtime.running("a")) == 2


def test_removing_scaling_hands_the_count_back_to_replicas(w):
    w.write(scaled_doc("a", CONCURRENCY, replicas=1))
    apply(w)
    hold(w, "a", 2)
    apply(w)
    w.write(scaled_doc("a", None, replicas=1))  # the leftover target is ignored
    c = change(apply(w), "a")
    assert c.action is Action.SCALE and (c.replicas_after, c.replicas_from) == (1, "spec")
    assert len(w.runtime.running("a")) == 1
    assert w.store.read_deployment("a").settings["scaling"] is None


def test_a_deployment_without_scaling_ignores_a_persisted_target(w):
    w.write(scaled_doc("a", None, replicas=1))
    apply(w)
    hold(w, "a", 3)
    assert not plan(w).has_changes


def test_the_record_says_scale_from_zero_when_min_is_zero_and_the_count_may_be_zero(w):
    w.write(scaled_doc("a", {**CONCURRENCY, "min": 0, "scale_to_zero_after": "10m"}))
    apply(w)
    assert w.store.read_deployment("a").serving["scale_from_zero"] is True  # the gateway holds requests
    hold(w, "a", 0)
    c = change(apply(w), "a")
    assert c.replicas_after == 0 and w.runtime.running("a") == []
    assert not plan(w).has_changes
    hold(w, "a", 1)  # a wake: the autoscaler asks for one replica
    apply(w)
    assert len(w.runtime.running("a")) == 1

    w.write(scaled_doc("a", CONCURRENCY))  # min 1 again: no holding
    apply(w)
    assert "scale_from_zero" not in w.store.read_deployment("a").serving


def test_a_record_written_before_scaling_existed_is_in_sync(w):
    w.write(scaled_doc("a", None))
    apply(w)
    record = w.store.read_deployment("a")
    del record.settings["scaling"]  # as an older enova wrote it
    w.store.write_deployment(record)
    assert not plan(w).has_changes


def test_status_shows_the_autoscalers_count_as_synced_and_managed_by_it(w):
    w.write(scaled_doc("a", CONCURRENCY, replicas=1))
    apply(w)
    hold(w, "a", 2)
    apply(w)
    view = build_status(w.store, w.runtime, load_specs(w.specs_dir), inventory=lambda: w.gpus, clock=w.clock)
    (dep,) = view.to_dict()["deployments"]
    assert dep["sync"]["status"] == "Synced"
    assert dep["replicas"] == {"desired": 2, "running": 2, "managed_by": "autoscaler"}
    assert "replicas 2/2 (managed by the autoscaler)" in render_text(view)


def test_the_cli_plans_diff_and_apply_with_the_persisted_targets(w, monkeypatch):
    from enova import cli
    w.write(scaled_doc("a", CONCURRENCY, replicas=1))
    apply(w)
    hold(w, "a", 2)
    apply(w)
    monkeypatch.setattr(cli._state, "settings", w.settings, raising=False)
    world = observe(w.store, w.runtime, now=w.clock(), probe_health=True)
    p = cli._plan(load_specs(w.specs_dir), world, False)
    assert not p.has_changes and change(p, "a").replicas_after == 2
