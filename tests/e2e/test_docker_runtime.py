"""The Docker runtime with the real CPU engine in containers on a real Docker engine (a dockerd
the test starts, an image built locally: tests/docker/conftest.py). One scenario, one engine
start per step, in order:

apply -> a completion through the gateway -> change an engine arg: one replace, the new container
answers, the old one is gone, no request failed during it -> scale 1 -> 2 -> `docker kill` one:
status reports it, the reconciler restarts it -> a fresh state directory adopts the running
containers with no action -> delete: no labelled container left. An unlabelled container the
test starts is untouched throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.docker.conftest import cpu_engine_image, docker_engine  # noqa: F401 - fixtures

from .conftest import ENOVA, Cli, _cli_in, complete, stop_recorded_processes
from .test_reconciler import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.docker]

NAME = "smol"
MANAGED = {"label": "io.enova.managed-by=enova"}
# its own gateway port and replica ports, so it never meets another end-to-end test's
TEST_GATEWAY_PORT = 19298
PORT_RANGE = "19400-19449"


def cli_in(root: Path) -> Cli:
    cli = _cli_in(root)
    cli.env["ENOVA_PORT_RANGE"] = PORT_RANGE
    return cli


def write_specs(folder: Path, *, image: str, host: str, replicas: int = 1, max_num_seqs: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gateway.yaml").write_text(
        f"apiVersion: enova/v1\nkind: Gateway\nmetadata: {{name: main}}\nspec: {{port: {TEST_GATEWAY_PORT}}}\n")
    (folder / f"{NAME}.yaml").write_text(f"""\
apiVersion: enova/v1
kind: Deployment
metadata: {{name: {NAME}}}
spec:
  model: builtin:smollm2-135m-instruct
  runtime: docker
  image: {image}
  docker:
    host: {host}
    shm_size: 1g
    volumes: ["{sys.prefix}:/opt/venv:ro"]
  engine:
    args: {{max_model_len: 1024, max_num_seqs: {max_num_seqs}}}
    startup_timeout: 4m
  replicas: {replicas}
  resources: {{gpus: 0, cpus: 1}}
