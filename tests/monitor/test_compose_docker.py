"""Compose mode against a real Docker engine (the private dockerd of tests/docker): `enova mon start
--mode compose` lists missing images with their `docker pull` lines and creates nothing; and the
Docker SDK path runs the rendered file's Prometheus service for real (Debian's Prometheus imported
as an image, standing in for the pinned prom/prometheus), which scrapes a real target on the
host's loopback through the target files of the state directory.

Grafana, the collector, Tempo and DCGM's exporter are not run here: their images cannot be pulled
on this machine (no registry), and a stand-in for them would prove nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from enova.monitor.compose import IMAGES, LABEL_PROJECT, PROJECT, ComposeOptions, ComposePaths
from enova.monitor.compose_engine import compose_view, project_containers, start_compose, stop_compose
from enova.monitor.prometheus import monitoring_config
from enova.observe.gpus import GpuInventory, gpu_inventory
from enova.observe.state import GatewayRecord, ReplicaRecord, StateStore
from tests.docker.conftest import docker_client, docker_engine  # noqa: F401  (the session's engine)
from tests.docker.engine import RUN_DIR

from .compose_image import ensure_prometheus_image
from tests.metrics_page import MetricsPage

pytestmark = pytest.mark.docker   # one dockerd per machine: run with the docker tests, not beside them

ENOVA = str(Path(sys.executable).with_name("enova"))
NO_GPU = GpuInventory(reason="no GPU in this test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def enova(state: Path, *args: str, docker_host: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENOVA_STATE_DIR": str(state)}
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return subprocess.run([ENOVA, *args], capture_output=True, text=True, env=env, timeout=120)


def project_labelled(client) -> list:
    return client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={PROJECT}"]})


def test_mon_start_lists_each_missing_image_with_docker_pull_and_creates_nothing(docker_engine, docker_client,  # noqa: F811
                                                                                tmp_path):
    assert not project_labelled(docker_client)
    env = {**os.environ, "ENOVA_STATE_DIR": str(tmp_path / "state"), "DOCKER_HOST": docker_engine}
    done = subprocess.run([ENOVA, "mon", "start", "--mode", "compose"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    expected = [image for service, image in IMAGES.items()
                if service != "dcgm-exporter" or gpu_inventory().available]
    for image in expected:
        assert f"\n  docker pull {image}\n" in done.stderr + "\n", done.stderr
    assert "nothing was created" in done.stderr
    if not gpu_inventory().available:
        assert "dcgm-exporter" not in done.stderr
    assert not project_labelled(docker_client)
    state = tmp_path / "state" / "monitoring"
    assert not (state / "compose").exists() and not (state / "grafana-admin-password").exists()
    assert not (state / "rules").exists() and not (state / "targets").exists()


@pytest.fixture
def target():
    """A real /metrics page on the host's loopback, as the gateway serves one."""
    page = MetricsPage(b"# TYPE enova_compose_test_up gauge\nenova_compose_test_up 1\n")
    yield page.port
    page.close()


@pytest.fixture
def prometheus_image(docker_client) -> str:  # noqa: F811
    return ensure_prometheus_image(docker_client, RUN_DIR / "build")


@pytest.fixture
def stack(tmp_path, docker_engine, prometheus_image, target):  # noqa: F811
    """The state directory with a gateway record at the target, and a start_compose for the
    rendered file's Prometheus service alone; the project is stopped afterwards."""
    state = tmp_path / "state"
    StateStore(state).write_gateway(GatewayRecord(pid=1, create_time=1.0, config_hash="g",
                                                  config={"host": "127.0.0.1", "port": target}, argv=[], log=""))
    config = dataclasses.replace(monitoring_config(None), port=free_port(), scrape_interval=1.0)
    options = ComposeOptions(images={"prometheus": prometheus_image})

    def start(config=config):
        return start_compose(state, config, options, None, NO_GPU, docker_host=docker_engine,
                             services=("prometheus",), ready_timeout=60)

    yield state, config, start
    stop_compose(state, docker_host=docker_engine)


