"""Sending a schedule of requests on time and measuring each answer. Called by `session.execute`
(through `run_parallel`) and by the benchmarks.

Open loop by default: request k leaves at start + k.at on the monotonic clock, an absolute
deadline, whether or not earlier answers have come back. One dispatcher sleeps until the next
deadline (never a relative sleep between requests, which would add each send's own cost to the
gaps and under-deliver), then starts a task for every request that is due and goes back to
sleep without awaiting any answer. `concurrency` caps the requests in flight (closed loop): the
dispatcher waits for a free slot, so a request's `sent` falls behind its `scheduled` time, which
its lateness shows.

Per request it records the actual send time, the time to the first event carrying generated text
(TTFT), every gap between later text events (ITL), the time to the last byte (E2E), the server's
token counts from its usage report, the HTTP status and error text (see `stream`). A failed
request is kept with its error; none is ever dropped.

Stopping (the `stop` event, or Ctrl-C when run on the main thread): sending stops at once, the
requests in flight get `grace` seconds to finish (a second Ctrl-C, or `abort`, ends the wait),
the rest are cancelled and recorded with CANCELLED; requests never sent are recorded with
NOT_SENT and `sent=None`.

`run_parallel` spreads one schedule over worker processes on this host, all starting at one
wall-clock instant (so their union is the original schedule), and keeps one shard of it when
several hosts share a run. Blocks until the run ends; raises UsageError for bad worker/shard
options and nothing else (a request's failure is data, not an exception).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from enova.errors import UsageError

from .model import Request, RequestResult
from .stream import NDJSON, SSE, StreamParser, parse_body

NOT_SENT = "not sent: run stopped"
CANCELLED = "cancelled: run stopped"
PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions", "generate": "/generate"}
DEPLOYMENT_HEADER = "X-Enova-Deployment"
POLL = 0.02                 # seconds between looks at the stop event while a run is going
PROGRESS_EVERY = 0.5        # seconds between progress reports
ERROR_BODY = 300            # characters of an error answer's body kept in `error`


@dataclass(frozen=True)
class Progress:
    """A run's figures so far (one process's, or summed over the workers)."""

    total: int              # requests in the schedule
    sent: int
    finished: int           # answered, failed or cancelled
    ok: int
    failed: int
    output_tokens: int      # from the usage reports of the answers so far
    elapsed: float          # seconds since the run's start (negative before it)
    stopping: bool = False

    @property
    def in_flight(self) -> int:
        return self.sent - self.finished

    def __add__(self, other: "Progress") -> "Progress":
        return Progress(self.total + other.total, self.sent + other.sent, self.finished + other.finished,
                        self.ok + other.ok, self.failed + other.failed, self.output_tokens + other.output_tokens,
                        max(self.elapsed, other.elapsed), self.stopping or other.stopping)


def stopped(results: list[RequestResult]) -> bool:
    """Whether a run's results show it was stopped before its schedule ended."""
    return any(r.error in (NOT_SENT, CANCELLED) for r in results)


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (each request in flight holds a
    socket). Returns the soft limit now in force. Idempotent; never raises."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft == resource.RLIM_INFINITY or soft >= wanted:
            return soft
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
        except (ValueError, OSError):
            return soft
    except (ImportError, OSError, ValueError):
        return -1


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout: no complete answer in time"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class _Prepared:
    at: float
    url: str
    body: bytes
    kind: str               # SSE | NDJSON


def _prepare(requests: list[Request], target: str, stream: bool) -> list[_Prepared]:
    """Each request's URL and encoded body, ready before the clock starts."""
    base = target.rstrip("/")
    out = []
    for r in requests:
        if r.api not in PATHS:
            raise UsageError(f"request {r.index}: unknown api {r.api!r} (completions, chat or generate)")
        body = dict(r.body)
        if stream:
            body["stream"] = True
            if r.api != "generate":
                body["stream_options"] = {"include_usage": True}
        out.append(_Prepared(r.at, base + PATHS[r.api], json.dumps(body).encode(),
                             NDJSON if r.api == "generate" else SSE))
    return out


