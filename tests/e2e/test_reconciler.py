"""`enova reconcile` as a subprocess with the real CPU engine: it converges on a file edit,
restarts a killed replica, backs off a replica that crashes at start, keeps what runs when a spec
is broken, exits promptly on SIGTERM leaving replicas serving, adopts them on restart, and speaks
the sd_notify protocol (READY, STATUS, WATCHDOG, STOPPING) to a test NOTIFY_SOCKET."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from .conftest import ENOVA, complete, process_tree, write_spec

pytestmark = pytest.mark.slow


class NotifySocket:
    """A real AF_UNIX datagram socket collecting what the reconciler sends, in order."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536).decode()
            except OSError:
                continue
            for line in data.strip().splitlines():
                self.messages.append((time.monotonic(), line))

    def keys(self) -> list[str]:
        return [m.split("=", 1)[0] for _, m in self.messages]

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def events(cli, reason: str | None = None, subject: str | None = None) -> list[dict]:
    out = cli("events", "-n", "1000", "-o", "json", check=0).out
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in rows if (reason is None or e["reason"] == reason) and (subject is None or e["subject"] == subject)]


def healthy_replicas(cli, specs, name="smollm2"):
    # without a specs argument: status follows the running reconciler's specs, even broken ones
    return [r for r in cli.replicas(name) if r["health"] == "healthy"]


def reconciler_subject(cli, name):
    status = cli.status()
    for dep in status["deployments"]:
        if dep["name"] == name:
            return dep.get("reconciler")
    return None


def start_reconciler(cli, specs, env_extra=None):
    env = {**cli.env, **(env_extra or {})}
    return subprocess.Popen([*ENOVA, "reconcile", str(specs), "--interval", "2s", "--unhealthy-after", "20s"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(cli.state.parent / "reconciler.log", "a"))


def test_the_reconciler_converges_heals_backs_off_survives_bad_edits_and_restarts_without_downtime(cli, tmp_path):
    specs = write_spec(tmp_path / "specs", replicas=1, max_num_seqs=4)
    write_spec(specs, name="crashy", extra_args=", not_a_vllm_flag: 1")
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = start_reconciler(cli, specs, {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"})
    try:
        # first pass: smollm2 serves, the gateway runs, READY=1 was sent after the first full pass
        wait_for(lambda: len(healthy_replicas(cli, specs)) == 1, 180, "the first replica")
        wait_for(lambda: "READY" in notify.keys(), 30, "READY=1")
        [first] = healthy_replicas(cli, specs)
        complete(first["port"])

        # a replica that crashes at start every time: CrashLoopBackOff with growing delays
        wait_for(lambda: len(events(cli, "CrashLoopBackOff", "deployment/crashy")) >= 2, 150, "a crash loop")
        # the delays the policy chose grow (2-3 s, 4-6 s, 8-12 s: jitter ranges never overlap), and
        # no retry starts before its delay has passed (the crash itself takes a variable ~10 s,
        # so the gaps between failures are not what to compare)
        history = events(cli, subject="deployment/crashy")
        failures = [e for e in history if e["reason"] in ("StartFailed", "CrashLoopBackOff")]
        delays = [float(re.search(r"next (?:attempt|restart) in ([\d.]+) s", e["message"]).group(1)) for e in failures]
        assert len(delays) >= 2 and all(b > a for a, b in zip(delays, delays[1:])), f"delays must grow: {delays}"
        starts = [e["time"] for e in history if e["reason"] in ("Created", "Scaled")]
        for failure, delay in zip(failures, delays):
            retries = [t for t in starts if t > failure["time"]]
            if retries:
                assert retries[0] - failure["time"] >= delay - 0.5, (failure, delay, retries[0])
        assert reconciler_subject(cli, "crashy")["reason"] == "CrashLoopBackOff"
        (specs / "crashy.yaml").unlink()

        # edit a spec file: replicas 1 -> 2; the first action follows the write within a second or two
        written = time.time()
        write_spec(specs, replicas=2, max_num_seqs=4)
        scaled = wait_for(lambda: [e for e in events(cli, "Scaled", "deployment/smollm2") if e["time"] >= written],
                          10, "a Scaled event")
        first_action = scaled[0]["time"] - written
        assert first_action < 3, f"first action {first_action:.2f} s after the write"
        wait_for(lambda: len(healthy_replicas(cli, specs)) == 2, 180, "two healthy replicas")

        # kill a replica by hand: it is restarted
        victim = healthy_replicas(cli, specs)[1]
        os.killpg(victim["pid"], signal.SIGKILL)
        wait_for(lambda: (len(healthy_replicas(cli, specs)) == 2
                          and victim["id"] not in [r["id"] for r in healthy_replicas(cli, specs)]), 180,
                 "the killed replica to be replaced")

        # invalid YAML over the spec: nothing stops; Stalled naming file and line; fixing it -> Ready
        running = sorted(r["pid"] for r in healthy_replicas(cli, specs))
        good = (specs / "smollm2.yaml").read_text()
        (specs / "smollm2.yaml").write_text(good.replace("replicas: 2", "replicas: [2"))
        stalled = wait_for(lambda: (reconciler_subject(cli, "smollm2") or {}).get("condition") == "Stalled"
                           and reconciler_subject(cli, "smollm2"), 15, "Stalled")
        assert "smollm2.yaml:" in stalled["message"]
        time.sleep(5)  # a few passes with the bad file
        assert sorted(r["pid"] for r in healthy_replicas(cli, specs)) == running
        (specs / "smollm2.yaml").write_text(good)
        wait_for(lambda: (reconciler_subject(cli, "smollm2") or {}).get("condition") == "Ready", 15, "Ready again")

        # SIGTERM: exits 0 promptly, replicas keep answering
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        stopped_in = time.monotonic() - began
        assert stopped_in < 10, f"took {stopped_in:.1f} s to stop"
        for r in healthy_replicas(cli, specs):
            complete(r["port"])
        keys = notify.keys()
        assert keys.index("READY") < keys.index("STATUS") or "STATUS" in keys[keys.index("READY"):]
        assert "WATCHDOG" in keys and keys[-1] == "STOPPING", keys[-8:]

        # start again: adopts them, no restart, no plan change
        before = {r["id"]: r["pid"] for r in healthy_replicas(cli, specs)}
        restarted = time.time()
        proc = start_reconciler(cli, specs)
        wait_for(lambda: (reconciler_subject(cli, "smollm2") or {}).get("condition") == "Ready", 60, "Ready after restart")
        time.sleep(5)
        assert {r["id"]: r["pid"] for r in healthy_replicas(cli, specs)} == before
        acted = [e for e in events(cli) if e["time"] >= restarted
                 and e["reason"] in ("Created", "Scaled", "Replaced", "Deleted")]
        assert not acted, acted

        # one controller at a time: apply is refused with the holder's pid
        run = cli("apply", str(specs))
        assert run.code != 0 and f"pid {proc.pid}" in run.err
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        notify.close()
    trees = [p for r in cli.replicas("smollm2") for p in process_tree(r["pid"])]
    cli("delete", "smollm2", check=0)
    psutil.wait_procs(trees, timeout=15)
