"""`enova reconcile` as a subprocess with the real CPU engine, one scenario per test.

Two scenarios start from nothing: a replica that crashes at every start backs off with growing
delays (on its own state directory), and a replica left starting by a stopped reconciler is
adopted by the next one (on the module's state directory, before the fleet exists; the replica it
leaves serving is the fleet's, so the fleet needs no engine start of its own). The others share
one state directory, one replica and one running reconciler (the `fleet` fixture), in this
order: the sd_notify
protocol (READY, STATUS, WATCHDOG, STOPPING), a broken spec that stalls without touching the
replicas, `enova apply` refused while the reconciler runs, SIGTERM leaving replicas serving, a
restart adopting them, a file edit scaling 1 -> 2, and a killed replica restarted. Each shared
test first re-establishes what it starts from (`settle`), so one failure does not fail the next.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from .conftest import ENOVA, Cli, complete, process_tree, write_spec

pytestmark = pytest.mark.slow

# Valid for enova and for vLLM's argument table, refused by vLLM when it builds its scheduler
# config (max_num_batched_tokens must be >= max_num_seqs): the replica exits ~10 s into every start.
CRASH_AT_START = ", max_num_batched_tokens: 1"
ACTIONS = ("Created", "Scaled", "Replaced", "Deleted", "Synced")  # events a pass records when it acts
FLEET_GATEWAY_PORT = 19295  # neither 9199 nor another e2e file's gateway port


def specs_without_gateway(folder: Path, **spec) -> Path:
    """A spec folder whose Gateway document disables the gateway (the default one binds :9199)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gateway.yaml").write_text(
        "apiVersion: enova/v1\nkind: Gateway\nmetadata: {name: main}\nspec: {enabled: false}\n")
    return write_spec(folder, gateway_port=None, **spec)


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


class Reconciler:
    """`enova reconcile SPECS --interval 2s --unhealthy-after 20s` as a subprocess; its stderr
    goes to reconciler.log beside the state directory."""

    def __init__(self, cli: Cli, specs: Path):
        self.cli = cli
        self.specs = specs
        self.proc: subprocess.Popen | None = None
        self.log = cli.state.parent / "reconciler.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
        assert not self.running, "a reconciler already runs"
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [*ENOVA, "reconcile", str(self.specs), "--interval", "2s", "--unhealthy-after", "20s"],
                env={**self.cli.env, **(env_extra or {})}, stdout=subprocess.DEVNULL, stderr=log)
        return self.proc

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait; the exit code (None if none ran)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def events(cli: Cli, reason: str | None = None, subject: str | None = None, since: float = 0.0) -> list[dict]:
    out = cli("events", "-n", "1000", "-o", "json", check=0).out
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in rows if (reason is None or e["reason"] == reason)
            and (subject is None or e["subject"] == subject) and e["time"] >= since]


def healthy_replicas(cli: Cli, name: str = "smollm2") -> list[dict]:
    # without a specs argument: status follows the running reconciler's specs, even broken ones
    return [r for r in cli.replicas(name) if r["health"] == "healthy"]


def pids(cli: Cli, name: str = "smollm2") -> dict[str, int]:
    return {r["id"]: r["pid"] for r in cli.replicas(name)}


def reconciler_subject(cli: Cli, name: str) -> dict:
    """The running reconciler's status of one deployment ({} when it has none, or none runs)."""
    for dep in cli.status()["deployments"]:
        if dep["name"] == name:
            return dep.get("reconciler") or {}
    return {}


def condition(cli: Cli, name: str) -> str | None:
    return reconciler_subject(cli, name).get("condition")


def backoff_delays(failures: list[dict]) -> list[float]:
    """The delay the controller chose after each failure, from its event message."""
    return [float(re.findall(r"next (?:attempt|restart) in ([\d.]+) s", e["message"])[-1]) for e in failures]


# ---- from nothing, each on its own state directory ------------------------------------------

def test_a_replica_that_crashes_at_every_start_goes_into_crash_loop_backoff_with_growing_delays(cli, tmp_path):
    cli = cli
    specs = specs_without_gateway(tmp_path / "specs", name="crashy", extra_args=CRASH_AT_START)
    reconciler = Reconciler(cli, specs)
    reconciler.start()
    try:
        wait_for(lambda: len(events(cli, "CrashLoopBackOff", "deployment/crashy")) >= 2, 240,
                 "two CrashLoopBackOff events")
        history = events(cli, subject="deployment/crashy")
        failures = [e for e in history if e["reason"] in ("StartFailed", "CrashLoopBackOff")]
        assert "max_num_batched_tokens" in failures[0]["message"], \
            f"the replica failed for another reason than the planted one: {failures[0]['message']}"
        # The delays the controller chose grow (2-3 s, 4-6 s, 8-12 s: the jitter ranges never
        # overlap) and no retry starts before its delay has passed. The gaps between failures are
        # not what to compare: they include vLLM's own crash time, a variable ~10 s.
        delays = backoff_delays(failures)
        assert len(delays) >= 3 and all(b > a for a, b in zip(delays, delays[1:])), f"delays must grow: {delays}"
        starts = [e["time"] for e in history if e["reason"] in ("Created", "Scaled")]
        for failure, delay in zip(failures, delays):
            retries = [t for t in starts if t > failure["time"]]
            if retries:
                assert retries[0] - failure["time"] >= delay - 0.5, (failure, delay, retries[0])
        wait_for(lambda: reconciler_subject(cli, "crashy").get("reason") == "CrashLoopBackOff", 60,
                 "the status reason CrashLoopBackOff")
    finally:
        reconciler.stop()
    cli("delete", "crashy", check=0)


