"""The /instance page in headless Chromium (Debian's, driven by Playwright) against the real CPU
engine: `enova apply` starts the gateway, one smollm2 replica and Prometheus (a Monitoring
document, 1 s scrapes); `enova app run SPECS` serves the page. The page shows the deployment and
its healthy replica; a chart changes after requests go through the gateway; a run started from
the page's form completes and its report opens; with monitoring stopped the page shows live
values and says how to get history.

Screenshots are kept in $ENOVA_TEST_ARTIFACTS (default tests/artifacts/, ignored by git), under
instance/."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from enova.reconcile.events import EventLog
from tests.e2e.conftest import ENOVA, Cli, stop_recorded_processes, write_spec

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.one_core,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")]

GATEWAY_PORT = 19290  # not 19294: tests/e2e/test_autoscale.py takes it
PROM_PORT = 19794
APP_PORT = 19740
APP = f"http://127.0.0.1:{APP_PORT}"
ARTIFACTS = Path(os.environ.get("ENOVA_TEST_ARTIFACTS") or Path(__file__).parents[1] / "artifacts") / "instance"


def write_specs(folder: Path) -> Path:
    write_spec(folder, gateway_port=GATEWAY_PORT)
    deployment = folder / "smollm2.yaml"
    deployment.write_text(deployment.read_text().rstrip("\n") + "\n  slo: chat\n")
    (folder / "more.yaml").write_text(f"""\
apiVersion: enova/v1
kind: SLO
metadata: {{name: chat}}
spec: {{ttft_p95_ms: 2000, itl_p95_ms: 500, e2e_p99_ms: 30000, max_error_rate: 0.05}}
---
apiVersion: enova/v1
kind: LoadProfile
metadata: {{name: short}}
spec:
  target: smollm2
  duration: 8s
  seed: 3
  arrival: {{process: constant, rate: 1}}
  requests: {{api: completions, prompts: builtin, output_tokens: {{distribution: fixed, value: 8}}, ignore_eos: true}}
