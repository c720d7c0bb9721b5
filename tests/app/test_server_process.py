"""`enova app run` as a user runs it (a subprocess on a real port, 19510-19519): the URL printed,
the token made 0600 once and printed once, `enova app token` showing it again, reads open and
mutations refused over real HTTP, the event stream live, a reload reaching a real `enova reconcile`,
a taken port or an unguarded non-loopback bind refused with exit 2, SIGTERM exiting cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from enova.reconcile.events import EventLog

ROOT = Path(__file__).resolve().parents[2]


def enova(state: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enova.cli", "--state-dir", str(state), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, **kwargs)


class AppServer:
    """`enova app run` in the background; `lines` holds its stdout as it comes."""

    def __init__(self, state: Path, port: int, *args: str):
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "enova.cli", "--state-dir", str(state), "app", "run",
                                      "--port", str(port), *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while not any(line.startswith("app server:") for line in self.lines):
            if self.proc.poll() is not None:
                raise AssertionError(f"enova app run exited {self.proc.returncode}: {self.proc.stderr.read()}")
            assert time.monotonic() < deadline, "enova app run did not start in 60 s"
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


def test_first_start_makes_the_token_0600_prints_it_once_and_serves_the_api(state):
    server = AppServer(state, 19510)
    try:
        assert server.lines[0] == "app server: http://127.0.0.1:19510/instance"
        token_lines = [line for line in server.lines if "token" in line and "shown once" in line]
        assert len(token_lines) == 1
        token = token_lines[0].rsplit(" ", 1)[1]
        path = state / "app" / "token"
        assert path.read_text().strip() == token
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert enova(state, "app", "token").stdout.strip() == token
        listed = httpx.get(f"{server.url}/api/v1/deployments", timeout=10)
        assert listed.status_code == 200 and listed.json()["deployments"] == []
        assert listed.headers["x-content-type-options"] == "nosniff"
        refused = httpx.post(f"{server.url}/api/v1/reload", timeout=10)
        assert refused.status_code == 401
        wrong = httpx.post(f"{server.url}/api/v1/reload", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 403
        right = httpx.post(f"{server.url}/api/v1/reload", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert right.status_code == 409 and "no reconciler" in right.json()["detail"]
        assert httpx.get(f"{server.url}/api/v1/deployments", headers={"Host": "attacker.example"},
                         timeout=10).status_code == 400
    finally:
        assert server.stop() == 0
    second = AppServer(state, 19511)
    try:
        assert not any("token" in line for line in second.lines)  # printed once, on creation only
        assert (state / "app" / "token").read_text().strip() == token
    finally:
        assert second.stop() == 0


def test_the_event_stream_delivers_events_as_they_are_written(state):
    server = AppServer(state, 19512)
    log = EventLog(state / "events.jsonl")
    got: list[dict] = []
    try:
        with httpx.stream("GET", f"{server.url}/api/v1/events/stream", params={"deployment": "alpha"},
                          timeout=20) as answer:
            assert answer.status_code == 200
            lines = answer.iter_lines()
            assert next(lines) == ": stream open"
            log.record("Normal", "Scaled", "deployment/beta", "not this one")
            log.record("Normal", "Scaled", "deployment/alpha", "1 -> 2 replicas")
            for line in lines:
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    break
    finally:
        server.stop()
    assert [e["message"] for e in got] == ["1 -> 2 replicas"]


def test_reload_sends_the_running_reconciler_sighup(state, tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "gateway.yaml").write_text("apiVersion: enova/v1\nkind: Gateway\nmetadata: {name: g}\n"
                                        "spec: {enabled: false}\n")
    reconciler = subprocess.Popen([sys.executable, "-m", "enova.cli", "--state-dir", str(state), "reconcile",
                                   str(specs), "--metrics-port", "0", "--interval", "1h"], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        log = EventLog(state / "events.jsonl")
        deadline = time.monotonic() + 60
        while not (state / "reconciler" / "status.json").exists():
            assert reconciler.poll() is None and time.monotonic() < deadline, "the reconciler did not start"
            time.sleep(0.1)
        server = AppServer(state, 19513)
        token = (state / "app" / "token").read_text().strip()
        answer = httpx.post(f"{server.url}/api/v1/reload", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 202 and answer.json()["pid"] == reconciler.pid
        while not any(e.reason == "Reloaded" for e in log.read()):
            assert time.monotonic() < deadline, "the reconciler never reloaded"
            time.sleep(0.1)
        plan = httpx.get(f"{server.url}/api/v1/plan", timeout=10)  # no specs given: the reconciler's
        assert plan.status_code == 200 and plan.json()["specs"] == str(specs)
    finally:
        if server is not None:
            server.stop()
        reconciler.send_signal(signal.SIGTERM)
        reconciler.wait(timeout=30)


def test_a_taken_port_is_exit_2_naming_it(state):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 19514))
        taken.listen(1)
        result = enova(state, "app", "run", "--port", "19514")
    assert result.returncode == 2
    assert "127.0.0.1:19514" in result.stderr and "Traceback" not in result.stderr


def test_binding_beyond_loopback_needs_a_private_token_file(state, tmp_path):
    refused = enova(state, "app", "run", "--host", "0.0.0.0", "--port", "19515")
    assert refused.returncode == 2 and "--token-file" in refused.stderr
    assert not (state / "app" / "token").exists()
    shared = tmp_path / "shared-token"
    shared.write_text("tok\n")
    os.chmod(shared, 0o644)
    loose = enova(state, "app", "run", "--host", "0.0.0.0", "--port", "19515", "--token-file", str(shared))
    assert loose.returncode == 2 and "chmod 600" in loose.stderr


def test_beyond_loopback_with_a_token_file_every_read_needs_the_token(state, tmp_path):
    token_file = tmp_path / "app-token"
    server = AppServer(state, 19516, "--host", "0.0.0.0", "--token-file", str(token_file))
    try:
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert any(token in line for line in server.lines)
        assert httpx.get(f"{server.url}/api/v1/deployments", timeout=10).status_code == 401
        assert httpx.get(f"{server.url}/api/v1/deployments", headers={"Authorization": f"Bearer {token}"},
                         timeout=10).status_code == 200
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        assert server.stop() == 0
