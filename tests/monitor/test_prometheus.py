"""Prometheus in local mode: the rendered configuration (checked by the real promtool), and a real
Prometheus started by `enova mon start` (a subprocess, as a user runs it) scraping a real HTTP
server recorded as a replica: it is up with its labels, replicas come and go without a restart,
stored series survive stop and start, and every error is clear and leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from enova.monitor.process import read_record, reload_monitoring
from enova.monitor.prometheus import (
    MonitoringConfig,
    MonitorPaths,
    check_config,
    find_binary,
    find_promtool,
    monitoring_config,
    prometheus_argv,
    prometheus_duration,
    render_config,
)
from enova.monitor.targets import refresh_targets, write_targets
from enova.observe.state import GatewayRecord, ReplicaRecord, StateStore
from enova.spec import load_specs
from tests.metrics_page import MetricsPage

# The slow tests here wait on a real Prometheus and start no engine: scripts/test.sh runs them on
# the parallel workers (every port is the OS's free one).
pytestmark = pytest.mark.parallel_safe

_SCRIPT = Path(sys.executable).with_name("enova")
ENOVA = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "enova.cli"]
PROMTOOL = shutil.which("promtool") or "promtool"
INTERVAL = 1.0    # the tests' scrape_interval, seconds
# Prometheus 2.x hands discovered targets to its scrape manager in batches, at most every 5 s,
# and the scrape manager applies them at most every 5 s (neither can be configured in 2.42):
# a target file's change is scraped within about 5-10 s plus one interval, whatever the interval.
FOLLOW = 10.0 + 2 * INTERVAL + 2.0


def config(**changes) -> MonitoringConfig:
    return MonitoringConfig(**{"mode": "local", "binary": "prometheus", "host": "127.0.0.1", "port": 19790,
                               "scrape_interval": 5.0, "retention": 15 * 86400.0, "source": "defaults", **changes})


# -- the configuration (no Prometheus process) --------------------------------------------------

@pytest.mark.parametrize("seconds, text", [(5, "5s"), (1, "1s"), (90, "1m30s"), (15 * 86400, "15d"),
                                           (1.5, "1s500ms"), (3600 + 1, "1h1s"), (0.25, "250ms")])
def test_durations_are_written_as_prometheus_reads_them(seconds, text):
    assert prometheus_duration(seconds) == text


def test_the_config_scrapes_every_job_from_its_target_file_at_the_documents_interval(tmp_path):
    rendered = yaml.safe_load(render_config(config(scrape_interval=15.0), MonitorPaths(tmp_path)))
    assert rendered["global"] == {"scrape_interval": "15s", "scrape_timeout": "10s", "evaluation_interval": "15s"}
    assert rendered["rule_files"] == [f"{tmp_path}/monitoring/rules/*.yml"]
    jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}
    assert sorted(jobs) == ["enova-gateway", "enova-reconciler", "enova-replicas"]
    assert jobs["enova-gateway"]["file_sd_configs"][0]["files"] == [f"{tmp_path}/monitoring/targets/gateway.json"]
    assert jobs["enova-replicas"]["file_sd_configs"][0]["files"] == [f"{tmp_path}/monitoring/targets/replicas.json"]
    assert jobs["enova-reconciler"]["file_sd_configs"][0]["files"] == \
        [f"{tmp_path}/monitoring/targets/reconciler.json"]
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())


def test_the_scrape_timeout_never_exceeds_a_short_interval(tmp_path):
    rendered = yaml.safe_load(render_config(config(scrape_interval=2.0), MonitorPaths(tmp_path)))
    assert rendered["global"]["scrape_timeout"] == "2s"


def write_checked_config(state: Path, cfg: MonitoringConfig) -> Path:
    paths = MonitorPaths(state)
    paths.rules.mkdir(parents=True, exist_ok=True)
    refresh_targets(state)
    paths.config.write_text(render_config(cfg, paths))
    return paths.config


def test_promtool_accepts_the_rendered_config_with_targets_and_no_rules(tmp_path):
    store = StateStore(tmp_path)
    store.write_replica(replica_record("chat-a", 19300))
    (tmp_path / "reconciler").mkdir()   # a reconciler serving its /metrics: the enova-reconciler job's target
    (tmp_path / "reconciler" / "status.json").write_text('{"pid": 1, "metrics": {"host": "127.0.0.1", "port": 9188}}')
    path = write_checked_config(tmp_path, config())
    assert (tmp_path / "monitoring" / "targets" / "reconciler.json").read_text().count("127.0.0.1:9188") == 1
    done = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    check_config(PROMTOOL, path)   # and enova's own wrapper says nothing


def test_a_state_directory_with_quotes_and_colons_cannot_change_the_configs_shape(tmp_path):
    state = tmp_path / 'we"ird: dir\n- x'
    path = write_checked_config(state, config())
    rendered = yaml.safe_load(path.read_text())
    assert rendered["rule_files"] == [f"{state}/monitoring/rules/*.yml"]
    assert len(rendered["scrape_configs"]) == 3
    done = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_rejected_rule_file_is_reported_with_promtools_message(tmp_path):
    path = write_checked_config(tmp_path, config())
    (MonitorPaths(tmp_path).rules / "bad.yml").write_text(
        'groups: [{name: g, rules: [{alert: A, expr: "up =="}]}]\n')
    with pytest.raises(Exception) as caught:
        check_config(PROMTOOL, path)
    message = str(caught.value)
    assert f"Prometheus would reject its configuration {path}" in message
    assert "bad.yml" in message and "parse error" in message
    assert "SUCCESS" not in message


def test_the_argv_names_config_storage_retention_and_address(tmp_path):
    paths = MonitorPaths(tmp_path)
    assert prometheus_argv("/usr/bin/prometheus", config(retention=7 * 86400.0, port=19791), paths) == [
        "/usr/bin/prometheus", f"--config.file={tmp_path}/monitoring/prometheus.yml",
        f"--storage.tsdb.path={tmp_path}/monitoring/data", "--storage.tsdb.retention.time=7d",
        "--web.listen-address=127.0.0.1:19791"]
    assert prometheus_argv("p", config(host="::1"), paths)[-1] == "--web.listen-address=[::1]:19790"


def test_the_binary_is_found_on_path_or_refused_with_the_install_command(tmp_path):
    assert find_binary("prometheus") == os.path.abspath(shutil.which("prometheus"))
    assert find_promtool(find_binary("prometheus")) is not None
    for binary, why in (("/nonexistent/prometheus", "does not exist"), ("no-such-prometheus", "is not on PATH")):
        with pytest.raises(Exception) as caught:
            find_binary(binary)
        assert why in str(caught.value) and "apt-get install prometheus" in str(caught.value)
    not_executable = tmp_path / "prometheus"
    not_executable.write_text("")
    with pytest.raises(Exception, match="is not an executable file"):
        find_binary(str(not_executable))


def test_settings_come_from_the_monitoring_document_or_the_defaults(tmp_path):
    assert monitoring_config(None) == MonitoringConfig("local", "prometheus", "127.0.0.1", 9090, 5.0,
                                                       15 * 86400.0, "defaults")
    spec = tmp_path / "monitoring.yaml"
    spec.write_text("apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: mon}\n"
                    "spec: {prometheus: {port: 19795, scrape_interval: 2s, retention: 2w, binary: /opt/p}}\n")
    got = monitoring_config(load_specs(spec))
    assert (got.port, got.scrape_interval, got.retention, got.binary) == (19795, 2.0, 14 * 86400.0, "/opt/p")
    assert got.source == f"{spec}:1"


# -- a real Prometheus, started by the CLI -------------------------------------------------------

def replica_record(rid: str, port: int, deployment: str = "fake") -> ReplicaRecord:
    me = psutil.Process()
    return ReplicaRecord(id=rid, deployment=deployment, host="127.0.0.1", port=port, config_hash="h", config={},
                         argv=[], log="", runtime="local", handle={"pid": me.pid, "create_time": me.create_time()},
                         state="ready")


@pytest.fixture
def metrics_server():
    """Start real HTTP servers serving a Prometheus text page; returns a function giving a new one's port."""
    pages = []

    def start() -> int:
        pages.append(MetricsPage(b"# TYPE fake_engine_requests_total counter\nfake_engine_requests_total 7\n"))
        return pages[-1].port

    yield start
    for page in pages:
        page.close()


