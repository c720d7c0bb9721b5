"""The chat page in headless Chromium against the real CPU engine: `enova apply` starts one
smollm2 replica and the gateway (on 19289, with a token file), `enova webui run` serves the page
with that token file, and Playwright drives Debian's chromium as a user would: the answer streams
in, Stop stops a long answer (the engine stops generating), and a stopped gateway is said plainly.

Screenshots are kept under $ENOVA_TEST_ARTIFACTS/webui (default tests/artifacts/webui)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from prometheus_client.parser import text_string_to_metric_families

from enova.apply.gateway import stop_gateway
from enova.observe.state import StateStore
from tests.e2e.conftest import ENOVA, Cli, stop_recorded_processes, write_spec

from .conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.one_core]

GATEWAY_PORT = 19289
WEBUI_PORT = 19741
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("ENOVA_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts") / "webui"

# Records each length the last answer's text takes, with the time, as the page changes it.
WATCH = """() => {
  window.__lengths = [];
  const box = document.getElementById('messages');
  new MutationObserver(() => {
    const text = box.querySelector('.msg.assistant:last-child .text');
    if (text) window.__lengths.push([performance.now(), text.textContent.length]);
  }).observe(box, {subtree: true, childList: true, characterData: true});
}"""


def _wait(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(interval)


def _start_webui(root: Path, name: str, *args: str) -> tuple[subprocess.Popen, str]:
    log = open(root / f"{name}.log", "w")
    proc = subprocess.Popen([*ENOVA, "webui", "run", *args], stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    assert line.startswith("web UI: "), (line, (root / f"{name}.log").read_text())
    return proc, line.split(": ", 1)[1].strip()


def _stop(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(cli, webui url, engine port, root): one engine start for the module."""
    root = tmp_path_factory.mktemp("webui-e2e")
    env = {**os.environ, "ENOVA_STATE_DIR": str(root / "state"), "ENOVA_PORT_RANGE": "19660-19679",
           "PYTHONUNBUFFERED": "1"}
    cli = Cli(root / "state", env)
    specs = write_spec(root / "specs", max_num_seqs=4, gateway_port=None)
    (specs / "gateway.token").write_text("webui-e2e-token\n")
    (specs / "gateway.yaml").write_text("apiVersion: enova/v1\nkind: Gateway\nmetadata: {name: main}\n"
                                        f"spec: {{port: {GATEWAY_PORT}, token_file: gateway.token}}\n")
    webui = None
    try:
        cli("apply", str(specs), check=0)
        _wait(lambda: httpx.get(f"http://127.0.0.1:{GATEWAY_PORT}/health", trust_env=False).status_code == 200,
              30, "a ready replica behind the gateway")
        engine_port = cli.replicas("smollm2")[0]["port"]
        webui, url = _start_webui(root, "webui", "--serving-port", str(GATEWAY_PORT), "--port", str(WEBUI_PORT),
                                  "--token-file", str(specs / "gateway.token"))
        assert url == f"http://127.0.0.1:{WEBUI_PORT}"
        yield cli, url, engine_port, root
        assert _stop(webui) == 0, (root / "webui.log").read_text()
    finally:
        if webui is not None and webui.poll() is None:
            webui.kill()
        stop_recorded_processes(cli.state)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh tab with its own session storage."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


