"""The /instance page's routes and its chart data without Prometheus, against real HTTP servers:
the page and its files are served from a fixed table (no path from the request, no inline
script, no external URL), an unknown deployment is a 404 naming it, bad parameters are 4xx
naming the field, and with monitoring not running the series come live from a real gateway
registry's page and a real vLLM page, with the hint saying how to get history."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from enova.app import pages
from enova.app.series import LiveSampler, histogram_quantile
from enova.app.server import AppContext, create_app, serve
from enova.gateway.metrics import GatewayMetrics
from enova.monitor.prometheus import MonitoringConfig, MonitorPaths, prometheus_argv, render_config
from enova.monitor.rules import dump_rules, slo_rules
from enova.monitor.targets import GATEWAY_FILE, REPLICAS_FILE, render_groups
from enova.observe.ports import port_is_free
from enova.observe.state import DeploymentRecord, GatewayRecord, ReplicaRecord, StateStore
from enova.reconcile.events import EventLog
from enova.settings import Settings
from enova.spec.models import SLOSpec
from tests.metrics_page import MetricsPage as Page

ENGINE_PAGE = Path(__file__).parents[1] / "unit" / "fixtures" / "vllm_metrics.txt"
DEPLOYMENT = "chat"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def write_specs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chat.yaml").write_text(f"""\
apiVersion: enova/v1
kind: Deployment
metadata: {{name: {DEPLOYMENT}}}
spec:
  model: builtin:smollm2-135m-instruct
  replicas: 1
  resources: {{gpus: 0, cpus: 1}}
  slo: interactive
