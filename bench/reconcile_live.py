"""Benchmark: the running reconciler's reaction time and idle cost, as a subprocess.

20 deployments in sync (records pointing at real live processes; the gateway disabled) are
watched by `enova reconcile specs/` at the default 30 s interval. Measures
  write -> first action: a spec file is rewritten (replicas 1 -> 2 of a deployment whose model
      is changed to a missing folder, so the action fails fast in preflight and no engine
      starts); the time until the reconciler records its first action event (here `Replaced`). Several trials, median and max.
  idle CPU: user+system CPU of the reconciler process over --idle seconds, as % of one core,
      against a baseline of the same measurement on an idle `python -c "sleep"` process.

    .venv/bin/python bench/reconcile_live.py [--idle 60] [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore  # noqa: E402
from enova.plan.desired import desired_state  # noqa: E402
from enova.spec.loader import load_specs  # noqa: E402

ENOVA = str(Path(sys.executable).with_name("enova"))
SPEC = """apiVersion: enova/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  model: {model}
  engine: {{args: {{max_num_seqs: 8}}}}
  replicas: {replicas}
"""


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        specs_dir = base / "specs"
        specs_dir.mkdir()
        (specs_dir / "gateway.yaml").write_text("apiVersion: enova/v1\nkind: Gateway\nmetadata: {name: g}\n"
                                                "spec: {enabled: false}\n")
        for i in range(20):
            (specs_dir / f"d{i:02d}.yaml").write_text(SPEC.format(name=f"d{i:02d}", model="org/model", replicas=1))
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        store = StateStore(base / "state")
        for name, want in desired_state(load_specs(specs_dir)).items():
            store.write_deployment(DeploymentRecord(name=name, replicas=1, config_hash=want.config_hash,
                                                    config=want.config, applied_at=0))
            store.write_replica(ReplicaRecord(
                id=f"{name}-000000", deployment=name, pid=sleeper.pid,
                create_time=psutil.Process(sleeper.pid).create_time(), host="127.0.0.1", port=9,
                config_hash=want.config_hash, config=want.config, argv=[], log="/dev/null", state="ready",
                started_at=time.time()))
        env = {**os.environ, "ENOVA_STATE_DIR": str(base / "state")}
        rec = subprocess.Popen([ENOVA, "reconcile", str(specs_dir), "--unhealthy-after", "1h"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        events = base / "state" / "events.jsonl"
        try:
            status = base / "state" / "reconciler" / "status.json"
            deadline = time.time() + 60
            while time.time() < deadline:
                if status.exists() and json.loads(status.read_text()).get("first_pass_done"):
                    break
                time.sleep(0.1)
            time.sleep(2)
            proc, idle_proc = psutil.Process(rec.pid), psutil.Process(sleeper.pid)
            c0, b0, t0 = cpu_seconds(proc), cpu_seconds(idle_proc), time.monotonic()
            time.sleep(args.idle)
            used, base_used = cpu_seconds(proc) - c0, cpu_seconds(idle_proc) - b0
            elapsed = time.monotonic() - t0

            reactions = []
            for trial in range(args.trials):
                target = specs_dir / "d00.yaml"
                seen = len(events.read_text().splitlines())
                written = time.time()
                target.write_text(SPEC.format(name="d00", model="./missing-model", replicas=2))
                while True:
                    lines = events.read_text().splitlines()[seen:]
                    hits = [e for e in map(json.loads, lines)
                            if e["reason"] in ("Created", "Scaled", "Replaced", "Deleted")]
                    if hits:
                        reactions.append(hits[0]["time"] - written)
                        break
                    if time.time() - written > 10:
                        reactions.append(float("inf"))
                        break
                    time.sleep(0.005)
                target.write_text(SPEC.format(name="d00", model="org/model", replicas=1))
                time.sleep(1.5)
        finally:
            rec.send_signal(signal.SIGTERM)
            code = rec.wait(30)
            sleeper.kill()
            sleeper.wait()
    print(f"reconciler on 20 deployments, default --interval 30s; exit code on SIGTERM: {code}")
    print(f"  idle CPU over {elapsed:.0f} s: {used:.3f} s = {100 * used / elapsed:.2f}% of a core "
          f"(an idle sleeping python: {100 * base_used / elapsed:.2f}%); target under 1%: "
          f"{'met' if used / elapsed < 0.01 else 'NOT met'}")
    print(f"  spec write -> first action: median {statistics.median(reactions) * 1000:.0f} ms, "
          f"max {max(reactions) * 1000:.0f} ms over {len(reactions)} trials; target under 1 s: "
          f"{'met' if max(reactions) < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
