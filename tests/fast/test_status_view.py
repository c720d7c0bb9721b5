"""enova.status builds the view `enova status` prints (and the app server will serve) from the
runtime and the specs, without the CLI."""

from __future__ import annotations

import json

from enova.spec.loader import load_specs
from enova.status import build_status, render_text

from .memworld import MemWorld, deployment_doc


def test_the_status_view_shows_sync_health_and_replicas_from_any_runtime(tmp_path):
    w = MemWorld(tmp_path)
    w.write(deployment_doc("a", replicas=2), deployment_doc("b"))
    w.apply()
    w.runtime.kill(sorted(w.records("a"))[0], "exited with code 137")
    w.write(deployment_doc("a", replicas=2), deployment_doc("b", serving={"max_concurrency": 2}))
    view = build_status(w.store, w.runtime, load_specs(w.specs_dir), inventory=lambda: w.gpus, clock=w.clock)
    data = json.loads(json.dumps(view.to_dict()))  # JSON-able as served
    by_name = {d["name"]: d for d in data["deployments"]}
    assert by_name["a"]["health"]["status"] == "Degraded" and by_name["a"]["sync"]["status"] == "OutOfSync"
    assert "exited with code 137" in by_name["a"]["health"]["reason"]
    assert by_name["b"]["sync"]["status"] == "OutOfSync"
    assert "serving.max_concurrency" in by_name["b"]["sync"]["reason"]
    rows = by_name["a"]["replica_details"]
    assert [r["health"] for r in rows].count("exited") == 1
    assert all(r["runtime"] == "memory" and r["where"].startswith("instance ") for r in rows)
    text = render_text(view)
    assert "a: sync OutOfSync" in text and "health Degraded" in text and "GPUs: no GPU (no GPU (fake))" in text


def test_without_specs_sync_is_unknown(tmp_path):
    w = MemWorld(tmp_path)
    w.write(deployment_doc("a"))
    w.apply()
    view = build_status(w.store, w.runtime, None, inventory=lambda: w.gpus, clock=w.clock)
    (dep,) = view.deployments
    assert dep["sync"]["status"] == "Unknown" and dep["health"]["status"] == "Healthy"