def test_a_replica_left_starting_by_a_stopped_reconciler_is_adopted_by_the_next_one_without_a_new_start(
        module_cli):
    cli = module_cli
    records = cli.state / "deployments" / "smollm2" / "replicas"
    assert not list(records.glob("*.json")), "this scenario starts from nothing: it runs before the fleet's tests"
    specs = specs_without_gateway(fleet_specs(cli), replicas=1, max_num_seqs=4)
    reconciler = Reconciler(cli, specs)
    reconciler.start()
    try:
        # SIGTERM as soon as the replica exists, long before its /health answers (~20 s here)
        [path] = wait_for(lambda: list(records.glob("*.json")), 120, "the replica record", interval=0.05)
        code = reconciler.stop()
        assert code == 0, f"reconciler exited {code}:\n{reconciler.log_tail()}"
        record = json.loads(path.read_text())
        assert record["state"] == "starting", f"the start was not interrupted: record state {record['state']!r}"
        pid, created = record["handle"]["pid"], record["handle"]["create_time"]
        assert psutil.pid_exists(pid) and abs(psutil.Process(pid).create_time() - created) < 0.05, \
            f"the starting replica (pid {pid}) did not outlive the reconciler"
        assert events(cli, "Created", "deployment/smollm2"), "no Created event before the stop"
        subject = (cli.status()["reconciler"] or {}).get("subjects", {}).get("smollm2", {})
        assert subject.get("reason") == "Interrupted", subject

        restarted = time.time()
        reconciler.start()
        wait_for(lambda: healthy_replicas(cli), 240, "the adopted replica to become healthy")
        wait_for(lambda: condition(cli, "smollm2") == "Ready", 60, "Ready after the adoption")
        [row] = cli.replicas("smollm2")
        assert (row["id"], row["pid"]) == (record["id"], pid), f"a new replica was started: {row}"
        assert json.loads(path.read_text())["state"] == "ready"
        complete(row["port"])
        started = [e for e in events(cli, since=restarted) if e["reason"] in ("Created", "Scaled", "Replaced")]
        assert not started, started
    finally:
        reconciler.stop()
    # the replica stays: the fleet below adopts it (module_cli kills it after the module)


# ---- one reconciler and one replica shared by the tests below, in file order ----------------

@dataclass
class Fleet:
    cli: Cli
    specs: Path
    reconciler: Reconciler
    replicas: int = 1
    spec_text: str = ""

    def write_spec(self, replicas: int) -> None:
        self.replicas = replicas
        write_spec(self.specs, replicas=replicas, max_num_seqs=4, gateway_port=FLEET_GATEWAY_PORT)
        self.spec_text = (self.specs / "smollm2.yaml").read_text()


def fleet_specs(cli: Cli) -> Path:
    return cli.state.parent / "specs"


@pytest.fixture(scope="module")
def fleet(module_cli):
    """The shared reconciler, on the spec of the replica the adoption scenario left serving
    (same deployment, so it is adopted, not started again) plus a gateway; from nothing when
    that scenario did not run."""
    specs = fleet_specs(module_cli)
    (specs / "gateway.yaml").unlink(missing_ok=True)   # the adoption scenario's has the gateway off
    fleet = Fleet(module_cli, specs, Reconciler(module_cli, specs))
    fleet.write_spec(1)
    fleet.reconciler.start()
    try:
        wait_for(lambda: len(healthy_replicas(module_cli)) == 1, 240, "the first replica")
        yield fleet
    finally:
        fleet.reconciler.stop()
        module_cli("delete", "smollm2", check=0)


def settle(fleet: Fleet, timeout: float = 240) -> None:
    """What each shared test starts from, whatever the one before it left: the good spec with
    `fleet.replicas`, a running reconciler, the deployment Ready with that many healthy replicas."""
    spec = fleet.specs / "smollm2.yaml"
    if spec.read_text() != fleet.spec_text:
        spec.write_text(fleet.spec_text)
    if not fleet.reconciler.running:
        fleet.reconciler.start()
    wait_for(lambda: condition(fleet.cli, "smollm2") == "Ready"
             and len(healthy_replicas(fleet.cli)) == fleet.replicas, timeout,
             f"Ready with {fleet.replicas} healthy replica(s)")


