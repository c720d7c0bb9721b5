"""Benchmark: `enova pilot run` from the command to the first answer on the gateway and to every
URL answering, against the engine's own start time; the resident memory of everything pilot
starts besides the engine; and the time Ctrl-C takes to stop it all.

One run = a fresh state directory and specs folder, `enova pilot run` with the builtin small
model on vLLM's CPU build (the model already converted in the cache), polled every 0.1 s:
- first answer: POST /generate (max_tokens 1) on the gateway returns 200;
- every URL: the gateway's /health, the app server's /instance, the web UI's /, Prometheus's
  /-/ready and the reconciler's /metrics all return 200;
- the engine's own start: its replica record's ready_at - started_at (enova's readiness probe,
  from the process start to /health answering), and the engine process's age at the first answer;
- RSS (and USS) of each process pilot started besides the engine's tree, once everything answers.

    .venv/bin/python bench/pilot_start.py [--runs 1] [--json out.json]
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
import psutil

ENOVA = [sys.executable, "-m", "enova.cli"]
GATEWAY, APP, WEBUI, PROMETHEUS, METRICS = 19870, 19871, 19872, 19873, 19874
URLS = {
    "gateway": f"http://127.0.0.1:{GATEWAY}/health",
    "app server": f"http://127.0.0.1:{APP}/instance",
    "web UI": f"http://127.0.0.1:{WEBUI}/",
    "Prometheus": f"http://127.0.0.1:{PROMETHEUS}/-/ready",
    "reconciler metrics": f"http://127.0.0.1:{METRICS}/metrics",
}
GENERATE = {"prompt": "San Francisco is a", "max_tokens": 1, "temperature": 0}


def ok(method: str, url: str, **kw) -> bool:
    try:
        return httpx.request(method, url, timeout=5, trust_env=False, **kw).status_code == 200
    except httpx.HTTPError:
        return False


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def memory(procs: list[psutil.Process]) -> tuple[int, int]:
    rss = uss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            rss, uss = rss + info.rss, uss + info.uss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rss, uss


def own_group(pid: int) -> list[psutil.Process]:
    """The process and its descendants in its own process group (not what it started in sessions
    of their own: the reconciler's replicas, gateway and Prometheus are counted apart)."""
    out = []
    for p in tree(pid):
        try:
            if os.getpgid(p.pid) == os.getpgid(pid):
                out.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return out


def one_run(timeout: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="enova-pilot-bench-"))
    state = work / "state"
    env = {**os.environ, "ENOVA_STATE_DIR": str(state), "ENOVA_PORT_RANGE": "19875-19879", "PYTHONUNBUFFERED": "1"}
    argv = [*ENOVA, "pilot", "run", "--specs", str(work / "enova-pilot"), "--port", str(GATEWAY),
            "--app-port", str(APP), "--webui-port", str(WEBUI), "--prometheus-port", str(PROMETHEUS),
            "--metrics-port", str(METRICS)]
    began = time.monotonic()
    with open(work / "pilot.out", "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    first_answer = all_urls = None
    answered: dict[str, float] = {}
    try:
        while time.monotonic() - began < timeout and (first_answer is None or all_urls is None):
            if proc.poll() is not None:
                raise RuntimeError(f"pilot exited {proc.returncode}: {(work / 'pilot.out').read_text()[-2000:]}")
            now = time.monotonic() - began
            for name, url in URLS.items():
                if name not in answered and ok("GET", url):
                    answered[name] = now
            if first_answer is None and ok("POST", f"http://127.0.0.1:{GATEWAY}/generate", json=GENERATE):
                first_answer = time.monotonic() - began
            if all_urls is None and len(answered) == len(URLS):
                all_urls = max(answered.values())
            time.sleep(0.1)
        if first_answer is None or all_urls is None:
            raise RuntimeError(f"not everything answered within {timeout:.0f} s: {answered}")
        [record] = [json.loads(p.read_text()) for p in state.glob("deployments/*/replicas/*.json")]
        engine_pid = record["handle"]["pid"]
        engine_ready = record["ready_at"] - record["started_at"]
        engine_age = time.time() - psutil.Process(engine_pid).create_time()
        pilot = json.loads((state / "pilot" / "pilot.json").read_text())
        gateway = json.loads((state / "gateway" / "gateway.json").read_text())
        prometheus = json.loads((state / "monitoring" / "prometheus.json").read_text())
        parts = {"pilot": own_group(proc.pid),
                 **{name: own_group(h["pid"]) for name, h in pilot["processes"].items()},
                 "gateway": tree(gateway["pid"]), "Prometheus": tree(prometheus["pid"])}
        engine = {p.pid for p in tree(engine_pid)}
        mem = {name: memory([p for p in procs if p.pid not in engine]) for name, procs in parts.items()}
        engine_mem = memory(tree(engine_pid))
    finally:
        stop_began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
        stopped = time.monotonic() - stop_began
    return {"first_answer_s": round(first_answer, 2), "all_urls_s": round(all_urls, 2),
            "url_answered_s": {k: round(v, 2) for k, v in answered.items()},
            "engine_ready_s": round(engine_ready, 2),
            "engine_started_after_s": round(first_answer - engine_age, 2),
            "rss_mib": {k: round(v[0] / 2 ** 20, 1) for k, v in mem.items()},
            "uss_mib": {k: round(v[1] / 2 ** 20, 1) for k, v in mem.items()},
            "rss_total_besides_engine_mib": round(sum(v[0] for v in mem.values()) / 2 ** 20, 1),
            "uss_total_besides_engine_mib": round(sum(v[1] for v in mem.values()) / 2 ** 20, 1),
            "engine_rss_mib": round(engine_mem[0] / 2 ** 20, 1),
            "stop_s": round(stopped, 2), "exit_code": proc.returncode,
            "load_average_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = [one_run(args.timeout) for _ in range(args.runs)]
    for i, r in enumerate(runs, 1):
        print(f"run {i}: first answer on :{GATEWAY} {r['first_answer_s']} s, every URL {r['all_urls_s']} s; "
              f"engine's own start (record ready_at - started_at) {r['engine_ready_s']} s, engine process "
              f"started {r['engine_started_after_s']} s after the command; stop {r['stop_s']} s "
              f"(load {r['load_average_1m']})")
        print(f"  RSS besides the engine {r['rss_total_besides_engine_mib']} MiB (USS "
              f"{r['uss_total_besides_engine_mib']} MiB): " +
              ", ".join(f"{k} {v}" for k, v in r["rss_mib"].items()) + f"; engine {r['engine_rss_mib']} MiB")
    if len(runs) > 1:
        for key in ("first_answer_s", "all_urls_s", "engine_ready_s", "rss_total_besides_engine_mib"):
            print(f"median {key}: {statistics.median(r[key] for r in runs)}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
