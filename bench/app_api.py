"""The app server's latency for `GET /api/v1/deployments` with 100 deployments, against `GET /healthz`
measured in the same run, and its CPU while idle and while serving.

    .venv/bin/python bench/app_api.py [--deployments 100] [--requests 200] [--json out.json]

The state directory is written by the real StateStore: 100 deployment records, each with one local
replica record whose process is alive (one `sleep` child stands for every engine, known by pid and
start time like any replica) and whose /health is a real HTTP endpoint (100 ports served by one
aiohttp process), so every list request reads 200 records, checks 100 processes and probes 100
endpoints, as `enova status` does. Two real `enova app run` processes serve it: one with the
specs (100 Deployment documents: sync is planned, as with `enova app run specs/`), one without
(sync Unknown). Requests are sequential from one client; the two paths are interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore  # noqa: E402

HEALTH_SERVER = textwrap.dedent("""
    import asyncio, sys
    from aiohttp import web
    async def main(n):
        app = web.Application()
        app.router.add_get("/health", lambda r: web.Response(text="ok"))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ports = []
        for _ in range(n):
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])
        print(" ".join(map(str, ports)), flush=True)
        await asyncio.Event().wait()
    asyncio.run(main(int(sys.argv[1])))
""")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def write_state(root: Path, count: int, ports: list[int], pid: int) -> Path:
    store = StateStore(root / "state")
    created = psutil.Process(pid).create_time()
    now = time.time()
    config = {"engine": {"args": {"max_num_seqs": 16}, "env": {}, "name": "vllm"},
              "model": "builtin:smollm2-135m-instruct", "resources": {"cpus": 1, "gpus": 0}, "runtime": "local"}
    docs = []
    for i in range(count):
        name = f"model-{i:03d}"
        store.write_deployment(DeploymentRecord(name=name, replicas=1, config_hash=f"{i:012x}", config=config,
                                                applied_at=now))
        store.write_replica(ReplicaRecord(
            id=f"{name}-{i:06x}", deployment=name, host="127.0.0.1", port=ports[i], config_hash=f"{i:012x}",
            config=config, argv=[], log="", runtime="local", handle={"pid": pid, "create_time": created},
            state="ready", started_at=now, ready_at=now, cpus=[i % 2]))
        docs.append({"apiVersion": "enova/v1", "kind": "Deployment", "metadata": {"name": name},
                     "spec": {"model": "builtin:smollm2-135m-instruct", "engine": {"args": {"max_num_seqs": 16}}}})
    docs.append({"apiVersion": "enova/v1", "kind": "Gateway", "metadata": {"name": "g"}, "spec": {"enabled": False}})
    specs = root / "specs"
    specs.mkdir()
    (specs / "deployments.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return specs


def start_app(root: Path, port: int, specs: Path | None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "enova.cli", "--state-dir", str(root / "state"), "app", "run", "--port", str(port)]
    proc = subprocess.Popen(argv + ([str(specs)] if specs else []), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("app server:"):
        proc.kill()
        raise SystemExit(f"enova app run did not start: {line!r}")
    return proc


def cpu_share(proc: psutil.Process, seconds: float, load=None) -> float:
    """The process's CPU (share of one core) over `seconds`, while `load()` runs in a loop if given."""
    before = sum(proc.cpu_times()[:2])
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if load is None:
            time.sleep(0.1)
        else:
            load()
    return (sum(proc.cpu_times()[:2]) - before) / (time.monotonic() - began)


def measure(url: str, requests: int) -> dict:
    paths = {"deployments": "/api/v1/deployments", "healthz": "/healthz"}
    times: dict[str, list[float]] = {k: [] for k in paths}
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        for _ in range(10):  # warm up both paths
            for path in paths.values():
                client.get(path).raise_for_status()
        body = client.get(paths["deployments"]).json()
        for _ in range(requests):
            for key, path in paths.items():
                began = time.perf_counter()
                answer = client.get(path)
                times[key].append((time.perf_counter() - began) * 1000)
                answer.raise_for_status()
    out = {k: {"p50_ms": round(percentile(v, 50), 2), "p95_ms": round(percentile(v, 95), 2)} for k, v in times.items()}
    out["ratio_p50"] = round(out["deployments"]["p50_ms"] / out["healthz"]["p50_ms"], 1)
    out["ratio_p95"] = round(out["deployments"]["p95_ms"] / out["healthz"]["p95_ms"], 1)
    out["deployments_listed"] = len(body["deployments"])
    out["healthy_replicas"] = sum(r["health"] == "healthy" for d in body["deployments"] for r in d["replica_details"])
    out["bytes"] = len(json.dumps(body))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    children: list[subprocess.Popen] = []
    try:
        health = subprocess.Popen([sys.executable, "-c", HEALTH_SERVER, str(args.deployments)], stdout=subprocess.PIPE,
                                  text=True)
        children.append(health)
        ports = [int(p) for p in health.stdout.readline().split()]
        engine = subprocess.Popen(["sleep", "3600"])
        children.append(engine)
        root = Path(tempfile.mkdtemp(prefix="enova-bench-app-"))
        specs = write_state(root, args.deployments, ports, engine.pid)
        results = {}
        for label, port, folder in (("with specs", 19517, specs), ("without specs", 19518, None)):
            app = start_app(root, port, folder)
            children.append(app)
            url = f"http://127.0.0.1:{port}"
            proc = psutil.Process(app.pid)
            time.sleep(1.0)
            idle = cpu_share(proc, 10.0)
            result = measure(url, args.requests)
            with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
                serving = cpu_share(proc, 10.0, lambda: client.get("/api/v1/deployments").raise_for_status())
            result["cpu_idle"] = round(idle, 4)
            result["cpu_serving_deployments_back_to_back"] = round(serving, 3)
            results[label] = result
            app.send_signal(signal.SIGTERM)
            app.wait(timeout=30)
            print(f"{label}: {json.dumps(result)}", flush=True)
        report = {"deployments": args.deployments, "requests": args.requests, "cpus": os.cpu_count(),
                  "results": results}
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        for label, r in results.items():
            d, h = r["deployments"], r["healthz"]
            print(f"{label}: GET /api/v1/deployments ({r['deployments_listed']} deployments, {r['bytes']} bytes) "
                  f"p50 {d['p50_ms']} ms, p95 {d['p95_ms']} ms; GET /healthz p50 {h['p50_ms']} ms, "
                  f"p95 {h['p95_ms']} ms; ratio p50 {r['ratio_p50']}x, p95 {r['ratio_p95']}x; CPU idle "
                  f"{100 * r['cpu_idle']:.2f}% of a core, serving back to back "
                  f"{100 * r['cpu_serving_deployments_back_to_back']:.0f}%")
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
                child.wait(timeout=10)


if __name__ == "__main__":
    main()
