"""The dashboards' queries against a real Prometheus (Debian's, configured as `enova mon` configures
it: enova's rendered prometheus.yml, file-SD target files and the SLO rules file) scraping a real
gateway /metrics page (enova.gateway.metrics, after one request of every kind) and a real vLLM
engine's page (tests/unit/fixtures/vllm_metrics.txt) labelled as a replica: every panel query
returns a series, the GPU panel is skipped for want of a GPU metric, the check reports a query with
no series and one Prometheus rejects, and the scaling annotation marks a replica added.

The end-to-end test runs the same check (tests/monitor/dashboard_queries.py) against the real engine."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest

from enova.gateway.metrics import GatewayMetrics
from enova.monitor.dashboards import (
    GPU_METRICS,
    annotation_queries,
    dashboards,
    replica_count_expr,
    substitute,
)
from enova.monitor.prometheus import MonitoringConfig, MonitorPaths, prometheus_argv, render_config
from enova.monitor.rules import dump_rules, slo_rules
from enova.monitor.targets import GATEWAY_FILE, REPLICAS_FILE, render_groups

from .dashboard_queries import check_dashboards, wait_for_dashboards
from .test_rule_metrics import ALL_OBJECTIVES, ENGINE_PAGE
from tests.metrics_page import MetricsPage

PROMETHEUS = shutil.which("prometheus")
pytestmark = [pytest.mark.slow, pytest.mark.parallel_safe,  # waits on Prometheus, no engine: on the parallel workers
              pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed")]
INTERVAL = 1.0
DEPLOYMENT = "chat"


def gateway_page() -> bytes:
    """A real gateway registry after one request of every kind to `chat`."""
    metrics = GatewayMetrics(live=lambda: ([(DEPLOYMENT, "chat-1", 1)], [(DEPLOYMENT, 0)], [(DEPLOYMENT, 0)]))
    metrics.received.labels(DEPLOYMENT, "chat").inc()
    metrics.processed.labels(DEPLOYMENT, "200").inc()
    metrics.succeeded.labels(DEPLOYMENT).inc()
    for histogram, value in ((metrics.duration, 0.4), (metrics.request_size, 300), (metrics.response_size, 900),
                             (metrics.ttft, 0.1), (metrics.itl, 0.02), (metrics.e2e, 0.4)):
        histogram.labels(DEPLOYMENT).observe(value)
    metrics.prompt_tokens.labels(DEPLOYMENT).inc(12)
    metrics.generation_tokens.labels(DEPLOYMENT).inc(8)
    return metrics.render()


def free_port() -> int:
    """A port the OS says is free now (not a fixed range: this runs beside another worker)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, url: str, paths: MonitorPaths, engine: str):
        self.url, self.paths, self.engine = url, paths, engine

    def replicas(self, *ids: str) -> None:
        (self.paths.targets / REPLICAS_FILE).write_text(render_groups(
            [{"targets": [self.engine], "labels": {"deployment": DEPLOYMENT, "replica": rid, "runtime": "local"}}
             for rid in ids]))

    def query(self, expr: str) -> list[dict]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5, trust_env=False).json()
        return body["data"]["result"]


def wait_for(what: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while not (value := what()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return value


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    paths = MonitorPaths(tmp_path_factory.mktemp("state"))
    gateway, engine = MetricsPage(gateway_page()), MetricsPage(ENGINE_PAGE.read_bytes())
    gateway_address, engine_address = gateway.address, engine.address
    config = MonitoringConfig(mode="local", binary=PROMETHEUS, host="127.0.0.1", port=free_port(),
                              scrape_interval=INTERVAL, retention=86400.0, source="test")
    for folder in (paths.targets, paths.rules, paths.data, paths.log.parent):
        folder.mkdir(parents=True, exist_ok=True)
    (paths.targets / GATEWAY_FILE).write_text(render_groups([{"targets": [gateway_address], "labels": {}}]))
    rules = slo_rules({"standard": ALL_OBJECTIVES}, {DEPLOYMENT: "standard"})
    for group in rules["groups"]:
        group["interval"] = "1s"        # the SLO groups' 1m, shortened so the test need not wait for it
    (paths.rules / "enova.yml").write_text(dump_rules(rules))
    paths.config.write_text(render_config(config, paths))
    handle = Prometheus(config.url, paths, engine_address)
    handle.replicas("chat-1")
    with paths.log.open("ab") as log:
        process = subprocess.Popen(prometheus_argv(PROMETHEUS, config, paths), stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"{config.url}/-/ready", timeout=1, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False
        assert wait_for(ready, 30), paths.log.read_text()[-2000:]
        yield handle
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for page in (gateway, engine):
            page.close()


def test_every_panel_query_returns_a_series_from_the_gateway_and_engine_pages(prometheus):
    models = dashboards()
    result = wait_for_dashboards(prometheus.url, models, timeout=60, interval=1, window=60, step=1)
    assert result.empty == [] and result.failed == [], result.report()
    [(title, expr, why)] = result.skipped
    assert title == "GPU utilisation" and all(name in expr for name in GPU_METRICS) and "no GPU" in why
    assert result.answered == sum(len(p.get("targets", [])) for p in models["enova.json"]["panels"]) - 1


def test_the_check_reports_a_query_with_no_series_and_one_prometheus_rejects(prometheus):
    model = {"panels": [
        {"type": "timeseries", "title": "Missing", "targets": [{"expr": "enova_gateway_no_such_total"}]},
        {"type": "timeseries", "title": "Broken", "targets": [{"expr": 'sum(rate(up{job="x"}))'}]},
        {"type": "timeseries", "title": "Up", "targets": [{"expr": 'up{deployment=~"$deployment"}'}]},
    ]}
    result = check_dashboards(prometheus.url, {"test.json": model}, deployment=DEPLOYMENT, window=30, step=1)
    assert result.empty == [("Missing", "enova_gateway_no_such_total")]
    [(title, expr, error)] = result.failed
    assert title == "Broken" and "range vector" in error
    assert result.answered == 1


def test_a_replica_added_is_marked_by_the_scaling_annotation_and_none_left_counts_as_zero(prometheus):
    [(name, expr)] = annotation_queries(dashboards()["enova.json"])
    assert name == "Replica count changes"
    # a few samples of the count before the change, then none in the last minute
    assert wait_for(lambda: prometheus.query('count_over_time(count(up{job="enova-replicas"})[1m:]) >= 3'), 10)
    assert prometheus.query(expr) == []
    prometheus.replicas("chat-1", "chat-2")
    # Prometheus 2.42 applies file-SD changes within about 10 s, then scrapes (more on a loaded
    # machine: these are deadlines, each wait ends as soon as it holds)
    assert wait_for(lambda: prometheus.query('up{replica="chat-2"} == 1'), 45)
    [marked] = wait_for(lambda: prometheus.query(expr), 15)
    assert marked["metric"] == {"deployment": DEPLOYMENT} and marked["value"][1] == "1"
    # every replica gone: the count is 0 (the gateway still has chat's series), not absent
    prometheus.replicas()
    count = substitute(replica_count_expr())
    assert wait_for(lambda: [s["value"][1] for s in prometheus.query(count)] == ["0"], 45), prometheus.query(count)