""")
    return folder


@dataclass
class Load:
    """Closed-loop completions through the gateway; every failure is kept with its reason."""

    clients: int = 2
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(trust_env=False) as client:
            while not self.stop.is_set():
                try:
                    resp = client.post(f"http://127.0.0.1:{TEST_GATEWAY_PORT}/v1/completions", timeout=120,
                                       json={"model": NAME, "prompt": "Tell me about", "max_tokens": 8,
                                             "temperature": 0})
                    if resp.status_code != 200:
                        raise AssertionError(f"status {resp.status_code}: {resp.text[:200]}")
                    with self.lock:
                        self.ok += 1
                except Exception as exc:  # noqa: BLE001 - kept as a test failure
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> "Load":
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(130)


def containers(client, **filters) -> list:
    return client.containers.list(all=True, filters={**MANAGED, **filters})


@pytest.fixture(scope="module")
def world(tmp_path_factory, docker_engine, cpu_engine_image):  # noqa: F811 - fixtures
    import docker
    client = docker.DockerClient(base_url=docker_engine)
    root = tmp_path_factory.mktemp("docker-e2e")
    cli = cli_in(root)
    cli.env["DOCKER_HOST"] = docker_engine
    stranger = client.containers.run(cpu_engine_image, ["python3", "-c", "import time; time.sleep(3600)"],
                                     detach=True, labels={"purpose": "a container enova must leave alone"})
    specs = write_specs(root / "specs", image=cpu_engine_image, host=docker_engine)
    yield {"client": client, "cli": cli, "specs": specs, "stranger": stranger, "image": cpu_engine_image,
           "host": docker_engine, "root": root}
    stop_recorded_processes(cli.state)
    for container in containers(client):
        container.remove(force=True)
    stranger.remove(force=True)


def test_containers_serve_replace_scale_restart_adopt_and_delete(world) -> None:
    client, cli, specs, stranger = world["client"], world["cli"], world["specs"], world["stranger"]
    timings: dict[str, float] = {}

    # apply -> a completion through the gateway on the test's :9199 stand-in
    began = time.monotonic()
    cli("apply", str(specs), check=0)
    timings["apply_to_healthy_s"] = time.monotonic() - began
    assert complete(TEST_GATEWAY_PORT, model=NAME).strip()
    [first] = containers(client)
    labels = first.labels
    assert labels["io.enova.deployment"] == NAME and labels["io.enova.config-hash"]
    assert first.attrs["HostConfig"]["RestartPolicy"]["Name"] in ("no", "")
    bindings = first.attrs["HostConfig"]["PortBindings"]["8000/tcp"]
    assert bindings[0]["HostIp"] == "127.0.0.1"
    [replica] = cli.replicas(NAME, specs)
    assert replica["where"].startswith("container ") and replica["container"] == first.id
    assert "Application startup complete" in cli("logs", NAME, "--tail", "200", check=0).out

    # change an engine arg: one replace under load, no request failed, the old container is gone
    write_specs(specs, image=world["image"], host=world["host"], max_num_seqs=4)
    assert "-/+ deployment smol will be replaced" in cli("diff", str(specs)).out
    with Load() as load:
        time.sleep(2)
        cli("apply", str(specs), check=0)
        time.sleep(2)
    assert load.failures == [] and load.ok > 0, load.failures[:5]
    [second] = containers(client)
    assert second.id != first.id and second.labels["io.enova.config-hash"] != labels["io.enova.config-hash"]
    assert complete(TEST_GATEWAY_PORT, model=NAME).strip()

    # scale 1 -> 2
    write_specs(specs, image=world["image"], host=world["host"], max_num_seqs=4, replicas=2)
    cli("apply", str(specs), check=0)
    assert len([c for c in containers(client) if c.status == "running"]) == 2

    # docker kill one: status reports it, the reconciler restarts it
    victim = containers(client)[0]
    victim.kill()
    status = wait_for(lambda: [r for r in cli.replicas(NAME, specs) if r["state"] == "exited"], 30, "an exited replica")
    assert "exited with code 137" in status[0]["detail"]
    log = open(world["root"] / "reconciler.log", "w")
    reconciler = subprocess.Popen([*ENOVA, "reconcile", str(specs), "--interval", "2s"], env=cli.env,
                                  stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        restarted = lambda: (reconciler.poll() is not None or  # noqa: E731 - a failed reconciler ends the wait
                             len([r for r in cli.replicas(NAME, specs) if r["state"] == "ready"]) == 2)
        wait_for(restarted, 240, "the reconciler to restart the killed replica")
        assert reconciler.poll() is None, (world["root"] / "reconciler.log").read_text()[-3000:]
    finally:
        reconciler.send_signal(signal.SIGTERM)
        reconciler.wait(60)
        log.close()
    running = [c for c in containers(client) if c.status == "running"]
    assert len(running) == 2 and victim.id not in {c.id for c in running}
    assert containers(client, status="exited") == []  # the killed one was removed, not left behind

    # a fresh state directory adopts the running containers with no action
    fresh = cli_in(world["root"] / "fresh")
    fresh.env["DOCKER_HOST"] = world["host"]
    plan = json.loads(fresh("diff", str(specs), "-o", "json").out)
    [change] = [c for c in plan["changes"] if c["kind"] == "deployment"]
    assert change["action"] == "noop", change
    assert sorted(r["id"] for r in fresh.replicas(NAME, specs)) == sorted(c.labels["io.enova.replica"] for c in running)

    # delete: no labelled container left; the stranger still runs
    stop_recorded_processes(cli.state)  # the first state directory's gateway
    fresh("delete", NAME, check=0)
    assert containers(client) == []
    stranger.reload()
    assert stranger.status == "running"
    print(f"docker e2e timings: {timings}")
