"""Benchmark: the gateway's added latency per request with tracing on vs off, in the same run.

    .venv/bin/python bench/gateway_tracing.py [--rounds 10] [--requests 200] [--json out.json]

Processes: the paced upstream (bench/fixtures/paced_upstream.py, pace 0: it answers at once),
an OTLP/HTTP receiver (this script with --receiver: accepts POST /v1/traces, decodes each
ExportTraceServiceRequest and counts its spans), and two `python -m enova.gateway` processes
in front of the same upstream: "off" (no otlp_endpoint) and "on" (otlp_endpoint = the
receiver). The gateways run on core 0, the rest on core 1 (as bench/gateway.py).
Rounds are interleaved, the order of the three paths rotating each round: direct (to the
upstream), gateway off, gateway on. Two scenarios per path and round:
  - plain: sequential non-stream /v1/completions (one token), the client's total time;
  - stream: 8 concurrent workers, streamed /v1/completions of 16 tokens, time to first token.
"added" = path minus direct, same percentile, over all rounds. The ratio is on/off of the
added p50. At the end the receiver's span count is checked against the traced requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import LOAD_CORE, PROXY_CORE, PY, ROOT, free_port, spawn, stop, wait_http  # noqa: E402

from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore, record_from_dict  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PATHS = ("direct", "off", "on")


def write_state(state: Path, port: int) -> None:
    """Deployment `bench` with the upstream as its one ready replica (as `enova apply` records it)."""
    store = StateStore(state)
    config = {"engine": {"args": {"max_num_seqs": 1024}}}
    store.write_deployment(DeploymentRecord(name="bench", replicas=1, config_hash="x", config=config, applied_at=0,
                                            serving={"default": True, "max_concurrency": 1024, "drain_timeout": 30}))
    store.write_replica(record_from_dict(ReplicaRecord, {
        "id": "bench-up", "deployment": "bench", "host": "127.0.0.1", "port": port, "config_hash": "x",
        "config": config, "argv": [], "log": "/dev/null", "state": "ready", "pid": 0, "create_time": 0.0}))


# -- the receiver (a process of its own) -------------------------------------------------------

def run_receiver(port: int) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    spans = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
            spans[0] += sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            body = json.dumps({"spans": spans[0]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# -- the measurement -----------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def plain(session: aiohttp.ClientSession, base: str, n: int) -> list[float]:
    out = []
    body = {"model": "bench", "prompt": "x", "max_tokens": 1, "pace_ms": 0}
    for _ in range(n):
        began = time.perf_counter()
        async with session.post(base + "/v1/completions", json=body) as r:
            await r.read()
            assert r.status == 200, r.status
        out.append(time.perf_counter() - began)
    return out


async def stream(session: aiohttp.ClientSession, base: str, n: int, workers: int = 8) -> list[float]:
    out: list[float] = []
    body = {"model": "bench", "prompt": "x", "max_tokens": 16, "pace_ms": 0, "stream": True}

    async def worker(count: int):
        for _ in range(count):
            began = time.perf_counter()
            first = None
            async with session.post(base + "/v1/completions", json=body) as r:
                assert r.status == 200, r.status
                async for line in r.content:
                    if first is None and line.startswith(b"data: {"):
                        first = time.perf_counter() - began
            out.append(first)

    await asyncio.gather(*(worker(n // workers) for _ in range(workers)))
    return out


async def measure(bases: dict[str, str], rounds: int, n: int) -> dict[str, dict[str, list[float]]]:
    results = {s: {p: [] for p in PATHS} for s in ("plain", "stream")}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for path in PATHS:                                     # warm-up: connections, imports, caches
            await plain(session, bases[path], 50)
            await stream(session, bases[path], 32)
        for i in range(rounds):
            order = PATHS[i % 3:] + PATHS[:i % 3]
            for path in order:
                results["plain"][path] += await plain(session, bases[path], n)
                results["stream"][path] += await stream(session, bases[path], n)
    return results


def report(results: dict, spans: int, traced: int) -> dict:
    summary = {}
    print("| scenario | direct p50 / p99 (ms) | added, tracing off p50 / p99 | added, tracing on p50 / p99 |"
          " on/off (added p50) |")
    print("|---|---|---|---|---|")
    for scenario, paths in results.items():
        d50, d99 = statistics.median(paths["direct"]), pct(paths["direct"], 0.99)
        row = {"direct": (d50 * 1e3, d99 * 1e3)}
        for p in ("off", "on"):
            row[p] = ((statistics.median(paths[p]) - d50) * 1e3, (pct(paths[p], 0.99) - d99) * 1e3)
        ratio = row["on"][0] / row["off"][0] if row["off"][0] > 0 else float("nan")
        summary[scenario] = {**row, "ratio_p50": ratio, "requests_per_path": len(paths["direct"])}
        print(f"| {scenario} ({len(paths['direct'])} per path) | {row['direct'][0]:.3f} / {row['direct'][1]:.3f} | "
              f"{row['off'][0]:+.3f} / {row['off'][1]:+.3f} | {row['on'][0]:+.3f} / {row['on'][1]:+.3f} | "
              f"{ratio:.2f} |")
    print(f"\nspans received {spans} of {traced} traced requests")
    summary["spans"] = {"received": spans, "traced": traced}
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--requests", type=int, default=200, help="per scenario, path and round")
    p.add_argument("--json", type=Path)
    p.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.receiver:
        run_receiver(a.receiver)
        return 0
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="enova-bench-tracing-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            up_port, rx_port = free_port(), free_port()
            upstream = spawn([PY, str(FIXTURES / "paced_upstream.py"), "--port", str(up_port), "--pace-ms", "0",
                              "--uvloop"], tmp / "upstream.log", LOAD_CORE)
            procs.append(upstream)
            wait_http(f"http://127.0.0.1:{up_port}/health", upstream)
            receiver = spawn([PY, __file__, "--receiver", str(rx_port)], tmp / "receiver.log", LOAD_CORE)
            procs.append(receiver)
            wait_http(f"http://127.0.0.1:{rx_port}/", receiver)
            state = tmp / "state"
            write_state(state, up_port)
            bases = {"direct": f"http://127.0.0.1:{up_port}"}
            for name, settings in (("off", {}), ("on", {"otlp_endpoint": f"http://127.0.0.1:{rx_port}/v1/traces"})):
                port = free_port()
                config = tmp / f"gateway-{name}.json"
                config.write_text(json.dumps({"port": port, "queue_size": 1000, **settings}))
                proc = spawn([PY, "-m", "enova.gateway", "--state-dir", str(state), "--config", str(config)],
                             tmp / f"gateway-{name}.log", PROXY_CORE, cwd=ROOT)
                procs.append(proc)
                wait_http(f"http://127.0.0.1:{port}/health", proc)
                bases[name] = f"http://127.0.0.1:{port}"
            results = asyncio.run(measure(bases, a.rounds, a.requests))
            stop(procs[-1])                                   # the traced gateway flushes on stop
            traced = sum(len(results[s]["on"]) for s in results) + 50 + 32
            spans = httpx.get(f"http://127.0.0.1:{rx_port}/", trust_env=False).json()["spans"]
            summary = report(results, spans, traced)
            if a.json:
                a.json.write_text(json.dumps(summary, indent=1))
        finally:
            for proc in reversed(procs):
                stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