def _engine(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("vllm:num_requests_running", "vllm:generation_tokens_total"):
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def _open(page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#model")).to_have_value("smollm2")


def _settings(page, **values: str) -> None:
    page.click("#toggle-settings")
    for field, value in values.items():
        page.fill(f"#{field}", value)
    page.click("#toggle-settings")


def _answer_length(page) -> int:
    return page.evaluate("document.querySelector('.msg.assistant:last-child .text').textContent.length")


def test_the_chat_page_streams_an_answer(stack, page):
    _, url, _, _ = stack
    _open(page, url)
    assert page.locator("#model option").all_inner_texts() == ["smollm2"]
    page.select_option("#model", "smollm2")
    _settings(page, system="You are a helpful assistant.", temperature="0", max_tokens="48")
    page.evaluate(WATCH)
    page.fill("#prompt", "Describe the sea in three sentences.")
    page.click("#send")
    page.wait_for_selector('.msg.assistant[data-state="streaming"]')
    _wait(lambda: _answer_length(page) > 0, 60, "the first words")
    page.screenshot(path=str(ARTIFACTS / "streaming.png"))
    page.wait_for_selector('.msg.assistant[data-state="done"]', timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "answered.png"))

    lengths = page.evaluate("window.__lengths")
    growing = [(t, n) for t, n in lengths if n > 0]
    distinct = sorted({n for _, n in growing})
    assert len(distinct) >= 5, f"the answer did not arrive in pieces: {lengths}"
    assert [n for _, n in growing] == sorted(n for _, n in growing), "the text only grows while streaming"
    assert growing[-1][0] - growing[0][0] > 100, "pieces spread over time (ms), not one buffered write"
    answer = page.inner_text(".msg.assistant .text")
    assert answer.strip() and len(answer) == distinct[-1]
    assert "tokens" in page.inner_text(".msg.assistant .meta")        # the usage chunk was read
    assert page.locator("#notice").is_hidden()

    # the conversation is kept in this tab's session: a reload shows it again
    page.reload()
    expect(page.locator("#model")).to_have_value("smollm2")
    assert page.locator(".msg.user .text").all_inner_texts() == ["Describe the sea in three sentences."]
    assert page.inner_text(".msg.assistant .text") == answer


def test_stop_stops_a_long_answer_and_the_engine_stops_generating(stack, page):
    _, url, engine_port, _ = stack
    _open(page, url)
    _settings(page, temperature="0.8", max_tokens="512")
    before = _engine(engine_port)["vllm:generation_tokens_total"]
    page.fill("#prompt", "Write a very long story, at least a thousand words, about a dragon who learns to sail.")
    page.click("#send")
    _wait(lambda: _answer_length(page) > 40, 60, "the story to start")
    assert page.is_enabled("#stop") and page.is_disabled("#send")
    page.click("#stop")
    page.wait_for_selector('.msg.assistant[data-state="stopped"]', timeout=5_000)
    stopped_at = _answer_length(page)
    page.screenshot(path=str(ARTIFACTS / "stopped.png"))
    assert "Stopped" in page.inner_text("#notice")
    assert "stopped" in page.inner_text(".msg.assistant .meta")

    # the engine's request ended: nothing running, and its generated-token count stops growing well short of 512
    _wait(lambda: _engine(engine_port).get("vllm:num_requests_running", 1) == 0, 10, "the engine's request to end")
    first = _engine(engine_port)["vllm:generation_tokens_total"]
    time.sleep(2)
    assert _engine(engine_port)["vllm:generation_tokens_total"] == first, "the engine kept generating"
    assert first - before < 400, f"{first - before} tokens generated: the request ran on to its max_tokens"
    gateway = httpx.get(f"http://127.0.0.1:{GATEWAY_PORT}/metrics", trust_env=False).text
    assert sum(s.value for f in text_string_to_metric_families(gateway) for s in f.samples
               if s.name == "enova_gateway_requests_in_flight") == 0
    assert _answer_length(page) == stopped_at, "the page kept adding text after Stop"
    assert page.is_enabled("#send") and page.is_disabled("#stop")


def test_a_page_whose_gateway_does_not_listen_says_it_is_not_answering(stack, page):
    _, _, _, root = stack
    dead = free_port()
    proc, url = _start_webui(root, "webui-dead", "--serving-port", str(dead), "--port", "0")
    try:
        page.goto(url)
        notice = page.locator("#notice")
        notice.wait_for(state="visible")
        page.screenshot(path=str(ARTIFACTS / "gateway-not-listening.png"))
        assert notice.inner_text().startswith(f"The LLM service at 127.0.0.1:{dead} is not answering — is it "
                                              "running? Check with `enova status`.")
        assert page.locator("#model option").all_inner_texts() == ["(no models)"]
    finally:
        assert _stop(proc) == 0


def test_the_page_says_plainly_when_the_gateway_is_stopped(stack, page):
    cli, url, _, _ = stack
    _open(page, url)
    store = StateStore(cli.state)
    stop_gateway(store, store.read_gateway(), grace=10)         # the last test: the gateway is gone for good
    page.fill("#prompt", "Are you there?")
    page.click("#send")
    page.wait_for_selector('.msg.assistant[data-state="error"]')
    page.screenshot(path=str(ARTIFACTS / "gateway-stopped.png"))
    expected = f"The LLM service at 127.0.0.1:{GATEWAY_PORT} is not answering — is it running? Check with `enova status`."
    assert page.inner_text("#notice").startswith(expected)
    assert page.inner_text(".msg.assistant .text") == expected
    assert page.is_enabled("#send")
