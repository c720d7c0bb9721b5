"""The autoscaler's signals: real /metrics pages read into Samples.

Pages come from the real producers: the captured pages of the vLLM CPU engine and of the
gateway (tests/unit/fixtures), and live pages of the gateway's own metrics registry
(`GatewayMetrics`) served over real HTTP. The Prometheus source is tested against a real
Prometheus server (Debian's `prometheus`) scraping such pages.
"""

from __future__ import annotations

import math
import re
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from enova.autoscale import metricnames
from enova.autoscale.model import quantile
from enova.autoscale.signals import (PrometheusSource, Scraper, counter_delta, parse_page, read_engine_page,
                                     read_gateway_page)
from enova.gateway.metrics import GatewayMetrics
from enova.observe.state import GatewayRecord, ReplicaRecord, StateStore

FIXTURES = Path(__file__).parent / "fixtures"
ENGINE_PAGE = (FIXTURES / "vllm_metrics.txt").read_text()
GATEWAY_PAGE = (FIXTURES / "gateway_metrics.txt").read_text()
CAPTURED = "smollm2-135m-instruct"      # the deployment (and vLLM model_name) the pages were captured with


# -- real pages served over HTTP -----------------------------------------------------------------

class Pages:
    """A real HTTP server answering GET <path> with the text set for it (404 for others)."""

    def __init__(self):
        self.texts: dict[str, str | bytes] = {}
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.texts.get(self.path)
                if callable(body):
                    body = body()
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pages():
    p = Pages()
    yield p
    p.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_page(running: float, waiting: float, kv: float, model: str = "chat") -> str:
    """The captured engine page with its three gauges set (and served under `model`)."""
    text = ENGINE_PAGE.replace(f'model_name="{CAPTURED}"', f'model_name="{model}"')
    for name, value in (("vllm:num_requests_running", running), ("vllm:num_requests_waiting", waiting),
                        ("vllm:kv_cache_usage_perc", kv)):
        text, n = re.subn(rf"^({re.escape(name)}\{{[^}}]*\}}) \S+$", rf"\g<1> {value}", text, flags=re.M)
        assert n == 1, name
    return text


def world(tmp_path: Path, gateway_port: int, replicas: dict[str, list[int]], pid: int = 4242) -> StateStore:
    """A state directory with a gateway record and ready replica records at those ports."""
    store = StateStore(tmp_path / "state")
    store.write_gateway(GatewayRecord(pid=pid, create_time=100.0, config_hash="g", argv=[], log="",
                                      config={"host": "127.0.0.1", "port": gateway_port}))
    for dep, ports in replicas.items():
        for i, port in enumerate(ports):
            store.write_replica(ReplicaRecord(id=f"{dep}-{i}", deployment=dep, host="127.0.0.1", port=port,
                                              config_hash="c", config={}, argv=[], log="", state="ready"))
    return store


class LiveGateway:
    """The gateway's real metrics registry, with its in-flight and queue gauges set by the test."""

    def __init__(self):
        self.in_flight: list[tuple[str, str, int]] = []
        self.queues: list[tuple[str, int]] = []
        self.holds: list[tuple[str, int]] = []
        self.metrics = GatewayMetrics(live=lambda: (self.in_flight, self.queues, self.holds))

    def page(self) -> bytes:
        return self.metrics.render()

    def requests(self, deployment: str, n: int, code: str = "200") -> None:
        for _ in range(n):
            self.metrics.received.labels(deployment, "completions").inc()
            self.metrics.processed.labels(deployment, code).inc()


# -- the captured pages, read exactly ------------------------------------------------------------

def test_the_captured_engine_page_is_read_exactly():
    # captured from the vLLM CPU engine (enode run, SmolLM2-135M) with six requests running
    page = parse_page(ENGINE_PAGE)
    reading = read_engine_page(page)
    assert (reading.running, reading.waiting) == (6.0, 0.0)
    assert reading.kv_cache_usage == 0.06666666666666665
    assert metricnames.resolve("generation_tokens", page) == "vllm:generation_tokens_total"
    assert page["vllm:generation_tokens_total"] == [({"engine": "0", "model_name": CAPTURED}, 253.0)]


