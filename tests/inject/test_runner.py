"""The runner against a real HTTP upstream in its own process (tests/inject/upstream.py): the
schedule is kept, answers are measured, failures are recorded, stops lose no request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from enova.errors import UsageError
from enova.inject.merge import merge_runs
from enova.inject.model import Request, RunResult
from enova.inject.runner import CANCELLED, NOT_SENT, run_parallel, run_requests, stopped

from .upstream import Running

# Lateness within milliseconds and rates within 2%: run alone (scripts/test.sh), not beside another worker.
pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def upstream():
    with Running() as up:
        yield up


@pytest.fixture
def up(upstream):
    upstream.reset()
    return upstream


def constant(rate: float, count: int, api: str = "completions", max_tokens: int = 4, **fixture) -> list[Request]:
    """`count` requests at exactly `rate` per second."""
    body = {"model": "fixture", "max_tokens": max_tokens}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "hi"
    if fixture:
        body["fixture"] = fixture
    return [Request(index=i, at=i / rate, api=api, body={**body, "index": i}) for i in range(count)]


def lateness_ms(results) -> tuple[float, float]:
    late = np.array([r.lateness for r in results]) * 1000
    return float(np.percentile(late, 50)), float(np.percentile(late, 99))


def achieved_rate(results) -> float:
    """Requests sent per second over the span of the actual sends (the schedule's own rate is
    (n - 1) / (last scheduled - first scheduled))."""
    sent = sorted(r.sent for r in results if r.sent is not None)
    return (len(sent) - 1) / (sent[-1] - sent[0])


@pytest.mark.parametrize("rate, seconds", [(50, 4), (200, 3)])
def test_achieved_rate_is_within_2_percent_of_target(up, rate, seconds):
    requests = constant(rate, rate * seconds)

    results = run_requests(requests, target=up.url)

    achieved = achieved_rate(results)
    p50, p99 = lateness_ms(results)
    print(f"\n{rate}/s: achieved {achieved:.2f}/s ({achieved / rate:.4f} of target), lateness p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms")
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert abs(achieved / rate - 1) < 0.02
    assert p99 < 50
    arrivals = sorted(t for t, _ in up.stats()["arrivals"])
    assert abs((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) / rate - 1) < 0.02


def test_a_slow_upstream_does_not_delay_later_sends(up):
    requests = constant(20, 30, delay=1.0)

    began = time.monotonic()
    results = run_requests(requests, target=up.url)
    took = time.monotonic() - began

    assert all(r.ok for r in results)
    assert max(r.lateness for r in results) < 0.05
    assert min(r.ttft for r in results) >= 1.0
    assert up.stats()["max_in_flight"] >= 18          # about 20 answers were pending at once
    assert took < 1.45 + 1.0 + 0.5


def test_the_concurrency_cap_holds_on_the_server_side(up):
    requests = [Request(index=i, at=0.0, api="completions",
                        body={"model": "fixture", "prompt": "hi", "max_tokens": 2, "fixture": {"delay": 0.1}})
                for i in range(12)]

    results = run_requests(requests, target=up.url, concurrency=3)

    assert all(r.ok for r in results)
    assert up.stats()["max_in_flight"] == 3
    late = sorted(r.lateness for r in results)
    assert late[0] < 0.05 and late[-1] >= 0.3          # the last three waited for three rounds


@pytest.mark.parametrize("api", ["completions", "chat", "generate"])
def test_each_api_is_streamed_and_measured(up, api):
    requests = constant(100, 3, api=api, max_tokens=5, pace=0.01)

    results = run_requests(requests, target=up.url, token="s3cret", deployment="smol")

    for r in results:
        assert r.ok and r.status == 200 and r.error is None, r
        assert (r.prompt_tokens, r.output_tokens) == (7, 5)
        assert len(r.itl) == 4 and all(0.005 < gap < 0.05 for gap in r.itl)
        assert 0.005 < r.ttft < r.e2e
        assert r.e2e == pytest.approx(r.ttft + sum(r.itl), abs=0.005)
    headers = up.stats()["headers"]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Enova-Deployment"] == "smol"


def test_without_stream_ttft_is_the_whole_answer(up):
    results = run_requests(constant(100, 2, max_tokens=3, pace=0.02), target=up.url, stream=False)

    for r in results:
        assert r.ok and r.output_tokens == 3 and r.itl == []
        assert r.ttft == r.e2e >= 0.06


@pytest.mark.parametrize("status", [429, 500])
def test_an_http_error_is_recorded_with_its_status_and_text(up, status):
    results = run_requests(constant(100, 2, status=status), target=up.url)

    for r in results:
        assert not r.ok and r.status == status and r.sent is not None
        assert r.error.startswith(f"HTTP {status}: ") and f"fixture says {status}" in r.error


@pytest.mark.parametrize("fixture, problem", [
    ({"cut": 2}, "stream cut before [DONE] after 2 token events"),
    ({"error_event": True}, "replica went away (stream_broken)"),
    ({"no_usage": True}, "no usage report in the stream"),
])
def test_an_incomplete_stream_is_an_error(up, fixture, problem):
    [r] = run_requests(constant(1, 1, **fixture), target=up.url)

    assert not r.ok and r.status == 200
    assert problem in r.error


def test_an_unreachable_target_fails_every_request_and_drops_none():
    results = run_requests(constant(100, 5), target="http://127.0.0.1:9")

    assert [r.index for r in results] == list(range(5))
    assert all(not r.ok and r.sent is not None and "Connect" in r.error for r in results)


def test_a_stop_mid_run_returns_every_request_sent_ones_cancelled_unsent_ones_marked(up):
    requests = constant(20, 40, delay=1.0)               # 2 s of sends, each answer takes 1 s
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()

    began = time.monotonic()
    results = run_requests(requests, target=up.url, stop=stop, grace=0.2)
    took = time.monotonic() - began

    assert [r.index for r in results] == list(range(40))
    sent = [r for r in results if r.sent is not None]
    unsent = [r for r in results if r.sent is None]
    assert 8 <= len(sent) <= 13
    assert all(r.error == CANCELLED and not r.ok for r in sent)
    assert all(r.error == NOT_SENT for r in unsent)
    assert stopped(results)
    assert took < 0.5 + 0.2 + 0.3


def test_a_stop_lets_requests_in_flight_finish_within_the_grace(up):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()

    results = run_requests(constant(20, 40, delay=0.5), target=up.url, stop=stop, grace=2.0)

    sent = [r for r in results if r.sent is not None]
    assert sent and all(r.ok for r in sent)
    assert all(r.error == NOT_SENT for r in results if r.sent is None)


def test_a_stop_before_the_start_sends_nothing(up):
    stop = threading.Event()
    stop.set()

    results = run_requests(constant(10, 5), target=up.url, stop=stop)

    assert all(r.sent is None and r.error == NOT_SENT for r in results)
    assert up.stats()["arrivals"] == []


CTRL_C_SCRIPT = textwrap.dedent("""
    import json, sys
    from enova.inject.model import Request
    from enova.inject.runner import run_parallel
    url, workers = sys.argv[1], int(sys.argv[2])
    body = {"model": "fixture", "prompt": "hi", "max_tokens": 2, "fixture": {"delay": 0.3}}
    requests = [Request(index=i, at=i / 20, api="completions", body=body) for i in range(200)]
    print("go", flush=True)
    results = run_parallel(requests, target=url, workers=workers, grace=2.0)
    print(json.dumps([r.to_dict() for r in results]), flush=True)
