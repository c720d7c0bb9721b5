"""Pilot's orchestration with every real process but the engine: a deployment of 0 replicas, so
the real reconciler starts the gateway and Prometheus while pilot starts the real app server and
web UI. What it prints answers; a stop leaves nothing; a child that dies stops everything."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from enova.errors import EnovaError
from enova.pilot.record import read_record
from enova.pilot.run import Pilot, PilotConfig
from enova.pilot.specs import GpuChoice, PilotOptions, prepare_specs
from enova.settings import Settings

PORTS = {"gateway": 19941, "prometheus": 19942, "app": 19943, "webui": 19944, "metrics": 19945}


def zero_replica_specs(folder: Path, cache: Path) -> None:
    opts = PilotOptions(model="builtin:smollm2-135m-instruct", engine_args={}, port=PORTS["gateway"],
                        prometheus_port=PORTS["prometheus"])
    prepare_specs(folder, opts, cache_dir=cache, gpu_choice=lambda: GpuChoice(0, "cpu"))
    path = folder / "deployment.yaml"
    path.write_text(path.read_text().replace("replicas: 1", "replicas: 0"))


class Running:
    def __init__(self, tmp_path: Path):
        self.settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", port_range=(19946, 19949))
        zero_replica_specs(tmp_path / "enova-pilot", self.settings.cache_dir)
        opts = PilotOptions(model="builtin:smollm2-135m-instruct", engine_args={})
        config = PilotConfig(specs_dir=tmp_path / "enova-pilot", options=opts, app_port=PORTS["app"],
                             webui_port=PORTS["webui"], metrics_port=PORTS["metrics"])
        self.stop = threading.Event()
        self.lines: list[str] = []
        self.progress: list[str] = []
        self.pilot = Pilot(config, self.settings, self.stop, out=self.lines.append, progress=self.progress.append)
        self.error: BaseException | None = None
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.code = self.pilot.run()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def wait_for_urls(self, timeout: float = 120) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while not any("Events follow" in line for line in self.lines):
            assert self.thread.is_alive(), (self.error, self.progress)
            assert time.monotonic() < deadline, self.progress
            time.sleep(0.2)
        return {m.group(1): m.group(2) for m in (re.match(r"^  (\S.*?)\s{2,}(http://\S+)$", line)
                                                 for line in self.lines) if m}

    def processes(self) -> list[psutil.Process]:
        record = read_record(self.settings.state_dir)
        pids = [h.pid for h in record.processes.values()]
        gateway = (self.settings.state_dir / "gateway" / "gateway.json")
        import json
        pids.append(json.loads(gateway.read_text())["pid"])
        pids.append(json.loads((self.settings.state_dir / "monitoring" / "prometheus.json").read_text())["pid"])
        return [psutil.Process(pid) for pid in pids]


@pytest.fixture
def running(tmp_path):
    run = Running(tmp_path)
    yield run
    run.stop.set()
    run.thread.join(timeout=120)


def test_every_printed_url_answers_and_a_stop_leaves_no_process_and_the_specs(running, tmp_path):
    urls = running.wait_for_urls()
    assert set(urls) == {"LLM service", "app server", "web UI", "reconciler metrics", "Prometheus"}
    for label, url in urls.items():
        probe = url + "/v1/models" if label == "LLM service" else url
        assert httpx.get(probe, trust_env=False, timeout=10, follow_redirects=True).status_code == 200, label
    procs = running.processes()
    assert len(procs) == 5 and all(p.is_running() for p in procs)
    running.stop.set()
    running.thread.join(timeout=120)
    assert running.code == 0 and running.error is None
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive
    assert read_record(running.settings.state_dir) is None
    assert (tmp_path / "enova-pilot" / "deployment.yaml").exists()


def test_a_child_that_dies_while_serving_stops_everything_with_its_log(running):
    running.wait_for_urls()
    procs = running.processes()
    app = read_record(running.settings.state_dir).processes["app"]
    psutil.Process(app.pid).kill()
    running.thread.join(timeout=120)
    assert isinstance(running.error, EnovaError)
    assert "the app server exited (code -9)" in str(running.error)
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive
    assert read_record(running.settings.state_dir) is None
