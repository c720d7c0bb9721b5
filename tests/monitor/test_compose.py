"""Compose mode's rendered project, without a Docker engine: the compose file against the Compose
Specification's JSON Schema, pinned images, loopback only, the Grafana password, the provisioning
files, the collector and Tempo configurations, Prometheus's configuration through the real
promtool, DCGM only with GPUs, the SDK translation, and the CLI's answers to bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from enova.apply.compose import compose_schema
from enova.errors import PermanentError, UsageError
from enova.monitor.compose import (
    DASHBOARDS_IN_CONTAINER,
    IMAGES,
    PASSWORD_IN_CONTAINER,
    ComposeOptions,
    ComposePaths,
    check_pinned,
    ensure_password,
    render_project,
)
from enova.monitor.compose_engine import _write_files, container_kwargs
from enova.monitor.dashboards import SHIPPED
from enova.monitor.prometheus import MonitorPaths, monitoring_config, render_config
from enova.observe.gpus import Gpu, GpuInventory

NO_GPU = GpuInventory(reason="NVML unavailable: NVML Shared Library Not Found")
ONE_GPU = GpuInventory(gpus=(Gpu(0, "GPU-1234", "NVIDIA L4", 23034, 0),), driver="550.54")
PROMTOOL = shutil.which("promtool")
ENOVA = str(Path(sys.executable).with_name("enova"))


def project(tmp_path, inventory=NO_GPU, **options):
    config = options.pop("config", monitoring_config(None))
    return render_project(tmp_path / "state", config, ComposeOptions(**options), None, inventory)


def services(rendered) -> dict:
    return rendered.compose["services"]


@pytest.mark.parametrize("inventory", [NO_GPU, ONE_GPU], ids=["no-gpu", "gpu"])
def test_the_rendered_compose_file_validates_against_the_compose_json_schema(tmp_path, inventory):
    data = project(tmp_path, inventory).compose
    jsonschema.Draft7Validator(compose_schema()).validate(data)
    assert data["name"] == "enova-monitoring"


def test_every_image_is_pinned_by_an_exact_tag_and_none_is_latest(tmp_path):
    rendered = project(tmp_path, ONE_GPU)
    assert set(services(rendered)) == set(IMAGES)
    for name, service in services(rendered).items():
        image = service["image"]
        assert image == IMAGES[name]
        repository, _, tag = image.rpartition(":")
        assert "/" in repository and re.fullmatch(r"v?\d[\w.\-]*", tag), image
        assert "latest" not in image


@pytest.mark.parametrize("image", ["prom/prometheus", "prom/prometheus:latest", "registry:5000/prom/prometheus"])
def test_an_unpinned_image_is_refused_naming_the_service(image):
    with pytest.raises(UsageError, match=r"the prometheus image .* exact tag"):
        check_pinned("prometheus", image)
    with pytest.raises(UsageError, match="prometheus image"):
        ComposeOptions(images={"prometheus": image})


def test_a_registry_with_a_port_and_a_digest_count_as_pinned():
    check_pinned("prometheus", "registry:5000/prom/prometheus:v2.55.1")
    check_pinned("prometheus", "prom/prometheus@sha256:" + "a" * 64)


def test_every_service_shares_the_host_network_publishes_nothing_and_binds_loopback(tmp_path):
    rendered = project(tmp_path, ONE_GPU, grafana_port=40001)
    for name, service in services(rendered).items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service, name
    assert "0.0.0.0" not in "".join(rendered.files.values())
    s = services(rendered)
    assert "--web.listen-address=127.0.0.1:9090" in s["prometheus"]["command"]
    assert (s["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"], s["grafana"]["environment"]["GF_SERVER_HTTP_PORT"]) \
        == ("127.0.0.1", "40001")
    assert s["dcgm-exporter"]["environment"]["DCGM_EXPORTER_LISTEN"] == "127.0.0.1:9400"
    tempo = yaml.safe_load(rendered.files["tempo/tempo.yaml"])
    assert tempo["server"]["http_listen_address"] == tempo["server"]["grpc_listen_address"] == "127.0.0.1"
    assert tempo["memberlist"]["bind_addr"] == ["127.0.0.1"]
    assert rendered.urls["grafana"] == "http://127.0.0.1:40001"


def test_grafana_takes_its_admin_password_from_the_generated_file_with_anonymous_access_off(tmp_path):
    rendered = project(tmp_path)
    grafana = services(rendered)["grafana"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == PASSWORD_IN_CONTAINER
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    mounts = {v["target"]: v for v in grafana["volumes"]}
    password = ComposePaths(tmp_path / "state").password
    assert mounts[PASSWORD_IN_CONTAINER] == {"type": "bind", "source": str(password),
                                              "target": PASSWORD_IN_CONTAINER, "read_only": True}
    assert grafana["user"] == f"{os.getuid()}:{os.getgid()}"  # the owner of the 0600 file can read it


def test_the_password_is_generated_once_0600_and_never_the_default(tmp_path):
    path = tmp_path / "monitoring" / "grafana-admin-password"
    first = ensure_password(path)
    assert first is not None and len(first) >= 32 and first not in ("admin", "grafana")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first
    assert ensure_password(path) is None            # printed once: a second start shows nothing
    assert path.read_text() == first
    assert ensure_password(tmp_path / "other") != first


def test_a_loose_password_file_is_tightened_and_an_empty_one_refused(tmp_path):
    path = tmp_path / "grafana-admin-password"
    path.write_text("s3cret-kept")
    path.chmod(0o644)
    assert ensure_password(path) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "s3cret-kept"
    path.write_text("")
    with pytest.raises(PermanentError, match="non-empty file"):
        ensure_password(path)


def test_grafana_datasources_point_at_the_prometheus_service_and_tempo(tmp_path):
    config = dataclasses.replace(monitoring_config(None), port=9555)
    rendered = project(tmp_path, config=config)
    provisioning = yaml.safe_load(rendered.files["grafana/provisioning/datasources/enova.yaml"])
    by_type = {d["type"]: d for d in provisioning["datasources"]}
    assert set(by_type) == {"prometheus", "tempo"}
    assert by_type["prometheus"]["url"] == "http://127.0.0.1:9555"
    assert "--web.listen-address=127.0.0.1:9555" in services(rendered)["prometheus"]["command"]
    assert by_type["prometheus"]["isDefault"] is True and by_type["tempo"]["isDefault"] is False
    tempo = yaml.safe_load(rendered.files["tempo/tempo.yaml"])
    assert by_type["tempo"]["url"] == f"http://127.0.0.1:{tempo['server']['http_listen_port']}"


def test_grafana_dashboard_provider_reads_the_mounted_folder_holding_enovas_dashboard(tmp_path):
    rendered = project(tmp_path)
    provider = yaml.safe_load(rendered.files["grafana/provisioning/dashboards/enova.yaml"])["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == DASHBOARDS_IN_CONTAINER
    dashboard = json.loads(rendered.files["grafana/dashboards/enova.json"])
    assert dashboard == json.loads((SHIPPED / "enova.json").read_text())
    mounts = {v["target"]: v["source"] for v in services(rendered)["grafana"]["volumes"]}
    root = ComposePaths(tmp_path / "state").root
    assert mounts[DASHBOARDS_IN_CONTAINER] == str(root / "grafana" / "dashboards")
    assert mounts["/etc/grafana/provisioning"] == str(root / "grafana" / "provisioning")


def test_the_collector_receives_otlp_on_loopback_and_exports_to_tempos_receiver(tmp_path):
    rendered = project(tmp_path)
    collector = yaml.safe_load(rendered.files["otel-collector/config.yaml"])
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert protocols == {"grpc": {"endpoint": "127.0.0.1:4317"}, "http": {"endpoint": "127.0.0.1:4318"}}
    tempo = yaml.safe_load(rendered.files["tempo/tempo.yaml"])
    tempo_receiver = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert collector["exporters"]["otlp/tempo"]["endpoint"] == tempo_receiver
    assert tempo_receiver not in ("127.0.0.1:4317", "127.0.0.1:4318")   # both on the host network
    assert collector["service"]["pipelines"]["traces"] == {
        "receivers": ["otlp"], "processors": ["batch"], "exporters": ["otlp/tempo"]}
    assert rendered.urls["otlp_http"] == "http://127.0.0.1:4318/v1/traces"
    assert tempo["storage"]["trace"]["backend"] == "local"
    assert {v["target"] for v in services(rendered)["tempo"]["volumes"]} >= {"/var/tempo", "/etc/tempo/tempo.yaml"}


def test_prometheus_gets_local_modes_configuration_and_the_state_files_at_their_own_paths(tmp_path):
    rendered = project(tmp_path)
    mon = MonitorPaths(tmp_path / "state")
    assert rendered.files["prometheus/prometheus.yml"] == render_config(monitoring_config(None), mon)
    mounts = {v["target"]: v for v in services(rendered)["prometheus"]["volumes"]}
    for folder, read_only in ((mon.targets, True), (mon.rules, True), (mon.data, False)):
        assert mounts[str(folder)]["source"] == str(folder) and mounts[str(folder)]["read_only"] is read_only
    assert f"--storage.tsdb.path={mon.data}" in services(rendered)["prometheus"]["command"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
@pytest.mark.parametrize("inventory", [NO_GPU, ONE_GPU], ids=["no-gpu", "gpu"])
def test_the_compose_projects_prometheus_configuration_passes_promtool(tmp_path, inventory):
    rendered = project(tmp_path, inventory)
    paths = ComposePaths(tmp_path / "state")
    _write_files(paths, rendered)
    (paths.monitor.rules / "enova-slo.yml").write_text("groups: []\n")
    config = paths.root / "prometheus" / "prometheus.yml"
    done = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = [j["job_name"] for j in yaml.safe_load(config.read_text())["scrape_configs"]]
    assert ("dcgm" in jobs) is inventory.available


@pytest.mark.parametrize("inventory, option, present", [
    (NO_GPU, "auto", False), (ONE_GPU, "auto", True), (NO_GPU, "on", True), (ONE_GPU, "off", False)])
def test_dcgms_exporter_runs_only_with_a_gpu_or_when_forced(tmp_path, inventory, option, present):
    rendered = project(tmp_path, inventory, dcgm=option)
    assert ("dcgm-exporter" in services(rendered)) is present
    if present:
        dcgm = services(rendered)["dcgm-exporter"]
        assert dcgm["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
        assert "127.0.0.1:9400" in rendered.files["prometheus/prometheus.yml"]
    assert rendered.dcgm_reason


def test_the_sdk_path_creates_what_the_compose_file_says(tmp_path):
    rendered = project(tmp_path, ONE_GPU)
    prometheus = container_kwargs("prometheus", services(rendered)["prometheus"])
    assert prometheus["network_mode"] == "host" and prometheus["restart_policy"] == {"Name": "unless-stopped"}
    assert prometheus["labels"]["com.docker.compose.project"] == "enova-monitoring"
    assert prometheus["labels"]["com.docker.compose.service"] == "prometheus"
    assert prometheus["command"] == services(rendered)["prometheus"]["command"]
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in prometheus["mounts"]] == \
        [(v["source"], v["target"], v["read_only"]) for v in services(rendered)["prometheus"]["volumes"]]
    dcgm = container_kwargs("dcgm-exporter", services(rendered)["dcgm-exporter"])
    assert dcgm["device_requests"][0]["Count"] == -1 and dcgm["cap_add"] == ["SYS_ADMIN"]


def test_a_dollar_in_a_path_reaches_the_container_as_written(tmp_path):
    rendered = render_project(tmp_path / "st$HOME", monitoring_config(None), ComposeOptions(), None, NO_GPU)
    assert "$$HOME" in rendered.files["compose.yaml"]
    kwargs = container_kwargs("prometheus", services(rendered)["prometheus"])
    assert any(m["Source"].startswith(str(tmp_path / "st$HOME")) for m in kwargs["mounts"])


def test_a_key_the_sdk_path_does_not_know_is_a_bug_not_silently_dropped(tmp_path):
    definition = dict(services(project(tmp_path))["prometheus"], ports=["127.0.0.1:9090:9090"])
    with pytest.raises(PermanentError, match="keys the Docker SDK path does not translate: ports"):
        container_kwargs("prometheus", definition)


def test_same_settings_give_the_same_files_and_a_change_moves_only_that_services_hash(tmp_path):
    a, b = project(tmp_path), project(tmp_path)
    assert a.files == b.files
    c = project(tmp_path, grafana_port=40002)
    hashes = {name: (services(a)[name]["labels"]["io.enova.config-hash"],
                     services(c)[name]["labels"]["io.enova.config-hash"]) for name in services(a)}
    assert [name for name, (x, y) in hashes.items() if x != y] == ["grafana"]


# ---- the CLI ---------------------------------------------------------------------------------

def enova(tmp_path, *args: str, docker_host: str = "unix:///nonexistent/docker.sock"):
    env = {**os.environ, "ENOVA_STATE_DIR": str(tmp_path / "state"), "DOCKER_HOST": docker_host}
    return subprocess.run([ENOVA, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_a_malformed_monitoring_document_is_a_clear_error_naming_the_field(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "monitoring.yaml").write_text("apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: mon}\n"
                                           "spec:\n  mode: swarm\n")
    done = enova(tmp_path, "mon", "start", str(specs))
    assert done.returncode == 2
    assert re.search(r"monitoring\.yaml:5 spec\.mode: must be one of: local, compose \(got 'swarm'\)", done.stderr), done.stderr
    assert not (tmp_path / "state" / "monitoring" / "compose").exists()


def test_an_unknown_mode_flag_is_a_usage_error(tmp_path):
    done = enova(tmp_path, "mon", "start", "--mode", "swarm")
    assert done.returncode == 2 and "--mode" in done.stderr


def test_compose_mode_with_no_engine_says_so_and_creates_nothing(tmp_path):
    done = enova(tmp_path, "mon", "start", "--mode", "compose")
    assert done.returncode == 1
    assert "the Docker engine at unix:///nonexistent/docker.sock cannot be reached" in done.stderr
    assert not (tmp_path / "state" / "monitoring" / "compose").exists()
    assert not (tmp_path / "state" / "monitoring" / "grafana-admin-password").exists()


def test_compose_mode_refuses_a_remote_engine(tmp_path):
    done = enova(tmp_path, "mon", "start", "--mode", "compose", docker_host="ssh://ops@gpu-7")
    assert done.returncode == 2 and "needs this host's Docker engine" in done.stderr


def test_mon_password_says_where_the_password_will_be(tmp_path):
    done = enova(tmp_path, "mon", "password")
    assert done.returncode == 0
    assert str(tmp_path / "state" / "monitoring" / "grafana-admin-password") in done.stdout


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed (apt-get install prometheus)")
def test_the_entry_point_for_apply_and_the_reconciler_runs_local_mode_for_a_local_document(tmp_path):
    import socket

    from enova.monitor.compose_engine import ensure_monitoring
    from enova.monitor.process import stop_monitoring
    from enova.spec import load_specs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "monitoring.yaml"
    spec.write_text("apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: mon}\n"
                    f"spec: {{mode: local, prometheus: {{port: {port}}}}}\n")
    state = tmp_path / "state"
    try:
        assert ensure_monitoring(state, load_specs(spec)).line == f"Prometheus started at http://127.0.0.1:{port}"
        assert ensure_monitoring(state, load_specs(spec)).line == f"Prometheus already running at http://127.0.0.1:{port}"
    finally:
        stop_monitoring(state)
    assert not ComposePaths(state).root.exists()


@pytest.mark.parametrize("entry, message", [
    ("prometheus", "must be SERVICE=IMAGE"),
    ("loki=grafana/loki:3.2.0", "unknown service 'loki'"),
    ("grafana=grafana/grafana:latest", "the grafana image 'grafana/grafana:latest' must be pinned"),
])
def test_a_bad_image_override_is_a_usage_error_naming_the_option(tmp_path, entry, message):
    done = enova(tmp_path, "mon", "start", "--mode", "compose", "--image", entry)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "state" / "monitoring" / "compose").exists()


def test_an_image_override_outside_compose_mode_is_refused(tmp_path):
    done = enova(tmp_path, "mon", "start", "--image", "prometheus=prom/prometheus:v2.55.1")
    assert done.returncode == 2 and "--image is for compose mode" in done.stderr


def _compose_doc(tmp_path: Path, compose: str) -> Path:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    (specs / "monitoring.yaml").write_text("apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: mon}\n"
                                           "spec:\n  mode: compose\n  compose:\n" + compose)
    return specs


def test_the_monitoring_documents_compose_settings_reach_the_project_and_flags_win(tmp_path):
    """apply and the reconciler have no flags: Grafana's port, DCGM and a registry mirror's images
    come from the document; `enova mon start` flags override them."""
    from enova.monitor.compose import IMAGES, compose_options
    from enova.spec import load_specs
    specs = load_specs(_compose_doc(tmp_path, "    grafana_port: 3300\n    dcgm: 'off'\n    images:\n"
                                              "      grafana: mirror.example:5000/grafana/grafana:11.3.1\n"))
    options = compose_options(specs)
    assert (options.grafana_port, options.dcgm) == (3300, "off")
    assert options.images["grafana"] == "mirror.example:5000/grafana/grafana:11.3.1"
    assert options.images["prometheus"] == IMAGES["prometheus"]
    flagged = compose_options(specs, grafana_port=3400, dcgm="on",
                              image_overrides=["grafana=other.example/grafana/grafana:11.3.1"])
    assert (flagged.grafana_port, flagged.dcgm) == (3400, "on")
    assert flagged.images["grafana"] == "other.example/grafana/grafana:11.3.1"
    assert compose_options(None).grafana_port == 32827


@pytest.mark.parametrize("compose, message", [
    ("    images:\n      grafana: grafana/grafana:latest\n", r"monitoring\.yaml:8 spec\.compose\.images\.grafana: must be pinned by an exact tag, never `latest` \(got 'grafana/grafana:latest'\)"),
    ("    images:\n      grafana: grafana/grafana\n", r"monitoring\.yaml:8 spec\.compose\.images\.grafana: must be pinned by an exact tag \(repository:tag\)"),
    ("    images:\n      kibana: elastic/kibana:8.1.0\n", r"monitoring\.yaml:8 spec\.compose\.images\.kibana: must be one of: prometheus, grafana, otel-collector, tempo, dcgm-exporter"),
    ("    grafana_port: 70000\n", r"monitoring\.yaml:7 spec\.compose\.grafana_port"),
])
def test_a_bad_compose_setting_in_the_document_is_a_spec_error_with_file_and_line(tmp_path, compose, message):
    done = enova(tmp_path, "mon", "start", str(_compose_doc(tmp_path, compose)))
    assert done.returncode == 2, done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert not (tmp_path / "state" / "monitoring" / "compose").exists()
