"""Benchmark: `enova diff` over 500 deployment specs with the runtime observed.

Builds a spec tree of 500 Deployments (plus SLOs and LoadProfiles referring to them) and a
state directory in which every deployment has one recorded replica, each pointing at a
real live process (so the process-table check is really done for all 500). Half the
deployments are in sync, a quarter need scaling, a quarter a replace.

Prints wall time and peak memory of `enova diff` (a fresh process each run, as a user runs
it) against baselines measured in the same run on the same files:
  python-start: `python -c pass`
  yaml-only:    a fresh python that only parses the same files (libyaml when present)
and the in-process split between loading, observing, planning and rendering.

    .venv/bin/python bench/diff_500.py [--deployments 500] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
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
from enova.plan.desired import config_hash, replica_config  # noqa: E402

ENOVA = [str(Path(sys.executable).with_name("enova"))]


def make_specs(folder: Path, n: int) -> list[str]:
    names = []
    for i in range(n):
        name = f"model-{i:04d}"
        names.append(name)
        (folder / f"{name}.yaml").write_text(f"""\
apiVersion: enova/v1
kind: Deployment
metadata: {{name: {name}, labels: {{team: t{i % 7}}}}}
spec:
  model: org/model-{i % 20}
  engine:
    name: vllm
    args: {{max_model_len: 4096, max_num_seqs: {16 if i % 4 != 3 else 32}, gpu_memory_utilization: 0.9}}
  replicas: {1 if i % 4 != 2 else 2}
  resources: {{gpus: 1, cpus: 2}}
  slo: slo-{i % 10}
---
apiVersion: enova/v1
kind: LoadProfile
metadata: {{name: load-{i:04d}}}
spec: {{target: {name}, arrival: {{process: poisson, rate: 2}}, duration: 60s, slo: slo-{i % 10}}}
""")
    for j in range(10):
        (folder / f"slo-{j}.yaml").write_text(
            f"apiVersion: enova/v1\nkind: SLO\nmetadata: {{name: slo-{j}}}\n"
            f"spec: {{ttft_p95_ms: 500, itl_p95_ms: 50, max_error_rate: 0.01}}\n")
    return names


def make_state(state: Path, names: list[str], pids: list[int]) -> None:
    from enova.spec.loader import load_specs
    from enova.plan.desired import desired_state
    specs = load_specs(state.parent / "specs")
    store = StateStore(state)
    desired = desired_state(specs)
    for i, name in enumerate(names):
        want = desired[name]
        store.write_deployment(DeploymentRecord(  # in-place fields as applied: only replicas differ
            name=name, replicas=want.replicas, config_hash=want.config_hash, config=want.config, applied_at=0,
            serving=want.serving, settings=want.settings))
        spec = specs.deployments[name].doc.spec
        config = replica_config(spec)
        if i % 4 == 3:  # recorded with the old args: a replace is planned
            config = json.loads(json.dumps(config))
            config["engine"]["args"]["max_num_seqs"] = 16
        pid = pids[i % len(pids)]
        store.write_replica(ReplicaRecord(
            id=f"{name}-000001", deployment=name,
            handle={"pid": pid, "create_time": psutil.Process(pid).create_time()},
            host="127.0.0.1", port=20000 + i, config_hash=config_hash(config), config=config,
            argv=["vllm"], log="/dev/null", state="ready", started_at=time.time() - 60))


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB, and exit code of one fresh process."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=500)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "specs").mkdir()
        names = make_specs(base / "specs", args.deployments)
        sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(5)]
        try:
            make_state(base / "state", names, [p.pid for p in sleepers])
            env = {**os.environ, "ENOVA_STATE_DIR": str(base / "state")}
            files = sorted(str(p) for p in (base / "specs").glob("*.yaml"))
            yaml_only = [sys.executable, "-c",
                         "import sys, yaml\nL = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)\nfor f in sys.argv[1:]:\n    list(yaml.load_all(open(f), Loader=L))", *files]
            cases = {
                "python-start": [sys.executable, "-c", "pass"],
                "yaml-only": yaml_only,
                "enova diff": [*ENOVA, "diff", str(base / "specs")],
            }
            results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in cases}
            for _ in range(args.runs):  # interleaved, so machine noise hits every case alike
                for key, argv in cases.items():
                    results[key].append(timed(argv, env))
            codes = {c for _, _, c in results["enova diff"]}
            assert codes == {1}, f"enova diff should exit 1 (changes pending), got {codes}"

            # in-process split
            os.environ["ENOVA_STATE_DIR"] = str(base / "state")
            from enova.runtime.local import LocalRuntime
            from enova.runtime.world import observe
            from enova.plan.desired import desired_state
            from enova.plan.diff import compute_plan
            from enova.plan.render import render_text
            from enova.spec.loader import load_specs
            t0 = time.perf_counter(); specs = load_specs(base / "specs")
            t1 = time.perf_counter(); store = StateStore(base / "state")
            observed = observe(store, LocalRuntime(store), now=time.time()).deployments
            t2 = time.perf_counter(); plan = compute_plan(desired_state(specs), observed)
            t3 = time.perf_counter(); text = render_text(plan)
            t4 = time.perf_counter()
        finally:
            for p in sleepers:
                p.kill()
                p.wait()

    med = {k: statistics.median(w for w, _, _ in v) for k, v in results.items()}
    rss = {k: max(r for _, r, _ in v) for k, v in results.items()}
    print(f"{args.deployments} deployments, {len(files)} files, {args.runs} runs each (median wall, max peak RSS)")
    for key in cases:
        print(f"  {key:<13} {med[key] * 1000:8.0f} ms  {rss[key]:7.1f} MiB")
    print(f"  enova diff / python-start = {med['enova diff'] / med['python-start']:.1f}x, "
          f"enova diff / yaml-only = {med['enova diff'] / med['yaml-only']:.2f}x")
    print(f"  in process: load {1000 * (t1 - t0):.0f} ms, observe {1000 * (t2 - t1):.0f} ms, "
          f"plan {1000 * (t3 - t2):.0f} ms, render {1000 * (t4 - t3):.0f} ms; {plan.summary()}")
    print(f"  target: enova diff under 1000 ms -> {'met' if med['enova diff'] < 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