def wait_for_up(url: str, job: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        resp = httpx.get(f"{url}/api/v1/targets", timeout=2, trust_env=False)
        last = [t for t in resp.json()["data"]["activeTargets"] if t["labels"]["job"] == job]
        if last and last[0]["health"] == "up":
            return last[0]
        time.sleep(0.5)
    raise AssertionError(f"{job} not up within {timeout} s: {last}")


def test_the_sdk_path_runs_prometheus_from_the_rendered_file_and_it_scrapes_a_host_target(stack, target,
                                                                                         docker_client):  # noqa: F811
    state, config, start = stack
    result = start()
    [prometheus] = result.services
    assert prometheus.action == "created" and prometheus.ready_seconds is not None
    up = wait_for_up(config.url, "enova-gateway")
    assert up["scrapeUrl"] == f"http://127.0.0.1:{target}/metrics"
    query = httpx.get(f"{config.url}/api/v1/query", params={"query": "enova_compose_test_up"}, timeout=5,
                      trust_env=False).json()
    assert [r["value"][1] for r in query["data"]["result"]] == ["1"]

    container = project_containers(docker_client)["prometheus"]
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    mounts = {m["Destination"]: m["RW"] for m in container.attrs["Mounts"]}
    paths = ComposePaths(state).monitor
    assert mounts == {"/etc/prometheus/prometheus.yml": False, str(paths.targets): False,
                      str(paths.rules): False, str(paths.data): True}
    password = ComposePaths(state).password
    assert result.password == password.read_text() and stat.S_IMODE(password.stat().st_mode) == 0o600


def test_a_second_start_with_the_same_settings_leaves_the_container_and_prints_no_password(stack, docker_client):  # noqa: F811,E501
    state, config, start = stack
    first = start()
    created = project_containers(docker_client)["prometheus"].id
    again = start()
    assert [s.action for s in again.services] == ["unchanged"] and again.password is None
    assert project_containers(docker_client)["prometheus"].id == created
    view = compose_view(state, docker_host=again.docker_host)
    assert [(s.service, s.state) for s in view.services] == [("prometheus", "running")]
    assert view.password_file == first.password_file


def test_mon_status_shows_the_containers_and_the_compose_prometheus_target_health(stack, target):
    state, config, start = stack
    start()
    wait_for_up(config.url, "enova-gateway")
    done = enova(state, "mon", "status", "-o", "json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["mode"] == "compose" and status["targets_from"] == "prometheus"
    assert [(p["name"], p["state"], p["url"]) for p in status["parts"]] == [("prometheus", "running", config.url)]
    assert [(t["job"], t["address"], t["health"]) for t in status["targets"]] == \
        [("enova-gateway", f"127.0.0.1:{target}", "up")]
    assert [(s["service"], s["state"]) for s in status["compose"]["services"]] == [("prometheus", "running")]
    assert status["compose"]["password_file"] == str(ComposePaths(state).password)
    assert status["paths"]["config"] == str(ComposePaths(state).root / "prometheus" / "prometheus.yml")
    text = enova(state, "mon", "status").stdout
    assert f"password in {ComposePaths(state).password}" in text and "prometheus: running" in text


def test_mon_start_in_local_mode_is_refused_while_compose_mode_runs(stack):
    state, config, start = stack
    start()
    done = enova(state, "mon", "start", "--mode", "local")
    assert done.returncode == 2 and "compose mode runs here (prometheus)" in done.stderr


def test_changed_settings_recreate_prometheus_and_stop_keeps_its_data(stack, docker_client, docker_engine):  # noqa: F811
    state, config, start = stack
    start()
    wait_for_up(config.url, "enova-gateway")
    first = project_containers(docker_client)["prometheus"].id
    changed = dataclasses.replace(config, scrape_interval=2.0)
    assert [s.action for s in start(changed).services] == ["recreated"]
    assert project_containers(docker_client)["prometheus"].id != first
    wait_for_up(config.url, "enova-gateway")
    done = enova(state, "mon", "stop", docker_host="unix:///nonexistent.sock")  # the recorded engine is used
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("compose: stopped and removed prometheus")   # no word about local mode
    status = json.loads(enova(state, "mon", "status", "-o", "json").stdout)
    assert [(s["service"], s["state"]) for s in status["compose"]["services"]] == [("prometheus", "stopped")]
    assert not project_labelled(docker_client)
    data = ComposePaths(state).monitor.data
    assert (data / "wal").is_dir() and any((data / "wal").iterdir())
    assert stop_compose(state, docker_host=docker_engine) == "compose: no container of the project runs"


def rule_groups(url: str) -> list[str]:
    resp = httpx.get(f"{url}/api/v1/rules", timeout=5, trust_env=False).json()
    return sorted(g["name"] for g in resp["data"]["groups"])


def test_slo_rules_reach_the_compose_prometheus_and_a_change_reloads_it_without_a_restart(
        stack, tmp_path, docker_engine, prometheus_image, docker_client):  # noqa: F811
    from enova.spec import load_specs

    state, config, start = stack
    start()
    assert rule_groups(config.url) == ["enova-health", "enova-sli"]
    container = project_containers(docker_client)["prometheus"].id
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "specs.yaml").write_text(
        "apiVersion: enova/v1\nkind: SLO\nmetadata: {name: interactive}\nspec: {ttft_p95_ms: 500}\n---\n"
        "apiVersion: enova/v1\nkind: Deployment\nmetadata: {name: chat}\n"
        "spec: {model: \"builtin:smollm2-135m-instruct\", slo: interactive}\n")
    again = start_compose(state, config, ComposeOptions(images={"prometheus": prometheus_image}), load_specs(specs),
                          NO_GPU, docker_host=docker_engine, services=("prometheus",))
    assert [s.action for s in again.services] == ["unchanged"]
    deadline = time.monotonic() + 15
    while "enova-slo-chat" not in rule_groups(config.url) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert rule_groups(config.url) == ["enova-health", "enova-sli", "enova-slo-chat"]
    assert project_containers(docker_client)["prometheus"].id == container


def test_the_entry_point_for_apply_and_the_reconciler_follows_a_compose_document(docker_engine, docker_client,  # noqa: F811,E501
                                                                               tmp_path):
    from enova.errors import UsageError
    from enova.monitor.compose_engine import ensure_monitoring
    from enova.spec import load_specs

    (tmp_path / "monitoring.yaml").write_text("apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: mon}\n"
                                              "spec: {mode: compose}\n")
    with pytest.raises(UsageError, match=r"nothing was created(.|\n)*  docker pull prom/prometheus:v2\.55\.1"):
        ensure_monitoring(tmp_path / "state", load_specs(tmp_path / "monitoring.yaml"), docker_host=docker_engine)
    assert not project_labelled(docker_client)


def test_a_service_that_fails_at_start_is_reported_with_its_last_log_lines(tmp_path, docker_engine,  # noqa: F811
                                                                          prometheus_image):
    from enova.errors import PermanentError

    state = tmp_path / "state"
    (state / "monitoring" / "data").mkdir(parents=True)
    (state / "monitoring" / "data").chmod(0o755)
    config = dataclasses.replace(monitoring_config(None), port=free_port())
    # nobody cannot write the TSDB folder: Prometheus exits at start
    options = ComposeOptions(images={"prometheus": prometheus_image}, user="65534:65534")
    try:
        with pytest.raises(PermanentError, match=r"prometheus exited at start(.|\n)*permission denied"):
            start_compose(state, config, options, None, NO_GPU, docker_host=docker_engine, services=("prometheus",),
                          ready_timeout=60)
        done = enova(state, "mon", "stop")          # the failed start is recorded: stop finds its container
        assert "compose: stopped and removed prometheus" in done.stdout, done.stderr
    finally:
        stop_compose(state, docker_host=docker_engine)


def test_an_image_override_is_the_image_checked_and_only_the_others_are_missing(docker_engine, tmp_path,  # noqa: F811
                                                                               prometheus_image):
    done = enova(tmp_path / "state", "mon", "start", "--mode", "compose", "--dcgm", "off",
                 "--image", f"prometheus={prometheus_image}", docker_host=docker_engine)
    assert done.returncode == 2, done.stderr
    pulls = sorted(line.strip() for line in done.stderr.splitlines() if line.strip().startswith("docker pull"))
    assert pulls == sorted(f"docker pull {IMAGES[s]}" for s in ("grafana", "otel-collector", "tempo"))


def test_compose_start_and_stop_never_touch_a_serving_replicas_container_or_record(stack, docker_client,  # noqa: F811
                                                                                  prometheus_image):
    from tests.docker.conftest import TEST_LABELS

    state, config, start = stack
    replica = docker_client.containers.create(
        prometheus_image, name="enova-chat-3f2a1c", command=["--version"],
        labels={**TEST_LABELS, "io.enova.managed-by": "enova", "io.enova.deployment": "chat",
                "io.enova.replica": "chat-3f2a1c"})
    try:
        store = StateStore(state)
        store.write_replica(ReplicaRecord(id="chat-3f2a1c", deployment="chat", host="127.0.0.1", port=19399,
                                          config_hash="h", config={}, argv=[], log="", runtime="docker",
                                          handle={"container": replica.id}, state="ready"))
        record = store.replica_path("chat", "chat-3f2a1c")
        before = record.read_bytes()
        start()
        assert "enova-chat-3f2a1c" not in [c.name for c in project_labelled(docker_client)]
        assert '"deployment": "chat"' in (ComposePaths(state).monitor.targets / "replicas.json").read_text()
        assert enova(state, "mon", "stop").returncode == 0
        replica.reload()
        assert replica.status == "created" and record.read_bytes() == before
    finally:
        replica.remove(force=True)
