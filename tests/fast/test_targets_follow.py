"""The monitoring scrape targets follow the replicas apply starts and stops (through the
Applier's on_change), and a failure to write them never fails an apply."""

from __future__ import annotations

import json

from enova.apply.executor import Applier
from enova.errors import PermanentError
from enova.monitor.targets import refresh_targets, targets_dir

from .memworld import MemWorld, deployment_doc


def applier(w: MemWorld, on_change) -> Applier:
    return Applier(store=w.store, settings=w.settings, runtime=w.runtime, clock=w.clock, on_change=on_change,
                   **w.applier_options())


def scraped(w: MemWorld) -> list[str]:
    groups = json.loads((targets_dir(w.store.root) / "replicas.json").read_text())
    return sorted(g["labels"]["replica"] for g in groups)


def test_targets_list_every_replica_after_scaling_up_and_down(tmp_path):
    w = MemWorld(tmp_path)
    refresh = lambda: refresh_targets(w.store.root)  # noqa: E731
    w.write(deployment_doc("a", replicas=2))
    plan = w.plan()
    a = applier(w, refresh)
    a.preflight(plan)
    a.apply(plan)
    assert scraped(w) == sorted(r.id for r in w.store.replicas("a")) and len(scraped(w)) == 2
    w.write(deployment_doc("a", replicas=1))
    plan = w.plan()
    applier(w, refresh).apply(plan)
    assert scraped(w) == [r.id for r in w.store.replicas("a")]
    applier(w, refresh).delete("a")
    assert scraped(w) == []


def test_a_failure_to_write_targets_is_reported_and_the_apply_succeeds(tmp_path):
    w = MemWorld(tmp_path)
    said = []

    def broken():
        raise PermanentError("cannot write the targets")
    w.write(deployment_doc("a"))
    plan = w.plan()
    a = Applier(store=w.store, settings=w.settings, runtime=w.runtime, clock=w.clock, on_change=broken,
                progress=said.append, **w.applier_options())
    a.preflight(plan)
    result = a.apply(plan)
    assert not result.failed and len(w.store.replicas("a")) == 1
    assert any("monitoring targets not updated: cannot write the targets" in line for line in said)