class _Run:
    """One process's share of a run, on one event loop."""

    def __init__(self, requests: list[Request], *, target: str, headers: dict[str, str], stream: bool,
                 concurrency: int | None, stop: Any, abort: Any, progress: Callable[[Progress], None] | None,
                 worker: int, clock: Callable[[], float], grace: float, timeout: float | None):
        order = sorted(requests, key=lambda r: (r.at, r.index))
        self.prepared = _prepare(order, target, stream)
        self.results = [RequestResult(index=r.index, scheduled=r.at, worker=worker) for r in order]
        self.headers = headers
        self.stream = stream
        self.concurrency = concurrency
        self.stop = stop
        self.abort = abort
        self.progress = progress
        self.clock = clock
        self.grace = grace
        self.timeout = timeout
        self.start = 0.0
        self.tasks: set[asyncio.Task] = set()
        self.sem: asyncio.Semaphore | None = None
        self.session: aiohttp.ClientSession | None = None
        self.sent = self.finished = self.ok = self.failed = self.output_tokens = 0
        self.stopping = False

    def snapshot(self) -> Progress:
        return Progress(len(self.results), self.sent, self.finished, self.ok, self.failed, self.output_tokens,
                        self.clock() - self.start, self.stopping)

    async def main(self, start_at: float | None) -> list[RequestResult]:
        if self.concurrency is not None:
            self.sem = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, enable_cleanup_closed=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout, sock_connect=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                         headers=self.headers) as self.session:
            now = self.clock()
            self.start = now if start_at is None else now + (start_at - time.time())
            dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
            stopped_at: float | None = None
            next_report = self.clock()
            while True:
                if stopped_at is None and self.stop.is_set():
                    stopped_at = self.clock()
                    self.stopping = True
                    dispatcher.cancel()
                if stopped_at is not None and (self.abort.is_set() or self.clock() - stopped_at >= self.grace):
                    break
                if dispatcher.done() and not self.tasks:
                    break
                if self.progress is not None and self.clock() >= next_report:
                    self.progress(self.snapshot())
                    next_report = self.clock() + PROGRESS_EVERY
                await asyncio.sleep(POLL)
            left = list(self.tasks)
            for task in left:
                task.cancel()
            await asyncio.gather(dispatcher, *left, return_exceptions=True)
        for res in self.results:
            if res.sent is None and res.error is None:
                res.error = NOT_SENT
        if self.progress is not None:
            self.progress(self.snapshot())
        return self.results

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        clock, start, sem = self.clock, self.start, self.sem
        for prepared, res in zip(self.prepared, self.results):
            deadline = start + prepared.at
            now = clock()
            while now < deadline:
                await asyncio.sleep(deadline - now)
                now = clock()
            if sem is not None:
                await sem.acquire()
            task = loop.create_task(self._send(prepared, res))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send(self, prepared: _Prepared, res: RequestResult) -> None:
        try:
            await self._exchange(prepared, res)
        except asyncio.CancelledError:
            res.error = CANCELLED
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            res.error = _describe(exc)
        except Exception as exc:     # noqa: BLE001 - recorded with the request, never lost
            res.error = _describe(exc)
        finally:
            if self.sem is not None:
                self.sem.release()
            res.ok = res.ok and res.error is None
            self.finished += 1
            if res.ok:
                self.ok += 1
                self.output_tokens += res.output_tokens or 0
            else:
                self.failed += 1

    async def _exchange(self, prepared: _Prepared, res: RequestResult) -> None:
        clock = self.clock
        assert self.session is not None
        sent = clock()
        res.sent = sent - self.start
        self.sent += 1
        async with self.session.post(prepared.url, data=prepared.body) as resp:
            res.status = resp.status
            if resp.status != 200:
                text = (await resp.content.read(4 * ERROR_BODY)).decode(errors="replace").strip()
                res.e2e = clock() - sent
                res.error = f"HTTP {resp.status}: {text[:ERROR_BODY]}" if text else f"HTTP {resp.status}"
                return
            if not self.stream:
                data = await resp.read()
                res.e2e = res.ttft = clock() - sent
                res.prompt_tokens, res.output_tokens, res.error = parse_body(data)
                res.ok = res.error is None
                return
            parser = StreamParser(prepared.kind)
            last = sent
            try:
                try:
                    async for chunk in resp.content.iter_any():
                        last = clock()
                        parser.feed(chunk, last)
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionResetError) as exc:
                    parser.close(last)          # the connection broke mid-answer: say how far it got
                    problem = parser.problem()
                    res.error = f"{problem} ({type(exc).__name__})" if problem else _describe(exc)
                    return
                parser.close(last)
                res.error = parser.problem()
                res.ok = res.error is None
            finally:        # a cancelled stream keeps what was measured before the cancel
                times = parser.token_times
                if times:
                    res.ttft = times[0] - sent
                    res.itl = [b - a for a, b in zip(times, times[1:])]
                if parser.closed:
                    res.e2e = last - sent
                res.prompt_tokens, res.output_tokens = parser.tokens()