def free_port() -> int:
    """A port the OS says is free now (not a fixed range: tests run on two workers at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def enova(state: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([*ENOVA, "mon", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ENOVA_STATE_DIR": str(state)})


def monitoring_spec(folder: Path, **prometheus) -> Path:
    path = folder / "monitoring.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "enova/v1", "kind": "Monitoring", "metadata": {"name": "mon"},
                                    "spec": {"prometheus": prometheus}}))
    return path


@pytest.fixture
def mon(tmp_path):
    """A state directory, a Monitoring spec on a free port at a 1 s interval; Prometheus is stopped after."""
    state = tmp_path / "state"
    port = free_port()
    spec = monitoring_spec(tmp_path, port=port, scrape_interval=f"{INTERVAL:g}s")
    yield state, spec, f"http://127.0.0.1:{port}"
    enova(state, "stop")
    record = read_record(state)
    assert record is None or exited(record.pid)


def exited(pid: int) -> bool:
    """Gone, or a zombie (this sandbox's init does not reap the orphans it inherits)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def api(url: str, path: str, **params) -> dict:
    resp = httpx.get(f"{url}{path}", params=params, timeout=5, trust_env=False)
    resp.raise_for_status()
    return resp.json()["data"]


def active_targets(url: str) -> list[dict]:
    return api(url, "/api/v1/targets", state="active")["activeTargets"]


def wait_for(what, timeout: float, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(poll)


def replica_health(url: str, replica: str) -> str | None:
    for target in active_targets(url):
        if target["labels"].get("replica") == replica:
            return target["health"]
    return None


@pytest.mark.slow
def test_mon_start_scrapes_a_recorded_replica_with_its_deployment_and_replica_labels(mon, metrics_server):
    state, spec, url = mon
    port = metrics_server()
    StateStore(state).write_replica(replica_record("fake-aaaaaa", port))
    done = enova(state, "start", str(spec))
    assert done.returncode == 0, done.stderr
    assert f"prometheus started: {url} (pid " in done.stdout
    assert f"enova-replicas: 127.0.0.1:{port} deployment=fake replica=fake-aaaaaa runtime=local" in done.stdout
    assert (state / "monitoring" / "prometheus.json").is_file() and (state / "logs" / "prometheus.log").is_file()

    began = time.monotonic()
    assert wait_for(lambda: replica_health(url, "fake-aaaaaa") == "up", FOLLOW), active_targets(url)
    print(f"replica up {time.monotonic() - began:.2f} s after start returned")
    series = wait_for(lambda: api(url, "/api/v1/query", query='up{job="enova-replicas"}')["result"], 5)
    assert [(s["metric"]["deployment"], s["metric"]["replica"], s["metric"]["runtime"], s["value"][1])
            for s in series] == [("fake", "fake-aaaaaa", "local", "1")]
    scraped = api(url, "/api/v1/query", query="fake_engine_requests_total")["result"]
    assert scraped and scraped[0]["metric"]["replica"] == "fake-aaaaaa"

    status = enova(state, "status", "-o", "json")
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["parts"][0]["state"] == "running" and view["parts"][0]["url"] == url
    assert view["targets_from"] == "prometheus"
    assert [(t["job"], t["address"], t["health"], t["labels"]) for t in view["targets"]] == [
        ("enova-replicas", f"127.0.0.1:{port}", "up", {"deployment": "fake", "replica": "fake-aaaaaa",
                                                        "runtime": "local"})]
    text = enova(state, "status").stdout
    assert f"prometheus: running on {url}" in text and "fake-aaaaaa" in text and " up " in text


@pytest.mark.slow
def test_a_replica_added_or_removed_appears_or_disappears_without_restarting_prometheus(mon, metrics_server):
    state, spec, url = mon
    store = StateStore(state)
    store.write_replica(replica_record("fake-aaaaaa", metrics_server()))
    assert enova(state, "start", str(spec)).returncode == 0
    pid = read_record(state).pid
    assert wait_for(lambda: replica_health(url, "fake-aaaaaa") == "up", FOLLOW)

    store.write_replica(replica_record("fake-bbbbbb", metrics_server()))
    assert write_targets(store, state / "monitoring" / "targets") is True
    began = time.monotonic()
    assert wait_for(lambda: replica_health(url, "fake-bbbbbb") == "up", FOLLOW), active_targets(url)
    print(f"added replica up in {time.monotonic() - began:.2f} s")
    up = wait_for(lambda: len(api(url, "/api/v1/query", query='up{job="enova-replicas"}')["result"]) == 2, 5)
    assert up

    store.remove_replica("fake", "fake-bbbbbb")
    assert write_targets(store, state / "monitoring" / "targets") is True
    began = time.monotonic()
    assert wait_for(lambda: replica_health(url, "fake-bbbbbb") is None, FOLLOW)
    print(f"removed replica gone in {time.monotonic() - began:.2f} s")
    assert replica_health(url, "fake-aaaaaa") == "up"
    assert wait_for(lambda: [s["metric"]["replica"] for s in api(url, "/api/v1/query",
                                                                  query='up{job="enova-replicas"}')["result"]]
                    == ["fake-aaaaaa"], 5)
    assert read_record(state).pid == pid and not exited(pid)   # the same Prometheus throughout


@pytest.mark.slow
def test_the_recorded_gateway_is_scraped_as_its_own_job(mon, metrics_server):
    state, spec, url = mon
    port = metrics_server()
    StateStore(state).write_gateway(GatewayRecord(pid=1, create_time=0.0, config_hash="g", argv=[], log="",
                                                  config={"host": "127.0.0.1", "port": port}))
    done = enova(state, "start", str(spec))
    assert done.returncode == 0 and f"enova-gateway: 127.0.0.1:{port}\n" in done.stdout, done.stdout + done.stderr
    series = wait_for(lambda: api(url, "/api/v1/query", query='up{job="enova-gateway"} == 1')["result"], FOLLOW)
    assert [s["metric"]["instance"] for s in series] == [f"127.0.0.1:{port}"]


@pytest.mark.slow
def test_rules_written_after_the_start_are_loaded_on_reload_without_a_restart(mon):
    state, spec, url = mon
    assert reload_monitoring(state) is False            # nothing runs yet
    assert enova(state, "start", str(spec)).returncode == 0
    pid = read_record(state).pid
    (state / "monitoring" / "rules" / "replicas.yml").write_text(
        "groups: [{name: enova-test, rules: [{record: 'enova:up:count', expr: 'count(up)'}]}]\n")
    assert reload_monitoring(state) is True
    groups = wait_for(lambda: [g for g in api(url, "/api/v1/rules")["groups"] if g["name"] == "enova-test"]
                      and api(url, "/api/v1/rules")["groups"], 10)
    assert "enova-test" in [g["name"] for g in groups]  # beside the health and SLI groups mon start writes
    assert read_record(state).pid == pid


@pytest.mark.slow
def test_stored_series_survive_mon_stop_and_start(mon, metrics_server):
    state, spec, url = mon
    StateStore(state).write_replica(replica_record("fake-aaaaaa", metrics_server()))
    assert enova(state, "start", str(spec)).returncode == 0
    first_pid = read_record(state).pid
    began = time.time()
    assert wait_for(lambda: replica_health(url, "fake-aaaaaa") == "up", FOLLOW)
    time.sleep(3 * INTERVAL)
    stopped_at = time.time()

    done = enova(state, "stop")
    assert done.returncode == 0 and "stored data kept" in done.stdout, done.stderr
    assert exited(first_pid) and read_record(state) is None
    assert enova(state, "status").stdout.startswith("prometheus: stopped")

    done = enova(state, "start", str(spec))
    assert done.returncode == 0, done.stderr
    assert read_record(state).pid != first_pid
    before = api(url, "/api/v1/query_range", query='up{replica="fake-aaaaaa"}', start=f"{began - 5:.3f}",
                 end=f"{stopped_at:.3f}", step="1s")["result"]
    assert before, "no sample stored before the stop"
    samples = before[0]["values"]
    assert len(samples) >= 2 and all(float(t) <= stopped_at and v == "1" for t, v in samples)


@pytest.mark.slow
def test_mon_start_again_keeps_a_running_prometheus_and_restarts_it_for_new_settings(mon, tmp_path):
    state, spec, url = mon
    assert enova(state, "start", str(spec)).returncode == 0
    pid = read_record(state).pid
    again = enova(state, "start", str(spec))
    assert again.returncode == 0 and "prometheus already running" in again.stdout
    assert read_record(state).pid == pid

    port = int(url.rsplit(":", 1)[1])
    changed = monitoring_spec(tmp_path, port=port, scrape_interval="2s")
    done = enova(state, "start", str(changed))
    assert done.returncode == 0, done.stderr
    assert "prometheus restarted" in done.stdout and "its settings changed" in done.stderr
    assert read_record(state).pid != pid and exited(pid)
    assert api(url, "/api/v1/status/config")["yaml"].count("scrape_interval: 2s") >= 1


@pytest.mark.slow
def test_a_prometheus_that_died_is_reported_and_started_again(mon):
    state, spec, url = mon
    assert enova(state, "start", str(spec)).returncode == 0
    record = read_record(state)
    os.kill(record.pid, signal.SIGKILL)
    assert wait_for(lambda: exited(record.pid), 5)
    status = enova(state, "status")
    assert status.stdout.startswith(f"prometheus: exited on {url} (pid {record.pid}); pid {record.pid} exited")
    done = enova(state, "start", str(spec))
    assert done.returncode == 0 and "prometheus started" in done.stdout, done.stderr
    assert f"pid {record.pid} had exited" in done.stderr


# -- errors: clear, non-zero, nothing left running -----------------------------------------------

def test_a_missing_prometheus_binary_names_the_install_command(tmp_path):
    state = tmp_path / "state"
    spec = monitoring_spec(tmp_path, binary="/nonexistent", port=free_port())
    done = enova(state, "start", str(spec))
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: monitoring: the Prometheus server /nonexistent does not exist; install "
                                   "it with `apt-get install prometheus`, or set spec.prometheus.binary in a "
                                   "Monitoring document to its absolute path")
    assert read_record(state) is None


def test_a_taken_port_is_named_with_the_process_that_holds_it(tmp_path):
    state = tmp_path / "state"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = enova(state, "start", str(monitoring_spec(tmp_path, port=port)))
    assert done.returncode == 1
    me = psutil.Process()
    assert done.stderr.strip() == (f"error: monitoring: port {port} on 127.0.0.1 is in use by pid {me.pid} "
                                   f"({me.name()}); stop it, or set spec.prometheus.port in a Monitoring document")
    assert read_record(state) is None


def test_a_rule_file_prometheus_would_reject_stops_the_start_before_anything_runs(tmp_path):
    state = tmp_path / "state"
    store = StateStore(state)
    store.write_replica(replica_record("fake-aaaaaa", 19300))
    replica_file = store.replica_path("fake", "fake-aaaaaa")
    before = replica_file.read_bytes()
    rules = state / "monitoring" / "rules"
    rules.mkdir(parents=True)
    (rules / "bad.yml").write_text('groups: [{name: g, rules: [{alert: A, expr: "up =="}]}]\n')
    done = enova(state, "start", str(monitoring_spec(tmp_path, port=free_port())))
    assert done.returncode == 1
    assert "Prometheus would reject its configuration" in done.stderr and "parse error" in done.stderr
    assert read_record(state) is None and not (state / "monitoring" / "prometheus.yml").exists()
    assert replica_file.read_bytes() == before        # serving records are never touched by monitoring


def test_a_malformed_monitoring_document_is_a_spec_error_with_file_and_line(tmp_path):
    spec = tmp_path / "monitoring.yaml"
    spec.write_text("apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: mon}\n"
                    "spec:\n  prometheus:\n    host: 0.0.0.0\n    scrape_intervall: 5s\n")
    done = enova(tmp_path / "state", "start", str(spec))
    assert done.returncode == 2
    assert "monitoring.yaml:6 spec.prometheus.host: must be a loopback address" in done.stderr
    assert "monitoring.yaml:7 spec.prometheus.scrape_intervall: unknown field" in done.stderr


def test_status_and_stop_with_nothing_started_say_so(tmp_path):
    state = tmp_path / "state"
    StateStore(state).write_replica(replica_record("fake-aaaaaa", 19300))
    refresh_targets(state)
    status = enova(state, "status")
    assert status.returncode == 0
    assert status.stdout.startswith("prometheus: stopped (`enova mon start` starts it)\n"
                                    "targets (from the target files: Prometheus does not answer):")
    assert "fake-aaaaaa" in status.stdout and "unknown" in status.stdout
    stop = enova(state, "stop")
    assert stop.returncode == 0 and stop.stdout.startswith("prometheus is not running")


@pytest.mark.slow
def test_replica_down_spares_a_replica_the_reconciler_serves_as_starting_and_not_one_it_serves_as_ready(mon):
    """EnovaReplicaDown's expression on a real Prometheus scraping a real reconciler registry: the
    reconciler's enova_replica_state joins the replica's `up` on deployment and replica."""
    from enova.monitor.rules import slo_rules
    from enova.reconcile.metrics import ReconcilerMetrics

    state, spec, url = mon
    store = StateStore(state)
    record = replica_record("fake-aaaaaa", free_port())          # nothing listens there: down
    record.state = "starting"
    store.write_replica(record)
    metrics = ReconcilerMetrics()
    metrics.watch_replicas(store.all_replicas)
    port = metrics.serve(free_port())
    try:
        (state / "reconciler").mkdir(parents=True, exist_ok=True)
        (state / "reconciler" / "status.json").write_text(
            json.dumps({"pid": os.getpid(), "metrics": {"host": "127.0.0.1", "port": port}}))
        assert enova(state, "start", str(spec)).returncode == 0
        [down] = [r for g in slo_rules({}, {})["groups"] for r in g["rules"] if r.get("alert") == "EnovaReplicaDown"]

        def query(expr: str) -> list[dict]:
            return api(url, "/api/v1/query", query=expr)["result"]

        assert wait_for(lambda: query('enova_replica_state{job="enova-reconciler",state="starting"}'), FOLLOW)
        assert wait_for(lambda: query('up{job="enova-replicas"} == 0'), FOLLOW)
        assert query(down["expr"]) == []
        record.state = "ready"
        store.write_replica(record)
        result = wait_for(lambda: query(down["expr"]), 4 * INTERVAL + 5)
        assert [(s["metric"]["job"], s["metric"]["deployment"], s["metric"]["replica"]) for s in result] == [
            ("enova-replicas", "fake", "fake-aaaaaa")]
    finally:
        metrics.close()
