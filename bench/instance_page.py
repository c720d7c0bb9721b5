"""Benchmark: the /instance page's load time and what the app server costs while it is open.

In a fresh state directory: `enova apply` (the gateway, one smollm2 replica on vLLM's CPU build,
Prometheus at a 5 s scrape interval from a Monitoring document, an SLO), then `enova app run
SPECS`. Headless Chromium (Debian's, driven by Playwright) then

1. loads /instance/smollm2 --loads times in a fresh tab each, timing navigation -> the replica
   row and all 10 charts drawn (and the browser's own DOMContentLoaded);
2. keeps the page open for --seconds with its live charts (the page polls every 5 s) while a
   client sends one streamed request per second through the gateway, and reads the app server
   process's CPU time with psutil before and after: its CPU% of one core;
3. the same with Prometheus stopped (`enova mon stop`: the live fallback reads /metrics pages);
4. the app server with no page open, as the baseline.

    .venv/bin/python bench/instance_page.py [--seconds 60] [--loads 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENOVA = str(Path(sys.executable).with_name("enova"))
GATEWAY_PORT, PROM_PORT, APP_PORT = 19289, 19789, 19532
APP = f"http://127.0.0.1:{APP_PORT}"
SPECS = f"""\
apiVersion: enova/v1
kind: Gateway
metadata: {{name: main}}
spec: {{port: {GATEWAY_PORT}}}
---
apiVersion: enova/v1
kind: Deployment
metadata: {{name: smollm2}}
spec:
  model: builtin:smollm2-135m-instruct
  engine:
    args: {{max_model_len: 1024, max_num_seqs: 16}}
    startup_timeout: 4m
  replicas: 1
  resources: {{gpus: 0, cpus: 1}}
  slo: chat
---
apiVersion: enova/v1
kind: SLO
metadata: {{name: chat}}
spec: {{ttft_p95_ms: 2000, itl_p95_ms: 500, e2e_p99_ms: 30000, max_error_rate: 0.05}}
---
apiVersion: enova/v1
kind: Monitoring
metadata: {{name: local}}
spec: {{prometheus: {{port: {PROM_PORT}, scrape_interval: 5s}}}}
"""


def enova(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([ENOVA, *args], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"enova {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")


def trickle(stop: threading.Event) -> None:
    with httpx.Client(trust_env=False, timeout=60) as client:
        while not stop.wait(1.0):
            with client.stream("POST", f"http://127.0.0.1:{GATEWAY_PORT}/v1/completions",
                               json={"model": "smollm2", "prompt": "Once", "max_tokens": 8, "stream": True}) as r:
                r.read()


def cpu_percent(proc: psutil.Process, seconds: float) -> float:
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / seconds


def load_times(browser, loads: int) -> tuple[list[float], list[float]]:
    drawn, dcl = [], []
    for _ in range(loads):
        context = browser.new_context(viewport={"width": 1400, "height": 1800})
        page = context.new_page()
        began = time.perf_counter()
        page.goto(f"{APP}/instance/smollm2")
        page.wait_for_selector('#replicas tr[data-health="healthy"]')
        page.wait_for_function("() => document.querySelectorAll('#charts figure svg').length === 10")
        drawn.append(time.perf_counter() - began)
        dcl.append(page.evaluate("() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd") / 1000)
        context.close()
    return drawn, dcl


def open_for(browser, proc: psutil.Process, seconds: float, source: str) -> float:
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    page = context.new_page()
    page.goto(f"{APP}/instance/smollm2")
    page.wait_for_selector(f'#source[data-source="{source}"]', timeout=30_000)
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(stop,), daemon=True)
    sender.start()
    try:
        return cpu_percent(proc, seconds)
    finally:
        stop.set()
        sender.join()
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import stop_recorded_processes
    root = Path(tempfile.mkdtemp(prefix="enova-bench-instance-"))
    env = {**os.environ, "ENOVA_STATE_DIR": str(root / "state"), "ENOVA_PORT_RANGE": "19480-19489",
           "PYTHONUNBUFFERED": "1"}
    (root / "specs").mkdir()
    (root / "specs" / "all.yaml").write_text(SPECS)
    app = None
    try:
        enova(env, "apply", str(root / "specs"))
        with (root / "app.log").open("wb") as log:
            app = subprocess.Popen([ENOVA, "app", "run", str(root / "specs"), "--port", str(APP_PORT)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{APP}/instance", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        proc = psutil.Process(app.pid)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            idle = cpu_percent(proc, min(args.seconds, 20.0))
            drawn, dcl = load_times(browser, args.loads)
            prometheus = open_for(browser, proc, args.seconds, "prometheus")
            enova(env, "mon", "stop")
            live = open_for(browser, proc, args.seconds, "live")
            browser.close()
        rss = proc.memory_info().rss / 2**20
        result = {"loads": args.loads, "drawn_median_s": statistics.median(drawn), "drawn_max_s": max(drawn),
                  "dom_content_loaded_median_s": statistics.median(dcl), "seconds": args.seconds,
                  "cpu_idle_percent": idle, "cpu_prometheus_percent": prometheus, "cpu_live_percent": live,
                  "rss_mib": rss}
    finally:
        if app is not None:
            app.terminate()
            app.wait(15)
        subprocess.run([ENOVA, "mon", "stop"], env=env, capture_output=True)
        stop_recorded_processes(root / "state")
    print(f"page load (navigation -> replica row and 10 charts drawn), {args.loads} loads: "
          f"median {result['drawn_median_s']:.2f} s, max {result['drawn_max_s']:.2f} s "
          f"(DOMContentLoaded median {result['dom_content_loaded_median_s'] * 1000:.0f} ms)")
    print(f"app server CPU (% of one core) over {args.seconds:.0f} s: no page open {idle:.2f}%; "
          f"page open, Prometheus {prometheus:.2f}%; page open, live fallback {live:.2f}%; RSS {rss:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
