"""Benchmark: what enova's gateway adds to a request, compared with no proxy and with nginx.

    .venv/bin/python bench/gateway.py [--quick] [--skip-engine] [--json results.json]

Part 1, a paced upstream (bench/fixtures/paced_upstream.py: an OpenAI-compatible server that
streams a token every 20 ms, so the engine is not the bottleneck). Three paths to it, measured
in the same run, in interleaved rounds (the order rotates each round):
  direct    the client talks to the upstream;
  gateway   `python -m enova.gateway` with a temp state directory naming the upstream as the
            one ready replica of deployment `bench`;
  nginx     nginx as a plain reverse proxy (bench/fixtures/nginx.conf.template: one worker,
            proxy_buffering off, HTTP/1.1 keep-alive pool to the upstream).
The proxy under test runs alone on core 0; the upstream and this script (the load client:
aiohttp on uvloop, closed-loop workers) share core 1. Each block runs its workers for a
warm-up, then a measured window; requests that start inside the window are measured.
  - latency scenarios (streams of 50 tokens at 20 ms; non-stream answers after 100 ms) at 1,
    50 and 200 concurrent requests: per request the time to first token and the total, per
    token the inter-arrival gap seen by the client and the lag (time from the upstream's write,
    stamped in the event, to its arrival at the client); "added" = proxy minus direct, same
    percentile, same run. Direct at 200 streams must still meet the pace (checked, reported).
  - throughput scenarios (no pacing, 64 closed-loop workers): requests/s through each path,
    the proxy's CPU time per request, hence requests/s per core of proxy CPU.
  - memory: RSS of the gateway process (idle and peak) and of nginx (master + worker).
Part 2, the real engine (skip with --skip-engine): `enova apply` of one SmolLM2 replica on
vLLM's CPU build (with a Gateway document on a spare port, so :9199 is not touched), streams
of 32 tokens at 1 and 8 concurrent, direct to the replica vs through that gateway vs nginx,
then `enova delete`.

The machine may be shared: before each block the script waits while other processes are busy
(up to --wait-quiet seconds in all), runs a block again if other processes used more than
--max-noise of a core during it (keeping the quietest try), and reports the noise it saw.

Output: markdown tables on stdout; with --json, the numbers (per scenario, per path, per
block) as JSON. The default run takes about 10 minutes on a quiet machine, --quick about 2
(one round, shorter blocks, no engine part).
--profile DIR records the gateway with py-spy (if installed) during one extra max-stream block
(the gateway saturated, so samples are CPU) after the measurements and writes where its time
goes there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enova.observe.state import DeploymentRecord, ReplicaRecord, StateStore  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PY = sys.executable
ENOVA = str(Path(PY).with_name("enova"))
PROXY_CORE, LOAD_CORE = 0, 1
CONFIG = {"engine": {"args": {"max_num_seqs": 1024}}}
PACE_MS = 20.0


# -- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(core: int | None):
    """A preexec_fn that pins the child to `core` (None: every core of the machine)."""
    cores = set(range(os.cpu_count() or 1)) if core is None else {core}
    return lambda: os.sched_setaffinity(0, cores)


def wait_http(url: str, proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def spawn(argv: list[str], log: Path, core: int | None, **kw) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pinned(core), **kw)


def start_upstream(tmp: Path, port: int) -> subprocess.Popen:
    proc = spawn([PY, str(FIXTURES / "paced_upstream.py"), "--port", str(port), "--pace-ms", str(PACE_MS),
                  "--uvloop"], tmp / "upstream.log", LOAD_CORE)
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


def write_state(state: Path, upstream: subprocess.Popen, port: int) -> None:
    store = StateStore(state)
    serving = {"default": True, "max_concurrency": 1024, "drain_timeout": 30}
    store.write_deployment(DeploymentRecord(name="bench", replicas=1, config_hash="x", config=CONFIG,
                                            applied_at=0, serving=serving))
    store.write_replica(ReplicaRecord(
        id="bench-up", deployment="bench", host="127.0.0.1", port=port, config_hash="x", config=CONFIG, argv=[],
        log="/dev/null", runtime="local", state="ready",
        handle={"pid": upstream.pid, "create_time": psutil.Process(upstream.pid).create_time()}))


def start_gateway(tmp: Path, state: Path, port: int) -> subprocess.Popen:
    proc = spawn([PY, "-m", "enova.gateway", "--state-dir", str(state), "--port", str(port), "--queue-size", "1000"],
                 tmp / "gateway.log", PROXY_CORE, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


def start_nginx(tmp: Path, port: int, upstream: str, core: int | None) -> subprocess.Popen:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
    prefix = tmp / f"nginx-{port}"
    for sub in ("", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = (FIXTURES / "nginx.conf.template").read_text()
    conf = conf.replace("@PREFIX@", str(prefix)).replace("@PORT@", str(port)).replace("@UPSTREAM@", upstream)
    (prefix / "nginx.conf").write_text(conf)
    proc = spawn([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
                 prefix / "stdout.log", core)
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


class Watched:
    """The processes of one proxy (the gateway; nginx's master and workers) for CPU and RSS."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def procs(self) -> list[psutil.Process]:
        if self.pid is None:
            return []
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        total = 0.0
        for p in self.procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self.procs():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total


def core_busy() -> list[float]:
    """Busy seconds per core since boot (everything but idle and iowait)."""
    return [sum(t) - t.idle - t.iowait for t in psutil.cpu_times(percpu=True)]


EXTRA_OURS: set[int] = set()        # processes of ours that are not our children (the engine's tree)


def _ours() -> set[int]:
    pids = {os.getpid(), *EXTRA_OURS}
    for pid in [os.getpid(), *EXTRA_OURS]:
        try:
            pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return pids


def others_cpu() -> dict[tuple[int, float], float]:
    """CPU seconds so far of every process that is not part of this benchmark (the noise).
    Kernel threads are left out: under load they mostly carry this benchmark's own network
    work (ksoftirqd)."""
    ours = _ours()
    out = {}
    for p in psutil.process_iter():
        if p.pid in ours or p.pid == 2:
            continue
        try:
            if p.ppid() == 2:
                continue
        except psutil.NoSuchProcess:
            continue
        try:
            t = p.cpu_times()
            out[(p.pid, p.create_time())] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def noise_between(before: dict[tuple[int, float], float], after: dict[tuple[int, float], float]) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items())