---
apiVersion: enova/v1
kind: Monitoring
metadata: {{name: local}}
spec: {{prometheus: {{port: {PROM_PORT}, scrape_interval: 1s}}}}
""")
    return folder


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def stream(count: int) -> None:
    """Streamed completions through the gateway (TTFT and ITL are measured on streams)."""
    with httpx.Client(trust_env=False, timeout=60) as client:
        for i in range(count):
            with client.stream("POST", f"http://127.0.0.1:{GATEWAY_PORT}/v1/completions",
                               json={"model": "smollm2", "prompt": f"Story {i}:", "max_tokens": 8, "stream": True,
                                     "ignore_eos": True}) as resp:
                assert resp.status_code == 200
                resp.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("instance")
    env = {**os.environ, "ENOVA_STATE_DIR": str(root / "state"), "ENOVA_PORT_RANGE": "19640-19659",
           "PYTHONUNBUFFERED": "1"}
    cli = Cli(root / "state", env)
    specs = write_specs(root / "specs")
    app = None
    try:
        cli("apply", str(specs), check=0)
        with (root / "app.log").open("wb") as log:
            app = subprocess.Popen([*ENOVA, "app", "run", str(specs), "--port", str(APP_PORT)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: answers(f"{APP}/instance") or app.poll() is not None, 60, "the app server")
        assert app.poll() is None, (root / "app.log").read_text()
        token = cli("app", "token", check=0).out.strip().splitlines()[-1]
        yield cli, specs, app, token
    finally:
        if app is not None:
            app.terminate()
            try:
                app.wait(15)
            except subprocess.TimeoutExpired:
                app.kill()
        cli("mon", "stop")
        stop_recorded_processes(cli.state)
        print((root / "app.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, served):
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    tab = context.new_page()
    yield tab
    context.close()


def series_last(page, chart: str, series: str):
    """The last value drawn for `series` in the chart, None when the chart has no such line."""
    return page.evaluate("""([chart, series]) => {
        const path = document.querySelector(`#chart-${chart} path[data-series="${series}"]`);
        return path && path.dataset.last !== "" ? {last: Number(path.dataset.last), d: path.getAttribute("d")} : null;
    }""", [chart, series])


def test_instance_shows_the_deployment_and_its_healthy_replica(served, page):
    cli, specs, _, _ = served
    [replica] = cli.replicas("smollm2", specs)
    # an event as the reconciler's autoscaler records it (no reconciler runs in this module)
    EventLog(cli.state / "events.jsonl").record("Normal", "ScaledUp", "deployment/smollm2",
                                                "autoscaler 0 -> 1: a request was held")
    began = time.monotonic()
    page.goto(f"{APP}/instance")
    page.wait_for_selector('#deployments tr[data-deployment="smollm2"]')
    page.screenshot(path=str(ARTIFACTS / "1-index.png"), full_page=True)
    page.click('#deployments tr[data-deployment="smollm2"] a')
    page.wait_for_url(f"{APP}/instance/smollm2")
    page.wait_for_selector(f'#replicas tr[data-replica="{replica["id"]}"][data-health="healthy"]')
    page.wait_for_function("() => document.querySelectorAll('#charts figure svg').length === 10")
    loaded = time.monotonic() - began
    assert page.get_attribute("#summary", "data-health") == "Healthy"
    assert page.get_attribute("#source", "data-source") == "prometheus"
    # the SLO's targets are drawn on the latency charts: ttft_p95_ms 2000 ms, itl 500 ms, e2e 30 s
    lines = page.evaluate("""() => Object.fromEntries(['ttft', 'itl', 'e2e'].map(c =>
        [c, [...document.querySelectorAll(`#chart-${c} line.slo`)].map(l => Number(l.dataset.line))]))""")
    assert lines == {"ttft": [2.0], "itl": [0.5], "e2e": [30.0]}
    # the event is listed and marked on the replicas chart
    page.wait_for_selector('#events td:has-text("autoscaler 0 -> 1: a request was held")')
    assert page.locator('#chart-replicas line[data-mark="event"]').count() == 1
    page.screenshot(path=str(ARTIFACTS / "2-instance.png"), full_page=True)
    print(f"instance page: index -> deployment page with replicas and 10 charts drawn in {loaded:.2f} s")


def test_a_chart_changes_after_requests_are_sent_through_the_gateway(served, page):
    before = series_last(page, "requests", "received")
    assert before is None or before["last"] == 0, before   # nothing went through the gateway yet
    stream(6)
    after = wait_for(lambda: (lambda s: s if s and s["last"] > 0 else None)(series_last(page, "requests", "received")),
                     45, "the request-rate chart to draw the requests")
    assert before is None or after["d"] != before["d"]
    ttft = wait_for(lambda: series_last(page, "ttft", "p95"), 30, "a TTFT p95 line")
    assert 0 < ttft["last"] < 60
    page.screenshot(path=str(ARTIFACTS / "3-after-requests.png"), full_page=True)


def test_a_run_started_from_the_page_completes_and_its_report_opens(served, page):
    _, _, _, token = served
    page.fill("#token", token)
    page.dispatch_event("#token", "change")
    assert page.input_value("#run-profile") == "short"
    page.click("#run-start")
    page.wait_for_selector("#runs tr[data-run]", timeout=15_000)
    run_id = page.get_attribute("#runs tr[data-run]", "data-run")
    assert token not in page.content()        # kept in sessionStorage, never written into the page
    page.wait_for_selector(f'#runs tr[data-run="{run_id}"][data-state="done"]', timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "4-run-done.png"), full_page=True)
    with page.context.expect_page() as opened:
        page.click(f'#runs tr[data-run="{run_id}"] a.report')
    report = opened.value
    report.wait_for_load_state()
    assert "smollm2" in report.content()
    report.screenshot(path=str(ARTIFACTS / "5-report.png"), full_page=True)
    summary = httpx.get(f"{APP}/api/v1/runs/{run_id}", timeout=10, trust_env=False).json()
    assert summary["state"] == "done" and summary["deployment"] == "smollm2"
    report.close()


def test_without_monitoring_the_page_shows_live_values_and_how_to_get_history(served, page):
    cli, _, _, _ = served
    cli("mon", "stop", check=0)
    page.reload()
    page.wait_for_selector('#source[data-source="live"]')
    assert "enova mon start" in page.inner_text("#source")
    stream(4)   # live rates need two reads of the pages with requests between them
    wait_for(lambda: (lambda s: s if s and s["last"] > 0 else None)(series_last(page, "requests", "received")),
             45, "a live request rate")
    kv = page.evaluate("() => document.querySelectorAll('#chart-kv_cache path[data-series]').length")
    assert kv == 1
    page.screenshot(path=str(ARTIFACTS / "6-live.png"), full_page=True)
    # the API says the same
    body = httpx.get(f"{APP}/api/v1/deployments/smollm2/series", timeout=10, trust_env=False).json()
    assert body["source"] == "live" and body["attainment"] == []
