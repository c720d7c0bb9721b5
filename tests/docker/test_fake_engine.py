"""The fake engine as a local process: it keeps the promises the runtime contract suite relies on
(health after a delay, a model list, a log line per request, a prompt stop on SIGTERM, a crash with
a chosen code). Needs no Docker."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from .conftest import FAKE_ENGINE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def start_fake():
    procs = []

    def start(*extra: str) -> tuple[subprocess.Popen, str]:
        port = free_port()
        proc = subprocess.Popen([sys.executable, str(FAKE_ENGINE), "--host", "127.0.0.1", "--port", str(port),
                                 *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                httpx.get(url + "/v1/models", timeout=1, trust_env=False)
                return proc, url
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"the fake engine did not serve: {proc.communicate(timeout=5)}")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


def test_health_is_503_until_the_unhealthy_period_ends(start_fake):
    _, url = start_fake("--unhealthy-for", "1.5")
    assert httpx.get(url + "/health", trust_env=False).status_code == 503
    time.sleep(1.6)
    assert httpx.get(url + "/health", trust_env=False).status_code == 200


def test_models_lists_the_served_model(start_fake):
    _, url = start_fake("--model", "smollm2")
    body = httpx.get(url + "/v1/models", trust_env=False).json()
    assert [m["id"] for m in body["data"]] == ["smollm2"]


def test_sigterm_stops_it_promptly_with_code_0_and_every_request_was_logged(start_fake):
    proc, url = start_fake()
    for path in ("/health", "/v1/models", "/nothing"):
        httpx.get(url + path, trust_env=False)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert time.monotonic() - started < 1.0
    requests = [line for line in out.splitlines() if '"GET ' in line]
    assert [line.split('"GET ')[1].split()[0] for line in requests] == ["/v1/models", "/health", "/v1/models",
                                                                         "/nothing"]


def test_exit_after_ends_it_with_the_chosen_code(start_fake):
    proc, _ = start_fake("--exit-after", "1", "--exit-code", "7")
    proc.communicate(timeout=5)
    assert proc.returncode == 7