class Quiet:
    """Waiting for other processes to leave the machine alone, within a budget of seconds for
    the whole run (a shared machine: other people's engines and tests come and go)."""

    def __init__(self, max_noise: float, budget: float, log):
        self.max_noise = max_noise
        self.left = budget
        self.log = log
        self.waited = 0.0

    async def wait(self, span: float = 0.5) -> float:
        """Sample the noise over `span` s; while it is above the limit and budget is left, wait
        and sample again. Returns the last noise seen (cores)."""
        told = False
        while True:
            before, t0 = others_cpu(), time.monotonic()
            await asyncio.sleep(span)
            noise = noise_between(before, others_cpu()) / (time.monotonic() - t0)
            if noise <= self.max_noise or self.left <= 0:
                return noise
            if not told:
                self.log(f"  waiting for quiet: other processes use {100 * noise:.0f} % of a core "
                         f"({self.left:.0f} s of waiting left)")
                told = True
            pause = min(self.left, 2.0)
            await asyncio.sleep(pause)
            self.left -= pause + span
            self.waited += pause + span


# -- scenarios ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str               # "latency" or "throughput"
    concurrency: int
    stream: bool = True
    chat: bool = False
    usage: bool = True      # the client asks for stream_options.include_usage
    tokens: int = 50
    pace_ms: float = PACE_MS

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.chat else "/v1/completions"

    def body(self, model: str, extra: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {"model": model, "max_tokens": self.tokens, "pace_ms": self.pace_ms}
        if self.chat:
            body["messages"] = [{"role": "user", "content": "Tell me about San Francisco."}]
        else:
            body["prompt"] = "San Francisco is a"
        if self.stream:
            body["stream"] = True
            if self.usage:
                body["stream_options"] = {"include_usage": True}
        body.update(extra or {})
        return json.dumps(body).encode()

    def describe(self) -> str:
        what = ("chat stream" if self.chat else "stream") if self.stream else "non-stream"
        if self.stream and not self.usage:
            what += " (no include_usage)"
        pace = f"{self.tokens} tok @ {self.pace_ms:g} ms" if self.pace_ms else f"{self.tokens} tok unpaced"
        return f"{what}, c={self.concurrency}, {pace}"


SCENARIOS = [
    Scenario("stream-c1", "latency", 1),
    Scenario("stream-c50", "latency", 50),
    Scenario("stream-c200", "latency", 200),
    Scenario("chat-c200", "latency", 200, chat=True, usage=False),
    Scenario("plain-c1", "latency", 1, stream=False, tokens=5),
    Scenario("plain-c50", "latency", 50, stream=False, tokens=5),
    Scenario("plain-c200", "latency", 200, stream=False, tokens=5),
    Scenario("max-plain", "throughput", 64, stream=False, tokens=16, pace_ms=0),
    Scenario("max-stream", "throughput", 64, tokens=16, pace_ms=0),
]


# -- the load client -----------------------------------------------------------------------------

@dataclass
class Sample:
    start: float
    end: float = 0.0
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    error: str | None = None


_STAMP = b'"bench_t":'


async def one(session: aiohttp.ClientSession, url: str, body: bytes, sc: Scenario, expect_tokens: int | None,
              *, check_usage: bool = True) -> Sample:
    s = Sample(time.perf_counter())
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            if r.status != 200:
                s.error = f"HTTP {r.status}: {(await r.read())[:200]!r}"
                return s
            if not sc.stream:
                raw = await r.read()
                s.end = time.perf_counter()
                s.ttft = s.end - s.start
                if expect_tokens is not None and b'"completion_tokens":%d' % expect_tokens not in raw:
                    s.error = f"unexpected answer {raw[:200]!r}"
                return s
            buf, last, tokens, usage, done = b"", None, 0, False, False
            async for chunk in r.content.iter_any():
                now = time.perf_counter()
                buf += chunk
                *events, buf = buf.split(b"\n\n")
                for ev in events:
                    if ev.startswith(b"data: [DONE]"):
                        done = True
                    elif b'"choices":[]' in ev:
                        usage = True
                    elif b'"role":' in ev or not ev.startswith(b"data: {"):
                        continue
                    else:
                        tokens += 1
                        i = ev.find(_STAMP)
                        if i >= 0:
                            s.lags.append(now - float(ev[i + len(_STAMP):ev.index(b"}", i)]))
                        if last is None:
                            s.ttft = now - s.start
                        else:
                            s.gaps.append(now - last)
                        last = now
            s.end = time.perf_counter()
            if not done:
                s.error = "stream ended without [DONE]"
            elif expect_tokens is not None and tokens != expect_tokens:
                s.error = f"{tokens} tokens, expected {expect_tokens}"
            elif check_usage and usage != sc.usage:
                s.error = f"usage chunk {'present' if usage else 'missing'}, asked for: {sc.usage}"
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        s.error = f"{type(exc).__name__}: {exc}"
    return s


@dataclass
class Target:
    name: str
    url: str
    model: str
    watched: Watched
    session: aiohttp.ClientSession | None = None


@dataclass
class Block:
    samples: list[Sample]          # started inside the measured window
    completed_in_window: int
    window: float
    wall: float
    errors: int
    first_error: str | None
    proxy_cpu: float | None        # seconds of CPU the proxy used during the block
    all_completed: int
    rss_peak: int
    core_busy: list[float]         # fraction busy per core over the block
    noise: float = 0.0             # CPU of other processes during the block, in cores
    all_tokens: int = 0            # token events received in the whole block
    tries: int = 1


async def run_block(t: Target, sc: Scenario, warm: float, window: float, *, expect_tokens: int | None = None,
                    extra: dict[str, Any] | None = None, check_usage: bool = True) -> Block:
    assert t.session is not None
    url = t.url + sc.path
    body = sc.body(t.model, extra)
    expect = sc.tokens if expect_tokens is None and "max_tokens" not in (extra or {}) else expect_tokens
    done: list[Sample] = []
    rss_peak = t.watched.rss()
    others0 = others_cpu()
    cpu0, busy0, t0 = t.watched.cpu(), core_busy(), time.perf_counter()
    t_meas, t_end = t0 + warm, t0 + warm + window
    period = (sc.tokens * sc.pace_ms / 1000.0) if sc.pace_ms else 0.0

    async def worker(i: int) -> None:
        if period:
            await asyncio.sleep(period * i / sc.concurrency)     # spread the streams' phases evenly
        while time.perf_counter() < t_end:
            done.append(await one(t.session, url, body, sc, expect, check_usage=check_usage))

    async def sample_rss() -> None:
        nonlocal rss_peak
        while True:
            await asyncio.sleep(0.25)
            rss_peak = max(rss_peak, t.watched.rss())

    sampler = asyncio.create_task(sample_rss())
    try:
        await asyncio.gather(*(worker(i) for i in range(sc.concurrency)))
    finally:
        sampler.cancel()
    wall = time.perf_counter() - t0
    busy = [(b1 - b0) / wall for b0, b1 in zip(busy0, core_busy())]
    cpu = t.watched.cpu() - cpu0 if t.watched.pid else None
    noise = noise_between(others0, others_cpu()) / wall
    rss_peak = max(rss_peak, t.watched.rss())
    errors = [s for s in done if s.error]
    measured = [s for s in done if t_meas <= s.start < t_end and not s.error]
    in_window = sum(1 for s in done if t_meas <= s.end < t_end and not s.error)
    return Block(measured, in_window, window, wall, len(errors), errors[0].error if errors else None, cpu,
                 len(done), rss_peak, busy, noise, sum(len(s.gaps) + 1 for s in done if s.ttft and sc.stream))


async def quiet_block(t: Target, sc: Scenario, warm: float, window: float, retries: int, max_noise: float,
                      log, quiet: Quiet | None = None) -> Block:
    """A block, run again (up to `retries` times) while other processes used more than
    `max_noise` of a core during it; the quietest try is kept."""
    best = None
    for i in range(retries + 1):
        if quiet is not None:
            await quiet.wait()
        b = await run_block(t, sc, warm, window)
        b.tries = i + 1
        if best is None or b.noise < best.noise:
            best = b
        if b.noise <= max_noise:
            break
        log(f"  {sc.name}/{t.name}: other processes used {100 * b.noise:.0f} % of a core; "
            + ("again" if i < retries else "keeping the quietest try"))
        await asyncio.sleep(1.0 + 2.0 * i)
    return best


# -- statistics ------------------------------------------------------------------------------------

def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summarize(blocks: list[Block]) -> dict[str, Any]:
    samples = [s for b in blocks for s in b.samples]
    total = [s.end - s.start for s in samples]
    ttft = [s.ttft for s in samples if s.ttft is not None]
    gaps = [g for s in samples for g in s.gaps]
    lags = [x for s in samples for x in s.lags]
    ms = lambda v: None if v is None else round(v * 1000, 3)   # noqa: E731
    out: dict[str, Any] = {"requests": len(samples), "tokens": sum(len(s.gaps) + 1 for s in samples if s.ttft),
                           "errors": sum(b.errors for b in blocks),
                           "first_error": next((b.first_error for b in blocks if b.first_error), None)}
    for name, xs in (("total", total), ("ttft", ttft), ("gap", gaps), ("lag", lags)):
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            out[f"{name}_{label}_ms"] = ms(pct(xs, q))
    window = sum(b.window for b in blocks)
    out["req_per_s"] = round(sum(b.completed_in_window for b in blocks) / window, 1) if window else None
    cpu = [b.proxy_cpu for b in blocks if b.proxy_cpu is not None]
    if cpu:
        n = sum(b.all_completed for b in blocks)
        wall = sum(b.wall for b in blocks)
        out["proxy_cpu_pct"] = round(100 * sum(cpu) / wall, 1)
        out["proxy_cpu_us_per_req"] = round(1e6 * sum(cpu) / n, 1) if n else None
        out["req_per_proxy_cpu_s"] = round(n / sum(cpu), 1) if sum(cpu) else None
        toks = sum(b.all_tokens for b in blocks)
        out["proxy_cpu_us_per_token"] = round(1e6 * sum(cpu) / toks, 1) if toks else None
        busy0 = sum(b.core_busy[PROXY_CORE] * b.wall for b in blocks)
        out["req_per_proxy_core_busy_s"] = round(n / busy0, 1) if busy0 else None
    out["rss_peak_mib"] = round(max(b.rss_peak for b in blocks) / 2**20, 1) if cpu else None
    out["core_busy_pct"] = [round(100 * sum(b.core_busy[i] * b.wall for b in blocks) / sum(b.wall for b in blocks), 1)
                            for i in range(len(blocks[0].core_busy))]
    out["noise_max_pct"] = round(100 * max(b.noise for b in blocks), 1)
    out["blocks"] = [{"requests": len(b.samples), "errors": b.errors, "wall_s": round(b.wall, 2),
                      "noise_pct": round(100 * b.noise, 1), "tries": b.tries,
                      "core_busy_pct": [round(100 * x, 1) for x in b.core_busy],
                      "proxy_cpu_s": None if b.proxy_cpu is None else round(b.proxy_cpu, 3),
                      "total_p50_ms": ms(pct([s.end - s.start for s in b.samples], 0.5)),
                      "lag_p99_ms": ms(pct([x for s in b.samples for x in s.lags], 0.99)),
                      "gap_p99_ms": ms(pct([g for s in b.samples for g in s.gaps], 0.99))} for b in blocks]
    return out


async def run_scenarios(targets: list[Target], scenarios: list[Scenario], args, log) -> dict[str, dict[str, Any]]:
    rounds, warm, window = args.rounds, args.warm, args.window
    results: dict[str, dict[str, Any]] = {}
    for sc in scenarios:
        blocks: dict[str, list[Block]] = {t.name: [] for t in targets}
        for r in range(rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for t in order:
                w = warm if sc.kind == "latency" else min(warm, 1.0)
                blocks[t.name].append(await quiet_block(t, sc, w, window, args.retries, args.max_noise, log,
                                                        args.quiet))
                await asyncio.sleep(0.2)
        results[sc.name] = {"scenario": sc.describe(), **{name: summarize(b) for name, b in blocks.items()}}
        line = "  ".join(f"{name} p50 {res['total_p50_ms']} ms, {res['req_per_s']} req/s, err {res['errors']}"
                         for name, res in results[sc.name].items() if isinstance(res, dict))
        log(f"{sc.name}: {line}")
    return results


def new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                                 timeout=aiohttp.ClientTimeout(total=120), auto_decompress=False)


def run_async(coro):
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# -- part 1: the paced upstream ----------------------------------------------------------------------

async def paced_part(targets: list[Target], scenarios: list[Scenario], args, log) -> dict[str, Any]:
    for t in targets:
        t.session = new_session()
    try:
        idle = {t.name: round(t.watched.rss() / 2**20, 1) for t in targets if t.watched.pid}
        warmup = Scenario("warmup", "latency", 8, tokens=4, pace_ms=1)
        for t in targets:
            await run_block(t, warmup, 0, 0.5)
        results = await run_scenarios(targets, scenarios, args, log)
        results["_rss_idle_mib"] = idle
        if args.profile:
            results["_profile"] = await profile_gateway(next(t for t in targets if t.name == "gateway"), args, log)
        return results
    finally:
        for t in targets:
            await t.session.close()


async def profile_gateway(t: Target, args, log) -> str | None:
    spy = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
    if not os.path.exists(spy):
        log("py-spy is not installed: no profile")
        return None
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "gateway-max-stream.txt"
    sc = next(s for s in SCENARIOS if s.name == "max-stream")      # saturated: samples are CPU, not waiting
    duration = int(args.window + 1)
    proc = await asyncio.create_subprocess_exec(spy, "record", "-p", str(t.watched.pid), "-d", str(duration),
                                                "-r", "200", "--format", "raw", "-o", str(raw), "--nonblocking",
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                                                preexec_fn=pinned(LOAD_CORE))
    await asyncio.sleep(0.5)
    await run_block(t, sc, 0, args.window + 1.5)
    await proc.wait()
    if not raw.exists():
        return None
    top = top_functions(raw)
    (out / "gateway-max-stream-top.txt").write_text(top)
    log(f"profile written to {raw} (collapsed stacks) and {out / 'gateway-max-stream-top.txt'}")
    return top


def top_functions(raw: Path, n: int = 25) -> str:
    """Where the gateway's event loop spends its samples, from py-spy's collapsed stacks: self
    share per package (file for enova) and the top functions. Stacks of other threads that
    only wait (watchfiles' worker blocked in Rust) are left out."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    by_pkg: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or stack.startswith("Thread._bootstrap"):
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + c
        for fr in set(frames):
            incl[fr] = incl.get(fr, 0) + c
        where = frames[-1].rpartition("(")[2].split(":")[0]
        pkg = where if where.startswith("enova/") else where.split("/")[0]
        by_pkg[pkg] = by_pkg.get(pkg, 0) + c
    total = total or 1
    rows = [f"main thread: {total} samples", "", "self % by package (enova: by file)"]
    rows += [f"{100 * c / total:7.1f}  {k}" for k, c in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:15]]
    rows += ["", f"{'self %':>7} {'incl %':>7}  function (file:line)"]
    for fn, c in sorted(own.items(), key=lambda kv: -kv[1])[:n]:
        rows.append(f"{100 * c / total:7.1f} {100 * incl[fn] / total:7.1f}  {fn}")
    return "\n".join(rows) + "\n"


# -- part 2: the real engine ---------------------------------------------------------------------------

ENGINE_SPEC = """\
apiVersion: enova/v1
kind: Deployment
metadata: {name: smollm2}
spec:
  model: builtin:smollm2-135m-instruct
  engine:
    args: {max_model_len: 1024, max_num_seqs: 16}
    startup_timeout: 4m
  replicas: 1
  resources: {gpus: 0, cpus: 1}
---
apiVersion: enova/v1
kind: Gateway
metadata: {name: gateway}
spec: {port: @PORT@}
"""


def engine_part(tmp: Path, args, log) -> dict[str, Any]:
    specs, state = tmp / "engine-specs", tmp / "engine-state"
    specs.mkdir()
    gw_port = free_port()
    (specs / "smollm2.yaml").write_text(ENGINE_SPEC.replace("@PORT@", str(gw_port)))
    env = {**os.environ, "ENOVA_STATE_DIR": str(state), "ENOVA_PORT_RANGE": "19800-19899",
           "PYTHONUNBUFFERED": "1"}
    cli = lambda *a, timeout=600: subprocess.run([ENOVA, *a], env=env, capture_output=True, text=True,  # noqa: E731
                                                 timeout=timeout, preexec_fn=pinned(None))
    nginx = None
    t0 = time.monotonic()
    try:
        run = cli("apply", str(specs))
        if run.returncode != 0:
            raise RuntimeError(f"enova apply exited {run.returncode}:\n{run.stdout}\n{run.stderr}")
        log(f"engine: enova apply took {time.monotonic() - t0:.1f} s")
        status = json.loads(cli("status", "-o", "json").stdout)
        dep = next(d for d in status["deployments"] if d["name"] == "smollm2")
        replica = dep["replica_details"][0]
        port = replica["port"]
        rec = json.loads(next(state.glob("deployments/smollm2/replicas/*.json")).read_text())
        engine_cores = set(rec.get("cpus") or [])
        free = sorted(set(range(os.cpu_count() or 1)) - engine_cores) or [LOAD_CORE]
        gw_pid = json.loads((state / "gateway" / "gateway.json").read_text())["pid"]
        EXTRA_OURS.update({rec["pid"], gw_pid})
        # The engine keeps its core; the gateway, nginx and this client share the other one.
        os.sched_setaffinity(gw_pid, set(free))
        os.sched_setaffinity(0, set(free))
        nginx_port = free_port()
        nginx = start_nginx(tmp, nginx_port, f"127.0.0.1:{port}", free[0])
        targets = [Target("direct", f"http://127.0.0.1:{port}", "smollm2", Watched(None)),
                   Target("gateway", f"http://127.0.0.1:{gw_port}", "smollm2", Watched(gw_pid)),
                   Target("nginx", f"http://127.0.0.1:{nginx_port}", "smollm2", Watched(nginx.pid))]
        results = run_async(engine_measure(targets, args, log))
        results["_setup"] = {"engine_cores": sorted(engine_cores), "proxy_and_client_cores": free,
                             "replica_port": port, "gateway_port": gw_port}
        return results
    finally:
        EXTRA_OURS.clear()
        os.sched_setaffinity(0, {LOAD_CORE})
        stop(nginx)
        run = cli("delete", "smollm2", timeout=120)
        if run.returncode != 0:
            log(f"enova delete exited {run.returncode}: {run.stderr.strip()}")
        for rec_path in state.glob("deployments/*/replicas/*.json"):       # never leave an engine behind
            try:
                p = psutil.Process(json.loads(rec_path.read_text())["pid"])
                for q in [p, *p.children(recursive=True)]:
                    q.kill()
            except (psutil.NoSuchProcess, ValueError, KeyError):
                pass
        gw = state / "gateway" / "gateway.json"
        if gw.exists():
            try:
                psutil.Process(json.loads(gw.read_text())["pid"]).terminate()
            except psutil.NoSuchProcess:
                pass


async def engine_measure(targets: list[Target], args, log) -> dict[str, Any]:
    extra = {"temperature": 0, "ignore_eos": True}
    for t in targets:
        t.session = new_session()
    try:
        sc0 = Scenario("engine-warm", "latency", 2, tokens=8, pace_ms=0)
        for t in targets:
            body = sc0.body(t.model, {**extra})
            for _ in range(2):
                s = await one(t.session, t.url + sc0.path, body, sc0, None)
                if s.error:
                    raise RuntimeError(f"engine via {t.name}: {s.error}")
        results = {}
        for c in args.engine_concurrency:
            sc = Scenario(f"engine-c{c}", "latency", c, tokens=args.engine_tokens, pace_ms=0)
            per_round = c * -(-10 // c)             # about 10 requests, a multiple of c
            blocks: dict[str, list[Block]] = {t.name: [] for t in targets}
            n_rounds = -(-args.engine_requests // per_round)
            for r in range(n_rounds):
                order = targets[r % 3:] + targets[:r % 3]
                for t in order:
                    best = None
                    for i in range(args.engine_retries + 1):
                        await args.quiet.wait()
                        b = await fixed_block(t, sc, per_round, extra)
                        b.tries = i + 1
                        best = b if best is None or b.noise < best.noise else best
                        if b.noise <= args.max_noise:
                            break
                        log(f"  {sc.name}/{t.name}: other processes used {100 * b.noise:.0f} % of a core"
                            + ("; again" if i < args.engine_retries else "; keeping the quietest try"))
                        await asyncio.sleep(2.0)
                    blocks[t.name].append(best)
            results[sc.name] = {"scenario": f"engine stream, c={c}, {sc.tokens} tok, {n_rounds * per_round} req/path",
                                **{n: summarize(b) for n, b in blocks.items()}}
            log(f"{sc.name}: " + "  ".join(
                f"{n} ttft p50 {r['ttft_p50_ms']} gap p50 {r['gap_p50_ms']} err {r['errors']}"
                for n, r in results[sc.name].items() if isinstance(r, dict)))
        return results
    finally:
        for t in targets:
            await t.session.close()


async def fixed_block(t: Target, sc: Scenario, count: int, extra: dict[str, Any]) -> Block:
    """`count` requests by `sc.concurrency` closed-loop workers; all of them measured."""
    url, body = t.url + sc.path, sc.body(t.model, extra)
    done: list[Sample] = []
    left = count
    others0 = others_cpu()
    cpu0, busy0, t0 = t.watched.cpu(), core_busy(), time.perf_counter()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            done.append(await one(t.session, url, body, sc, sc.tokens))

    await asyncio.gather(*(worker() for _ in range(sc.concurrency)))
    wall = time.perf_counter() - t0
    busy = [(b1 - b0) / wall for b0, b1 in zip(busy0, core_busy())]
    errors = [s for s in done if s.error]
    ok = [s for s in done if not s.error]
    return Block(ok, len(ok), wall, wall, len(errors), errors[0].error if errors else None,
                 t.watched.cpu() - cpu0 if t.watched.pid else None, len(done), t.watched.rss(), busy,
                 noise_between(others0, others_cpu()) / wall)


# -- report ---------------------------------------------------------------------------------------------

def f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def added(res: dict, name: str, key: str) -> str:
    a, b = res[name].get(key), res["direct"].get(key)
    return "-" if a is None or b is None else f"{a - b:+.2f}"


def report(results: dict[str, Any], paths: list[str]) -> str:
    lines: list[str] = []
    lat = {k: v for k, v in results.get("paced", {}).items() if k.startswith(("stream", "chat", "plain"))}
    proxies = [p for p in paths if p != "direct"]
    if lat:
        lines += ["### Per request (ms): TTFT for streams, whole answer for non-stream", "",
                  "| scenario | direct p50 / p99 | " + " | ".join(f"{p} p50 / p99" for p in proxies) + " | "
                  + " | ".join(f"{p} added p50 / p99" for p in proxies) + " |",
                  "|---" * (2 + 2 * len(proxies)) + "|"]
        for name, res in lat.items():
            key = "ttft" if name.startswith(("stream", "chat")) else "total"
            cells = [f"{f(res[p][key + '_p50_ms'])} / {f(res[p][key + '_p99_ms'])}" for p in paths]
            adds = [f"{added(res, p, key + '_p50_ms')} / {added(res, p, key + '_p99_ms')}" for p in proxies]
            lines.append(f"| {res['scenario']} | " + " | ".join(cells + adds) + " |")
        lines += ["", "### Per token (ms): lag = upstream write to client arrival; gap = inter-arrival", "",
                  "| scenario | direct lag p50 / p99 | " + " | ".join(f"{p} lag p50 / p99" for p in proxies) + " | "
                  + " | ".join(f"{p} added lag p50 / p99" for p in proxies) + " | direct gap p50 / p99 | "
                  + " | ".join(f"{p} gap p50 / p99" for p in proxies) + " |",
                  "|---" * (3 + 3 * len(proxies)) + "|"]
        for name, res in lat.items():
            if not name.startswith(("stream", "chat")):
                continue
            lags = [f"{f(res[p]['lag_p50_ms'])} / {f(res[p]['lag_p99_ms'])}" for p in paths]
            adds = [f"{added(res, p, 'lag_p50_ms')} / {added(res, p, 'lag_p99_ms')}" for p in proxies]
            gaps = [f"{f(res[p]['gap_p50_ms'])} / {f(res[p]['gap_p99_ms'])}" for p in paths]
            lines.append(f"| {res['scenario']} | " + " | ".join(lags + adds + gaps) + " |")
        lines += ["", "### Proxy CPU and memory in the latency scenarios", "",
                  "| scenario | "
                  + " | ".join(f"{p} CPU % of a core / µs per token (streams) or request" for p in proxies)
                  + " | " + " | ".join(f"{p} peak RSS MiB" for p in proxies) + " | errors " + "/".join(paths)
                  + " | noise % |", "|---" * (3 + 2 * len(proxies)) + "|"]
        for name, res in lat.items():
            unit = "proxy_cpu_us_per_token" if name.startswith(("stream", "chat")) else "proxy_cpu_us_per_req"
            cpu = [f"{f(res[p].get('proxy_cpu_pct'), 0)} % / {f(res[p].get(unit), 0)}" for p in proxies]
            rss = [f(res[p].get("rss_peak_mib"), 1) for p in proxies]
            errs = "/".join(str(res[p]["errors"]) for p in paths)
            noise = max(res[p]["noise_max_pct"] for p in paths)
            lines.append(f"| {res['scenario']} | " + " | ".join(cpu + rss) + f" | {errs} | {noise:.0f} |")
    thr = {k: v for k, v in results.get("paced", {}).items() if k.startswith("max")}
    if thr:
        lines += ["", "### Most requests per second, proxy on one core", "",
                  "| scenario | direct req/s | " + " | ".join(f"{p} req/s (its CPU %, core 0 busy %)" for p in proxies)
                  + " | " + " | ".join(f"{p} req per CPU-second / per core-0-second" for p in proxies)
                  + " | gateway / nginx: req/s; per CPU-s; per core-0-s | noise % |",
                  "|---" * (4 + 2 * len(proxies)) + "|"]
        for name, res in thr.items():
            rps = [f"{f(res[p]['req_per_s'], 0)} ({f(res[p].get('proxy_cpu_pct'), 0)} %, "
                   f"{f(res[p]['core_busy_pct'][PROXY_CORE], 0)} %)" for p in proxies]
            per = [f"{f(res[p].get('req_per_proxy_cpu_s'), 0)} / {f(res[p].get('req_per_proxy_core_busy_s'), 0)}"
                   for p in proxies]
            ratio = "-"
            if "gateway" in res and "nginx" in res:
                g, n = res["gateway"], res["nginx"]
                ratio = "; ".join(f"{(g.get(k) or 0) / (n.get(k) or 1):.2f}"
                                  for k in ("req_per_s", "req_per_proxy_cpu_s", "req_per_proxy_core_busy_s"))
            noise = max(res[p]["noise_max_pct"] for p in paths)
            lines.append(f"| {res['scenario']} | {f(res['direct']['req_per_s'], 0)} | " + " | ".join(rps + per)
                         + f" | {ratio} | {noise:.0f} |")
    idle = results.get("paced", {}).get("_rss_idle_mib")
    if idle:
        lines += ["", "RSS at start (MiB): " + ", ".join(f"{k} {v}" for k, v in idle.items())]
    eng = {k: v for k, v in results.get("engine", {}).items() if not k.startswith("_")}
    if eng:
        lines += ["", "### The real engine (SmolLM2-135M on vLLM CPU), ms", "",
                  "| scenario | path | TTFT p50 / p99 | total p50 / p99 | gap p50 / p99 | added TTFT p50 / p99 "
                  "| added total p50 / p99 | added gap p50 / p99 | errors | noise % |", "|---" * 10 + "|"]
        for name, res in eng.items():
            for p in paths:
                r = res[p]
                add = (["-", "-", "-"] if p == "direct" else
                       [f"{added(res, p, k + '_p50_ms')} / {added(res, p, k + '_p99_ms')}"
                        for k in ("ttft", "total", "gap")])
                lines.append(f"| {res['scenario']} | {p} | {f(r['ttft_p50_ms'])} / {f(r['ttft_p99_ms'])} | "
                             f"{f(r['total_p50_ms'])} / {f(r['total_p99_ms'])} | {f(r['gap_p50_ms'])} / "
                             f"{f(r['gap_p99_ms'])} | " + " | ".join(add)
                             + f" | {r['errors']} | {r['noise_max_pct']:.0f} |")
    return "\n".join(lines)


def goals(results: dict[str, Any]) -> list[str]:
    out = []
    paced = results.get("paced", {})
    for name in ("stream-c200", "chat-c200", "plain-c200"):
        res = paced.get(name)
        if not res or "gateway" not in res:
            continue
        keys = ("lag", "ttft") if name != "plain-c200" else ("total",)
        for k in keys:
            a50 = res["gateway"][f"{k}_p50_ms"] - res["direct"][f"{k}_p50_ms"]
            a99 = res["gateway"][f"{k}_p99_ms"] - res["direct"][f"{k}_p99_ms"]
            ok = a50 < 1 and a99 < 5
            out.append(f"{name} {k}: added p50 {a50:+.2f} ms (goal < 1), p99 {a99:+.2f} ms (goal < 5): "
                       f"{'met' if ok else 'NOT met'}")
    res = paced.get("stream-c200")
    if res:
        d = res["direct"]
        ok = d["gap_p50_ms"] is not None and abs(d["gap_p50_ms"] - PACE_MS) < 1 and d["lag_p99_ms"] < 5
        out.append(f"client check: direct at 200 streams gap p50 {d['gap_p50_ms']} ms (pace {PACE_MS:g}), lag p99 "
                   f"{d['lag_p99_ms']} ms: {'pace met' if ok else 'pace NOT met (client or upstream limited)'}")
    for name in ("max-plain", "max-stream"):
        res = paced.get(name)
        if res and "gateway" in res and "nginx" in res:
            g, n = res["gateway"], res["nginx"]
            r1 = g["req_per_s"] / n["req_per_s"]
            r2 = (g.get("req_per_proxy_cpu_s") or 0) / (n.get("req_per_proxy_cpu_s") or 1)
            bound = n["core_busy_pct"][PROXY_CORE] < 90
            out.append(f"{name}: gateway carries {r1:.2f}x nginx's req/s here"
                       + (" (nginx not saturated: the load side is the limit)" if bound else "")
                       + f" and {r2:.2f}x its requests per CPU-second (goal >= 0.5): "
                       + ("met" if min(r1, r2) >= 0.5 else "NOT met"))
    return out


# -- main --------------------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short blocks, one round, no engine part (~2 min)")
    p.add_argument("--skip-engine", action="store_true", help="skip the real-engine part")
    p.add_argument("--engine-only", action="store_true", help="only the real-engine part")
    p.add_argument("--scenarios", help="comma-separated scenario names (default: all): "
                   + ",".join(s.name for s in SCENARIOS))
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario (default %(default)s)")
    p.add_argument("--warm", type=float, default=1.0, help="warm-up seconds per block (default %(default)s)")
    p.add_argument("--window", type=float, default=3.0, help="measured seconds per block (default %(default)s)")
    p.add_argument("--engine-requests", type=int, default=20, help="requests per path and concurrency (engine)")
    p.add_argument("--engine-tokens", type=int, default=32)
    p.add_argument("--engine-concurrency", default="1,8")
    p.add_argument("--no-nginx", action="store_true")
    p.add_argument("--max-noise", type=float, default=0.10,
                   help="a block during which other processes used more than this share of a core is run "
                   "again (default %(default)s)")
    p.add_argument("--retries", type=int, default=3, help="re-runs of a noisy block (default %(default)s)")
    p.add_argument("--wait-quiet", type=float, default=120, metavar="SECONDS",
                   help="before each block, wait while other processes are busy, up to this many seconds "
                   "in all (default %(default)s)")
    p.add_argument("--engine-retries", type=int, default=1,
                   help="re-runs of a noisy engine block (default %(default)s)")
    p.add_argument("--profile", metavar="DIR", help="py-spy the gateway in one extra 200-stream block")
    p.add_argument("--json", metavar="PATH", help="write the numbers as JSON")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.warm, args.window, args.skip_engine = 1, 1.0, 2.0, True
    args.engine_concurrency = [int(x) for x in args.engine_concurrency.split(",")]
    scenarios = SCENARIOS
    if args.scenarios:
        wanted = args.scenarios.split(",")
        scenarios = [s for s in SCENARIOS if s.name in wanted]
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores (proxy on core 0, upstream and client on core 1)", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    os.sched_setaffinity(0, {LOAD_CORE})
    paths = ["direct", "gateway"] + ([] if args.no_nginx else ["nginx"])
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                                           "python": sys.version.split()[0], "aiohttp": aiohttp.__version__},
                               "settings": {"rounds": args.rounds, "warm_s": args.warm, "window_s": args.window,
                                            "pace_ms": PACE_MS, "proxy_core": PROXY_CORE, "load_core": LOAD_CORE}}
    args.quiet = Quiet(args.max_noise, args.wait_quiet, log)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # run the clean-ups
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="enova-bench-gw-") as tmpname:
        tmp = Path(tmpname)
        if not args.engine_only:
            up_port, gw_port, ng_port = free_port(), free_port(), free_port()
            upstream = gateway = nginx = None
            try:
                upstream = start_upstream(tmp, up_port)
                write_state(tmp / "state", upstream, up_port)
                gateway = start_gateway(tmp, tmp / "state", gw_port)
                targets = [Target("direct", f"http://127.0.0.1:{up_port}", "bench", Watched(None)),
                           Target("gateway", f"http://127.0.0.1:{gw_port}", "bench", Watched(gateway.pid))]
                if not args.no_nginx:
                    nginx = start_nginx(tmp, ng_port, f"127.0.0.1:{up_port}", PROXY_CORE)
                    targets.append(Target("nginx", f"http://127.0.0.1:{ng_port}", "bench", Watched(nginx.pid)))
                log(f"upstream :{up_port} (core {LOAD_CORE}), gateway :{gw_port} (core {PROXY_CORE})"
                    + ("" if args.no_nginx else f", nginx :{ng_port} (core {PROXY_CORE})"))
                results["paced"] = run_async(paced_part(targets, scenarios, args, log))
            finally:
                for proc in (gateway, nginx, upstream):
                    stop(proc)
                if gateway is not None and gateway.returncode not in (0, None):
                    log(f"gateway exited {gateway.returncode}; log: {(tmp / 'gateway.log').read_text()[-2000:]}")
        if not args.skip_engine:
            results["engine"] = engine_part(tmp, args, log)
    results["machine"]["wall_s"] = round(time.monotonic() - started, 1)
    results["machine"]["waited_for_quiet_s"] = round(args.quiet.waited, 1)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    print(report(results, paths))
    print()
    for line in goals(results):
        print(f"- {line}")
    print(f"\nWall time {results['machine']['wall_s']} s; load average at start "
          f"{results['machine']['loadavg_at_start'][0]:.2f}, at end {results['machine']['loadavg_at_end'][0]:.2f}.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
