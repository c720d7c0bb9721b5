"""The Runtime interface's contract, run against every implementation: the in-memory runtime,
local processes, and containers on a real Docker engine. The engine is a tiny stdlib HTTP
server (fake_engine.py) that answers /health, so the contract is checked in seconds; the real
vLLM engine in a container is the end-to-end test's (tests/e2e/test_docker_runtime.py).

What every runtime must do: start writes the record (starting) before returning; the replica is
alive and becomes healthy; describe names it; logs and log_tail carry its output; stop removes
it and its record and is idempotent; a replica that exits is reported not alive with why, and
forget removes its record; nothing it did not start is ever reported alive or touched; discover
finds what it runs without a record (runtimes that label) and never what it has records of.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enova.engines.vllm import Launch
from enova.observe.ports import port_is_free
from enova.observe.state import ReplicaRecord, StateStore
from enova.runtime.base import Endpoint, StartRequest
from enova.runtime.local import LocalRuntime
from enova.runtime.memory import MemoryRuntime

HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake_engine.py"


def free_port() -> int:
    for port in range(19450, 19550):
        if port_is_free("127.0.0.1", port):
            return port
    raise RuntimeError("no free port")


class Harness:
    """One runtime and how to make a start request for it."""

    def __init__(self, kind: str, tmp: Path, docker_host: str | None = None, image: str | None = None):
        self.kind, self.tmp, self.docker_host, self.image = kind, tmp, docker_host, image
        self.store = StateStore(tmp / "state")
        if kind == "memory":
            self.runtime = MemoryRuntime(self.store)
        elif kind == "local":
            self.runtime = LocalRuntime(self.store)
        else:
            from enova.runtime.docker import DockerRuntime
            self.runtime = DockerRuntime(self.store, hosts=lambda: [docker_host])
        (tmp / "model").mkdir(exist_ok=True)
        (tmp / "model" / "config.json").write_text("{}")

    def request(self, replica_id: str, *args: str) -> StartRequest:
        port = free_port()
        config = {"model": "./model", "runtime": "docker" if self.kind == "docker" else "local",
                  "engine": {"name": "vllm", "args": {}, "env": {}}, "resources": {"gpus": 0, "cpus": 1}}
        if self.kind == "docker":
            config["image"] = self.image
            config["docker"] = {"host": self.docker_host, "volumes": [f"{HERE}:/fake:ro"], "shm_size": "64m"}
            argv = ["python3", "/fake/fake_engine.py", "--port", "8000", *args]
        else:
            argv = [sys.executable, str(FAKE), "--port", str(port), *args]
        return StartRequest(
            deployment="contract", replica_id=replica_id, launch=Launch(argv=argv, env={"ENOVA_TEST": "1"}, device="cpu"),
            endpoint=Endpoint("127.0.0.1", port), config=config, config_hash="c0ffee", model_path=str(self.tmp / "model"),
            start_timeout=60, cpus=[0], model_kind="local", serving={"default": True}, settings={"startup_timeout": 60})

    def healthy_within(self, record: ReplicaRecord, seconds: float = 30) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.runtime.probe([record], 2.0).get(record.id):
                return True
            time.sleep(0.3)
        return False


KINDS = ["memory", "local", pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow])]


@pytest.fixture(params=KINDS)
def h(request, tmp_path) -> Harness:
    if request.param == "docker":
        host = request.getfixturevalue("docker_engine")
        image = request.getfixturevalue("cpu_engine_image")
        harness = Harness("docker", tmp_path, host, image)
    else:
        harness = Harness(request.param, tmp_path)
    yield harness
    for record in harness.store.all_replicas():
        try:
            harness.runtime.stop(record, grace=2)
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass


def test_start_records_it_starting_and_it_becomes_healthy(h: Harness) -> None:
    record = h.runtime.start(h.request("contract-aaaaaa"))
    stored = h.store.replicas("contract")
    assert [r.id for r in stored] == ["contract-aaaaaa"] and stored[0].state == "starting"
    assert stored[0].runtime == h.runtime.name and stored[0].handle
    assert h.runtime.liveness(record).alive
    assert h.healthy_within(record)
    assert h.runtime.describe(record)


def test_stop_removes_the_replica_and_its_record_and_is_idempotent(h: Harness) -> None:
    record = h.runtime.start(h.request("contract-bbbbbb"))
    assert h.healthy_within(record)
    h.runtime.stop(record, grace=5)
    assert h.store.replicas("contract") == []
    assert not h.runtime.liveness(record).alive
    h.runtime.stop(record, grace=5)  # again: nothing left, no error


def test_a_replica_that_exits_is_reported_with_why_and_forgotten(h: Harness) -> None:
    if h.kind == "memory":
        h.runtime.behave("contract", crash=True)
    record = h.runtime.start(h.request("contract-cccccc", "--exit-after", "0.5", "--exit-code", "3"))
    deadline = time.monotonic() + 30
    while h.runtime.liveness(record).alive and time.monotonic() < deadline:
        time.sleep(0.2)
    gone = h.runtime.liveness(record)
    assert not gone.alive and gone.detail
    if h.kind == "docker":
        assert "exited with code 3" in gone.detail
    h.runtime.forget(record)
    assert h.store.replicas("contract") == []


def test_logs_carry_the_engines_output(h: Harness) -> None:
    if h.kind == "memory":
        pytest.skip("the in-memory runtime has no engine output")
    record = h.runtime.start(h.request("contract-dddddd"))
    assert h.healthy_within(record)
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline and "health" not in text:
        text = "\n".join(h.runtime.logs(record, tail=50))
        time.sleep(0.3)
    assert "health" in text
    assert "health" in h.runtime.log_tail(record, 50)


def test_nothing_it_did_not_start_is_alive_or_touched(h: Harness, tmp_path: Path) -> None:
    if h.kind == "memory":
        foreign = ReplicaRecord(id="contract-ffffff", deployment="contract", host="127.0.0.1", port=1, config_hash="x",
                                config={}, argv=[], log="", runtime="memory", handle={"instance": 999})
        assert not h.runtime.liveness(foreign).alive
        return
    if h.kind == "local":
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            foreign = ReplicaRecord(id="contract-ffffff", deployment="contract", host="127.0.0.1", port=1,
                                    config_hash="x", config={}, argv=[], log="", runtime="local",
                                    handle={"pid": other.pid, "create_time": 1.0})  # not its start time
            assert not h.runtime.liveness(foreign).alive
            h.runtime.stop(foreign, grace=1)
            assert other.poll() is None  # untouched
        finally:
            other.kill()
            other.wait()
        return
    import docker
    client = docker.DockerClient(base_url=h.docker_host)
    stranger = client.containers.run(h.image, ["python3", "-c", "import time; time.sleep(120)"], detach=True,
                                     labels={"purpose": "not enova's"})
    try:
        foreign = ReplicaRecord(id="contract-ffffff", deployment="contract", host="127.0.0.1", port=1, config_hash="x",
                                config={}, argv=[], log="", runtime="docker",
                                handle={"container": stranger.id, "docker_host": h.docker_host})
        assert not h.runtime.liveness(foreign).alive
        h.runtime.stop(foreign, grace=1)
        h.runtime.forget(foreign)
        stranger.reload()
        assert stranger.status == "running"
        assert all(d.record.id != "contract-ffffff" for d in h.runtime.discover(set()))
    finally:
        stranger.remove(force=True)


def test_discover_finds_what_runs_without_a_record_and_nothing_recorded(h: Harness) -> None:
    record = h.runtime.start(h.request("contract-eeeeee"))
    assert h.healthy_within(record)
    assert [d.record.id for d in h.runtime.discover({r.id for r in h.store.all_replicas()})] == []
    if h.kind == "local":
        assert h.runtime.discover(set()) == []  # a process carries no label: its record is its only trace
        return
    if h.kind == "memory":
        h.store.remove_replica("contract", record.id)
        planted = ReplicaRecord(id="contract-eeeeef", deployment="contract", host="127.0.0.1", port=2,
                                config_hash="c0ffee", config={}, argv=[], log="")
        h.runtime.plant(planted, serving={"default": True})
        found = h.runtime.discover(set())
        assert [d.record.id for d in found] == ["contract-eeeeef"] and found[0].serving == {"default": True}
        return
    h.store.remove_replica("contract", record.id)   # a fresh state directory
    found = h.runtime.discover(set())
    assert [d.record.id for d in found] == [record.id]
    adopted = found[0]
    assert adopted.record.config_hash == "c0ffee" and adopted.record.port == record.port
    assert adopted.serving == {"default": True} and adopted.settings == {"startup_timeout": 60}
    assert h.runtime.liveness(adopted.record).alive
    h.store.write_replica(adopted.record)


def test_check_names_what_is_missing(h: Harness) -> None:
    req = h.request("contract-gggggg")
    assert h.runtime.check(req.config) == []
    if h.kind != "docker":
        return
    missing = {**req.config, "image": "enova-test/not-built:1"}
    [problem] = h.runtime.check(missing)
    assert "docker pull enova-test/not-built:1" in problem
    unreachable = {**req.config, "docker": {**req.config["docker"], "host": "unix:///nonexistent/docker.sock"}}
    assert "cannot be reached" in h.runtime.check(unreachable)[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="binds ports as root")
def test_a_failed_start_leaves_nothing_behind(h: Harness) -> None:
    if h.kind == "memory":
        h.runtime.behave("contract", fail_spawn=True)
    elif h.kind == "local":
        req = h.request("contract-hhhhhh")
        req = StartRequest(**{**req.__dict__, "launch": Launch(argv=["/nonexistent/engine"], env={}, device="cpu")})
        with pytest.raises(Exception):
            h.runtime.start(req)
        assert h.store.replicas("contract") == []
        return
    else:
        # the port is taken by something enova did not start: the create fails, nothing is left
        import socket
        req = h.request("contract-hhhhhh")
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", req.endpoint.port))
        blocker.listen()
        try:
            with pytest.raises(Exception) as caught:
                h.runtime.start(req)
            assert str(req.endpoint.port) in str(caught.value)
        finally:
            blocker.close()
        import docker
        client = docker.DockerClient(base_url=h.docker_host)
        assert client.containers.list(all=True, filters={"label": "io.enova.replica=contract-hhhhhh"}) == []
        assert h.store.replicas("contract") == []
        return
    with pytest.raises(Exception):
        h.runtime.start(h.request("contract-hhhhhh"))
    assert h.store.replicas("contract") == []
