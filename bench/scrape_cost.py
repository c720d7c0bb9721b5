"""Benchmark: what Prometheus in local mode costs to scrape 1 and 8 replicas at a 5 s interval,
against the same Prometheus with no replica to scrape (the baseline, measured in the same run).

Each replica is a small HTTP server serving a real vLLM 0.32 /metrics page (the capture in
tests/unit/fixtures/vllm_metrics.txt), recorded in a fresh state directory as a replica record,
so Prometheus discovers it through enova's file-SD targets exactly as it would a real engine.
For each case: `enova mon start` (5 s interval), let it scrape for --seconds, then read the
Prometheus process's CPU time and memory (RSS, PSS) with psutil; `enova mon stop`.

    .venv/bin/python bench/scrape_cost.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enova.monitor.process import read_record  # noqa: E402
from enova.observe.state import ReplicaRecord, StateStore  # noqa: E402

ENOVA = str(Path(sys.executable).with_name("enova"))
PAGE = (ROOT / "tests" / "unit" / "fixtures" / "vllm_metrics.txt").read_bytes()
PROM_PORT = 19781


class Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args) -> None:
        pass


def serve(count: int) -> list[ThreadingHTTPServer]:
    servers = []
    for _ in range(count):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


def measure(replicas: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        store = StateStore(state)
        servers = serve(replicas)
        for i, server in enumerate(servers):
            store.write_replica(ReplicaRecord(
                id=f"bench-{i:06d}", deployment="bench", host="127.0.0.1", port=server.server_address[1],
                config_hash="h", config={}, argv=[], log="", runtime="local", state="ready"))
        specs = Path(tmp) / "specs"
        specs.mkdir()
        (specs / "monitoring.yaml").write_text(
            "apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: m}\n"
            f"spec: {{prometheus: {{port: {PROM_PORT}, scrape_interval: 5s}}}}\n")
        env = {**os.environ, "ENOVA_STATE_DIR": str(state)}
        subprocess.run([ENOVA, "mon", "start", str(specs)], env=env, check=True, capture_output=True)
        try:
            proc = psutil.Process(read_record(state).pid)
            cpu0 = sum(proc.cpu_times()[:2])
            time.sleep(seconds)
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            mem = proc.memory_full_info()
            return {"cpu_pct": 100 * cpu / seconds, "rss_mib": mem.rss / 2 ** 20, "pss_mib": mem.pss / 2 ** 20}
        finally:
            subprocess.run([ENOVA, "mon", "stop"], env=env, capture_output=True)
            for server in servers:
                server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    rows = {n: measure(n, args.seconds) for n in (0, 1, 8)}
    base = rows[0]
    print(f"Prometheus {args.seconds:.0f} s after start, 5 s interval, vLLM 0.32's /metrics page "
          f"({len(PAGE):,} bytes) per replica:")
    for n, row in rows.items():
        print(f"  {n} replica(s): CPU {row['cpu_pct']:.2f}% of a core, RSS {row['rss_mib']:.1f} MiB, "
              f"PSS {row['pss_mib']:.1f} MiB (vs no replica: CPU x{row['cpu_pct'] / max(base['cpu_pct'], 1e-9):.2f}, "
              f"RSS +{row['rss_mib'] - base['rss_mib']:.1f} MiB)")


if __name__ == "__main__":
    main()