def test_the_captured_gateway_page_is_read_exactly():
    # the same moment at the gateway: 3 + 6 completions and 2 streamed chats received, 5 answered
    reading = read_gateway_page(parse_page(GATEWAY_PAGE))
    assert reading.counters["arrivals"] == {CAPTURED: 11.0}
    assert reading.counters["completed"] == {CAPTURED: 5.0}
    assert (reading.in_flight, reading.queued, reading.held) == ({CAPTURED: 6.0}, {CAPTURED: 0.0}, {CAPTURED: 0.0})
    ttft = reading.histograms["ttft"][CAPTURED]
    assert (ttft.count, ttft.sum) == (2.0, 0.39217230300073425)
    assert ttft.buckets == ((0.01, 0), (0.025, 0), (0.05, 0), (0.1, 0), (0.25, 2), (0.5, 2), (0.75, 2), (1.0, 2),
                            (2.5, 2), (5.0, 2), (10.0, 2), (30.0, 2), (math.inf, 2))
    assert quantile([ttft], 0.5) == pytest.approx(0.175)       # linear within (0.1, 0.25]
    assert reading.histograms["e2e"][CAPTURED].count == 5.0
    assert reading.histograms["itl"][CAPTURED].count == 22.0


# -- the name table --------------------------------------------------------------------------------

def test_the_name_table_resolves_a_renamed_metric():
    old = ENGINE_PAGE.replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")   # vLLM v0's name
    assert "vllm:kv_cache_usage_perc" not in old
    assert read_engine_page(parse_page(old)).kv_cache_usage == 0.06666666666666665


def test_the_newest_name_wins_when_a_page_carries_both():
    both = engine_page(0, 0, 0.25) + "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc 0.9\n"
    assert read_engine_page(parse_page(both)).kv_cache_usage == 0.25


def test_a_page_without_the_engine_gauges_gives_none():
    reading = read_engine_page(parse_page("# TYPE other gauge\nother 1\n"))
    assert (reading.running, reading.waiting, reading.kv_cache_usage) == (None, None, None)


def test_a_counter_that_went_down_was_reset_and_its_new_value_is_the_increase():
    assert counter_delta(15.0, 10.0) == 5.0
    assert counter_delta(3.0, 10.0) == 3.0
    assert counter_delta(4.0, None) == 4.0


# -- scraping: deltas, resets, what does not answer -----------------------------------------------

@pytest.fixture
def live(pages):
    gateway = LiveGateway()
    pages.texts["/metrics"] = gateway.page
    return gateway


def test_the_first_scrape_has_interval_zero_and_zero_deltas(tmp_path, pages, live):
    live.requests("chat", 7)
    live.metrics.ttft.labels("chat").observe(0.3)
    engine = Pages()
    try:
        engine.texts["/metrics"] = engine_page(3, 2, 0.5, "chat")
        store = world(tmp_path, pages.port, {"chat": [engine.port]})
        sample = Scraper(store).scrape(["chat"], 1000.0)["chat"]
    finally:
        engine.close()
    assert (sample.at, sample.interval, sample.arrivals, sample.completed, sample.rps) == (1000.0, 0.0, 0, 0, 0)
    assert sample.ttft.count == 0 and quantile([sample.ttft], 0.5) is None
    assert (sample.ready, sample.engine_running, sample.engine_waiting, sample.kv_cache_usage) == (1, 3, 2, 0.5)


def test_the_next_scrape_gives_the_counters_and_histograms_deltas_and_the_live_gauges(tmp_path, pages, live):
    store = world(tmp_path, pages.port, {"chat": [], "other": []})
    scraper = Scraper(store)
    live.requests("chat", 5)
    scraper.scrape(["chat", "other"], 1000.0)
    live.requests("chat", 12)
    live.requests("chat", 2, code="429")
    live.requests("other", 4)              # series that appeared since the last scrape start from 0
    for v in (0.02, 0.2, 0.2, 3.0):
        live.metrics.ttft.labels("chat").observe(v)
    live.in_flight = [("chat", "chat-0", 3), ("chat", "chat-1", 2), ("other", "other-0", 1)]
    live.queues = [("chat", 4)]
    samples = scraper.scrape(["chat", "other"], 1002.0)
    chat, other = samples["chat"], samples["other"]
    assert (chat.interval, chat.arrivals, chat.completed, chat.rps) == (2.0, 14, 14, 7.0)
    assert (chat.in_flight, chat.queued, chat.held) == (5, 4, 0)
    assert chat.ttft.count == 4 and chat.ttft.sum == pytest.approx(3.42)
    assert dict(chat.ttft.buckets)[0.025] == 1 and dict(chat.ttft.buckets)[0.25] == 3
    assert (other.arrivals, other.in_flight, other.ttft.count) == (4, 1, 0)
    assert chat.engine_running is None and chat.ready == 0   # no ready replica, so no engine part


def test_the_held_gauge_is_read_when_the_gateway_shows_it(tmp_path, pages, live):
    store = world(tmp_path, pages.port, {"chat": []})
    live.holds = [("chat", 3)]
    assert Scraper(store).scrape(["chat"], 1.0)["chat"].held == 3