def test_the_reconciler_sends_ready_status_watchdog_and_stopping_in_order_to_notify_socket(fleet, tmp_path):
    settle(fleet)
    fleet.reconciler.stop()
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        fleet.reconciler.start({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"})
        wait_for(lambda: "READY" in notify.keys(), 60, "READY=1")

        def watchdog_after_status_after_ready():
            keys = notify.keys()
            after_ready = keys[keys.index("READY") + 1:]
            return "STATUS" in after_ready and "WATCHDOG" in after_ready[after_ready.index("STATUS") + 1:]
        wait_for(watchdog_after_status_after_ready, 10, "STATUS then WATCHDOG after READY")
        assert "STOPPING" not in notify.keys()
        assert fleet.reconciler.stop() == 0
        wait_for(lambda: "STOPPING" in notify.keys(), 5, "STOPPING=1")
        time.sleep(0.5)  # anything sent after STOPPING would arrive by now
        keys = notify.keys()
        assert keys[-1] == "STOPPING" and keys.count("STOPPING") == 1, keys[-8:]
    finally:
        notify.close()


def test_invalid_yaml_stalls_naming_file_and_line_keeps_the_replicas_and_a_fix_makes_it_ready(fleet):
    settle(fleet)
    running = pids(fleet.cli)
    spec = fleet.specs / "smollm2.yaml"
    try:
        spec.write_text(fleet.spec_text.replace("replicas: ", "replicas: ["))
        stalled = wait_for(lambda: (s := reconciler_subject(fleet.cli, "smollm2")).get("condition") == "Stalled"
                           and s, 15, "Stalled")
        assert re.search(r"smollm2\.yaml:\d+", stalled["message"]), stalled["message"]
        time.sleep(5)  # a few passes with the bad file
        assert pids(fleet.cli) == running
        assert len(healthy_replicas(fleet.cli)) == fleet.replicas
    finally:
        spec.write_text(fleet.spec_text)
    wait_for(lambda: condition(fleet.cli, "smollm2") == "Ready", 15, "Ready again")
    assert pids(fleet.cli) == running


def test_apply_is_refused_while_the_reconciler_runs_naming_its_pid(fleet):
    settle(fleet)
    run = fleet.cli("apply", str(fleet.specs))
    assert run.code != 0 and f"pid {fleet.reconciler.proc.pid}" in run.err, (run.code, run.out, run.err)


def test_sigterm_makes_the_reconciler_exit_0_within_10_s_while_the_replicas_keep_answering(fleet):
    settle(fleet)
    began = time.monotonic()
    fleet.reconciler.proc.send_signal(signal.SIGTERM)
    code = fleet.reconciler.proc.wait(30)
    stopped_in = time.monotonic() - began
    assert code == 0, f"exit code {code}:\n{fleet.reconciler.log_tail()}"
    assert stopped_in < 10, f"took {stopped_in:.1f} s to stop"
    replicas = healthy_replicas(fleet.cli)
    assert len(replicas) == fleet.replicas, fleet.cli.replicas("smollm2")
    for r in replicas:
        complete(r["port"])


def test_a_restarted_reconciler_adopts_the_running_replicas_without_any_action(fleet):
    settle(fleet)
    assert fleet.reconciler.stop() == 0
    before = pids(fleet.cli)
    restarted = time.time()
    fleet.reconciler.start()
    wait_for(lambda: condition(fleet.cli, "smollm2") == "Ready", 60, "Ready after the restart")
    time.sleep(5)  # a few passes
    assert pids(fleet.cli) == before
    acted = [e for e in events(fleet.cli, since=restarted) if e["reason"] in ACTIONS]
    assert not acted, acted


def test_editing_replicas_from_1_to_2_acts_within_3_s_and_converges_when_both_are_healthy(fleet):
    if fleet.replicas != 1:
        fleet.write_spec(1)
    settle(fleet)
    written = time.time()
    fleet.write_spec(2)
    scaled = wait_for(lambda: events(fleet.cli, "Scaled", "deployment/smollm2", since=written), 10, "a Scaled event")
    first_action = scaled[0]["time"] - written
    assert first_action < 3, f"first action {first_action:.2f} s after the write"
    wait_for(lambda: len(healthy_replicas(fleet.cli)) == 2, 240, "two healthy replicas")
    wait_for(lambda: condition(fleet.cli, "smollm2") == "Ready", 30, "Ready with two replicas")


def test_a_replica_killed_with_sigkill_is_restarted(fleet):
    settle(fleet)
    replicas = healthy_replicas(fleet.cli)
    victim, survivors = replicas[-1], {r["id"]: r["pid"] for r in replicas[:-1]}
    tree = process_tree(victim["pid"])
    os.killpg(victim["pid"], signal.SIGKILL)
    for proc in tree:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass

    def replaced():
        now = healthy_replicas(fleet.cli)
        return len(now) == fleet.replicas and victim["id"] not in [r["id"] for r in now] and now
    now = wait_for(replaced, 240, "the killed replica to be replaced")
    assert {r["id"]: r["pid"] for r in now if r["id"] in survivors} == survivors, "a surviving replica was touched"
    complete(now[-1]["port"])