---
apiVersion: enova/v1
kind: SLO
metadata: {{name: interactive}}
spec: {{ttft_p95_ms: 300, e2e_p99_ms: 4000, max_error_rate: 0.01}}
---
apiVersion: enova/v1
kind: LoadProfile
metadata: {{name: short}}
spec: {{target: {DEPLOYMENT}, duration: 10s, arrival: {{process: poisson, rate: 1}}}}
""")
    return folder


@pytest.fixture
def world(tmp_path: Path):
    """A state directory recording a gateway and one replica whose /metrics are real pages."""
    metrics = GatewayMetrics(live=lambda: ([(DEPLOYMENT, "chat-1", 1)], [(DEPLOYMENT, 0)], [(DEPLOYMENT, 0)]))
    gateway = Page(metrics.render())
    engine = Page(ENGINE_PAGE.read_bytes())
    store = StateStore(tmp_path / "state")
    store.write_gateway(GatewayRecord(pid=1, create_time=0.0, config_hash="g", argv=[], log="",
                                      config={"host": "127.0.0.1", "port": gateway.port}))
    store.write_deployment(DeploymentRecord(name=DEPLOYMENT, replicas=1, config_hash="c", config={},
                                            applied_at=time.time(), settings={"slo": "interactive"}))
    store.write_replica(ReplicaRecord(id="chat-1a2b3c", deployment=DEPLOYMENT, host="127.0.0.1", port=engine.port,
                                      config_hash="c", config={}, argv=[], log="", state="ready",
                                      started_at=time.time()))
    ctx = AppContext(settings=Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache"),
                     specs=write_specs(tmp_path / "specs"), token="secret")
    app = create_app(ctx)
    app.state.instance_live_sampler = LiveSampler(min_gap=0.0)
    yield TestClient(app), metrics, gateway
    gateway.close()
    engine.close()


def traffic(metrics: GatewayMetrics, requests: int, ttft: float) -> None:
    for _ in range(requests):
        metrics.received.labels(DEPLOYMENT, "completions").inc()
        metrics.processed.labels(DEPLOYMENT, "200").inc()
        metrics.succeeded.labels(DEPLOYMENT).inc()
        metrics.ttft.labels(DEPLOYMENT).observe(ttft)
        metrics.e2e.labels(DEPLOYMENT).observe(ttft * 4)


def chart(body: dict, chart_id: str) -> dict:
    [found] = [c for c in body["charts"] if c["id"] == chart_id]
    return found


def test_root_redirects_to_instance_and_the_page_loads_only_its_own_files(world):
    client, _, _ = world
    resp = client.get("/", follow_redirects=False)
    assert resp.status_code in (302, 307) and resp.headers["location"] == "/instance"
    page = client.get("/instance")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all('src="/assets/' in attrs and not body.strip() for attrs, body in scripts)
    for asset in re.findall(r'(?:src|href)="(/assets/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    for file in (*pages.ASSET_TYPES, pages.PAGE, pages.MISSING):
        text = (pages.STATIC / file).read_text().replace(SVG_NAMESPACE, "")   # a name, never fetched
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f"{file} names an external URL"


def test_assets_come_from_the_fixed_table_only(world):
    client, _, _ = world
    js = client.get("/assets/instance.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/assets/instance.js", headers={"If-None-Match": js.headers["etag"]}).status_code == 304
    for bad in ("pages.py", "..%2Fpages.py", "..%2F..%2Fserver.py", "instance.html", "missing.html"):
        assert client.get(f"/assets/{bad}").status_code == 404, bad


def test_a_known_deployment_has_a_page_and_an_unknown_one_a_404_page_naming_it(world):
    client, _, _ = world
    assert client.get(f"/instance/{DEPLOYMENT}").status_code == 200
    missing = client.get('/instance/<b>"nope')
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;&quot;nope" in missing.text and "<b>" not in missing.text


def test_series_refuses_an_unknown_deployment_and_a_bad_window_naming_them(world):
    client, _, _ = world
    unknown = client.get("/api/v1/deployments/nope/series")
    assert unknown.status_code == 404 and "deployment" in unknown.json()["detail"]
    for window in ("5", "99999999", "an-hour"):
        bad = client.get(f"/api/v1/deployments/{DEPLOYMENT}/series", params={"window": window})
        assert bad.status_code == 422 and "window" in str(bad.json()["detail"]), bad.text


def test_without_monitoring_the_series_are_live_values_with_a_hint_for_history(world):
    client, metrics, gateway = world
    url = f"/api/v1/deployments/{DEPLOYMENT}/series"
    first = client.get(url).json()
    assert first["source"] == "live" and "enova mon start" in first["hint"]
    assert first["slo"] == {"name": "interactive",
                            "objectives": {"ttft_p95_ms": 300, "e2e_p99_ms": 4000, "max_error_rate": 0.01}}
    assert first["profiles"] == ["short"]
    assert chart(first, "requests")["series"] == []        # a rate needs two samples
    assert chart(first, "replicas")["series"] == [{"name": "recorded", "points": [[pytest.approx(first["now"], abs=2),
                                                                                    1]]},
                                                  {"name": "up", "points": [[pytest.approx(first["now"], abs=2), 1]]}]
    [kv] = chart(first, "kv_cache")["series"]
    assert kv["name"] == "chat-1a2b3c" and 0 < kv["points"][0][1] < 1   # the vLLM page's own value

    traffic(metrics, 10, ttft=0.2)
    gateway.body = metrics.render()
    time.sleep(0.05)
    second = client.get(url).json()
    received = {s["name"]: s for s in chart(second, "requests")["series"]}["received"]
    [(t, rate)] = received["points"]
    assert rate > 0
    ttft = {s["name"]: s["points"][-1][1] for s in chart(second, "ttft")["series"]}
    assert 0.1 < ttft["p95"] <= 0.25          # interpolated inside the bucket (0.1, 0.25]
    assert chart(second, "ttft")["lines"] == [{"value": 0.3, "label": "SLO interactive: ttft_p95_ms 300 ms"}]
    assert chart(second, "itl")["lines"] == []   # the SLO sets no itl_p95_ms
    success = chart(second, "success")["series"][0]["points"][-1][1]
    assert success == 1.0


def test_histogram_quantile_matches_prometheus_rules():
    buckets = {0.1: 2.0, 0.25: 10.0, 0.5: 10.0, math.inf: 10.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.15 * (5 - 2) / 8)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.99, {1.0: 1.0, math.inf: 3.0}) == 1.0    # the rank in +Inf: the highest bound
    assert histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.5, {1.0: 1.0}) is None                     # no +Inf bucket


# ---------------------------------------------------------------------------------------------
# With a real Prometheus (Debian's), configured as `enova mon` configures it


PROMETHEUS = shutil.which("prometheus")


def free_port() -> int:
    ports = list(range(19900, 19950))
    random.shuffle(ports)
    return next(p for p in ports if port_is_free("127.0.0.1", p))


@pytest.fixture
def monitored(world, tmp_path: Path):
    """`world` scraped every second by a real Prometheus with enova's configuration and the
    deployment's SLO rules (evaluated every second instead of every minute)."""
    if PROMETHEUS is None:
        pytest.skip("Debian's prometheus is not installed")
    client, metrics, gateway = world
    ctx = client.app.state.ctx
    paths = MonitorPaths(tmp_path / "prom")
    config = MonitoringConfig(mode="local", binary=PROMETHEUS, host="127.0.0.1", port=free_port(),
                              scrape_interval=1.0, retention=86400.0, source="test")
    for folder in (paths.targets, paths.rules, paths.data, paths.log.parent):
        folder.mkdir(parents=True, exist_ok=True)
    store = StateStore(ctx.settings.state_dir)
    [replica] = store.replicas(DEPLOYMENT)
    (paths.targets / GATEWAY_FILE).write_text(render_groups([{"targets": [f"127.0.0.1:{gateway.port}"],
                                                               "labels": {}}]))
    (paths.targets / REPLICAS_FILE).write_text(render_groups([{
        "targets": [f"127.0.0.1:{replica.port}"],
        "labels": {"deployment": DEPLOYMENT, "replica": replica.id, "runtime": "local"}}]))
    rules = slo_rules({"interactive": SLOSpec(ttft_p95_ms=300, e2e_p99_ms=4000, max_error_rate=0.01)},
                      {DEPLOYMENT: "interactive"})
    for group in rules["groups"]:
        group["interval"] = "1s"
    (paths.rules / "enova.yml").write_text(dump_rules(rules))
    paths.config.write_text(render_config(config, paths))
    with paths.log.open("ab") as log:
        process = subprocess.Popen(prometheus_argv(PROMETHEUS, config, paths), stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    ctx.prometheus_url = config.url
    try:
        assert until(lambda: answers(f"{config.url}/-/ready"), 30), paths.log.read_text()[-2000:]
        yield client, metrics, gateway, config.url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def until(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return value


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_with_prometheus_the_charts_are_the_dashboard_queries_over_the_window(monitored):
    client, metrics, gateway, url = monitored
    series_url = f"/api/v1/deployments/{DEPLOYMENT}/series"

    def received(body: dict) -> float:
        named = {s["name"]: s for s in chart(body, "requests")["series"]}
        return named["received"]["points"][-1][1] if "received" in named and named["received"]["points"] else 0.0

    # traffic every 0.2 s, so rate(...[1m]) over 1 s scrapes grows from zero
    stop = threading.Event()

    def send() -> None:
        while not stop.wait(0.2):
            traffic(metrics, 2, ttft=0.2)
            gateway.body = metrics.render()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        body = until(lambda: (lambda b: b if received(b) > 0 else None)(client.get(series_url, params={"window": 300})
                                                                       .json()), 30)
    finally:
        stop.set()
        sender.join()
    assert body, "the request-rate chart never showed the requests"
    assert body["source"] == "prometheus" and body["prometheus"] == url and body["hint"] == ""
    assert body["errors"] == [] and body["step"] == 2
    ttft = {s["name"]: s["points"][-1][1] for s in chart(body, "ttft")["series"]}
    assert {"p50", "p95", "p99"} <= set(ttft) and 0.1 < ttft["p95"] <= 0.25
    assert chart(body, "ttft")["lines"] == [{"value": 0.3, "label": "SLO interactive: ttft_p95_ms 300 ms"}]
    [kv] = chart(body, "kv_cache")["series"]
    assert kv["name"] == "chat-1a2b3c"
    replicas = {s["name"]: s["points"][-1][1] for s in chart(body, "replicas")["series"]}
    assert replicas == {"up": 1, "recorded": 1}
    # the SLO recording rules give attainment over the last hour: every request met 300 ms and 4 s
    attained = until(lambda: [a for a in client.get(series_url).json()["attainment"] if a["value"] is not None], 20)
    assert attained, "no attainment recorded"
    for a in attained:
        assert a["value"] == pytest.approx(1.0) and a["level"] in (0.95, 0.99)
    assert {a["objective"] for a in client.get(series_url).json()["attainment"]} == {"TTFT", "E2E latency", "errors"}


def test_a_prometheus_that_stopped_answering_falls_back_to_live_values(world):
    client, _, _ = world
    client.app.state.ctx.prometheus_url = f"http://127.0.0.1:{free_port()}"
    body = client.get(f"/api/v1/deployments/{DEPLOYMENT}/series").json()
    assert body["source"] == "live" and "did not answer" in body["reason"] and "enova mon start" in body["hint"]


def test_scale_events_of_the_deployment_within_the_window_are_marked(world, tmp_path):
    client, _, _ = world
    state = client.app.state.ctx.settings.state_dir
    now = time.time()
    EventLog(state / "events.jsonl", clock=lambda: now - 7200).record(
        "Normal", "ScaledUp", f"deployment/{DEPLOYMENT}", "too old for the window")
    log = EventLog(state / "events.jsonl")
    log.record("Normal", "ScaledUp", f"deployment/{DEPLOYMENT}", "autoscaler 1 -> 2: queue 5 > 2")
    log.record("Normal", "Reconciled", f"deployment/{DEPLOYMENT}", "in sync")
    log.record("Normal", "ScaledDown", "deployment/other", "not this one")
    log.record("Warning", "Replaced", f"deployment/{DEPLOYMENT}", "engine.args changed")
    body = client.get(f"/api/v1/deployments/{DEPLOYMENT}/series", params={"window": 3600}).json()
    assert [(e["reason"], e["message"]) for e in body["scale_events"]] == [
        ("ScaledUp", "autoscaler 1 -> 2: queue 5 > 2"), ("Replaced", "engine.args changed")]
    # the parsed log is kept until a file of it changes: a new event shows at the next poll
    log.record("Normal", "ScaledDown", f"deployment/{DEPLOYMENT}", "autoscaler 2 -> 1: idle")
    again = client.get(f"/api/v1/deployments/{DEPLOYMENT}/series", params={"window": 3600}).json()
    assert [e["reason"] for e in again["scale_events"]] == ["ScaledUp", "Replaced", "ScaledDown"]


def test_beyond_loopback_the_series_need_the_token_and_any_name_gets_the_page_shell(world):
    client, _, _ = world
    ctx = client.app.state.ctx
    ctx.reads_need_token = True
    url = f"/api/v1/deployments/{DEPLOYMENT}/series"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get(url, headers={"Authorization": "Bearer secret"}).json()["deployment"] == DEPLOYMENT
    # whether a deployment exists is the API's to say, behind the token
    assert client.get("/instance/nope").status_code == 200


# ---------------------------------------------------------------------------------------------
# The page's own drawing, in Debian's headless Chromium, over the live fallback (no engine)

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser_page(world):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    client, metrics, gateway = world
    ctx = client.app.state.ctx
    # the real cache, where vLLM's argument table already is (the API checks engine args with it)
    served = AppContext(settings=Settings(state_dir=ctx.settings.state_dir, cache_dir=Settings.from_env().cache_dir),
                        specs=ctx.specs, token="secret")
    port = free_port()
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(served,), kwargs={"host": "127.0.0.1", "port": port, "stop": stop},
                              daemon=True)
    thread.start()
    try:
        assert until(lambda: answers(f"http://127.0.0.1:{port}/instance"), 30)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            yield page, metrics, gateway, f"http://127.0.0.1:{port}"
            browser.close()
    finally:
        stop.set()
        thread.join(15)


def drawn(page, chart_id: str, series: str):
    return page.evaluate("""([chart, series]) => {
        const p = document.querySelector(`#chart-${chart} path[data-series="${series}"]`);
        return p ? {d: p.getAttribute("d"), last: p.dataset.last === "" ? null : Number(p.dataset.last)} : null;
    }""", [chart_id, series])


def test_the_page_draws_the_live_values_where_they_belong_and_follows_new_requests(browser_page):
    page, metrics, gateway, base = browser_page
    page.goto(f"{base}/instance/{DEPLOYMENT}")
    page.wait_for_selector('#source[data-source="live"]')
    page.wait_for_function("() => document.querySelectorAll('#charts figure svg').length === 10")
    assert "enova mon start" in page.inner_text("#source")
    # the chart is 560 x 220 with the plot from y 12 to y 194: KV cache (0-100%) at the vLLM
    # page's 6.67% is at y 12 + 182 * (1 - 0.0667) = 181.9
    kv = drawn(page, "kv_cache", "chat-1a2b3c")
    assert kv["last"] == pytest.approx(0.0667, abs=1e-3) and kv["d"].endswith(" 181.9")
    # the SLO's ttft_p95_ms 300 ms on an axis up to 500 ms: y 12 + 182 * (1 - 0.6) = 84.8
    [line] = page.evaluate("() => [...document.querySelectorAll('#chart-ttft line.slo')]"
                           ".map(l => [Number(l.dataset.line), Number(l.getAttribute('y1'))])")
    assert line == [0.3, pytest.approx(84.8)]
    assert drawn(page, "requests", "received") is None         # no rate before a second read
    traffic(metrics, 20, ttft=0.2)
    gateway.body = metrics.render()
    after = until(lambda: (lambda d: d if d and d["last"] else None)(drawn(page, "requests", "received")), 20)
    assert after and after["last"] > 0
    # 20 requests at 0.2 s, all in the bucket (0.1, 0.25]: p95 = 0.1 + 0.15 * 19 / 20, as Prometheus interpolates
    assert until(lambda: drawn(page, "ttft", "p95"), 10)["last"] == pytest.approx(0.2425)