def test_a_gateway_counter_reset_takes_the_new_value(tmp_path, pages):
    store = world(tmp_path, pages.port, {"chat": []})
    scraper = Scraper(store)
    first = LiveGateway()
    first.requests("chat", 50)
    first.metrics.e2e.labels("chat").observe(1.0)
    pages.texts["/metrics"] = first.page
    scraper.scrape(["chat"], 10.0)
    second = LiveGateway()                 # same record (pid), but its counters started again
    second.requests("chat", 6)
    second.metrics.e2e.labels("chat").observe(2.0)
    pages.texts["/metrics"] = second.page
    sample = scraper.scrape(["chat"], 12.0)["chat"]
    assert (sample.arrivals, sample.e2e.count, sample.e2e.sum) == (6, 1, 2.0)


def test_a_new_gateway_process_counts_from_zero_even_past_the_old_totals(tmp_path, pages):
    store = world(tmp_path, pages.port, {"chat": []})
    scraper = Scraper(store)
    first = LiveGateway()
    first.requests("chat", 5)
    pages.texts["/metrics"] = first.page
    scraper.scrape(["chat"], 10.0)
    second = LiveGateway()
    second.requests("chat", 9)             # more than the old total: no negative delta to see
    pages.texts["/metrics"] = second.page
    world(tmp_path, pages.port, {}, pid=4343)
    assert scraper.scrape(["chat"], 12.0)["chat"].arrivals == 9


def test_an_unreachable_replica_gives_none_for_its_part_and_the_others_still_count(tmp_path, pages, live):
    up = Pages()
    try:
        up.texts["/metrics"] = engine_page(2, 1, 0.3, "chat")
        store = world(tmp_path, pages.port, {"chat": [up.port, free_port()], "solo": [free_port()]})
        started = time.monotonic()
        samples = Scraper(store, timeout=0.5).scrape(["chat", "solo"], 5.0)
        assert time.monotonic() - started < 2.0
    finally:
        up.close()
    chat, solo = samples["chat"], samples["solo"]
    assert (chat.ready, chat.engine_running, chat.engine_waiting, chat.kv_cache_usage) == (2, 2, 1, 0.3)
    assert (solo.ready, solo.engine_running, solo.engine_waiting, solo.kv_cache_usage) == (1, None, None, None)


def test_engine_gauges_are_summed_and_kv_cache_is_the_fullest_replica(tmp_path, pages, live):
    a, b = Pages(), Pages()
    try:
        a.texts["/metrics"] = engine_page(4, 0, 0.2, "chat")
        b.texts["/metrics"] = engine_page(5, 3, 0.85, "chat")
        store = world(tmp_path, pages.port, {"chat": [a.port, b.port]})
        store.write_replica(ReplicaRecord(id="chat-9", deployment="chat", host="127.0.0.1", port=free_port(),
                                          config_hash="c", config={}, argv=[], log="", state="starting"))
        chat = Scraper(store).scrape(["chat"], 5.0)["chat"]
    finally:
        a.close()
        b.close()
    assert (chat.ready, chat.engine_running, chat.engine_waiting, chat.kv_cache_usage) == (2, 9, 3, 0.85)


def test_a_garbled_engine_page_is_a_page_that_did_not_answer(tmp_path, pages, live):
    bad = Pages()
    try:
        bad.texts["/metrics"] = "vllm:num_requests_running{ this is not a metrics page\n"
        store = world(tmp_path, pages.port, {"chat": [bad.port]})
        chat = Scraper(store).scrape(["chat"], 5.0)["chat"]
    finally:
        bad.close()
    assert chat.engine_running is None and chat.ready == 1


def test_an_unreachable_gateway_gives_no_sample_and_the_next_delta_spans_the_gap(tmp_path, pages, live):
    store = world(tmp_path, pages.port, {"chat": []})
    scraper = Scraper(store, timeout=0.5)
    live.requests("chat", 1)
    scraper.scrape(["chat"], 10.0)
    live.requests("chat", 8)
    del pages.texts["/metrics"]            # 404: not a metrics page
    assert scraper.scrape(["chat"], 12.0) == {}
    pages.texts["/metrics"] = live.page
    live.requests("chat", 2)
    sample = scraper.scrape(["chat"], 14.0)["chat"]
    assert (sample.interval, sample.arrivals, sample.rps) == (4.0, 10, 2.5)


def test_no_gateway_record_gives_no_sample(tmp_path):
    assert Scraper(StateStore(tmp_path)).scrape(["chat"], 1.0) == {}