""")


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_sending_and_still_returns_every_request(up, workers):
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, up.url, str(workers)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "go"
        time.sleep(1.5 + 0.5 * workers)                    # workers take a moment to spawn
        os.killpg(proc.pid, signal.SIGINT)                 # as a terminal does: the whole process group
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    results = json.loads(out)

    assert proc.returncode == 0
    assert [r["index"] for r in results] == list(range(200))
    sent = [r for r in results if r["sent"] is not None]
    assert 5 <= len(sent) < 100
    assert all(r["ok"] for r in sent)                      # 0.3 s answers finish within the 2 s grace
    assert all(r["error"] == NOT_SENT for r in results if r["sent"] is None)
    assert {r["worker"] for r in sent} == set(range(workers))


def test_two_workers_send_the_same_schedule_as_one(up):
    requests = constant(100, 150)

    results = run_parallel(requests, target=up.url, workers=2)

    assert [(r.index, r.scheduled) for r in results] == [(q.index, q.at) for q in requests]
    assert all(r.ok for r in results)
    assert [r.worker for r in results] == [i % 2 for i in range(150)]
    p50, p99 = lateness_ms(results)
    assert p99 < 50, (p50, p99)
    arrivals = sorted(t for t, _ in up.stats()["arrivals"])
    gaps = np.diff(arrivals)
    assert len(arrivals) == 150 and np.median(gaps) == pytest.approx(0.01, abs=0.002)


def test_a_concurrency_cap_holds_in_total_over_workers(up):
    requests = [Request(index=i, at=0.0, api="completions",
                        body={"model": "fixture", "prompt": "hi", "max_tokens": 2, "fixture": {"delay": 0.1}})
                for i in range(12)]

    results = run_parallel(requests, target=up.url, workers=2, concurrency=3)

    assert all(r.ok for r in results)
    assert up.stats()["max_in_flight"] == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_reports_end_with_every_request_counted(up, workers):
    seen = []

    run_parallel(constant(50, 20, max_tokens=3), target=up.url, workers=workers, progress=seen.append)

    last = seen[-1]
    assert (last.total, last.sent, last.finished, last.ok, last.failed, last.in_flight) == (20, 20, 20, 20, 0, 0)
    assert last.output_tokens == 60
    assert len(seen) >= 2


def run_of(results, shard: tuple[int, int], partial: bool = False) -> RunResult:
    return RunResult(profile={"target": "fixture"}, target="http://x", model="fixture", api="completions", seed=1,
                     started_at=time.time(), duration=1.0, requests=results, shard=shard, partial=partial)


def test_shards_0_of_2_and_1_of_2_merged_equal_the_whole(up):
    requests = constant(50, 40)
    start = time.time() + 0.3

    halves = [run_parallel(requests, target=up.url, workers=1, shard=(i, 2), start_at=start) for i in (0, 1)]

    assert {r.index % 2 for r in halves[0]} == {0} and {r.index % 2 for r in halves[1]} == {1}
    merged = merge_runs([run_of(halves[1], (1, 2)), run_of(halves[0], (0, 2))])
    assert [(r.index, r.scheduled) for r in merged.requests] == [(q.index, q.at) for q in requests]
    assert all(r.ok for r in merged.requests)
    assert merged.shard == (0, 1)


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "--workers must be at least 1"),
    ({"shard": (2, 2)}, "--shard 2/2"),
    ({"shard": (0, 0)}, "--shard 0/0"),
    ({"concurrency": 0}, "concurrency must be at least 1"),
])
def test_bad_worker_shard_and_concurrency_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        run_parallel(constant(10, 2), target="http://127.0.0.1:9", **options)


CALLER_HANDLER_SCRIPT = textwrap.dedent("""
    import json, signal, sys, threading
    from enova.inject.model import Request
    from enova.inject.runner import run_parallel
    url, workers = sys.argv[1], int(sys.argv[2])
    stop = threading.Event()
    def interrupt(*_):                     # what the CLI does: say so, and make a second Ctrl-C fatal
        print("stopping", flush=True)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGINT, interrupt)
    body = {"model": "fixture", "prompt": "hi", "max_tokens": 2, "fixture": {"delay": 30}}
    requests = [Request(index=i, at=i / 20, api="completions", body=body) for i in range(200)]
    print("go", flush=True)
    results = run_parallel(requests, target=url, workers=workers, stop=stop, grace=60)
    print(json.dumps([r.to_dict() for r in results]), flush=True)
""")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_ctrl_c_ends_the_grace_and_the_callers_handler_still_runs(up, workers):
    proc = subprocess.Popen([sys.executable, "-c", CALLER_HANDLER_SCRIPT, up.url, str(workers)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "go"
        time.sleep(1.5 + 0.5 * workers)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stdout.readline().strip() == "stopping"
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)                 # answers take 30 s and the grace is 60 s: not waited for
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    results = json.loads(out)

    assert proc.returncode == 0
    assert [r["index"] for r in results] == list(range(200))
    sent = [r for r in results if r["sent"] is not None]
    assert sent and all(r["error"] == CANCELLED for r in sent)
    assert all(r["error"] == NOT_SENT for r in results if r["sent"] is None)
