"""`enova pilot run` as a user runs it, with the real CPU engine and the small builtin model: every
printed URL answers, a chat completion and the seed's /generate go through the gateway, `enova
status` shows the deployment, the --hf_proxy reaches the reconciler and the engine, SIGINT leaves
no process (nor container), and a second run reuses the specs folder and stops on `enova pilot
stop`. One engine start (the second run is stopped while it prepares)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.pilot.test_proxy import RecordingProxy

from .conftest import ENOVA

pytestmark = [pytest.mark.slow, pytest.mark.one_core]

GATEWAY, APP, WEBUI, PROMETHEUS, METRICS = 19292, 19560, 19561, 19793, 19562
NAME = "smollm2-135m-instruct"
URL_LINE = re.compile(r"^  (\S.*?)\s{2,}(http://\S+)$")


def pilot_argv(proxy: str) -> list[str]:
    return [*ENOVA, "pilot", "run", "--model", "builtin:smollm2-135m-instruct", "--specs", "enova-pilot",
            "--port", str(GATEWAY), "--app-port", str(APP), "--webui-port", str(WEBUI),
            "--prometheus-port", str(PROMETHEUS), "--metrics-port", str(METRICS), "--hf_proxy", proxy,
            "--max-num-seqs", "4"]


def ours(state: Path) -> list[psutil.Process]:
    """Every process running with this test's state directory in its environment (pilot passes
    it to everything it starts, and they to theirs)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("ENOVA_STATE_DIR") == str(state):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for p in found if p.status() != psutil.STATUS_ZOMBIE]


def enova_containers() -> list:
    try:
        import docker
        client = docker.from_env(timeout=5)
        return client.containers.list(all=True, filters={"label": f"io.enova.deployment={NAME}"})
    except Exception:  # no Docker engine here: nothing can run in one
        return []


class Output:
    """A child's stdout lines as they come (a reader thread, so the test never blocks on a pipe)."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, proc: subprocess.Popen, timeout: float, err: Path) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert proc.poll() is None, f"pilot exited {proc.returncode}:\n" + "\n".join(self.lines) + err.read_text()
            assert time.monotonic() < deadline, f"no {text!r} within {timeout:.0f} s:\n" + err.read_text()
            time.sleep(0.2)


def test_pilot_serves_everything_it_prints_stops_cleanly_and_reuses_its_specs(cli, tmp_path):
    env = {**cli.env, "ENOVA_PORT_RANGE": "19600-19619"}
    proxy = RecordingProxy()
    err = tmp_path / "pilot.err"
    started = time.monotonic()
    with open(err, "w") as errfile:
        proc = subprocess.Popen(pilot_argv(proxy.url), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=errfile, text=True)
    out = Output(proc)
    try:
        out.wait_for("Events follow:", proc, 300, err)
        ready_after = time.monotonic() - started
        urls = {m.group(1): m.group(2) for m in map(URL_LINE.match, out.lines) if m}
        assert set(urls) >= {"LLM service", "app server", "web UI", "reconciler metrics", "Prometheus"}, out.lines
        assert urls["LLM service"] == f"http://127.0.0.1:{GATEWAY}"
        assert urls["web UI"] == f"http://127.0.0.1:{WEBUI}"
        assert urls["app server"] == f"http://127.0.0.1:{APP}/instance"
        assert urls["Prometheus"] == f"http://127.0.0.1:{PROMETHEUS}"
        for label, url in urls.items():
            probe = url + "/health" if label == "LLM service" else url
            resp = httpx.get(probe, trust_env=False, timeout=10, follow_redirects=True)
            assert resp.status_code == 200, (label, probe, resp.status_code, resp.text[:200])

        gateway = urls["LLM service"]
        chat = httpx.post(f"{gateway}/v1/chat/completions", trust_env=False, timeout=120, json={
            "model": NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"]
        generated = httpx.post(f"{gateway}/generate", trust_env=False, timeout=120, json={
            "prompt": "San Francisco is a", "max_tokens": 16, "temperature": 0.9, "top_p": 0.9})
        assert generated.status_code == 200 and generated.json()["text"][0].startswith("San Francisco is a")

        [dep] = [d for d in cli.status()["deployments"] if d["name"] == NAME]
        assert [r["health"] for r in dep["replica_details"]] == ["healthy"]

        record = json.loads((cli.state / "pilot" / "pilot.json").read_text())
        assert record["specs"] == str(tmp_path / "enova-pilot") and record["deployments"] == [NAME]
        engine = psutil.Process(dep["replica_details"][0]["pid"])
        for proc_env in (psutil.Process(record["processes"]["reconciler"]["pid"]).environ(), engine.environ()):
            assert proc_env["HTTPS_PROXY"] == proc_env["HTTP_PROXY"] == proxy.url
            assert "127.0.0.1" in proc_env["NO_PROXY"].split(",")
        assert proxy.lines == []  # nothing of enova's own went through it (the builtin model is local)
        assert len(ours(cli.state)) >= 6, [p.cmdline()[:4] for p in ours(cli.state)]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
    assert proc.returncode == 0, err.read_text()
    log = err.read_text()
    assert "stopped in" in log and "deleted smollm2-135m-instruct: 1 replica(s) stopped" in log
    gone, alive = psutil.wait_procs(ours(cli.state), timeout=15)
    assert not alive, [p.cmdline()[:4] for p in alive]
    assert enova_containers() == []
    assert not (cli.state / "pilot" / "pilot.json").exists()
    assert cli.status()["deployments"] == []
    print(f"pilot: everything up {ready_after:.1f} s after the command")

    specs = tmp_path / "enova-pilot"
    before = {p.name: p.read_bytes() for p in specs.iterdir()}
    err2 = tmp_path / "pilot2.err"
    with open(err2, "w") as errfile:
        again = subprocess.Popen(pilot_argv(proxy.url), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=errfile, text=True)
    Output(again)
    try:
        deadline = time.monotonic() + 60
        while "started the web UI" not in err2.read_text():
            assert again.poll() is None, err2.read_text()
            assert time.monotonic() < deadline, err2.read_text()
            time.sleep(0.2)
        assert f"reusing the specs in {specs} as they are" in err2.read_text()
        stopped = cli("pilot", "stop", timeout=200)
        assert stopped.code == 0 and f"pilot (pid {again.pid}) stopped" in stopped.out, stopped
    finally:
        if again.poll() is None:
            again.send_signal(signal.SIGINT)
        again.wait(timeout=180)
    assert again.returncode == 0, err2.read_text()
    assert {p.name: p.read_bytes() for p in specs.iterdir()} == before
    _, alive = psutil.wait_procs(ours(cli.state), timeout=15)
    assert not alive, [p.cmdline()[:4] for p in alive]
    proxy.close()