def _headers(token: str | None, deployment: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if deployment:
        headers[DEPLOYMENT_HEADER] = deployment
    return headers


def run_requests(requests: list[Request], *, target: str, token: str | None = None, deployment: str | None = None,
                 stream: bool = True, concurrency: int | None = None, stop: threading.Event | None = None,
                 progress: Callable[[Progress], None] | None = None, worker: int = 0,
                 clock: Callable[[], float] = time.monotonic, start_at: float | None = None, grace: float = 5.0,
                 timeout: float | None = None, abort: threading.Event | None = None,
                 handle_sigint: bool = True) -> list[RequestResult]:
    """Send `requests` to `target` (a base URL) on their schedule; one result per request, sorted
    by index. Blocks until every request is answered, failed or (after a stop) cancelled.

    `start_at`: the wall-clock instant (time.time()) of the schedule's zero, so that processes
    share one start; default: now. `timeout`: seconds a request may take in all (default none).
    `stop`/`abort`: any object with `is_set()` (threading or multiprocessing events), looked at
    every 20 ms. On the main thread with `handle_sigint`, Ctrl-C sets `stop` and a second one
    `abort`; the previous SIGINT handler is restored afterwards. `progress` is called on the
    sending thread every half second and once at the end."""
    if concurrency is not None and concurrency < 1:
        raise UsageError(f"concurrency must be at least 1 (got {concurrency})")
    stop = stop if stop is not None else threading.Event()
    abort = abort if abort is not None else threading.Event()
    run = _Run(requests, target=target, headers=_headers(token, deployment), stream=stream,
               concurrency=concurrency, stop=stop, abort=abort, progress=progress, worker=worker, clock=clock,
               grace=grace, timeout=timeout)
    raise_open_files_limit()
    loop = _new_loop()
    with _interrupts(stop.set, abort.set, enabled=handle_sigint):
        try:
            results = loop.run_until_complete(run.main(start_at))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
    return sorted(results, key=lambda r: r.index)


@contextmanager
def _interrupts(first: Callable[[], None], second: Callable[[], None], enabled: bool = True) -> Iterator[None]:
    """While inside: the first Ctrl-C calls `first`, later ones `second`; never a KeyboardInterrupt
    (which would lose the results gathered so far). A handler the caller installed (say, one that
    prints "stopping") is still called on the first, and ours put back after it. Main thread only."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    count = 0

    def handler(signum, frame):
        nonlocal count
        count += 1
        if count > 1:
            second()
            return
        first()
        if callable(previous) and previous is not signal.default_int_handler:
            try:
                previous(signum, frame)
            except KeyboardInterrupt:
                pass
            finally:
                signal.signal(signal.SIGINT, handler)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ---- several processes, and shards ------------------------------------------------------------

READY_TIMEOUT = 60.0        # seconds a worker process may take to start
START_MARGIN = 0.2          # seconds between the last worker being ready and the common start


def _worker_main(worker: int, requests: list[Request], kwargs: dict[str, Any], out: Any, go: Any, start: Any,
                 stop: Any, abort: Any, want_progress: bool) -> None:
    """A worker process: say ready, wait for the common start instant, run, send the results back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # the parent hears Ctrl-C and sets `stop`
    out.put(("ready", worker, None))
    while not go.wait(0.1):
        if os.getppid() == 1:
            return
    try:
        report = (lambda p: out.put(("progress", worker, p))) if want_progress else None
        results = run_requests(requests, start_at=start.value, stop=stop, abort=abort, worker=worker,
                               progress=report, handle_sigint=False, **kwargs)
        out.put(("result", worker, [r.to_dict() for r in results]))
    except BaseException as exc:     # noqa: BLE001 - the parent records the worker's requests as failed
        out.put(("failed", worker, _describe(exc)))


def _lost(requests: list[Request], worker: int, why: str) -> list[RequestResult]:
    return [RequestResult(index=r.index, scheduled=r.at, worker=worker, error=f"not measured: worker {worker} {why}")
            for r in requests]


def run_parallel(requests: list[Request], *, workers: int = 1, shard: tuple[int, int] = (0, 1),
                 start_at: float | None = None, stop: threading.Event | None = None,
                 progress: Callable[[Progress], None] | None = None, **kwargs: Any) -> list[RequestResult]:
    """Run this host's share of a schedule over `workers` processes; results sorted by index.

    `shard` (i, N): keep the requests whose index % N == i (N hosts run one profile together; see
    `merge`). The kept requests go round-robin to the workers (the k-th to worker k % workers),
    which all start at `start_at` (wall clock; default: shortly after every worker is ready), so
    together they send the original schedule. `kwargs` are run_requests' (picklable); a
    `concurrency` cap is split between the workers (each keeps its own slots, so the cap holds in
    total but a free slot in one worker does not serve another's queue). Ctrl-C (on
    the main thread) or `stop` stops every worker; what they measured is still returned, and a
    worker that died has its requests recorded as failed, never dropped. Raises UsageError."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {index}/{count}: needs 0 <= i < N (e.g. 0/2 and 1/2 for two hosts)")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1 (got {workers})")
    kept = [r for r in requests if r.index % count == index]
    workers = max(1, min(workers, len(kept), kwargs.get("concurrency") or workers))
    if workers == 1:
        return run_requests(kept, start_at=start_at, stop=stop, progress=progress, **kwargs)
    return _run_processes(kept, workers, start_at, stop if stop is not None else threading.Event(), progress,
                          kwargs)


def _run_processes(kept: list[Request], workers: int, start_at: float | None, stop: Any,
                   progress: Callable[[Progress], None] | None, kwargs: dict[str, Any]) -> list[RequestResult]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    go, mp_stop, mp_abort = ctx.Event(), ctx.Event(), ctx.Event()
    start = ctx.Value("d", 0.0)
    parts = [kept[k::workers] for k in range(workers)]
    kwargs = {k: v for k, v in kwargs.items() if k not in ("abort", "worker")}
    handle_sigint = kwargs.pop("handle_sigint", True)
    cap = kwargs.pop("concurrency", None)
    caps = [None if cap is None else cap // workers + (w < cap % workers) for w in range(workers)]
    procs = [ctx.Process(target=_worker_main, name=f"enova-inject-{w}", daemon=True,
                         args=(w, parts[w], {**kwargs, "concurrency": caps[w]}, out, go, start, mp_stop, mp_abort,
                               progress is not None))
             for w in range(workers)]

    def first() -> None:
        stop.set()
        mp_stop.set()

    results: dict[int, list[RequestResult]] = {}
    snapshots: dict[int, Progress] = {}
    with _interrupts(first, mp_abort.set, enabled=handle_sigint):
        _collect(procs, parts, out, go, start, start_at, stop, mp_stop, progress, results, snapshots)
    merged = [r for part in results.values() for r in part]
    return sorted(merged, key=lambda r: r.index)


def _collect(procs: list[Any], parts: list[list[Request]], out: Any, go: Any, start: Any, start_at: float | None,
             stop: Any, mp_stop: Any, progress: Callable[[Progress], None] | None,
             results: dict[int, list[RequestResult]], snapshots: dict[int, Progress]) -> None:
    """Start the workers, give them one start instant, gather their progress and results."""
    workers = len(procs)
    try:
        for p in procs:
            p.start()
        ready: set[int] = set()
        began = time.monotonic()
        while len(ready) < workers and time.monotonic() - began < READY_TIMEOUT and not stop.is_set():
            try:
                kind, w, payload = out.get(timeout=0.1)
            except queue.Empty:
                if any(p.exitcode is not None for p in procs):
                    break
                continue
            if kind == "ready":
                ready.add(w)
        if stop.is_set() or len(ready) < workers:
            mp_stop.set()                  # workers that did start send nothing and report every request unsent
        start.value = start_at if start_at is not None else time.time() + START_MARGIN
        go.set()
        lost_since: dict[int, float] = {}
        while len(results) < workers:
            if stop.is_set():
                mp_stop.set()
            try:
                kind, w, payload = out.get(timeout=0.1)
            except queue.Empty:
                now = time.monotonic()
                for w, p in enumerate(procs):
                    if w not in results and p.exitcode is not None:
                        # its last message may still be in the pipe: give it a moment before giving up
                        if now - lost_since.setdefault(w, now) > 2.0:
                            results[w] = _lost(parts[w], w, f"exited with code {p.exitcode} before reporting")
                continue
            if kind == "progress" and progress is not None:
                snapshots[w] = payload
                progress(sum(snapshots.values(), Progress(0, 0, 0, 0, 0, 0, 0.0)))
            elif kind == "result":
                results[w] = [RequestResult.from_dict(d) for d in payload]
            elif kind == "failed":
                results[w] = _lost(parts[w], w, f"failed: {payload}")
    finally:
        if len(results) < workers:
            mp_stop.set()
        go.set()
        for p in procs:
            if p.pid is None:              # never started
                continue
            p.join(timeout=5.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=1.0)
        out.close()