def test_a_quantile_of_the_deltas_matches_numpy_on_the_same_observations(tmp_path, pages, live):
    store = world(tmp_path, pages.port, {"chat": []})
    scraper = Scraper(store)
    for _ in range(500):                    # before the window: must not count
        live.metrics.ttft.labels("chat").observe(25.0)
    scraper.scrape(["chat"], 0.0)
    observed = (np.arange(2000) + 0.5) / 2000 * 2.5     # uniform on (0, 2.5)
    for v in observed:
        live.metrics.ttft.labels("chat").observe(float(v))
    sample = scraper.scrape(["chat"], 2.0)["chat"]
    assert sample.ttft.count == 2000
    for q in (0.5, 0.9, 0.95, 0.99):
        assert quantile([sample.ttft], q) == pytest.approx(float(np.quantile(observed, q)), abs=0.005)


# -- the same signals from a real Prometheus -----------------------------------------------------

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def prometheus(tmp_path, pages):
    """A real Prometheus scraping `pages` every 0.5 s: /metrics as the gateway, /engine as a replica."""
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary (Debian: apt-get install -y prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 500ms, scrape_timeout: 400ms, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: gateway\n    static_configs: [{{targets: ['127.0.0.1:{pages.port}']}}]\n"
        f"  - job_name: engine\n    metrics_path: /engine\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{pages.port}']}}]\n")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def wait_for(url: str, promql: str, value: float, timeout: float = 20.0) -> None:
    """Until Prometheus has scraped `value` (its discovery hands targets over after about 5 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = httpx.get(f"{url}/api/v1/query", params={"query": promql}).json()["data"]["result"]
        if result and float(result[0]["value"][1]) == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"{promql} never reached {value}")


def test_the_prometheus_source_reads_the_same_signals_from_a_real_prometheus(tmp_path, pages, prometheus):
    live = LiveGateway()
    pages.texts["/metrics"] = live.page
    pages.texts["/engine"] = engine_page(3, 1, 0.4, "chat")
    live.requests("chat", 5)
    live.metrics.ttft.labels("chat")       # the series exists (at 0) before its first observation: Prometheus
    #                                        cannot know a series that first appears at 400 was ever at 0
    live.in_flight = [("chat", "chat-0", 2), ("chat", "chat-1", 1)]
    live.queues = [("chat", 6)]
    wait_for(prometheus, 'sum(enova_gateway_requests_received_total{deployment="chat"})', 5)
    wait_for(prometheus, "vllm:num_requests_running", 3)
    source = PrometheusSource(prometheus, timeout=2.0, scrape_interval=0.5)
    first = source.scrape(["chat"], time.time())["chat"]
    assert (first.interval, first.arrivals, first.ttft.count) == (0.0, 0, 0)
    assert (first.in_flight, first.queued, first.held) == (3, 6, 0)
    assert (first.engine_running, first.engine_waiting, first.kv_cache_usage, first.ready) == (3, 1, 0.4, 1)
    store = world(tmp_path, pages.port, {"chat": [free_port(), free_port()]})
    assert PrometheusSource(prometheus, store=store).scrape(["chat"], time.time())["chat"].ready == 2   # the records'

    start = time.time()
    observed = (np.arange(400) + 0.5) / 400 * 2.5
    live.requests("chat", 40)
    for v in observed:
        live.metrics.ttft.labels("chat").observe(float(v))
    wait_for(prometheus, 'sum(enova_gateway_requests_received_total{deployment="chat"})', 45)
    time.sleep(max(0.0, start + 4.0 - time.time()))      # the counters then stay flat for a while
    pages.texts["/engine"] = engine_page(7, 2, 0.9, "chat")
    wait_for(prometheus, "vllm:num_requests_running", 7)
    second = source.scrape(["chat"], time.time())["chat"]
    assert second.interval >= 4.0
    assert second.arrivals == pytest.approx(40, rel=0.35)        # rate() extrapolates to the range's edges
    assert second.ttft.count == pytest.approx(400, rel=0.35)
    assert quantile([second.ttft], 0.5) == pytest.approx(float(np.quantile(observed, 0.5)), abs=0.1)
    assert quantile([second.ttft], 0.95) == pytest.approx(float(np.quantile(observed, 0.95)), abs=0.1)
    assert (second.engine_running, second.engine_waiting, second.kv_cache_usage) == (7, 2, 0.9)


def test_the_prometheus_source_gives_no_sample_when_the_server_does_not_answer():
    source = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    assert source.scrape(["chat"], 1.0) == {}

