"""What pilot stops, and what it leaves: real processes in sessions of their own stand for the
children pilot starts and the processes the reconciler starts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from enova.errors import UsageError
from enova.observe.state import DeploymentRecord, GatewayRecord, StateStore
from enova.pilot.record import Handle, PilotRecord, read_record, record_path, terminate, write_record
from enova.pilot.run import Pilot, PilotConfig
from enova.pilot.specs import PilotOptions
from enova.pilot.stop import stop_pilot
from enova.settings import Settings

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# a session leader that starts a grandchild in a session of its own (as the reconciler starts
# replicas), prints its pid and sleeps
PARENT = [sys.executable, "-c",
          "import subprocess, sys, time\n"
          f"p = subprocess.Popen({SLEEPER!r}, start_new_session=True)\n"
          "print(p.pid, flush=True)\n"
          "time.sleep(600)\n"]


@pytest.fixture
def procs():
    started: list[psutil.Process] = []

    def spawn(argv=SLEEPER, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        started.append(psutil.Process(proc.pid))
        return proc
    yield spawn
    for proc in started:
        for p in [proc, *_children(proc)]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", port_range=(19900, 19919))


def test_terminate_stops_the_child_and_leaves_what_it_started_in_another_session(procs):
    parent = procs(PARENT, stdout=subprocess.PIPE, text=True)
    grandchild = psutil.Process(int(parent.stdout.readline()))
    try:
        assert not terminate(Handle.of(parent.pid), grace=10)
        assert parent.wait(timeout=5) is not None
        assert grandchild.is_running() and grandchild.status() != psutil.STATUS_ZOMBIE
    finally:
        grandchild.kill()


def test_terminate_never_signals_a_process_whose_start_time_differs(procs):
    proc = procs()
    stale = Handle(proc.pid, psutil.Process(proc.pid).create_time() - 100)
    assert not terminate(stale, grace=1)
    assert proc.poll() is None


def test_stop_after_a_killed_pilot_stops_its_children_and_the_gateway_it_started_and_removes_the_record(tmp_path, procs):
    s = settings(tmp_path)
    dead = procs()
    dead.kill()
    dead.wait()
    app, webui, reconciler, gateway = procs(), procs(), procs(), procs()
    store = StateStore(s.state_dir)
    store.write_gateway(GatewayRecord(pid=gateway.pid, create_time=psutil.Process(gateway.pid).create_time(),
                                      config_hash="x", config={"host": "127.0.0.1", "port": 1}, argv=[], log=""))
    write_record(s.state_dir, PilotRecord(
        pilot=Handle(dead.pid, 1.0), specs=str(tmp_path / "enova-pilot"), state_dir=str(s.state_dir),
        started_at=time.time(), deployments=["gone"],
        processes={"app": Handle.of(app.pid), "webui": Handle.of(webui.pid), "reconciler": Handle.of(reconciler.pid)}))
    message = stop_pilot(s)
    assert "stopped what pilot" in message
    for proc in (app, webui, reconciler, gateway):
        assert proc.wait(timeout=5) is not None
    assert read_record(s.state_dir) is None and store.read_gateway() is None


def test_a_gateway_that_ran_before_the_pilot_is_left_running(tmp_path, procs):
    s = settings(tmp_path)
    gateway = procs()
    handle = Handle.of(gateway.pid)
    store = StateStore(s.state_dir)
    store.write_gateway(GatewayRecord(pid=gateway.pid, create_time=handle.create_time, config_hash="x",
                                      config={"host": "127.0.0.1", "port": 1}, argv=[], log=""))
    write_record(s.state_dir, PilotRecord(pilot=Handle(2 ** 22 - 1, 1.0), specs="x", state_dir=str(s.state_dir),
                                          started_at=time.time(), gateway_before=handle))
    stop_pilot(s)
    assert gateway.poll() is None and store.read_gateway() is not None


def test_stop_signals_a_running_pilot_and_waits_for_it(tmp_path, procs):
    s = settings(tmp_path)
    # stands for a pilot: exits on SIGTERM after removing its record, as Pilot.run does
    code = ("import signal, sys, time, pathlib\n"
            f"p = pathlib.Path({str(record_path(s.state_dir))!r})\n"
            "signal.signal(signal.SIGTERM, lambda *_: (p.unlink(), sys.exit(0)))\n"
            "print('up', flush=True)\n"
            "time.sleep(600)\n")
    pilot = procs([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    write_record(s.state_dir, PilotRecord(pilot=Handle.of(pilot.pid), specs="/specs", state_dir=str(s.state_dir),
                                          started_at=time.time()))
    assert pilot.stdout.readline().strip() == "up"
    message = stop_pilot(s, timeout=10)
    assert message.startswith(f"pilot (pid {pilot.pid}) stopped in") and pilot.wait(timeout=5) == 0


def test_stop_with_nothing_running_says_so(tmp_path):
    assert stop_pilot(settings(tmp_path)).startswith("no pilot is running")


def pilot(tmp_path: Path, **config) -> Pilot:
    opts = PilotOptions(model="builtin:smollm2-135m-instruct", engine_args={}, port=19931, prometheus_port=19932)
    cfg = PilotConfig(specs_dir=tmp_path / "enova-pilot", options=opts, app_port=19933, webui_port=19934,
                      metrics_port=19935, **config)
    return Pilot(cfg, settings(tmp_path), threading.Event())


def test_a_second_pilot_on_the_same_state_is_refused_while_the_first_runs(tmp_path):
    s = settings(tmp_path)
    write_record(s.state_dir, PilotRecord(pilot=Handle.of(os.getpid()), specs="/elsewhere", state_dir=str(s.state_dir),
                                          started_at=time.time()))
    with pytest.raises(UsageError, match=f"a pilot already runs here \\(pid {os.getpid()}"):
        pilot(tmp_path).run()


def test_a_deployment_of_the_same_name_started_by_apply_is_refused(tmp_path):
    store = StateStore(settings(tmp_path).state_dir)
    store.write_deployment(DeploymentRecord(name="smollm2-135m-instruct", replicas=1, config_hash="x", config={},
                                            applied_at=time.time(), source="/srv/specs/smollm2.yaml:3"))
    with pytest.raises(UsageError) as err:
        pilot(tmp_path).run()
    assert "started by specs at /srv/specs/smollm2.yaml:3" in str(err.value)
    assert "enova delete smollm2-135m-instruct" in str(err.value)
    assert read_record(settings(tmp_path).state_dir) is None


def test_a_port_in_use_is_refused_naming_its_option_before_anything_starts(tmp_path):
    import socket
    with socket.socket() as held:
        held.bind(("127.0.0.1", 19933))
        held.listen()
        with pytest.raises(UsageError, match="--app-port 19933"):
            pilot(tmp_path).run()
    assert not (settings(tmp_path).state_dir / "logs" / "pilot").exists()


def test_a_held_state_lock_is_refused_naming_the_holder(tmp_path):
    from enova.observe.lock import StateLock
    with StateLock(settings(tmp_path).state_dir, "enova reconcile"):
        with pytest.raises(UsageError, match=r"pid \d+ \(enova reconcile\).*another --state-dir"):
            pilot(tmp_path).run()


def test_a_bad_proxy_is_refused_before_the_specs_are_written(tmp_path):
    with pytest.raises(UsageError, match="--hf_proxy"):
        pilot(tmp_path, hf_proxy="proxy:3128").run()
    assert not (tmp_path / "enova-pilot").exists()


def test_after_a_killed_pilot_the_next_one_stops_its_children_and_adopts_its_deployment(tmp_path, procs):
    from enova.pilot.specs import GpuChoice, prepare_specs
    s = settings(tmp_path)
    dead = procs()
    dead.kill()
    dead.wait()
    app, webui, reconciler = procs(), procs(), procs()
    name = "smollm2-135m-instruct"
    StateStore(s.state_dir).write_deployment(DeploymentRecord(
        name=name, replicas=1, config_hash="x", config={}, applied_at=time.time(),
        source=str(tmp_path / "enova-pilot" / "deployment.yaml:4")))
    write_record(s.state_dir, PilotRecord(
        pilot=Handle(dead.pid, 1.0), specs=str(tmp_path / "enova-pilot"), state_dir=str(s.state_dir),
        started_at=time.time(), deployments=[name],
        processes={"app": Handle.of(app.pid), "webui": Handle.of(webui.pid), "reconciler": Handle.of(reconciler.pid)}))
    p = pilot(tmp_path)
    previous = p._previous_pilot()
    for proc in (app, webui, reconciler):
        assert proc.wait(timeout=5) is not None
    specs = prepare_specs(tmp_path / "enova-pilot", p.config.options, cache_dir=s.cache_dir,
                          gpu_choice=lambda: GpuChoice(0, "cpu")).specs
    p._check_shared_state(specs, previous)  # its own deployment: adopted, not refused
    with pytest.raises(UsageError, match="not by pilot"):
        p._check_shared_state(specs, None)


def test_a_deployment_added_to_the_specs_while_pilot_runs_is_pilots_but_never_one_it_found_running(tmp_path):
    from enova.pilot.specs import GpuChoice, prepare_specs
    p = pilot(tmp_path)
    folder = prepare_specs(tmp_path / "enova-pilot", p.config.options, cache_dir=tmp_path / "cache",
                           gpu_choice=lambda: GpuChoice(0, "cpu")).folder
    p.record = PilotRecord(pilot=Handle.of(os.getpid()), specs=str(folder), state_dir=str(p.state_dir),
                           started_at=time.time(), deployments=["smollm2-135m-instruct"], others_before=["theirs"])
    for name in ("second", "theirs"):
        (folder / f"{name}.yaml").write_text(
            f"apiVersion: enova/v1\nkind: Deployment\nmetadata: {{name: {name}}}\n"
            "spec: {model: builtin:smollm2-135m-instruct, replicas: 0}\n")
    p._track_specs()
    assert read_record(p.state_dir).deployments == ["second", "smollm2-135m-instruct"]


def test_the_heartbeat_shows_a_starting_engines_last_line_as_a_terminal_would(tmp_path):
    from enova.pilot.run import _last_line
    log = tmp_path / "engine.log"
    log.write_bytes(b"INFO loading\nmodel.safetensors:  10%|#   | 1.0G/10G\rmodel.safetensors:  42%|####  | 4.2G/10G\r\n")
    assert _last_line(str(log)) == "model.safetensors:  42%|####  | 4.2G/10G"
    log.write_text("x" * 500 + "\n")
    assert _last_line(str(log), width=20) == "x" * 17 + "..."
    assert _last_line(str(tmp_path / "missing.log")) == ""
