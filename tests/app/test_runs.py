"""Injection runs through the API against a real HTTP server speaking the OpenAI completions API
(tests/inject/upstream.py, serving model `fixture`), recorded as the gateway and a ready replica of
deployment `fixture` by real records (their pid is the server's). Each run is a real `enova inject
run` process: it finishes with its result and report, stops with a partial result when cancelled,
is listed by a restarted app server, and a run nobody could serve is a 409 that starts nothing."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
import yaml
from fastapi.testclient import TestClient

from enova.app.server import AppContext, create_app
from enova.observe.gpus import GpuInventory
from enova.observe.state import DeploymentRecord, GatewayRecord, ReplicaRecord, StateStore
from enova.settings import Settings
from tests.inject.upstream import Running

from .conftest import AUTH, TOKEN

pytestmark = pytest.mark.filterwarnings("ignore")
FINISHED = ("done", "failed", "cancelled")


@pytest.fixture(scope="module")
def upstream():
    with Running() as up:
        yield up


class Served:
    """A state directory whose records say: gateway and one ready replica of `fixture`, both the upstream."""

    def __init__(self, root: Path, up: Running):
        self.up = up
        self.port = int(up.url.rsplit(":", 1)[1])
        self.settings = Settings(state_dir=root / "state", cache_dir=Settings.from_env().cache_dir)
        self.store = StateStore(self.settings.state_dir)
        pid = up.proc.pid
        created = psutil.Process(pid).create_time()
        now = time.time()
        self.store.write_deployment(DeploymentRecord(name="fixture", replicas=1, config_hash="0123456789ab",
                                                     config={"model": "builtin:smollm2-135m-instruct"}, applied_at=now))
        self.replica = ReplicaRecord(id="fixture-aaaaaa", deployment="fixture", host="127.0.0.1", port=self.port,
                                     config_hash="0123456789ab", config={}, argv=[], log="", runtime="local",
                                     handle={"pid": pid, "create_time": created}, state="ready", started_at=now,
                                     ready_at=now)
        self.store.write_replica(self.replica)
        self.store.write_gateway(GatewayRecord(pid=pid, create_time=created, config_hash="gw",
                                               config={"host": "127.0.0.1", "port": self.port}, argv=[], log="",
                                               started_at=now))
        self.specs = root / "specs"
        self.specs.mkdir()
        docs = [{"apiVersion": "enova/v1", "kind": "Deployment", "metadata": {"name": "fixture"},
                 "spec": {"model": "builtin:smollm2-135m-instruct", "engine": {"args": {"max_num_seqs": 4}}}},
                {"apiVersion": "enova/v1", "kind": "Gateway", "metadata": {"name": "gateway"},
                 "spec": {"host": "127.0.0.1", "port": self.port}},
                {"apiVersion": "enova/v1", "kind": "LoadProfile", "metadata": {"name": "short"},
                 "spec": {"target": "fixture", "arrival": {"process": "constant", "rate": 10}, "duration": "2s",
                          "max_tokens": 4, "seed": 7}}]
        (self.specs / "specs.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))

    def client(self) -> TestClient:
        ctx = AppContext(settings=self.settings, specs=self.specs, token=TOKEN,
                         inventory=lambda: GpuInventory(reason="no GPU (test)"))
        return TestClient(create_app(ctx), base_url="http://127.0.0.1")


def wait_for(client: TestClient, run_id: str, states=FINISHED, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["state"] in states:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run['state']} after {timeout} s: {run['message']}")


def test_a_quick_run_finishes_with_its_result_report_and_figures(tmp_path, upstream):
    served = Served(tmp_path, upstream)
    upstream.reset()
    client = served.client()
    started = client.post("/api/v1/runs", headers=AUTH,
                          json={"deployment": "fixture", "rate": 20, "duration": "2s", "output_len": 4,
                                "process": "constant", "seed": 3})
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["state"] in ("starting", "running") and run["kind"] == "quick" and run["deployment"] == "fixture"
    done = wait_for(client, run["id"])
    assert done["state"] == "done", done
    assert done["exit_code"] == 0 and done["progress"]["fraction"] == 1.0
    summary = done["summary"]
    assert summary["scheduled"] == 40 and summary["ok"] == summary["sent"] == 40 and summary["failed"] == 0
    assert len(upstream.stats()["arrivals"]) == 40  # the load reached the server
    result = client.get(done["result_url"])
    assert result.status_code == 200 and result.headers["content-type"].startswith("application/json")
    assert result.json()["format_version"] == 1 and len(result.json()["requests"]) == 40
    report = client.get(done["report_url"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "<svg" in report.text and "<script" not in report.text
    assert "default-src 'none'" in report.headers["content-security-policy"]
    folder = served.settings.state_dir / "app" / "runs" / run["id"]
    assert {"exit.json", "result.json", "run.json", "stderr.log"} <= {p.name for p in folder.iterdir()}
    # a restarted app server (a new process would read the same files) lists it as it was
    again = served.client().get("/api/v1/runs").json()["runs"]
    assert [r["id"] for r in again] == [run["id"]]
    assert again[0]["state"] == "done" and again[0]["summary"]["ok"] == 40


def test_a_profile_run_uses_the_specs_loadprofile(tmp_path, upstream):
    served = Served(tmp_path, upstream)
    client = served.client()
    started = client.post("/api/v1/runs", headers=AUTH, json={"profile": "short"})
    assert started.status_code == 202, started.text
    done = wait_for(client, started.json()["id"])
    assert done["state"] == "done", done
    assert done["kind"] == "profile" and done["profile"] == "short" and done["deployment"] == "fixture"
    assert done["summary"]["scheduled"] == 20 and done["summary"]["ok"] == 20
    mixed = client.post("/api/v1/runs", headers=AUTH, json={"profile": "short", "rate": 3})
    assert mixed.status_code == 422 and mixed.json()["detail"][0]["loc"] == ["body", "rate"]


def test_cancel_stops_the_run_with_a_partial_result_and_a_second_run_waits(tmp_path, upstream):
    served = Served(tmp_path, upstream)
    client = served.client()
    run = client.post("/api/v1/runs", headers=AUTH,
                      json={"deployment": "fixture", "rate": 5, "duration": 60, "output_len": 4}).json()
    busy = client.post("/api/v1/runs", headers=AUTH, json={"deployment": "fixture", "rate": 1, "duration": 1})
    assert busy.status_code == 409 and run["id"] in busy.json()["detail"]
    deadline = time.monotonic() + 60
    while not client.get(f"/api/v1/runs/{run['id']}").json()["progress"]["sent"]:  # requests sent (5 s lines)
        assert time.monotonic() < deadline, "the run never reported progress"
        time.sleep(0.3)
    refused = client.post(f"/api/v1/runs/{run['id']}/cancel")
    assert refused.status_code == 401
    assert client.get(f"/api/v1/runs/{run['id']}").json()["state"] == "running"
    cancelling = client.post(f"/api/v1/runs/{run['id']}/cancel", headers=AUTH)
    assert cancelling.status_code == 202 and cancelling.json()["state"] in ("cancelling", "cancelled")
    ended = wait_for(client, run["id"], timeout=30)
    assert ended["state"] == "cancelled" and ended["exit_code"] == 130 and ended["partial"] is True
    assert 0 < ended["summary"]["sent"] < 300
    assert client.get(ended["result_url"]).json()["partial"] is True
    again = client.post(f"/api/v1/runs/{run['id']}/cancel", headers=AUTH)
    assert again.status_code == 409 and "ended" in again.json()["detail"]


def test_a_run_against_a_replica_not_ready_or_a_dead_gateway_is_409_and_starts_nothing(tmp_path, upstream):
    served = Served(tmp_path, upstream)
    client = served.client()
    served.replica.state = "starting"
    served.store.write_replica(served.replica)
    answer = client.post("/api/v1/runs", headers=AUTH, json={"deployment": "fixture", "rate": 1})
    assert answer.status_code == 409 and "no ready replica" in answer.json()["detail"]
    served.replica.state = "ready"
    served.store.write_replica(served.replica)
    record = served.store.read_gateway()
    record.create_time += 1000  # the pid now names another process: not our gateway
    served.store.write_gateway(record)
    answer = client.post("/api/v1/runs", headers=AUTH, json={"deployment": "fixture", "rate": 1})
    assert answer.status_code == 409 and "gateway is not running" in answer.json()["detail"]
    assert not (served.settings.state_dir / "app" / "runs").exists()


def test_stopping_the_server_cancels_its_runs_and_they_write_partial_results(tmp_path, upstream):
    import threading

    import httpx

    from enova.app.server import serve
    served = Served(tmp_path, upstream)
    ctx = AppContext(settings=served.settings, specs=served.specs, token=TOKEN,
                     inventory=lambda: GpuInventory(reason="no GPU (test)"))
    stop, up = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve, args=(ctx, "127.0.0.1", 19519), kwargs={"ready": up.set, "stop": stop})
    thread.start()
    try:
        assert up.wait(30)
        url = "http://127.0.0.1:19519"
        run = httpx.post(f"{url}/api/v1/runs", headers=AUTH, timeout=10,
                         json={"deployment": "fixture", "rate": 5, "duration": 60, "output_len": 4}).json()
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/api/v1/runs/{run['id']}", timeout=10).json()["progress"]["sent"] is None:
            assert time.monotonic() < deadline, "the run never reported progress"
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    ended = served.client().get(f"/api/v1/runs/{run['id']}").json()
    assert ended["state"] == "cancelled" and ended["partial"] is True and ended["result_url"]
