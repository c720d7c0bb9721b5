"""Benchmark: one reconciler pass over 500 deployments, plan and bookkeeping only.

Builds the same 500-deployment spec tree as bench/diff_500.py, with every deployment in sync
(one recorded replica each, pointing at a real live process, matching config hash), so each
pass observes (process check, /health probe of a closed port: refused at once), plans, finds
nothing to do, and records status: the controller's own cost, no engine. Measures:
  full pass:   all 500 subjects marked due -> every pass done (4 worker threads, as shipped)
  serial:      reconcile_once() for each subject on one thread
  baseline:    the pure planner over all 500 at once (compute_plan), in the same run

    .venv/bin/python bench/reconcile_500.py [--deployments 500]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402

from diff_500 import make_specs  # noqa: E402
from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore  # noqa: E402
from enova.runtime.local import LocalRuntime  # noqa: E402
from enova.runtime.world import observe  # noqa: E402
from enova.plan.desired import desired_state  # noqa: E402
from enova.plan.diff import compute_plan  # noqa: E402
from enova.reconcile.controller import Reconciler  # noqa: E402
from enova.settings import Settings  # noqa: E402
from enova.spec.loader import load_specs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "specs").mkdir()
        make_specs(base / "specs", args.deployments)
        (base / "specs" / "gateway.yaml").write_text(
            "apiVersion: enova/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {enabled: false}\n")
        sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(5)]
        try:
            specs = load_specs(base / "specs")
            store = StateStore(base / "state")
            for i, (name, want) in enumerate(desired_state(specs).items()):
                pid = sleepers[i % 5].pid
                store.write_deployment(DeploymentRecord(name=name, replicas=want.replicas, config_hash=want.config_hash,
                                                        config=want.config, applied_at=0, serving=want.serving,
                                                        settings=want.settings))
                for k in range(want.replicas):
                    store.write_replica(ReplicaRecord(
                        id=f"{name}-{k:06d}", deployment=name,
                        handle={"pid": pid, "create_time": psutil.Process(pid).create_time()},
                        host="127.0.0.1", port=1 + (i % 50), config_hash=want.config_hash, config=want.config,
                        argv=[], log="/dev/null", state="ready", started_at=time.time()))
            settings = Settings(state_dir=base / "state", cache_dir=base / "cache")

            t0 = time.perf_counter()
            plan = compute_plan(desired_state(load_specs(base / "specs")),
                               observe(store, LocalRuntime(store), now=time.time()).deployments)
            baseline = time.perf_counter() - t0
            assert not plan.has_changes, plan.summary()

            stop = threading.Event()
            rec = Reconciler(base / "specs", settings, stop=stop, unhealthy_after=1e9)
            rec._load_specs("bench")
            t0 = time.perf_counter()
            for name in sorted(specs.deployments):
                rec.reconcile_once(name)
            serial = time.perf_counter() - t0

            t0 = time.perf_counter()
            rec._mark_all_due()
            while True:
                rec._dispatch()
                with rec.lock:
                    if not rec.due and not rec.running:
                        break
                rec.wake.wait(0.01)
                rec.wake.clear()
            full = time.perf_counter() - t0
            rec.pool.shutdown()
            conditions = {s.condition for s in rec.statuses.values()}
        finally:
            for p in sleepers:
                p.kill()
                p.wait()
    n = args.deployments
    print(f"{n} deployments in sync, {sum(1 for _ in range(n))} subjects + gateway")
    print(f"  baseline: compute_plan over all at once (load + observe + plan): {baseline * 1000:7.0f} ms")
    print(f"  serial reconcile_once over each:                              {serial * 1000:7.0f} ms "
          f"({serial / n * 1000:.2f} ms per deployment, {serial / baseline:.1f}x the baseline)")
    print(f"  full pass, 4 workers (mark all due -> all done):              {full * 1000:7.0f} ms "
          f"({full / baseline:.1f}x the baseline)")
    print(f"  resulting conditions: {sorted(conditions)}")


if __name__ == "__main__":
    main()
