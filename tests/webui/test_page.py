"""The page's own behaviour in headless Chromium, against a real gateway over fake engines (no
model needed): the busy and no-replica messages with the gateway's Retry-After, a refused token
fixed by typing it in the settings, and a setting out of range named before anything is sent."""

from __future__ import annotations

import asyncio
import json

import pytest
from playwright.async_api import async_playwright, expect

from .conftest import eventually

pytestmark = pytest.mark.anyio

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
async def browser():
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = await chromium.new_context()
        page = await context.new_page()
        page.set_default_timeout(10_000)
        yield page
        await chromium.close()


async def _stack(harness, make_ui, *, state: str = "ready", pace: float = 0.01, max_num_seqs=None, **gateway):
    engine = await harness.engine("e1", pace=pace)
    harness.deployment("smollm2", [engine], state=state, max_num_seqs=max_num_seqs)
    gw = await harness.start(**gateway)
    ui = await make_ui(gw.port)
    return engine, ui.webui.url


async def _send(page, text: str) -> None:
    await page.fill("#prompt", text)
    await page.click("#send")


async def test_a_busy_gateway_is_said_with_its_retry_after(harness, make_ui, browser):
    engine, url = await _stack(harness, make_ui, pace=0.1, max_num_seqs=1, queue_size=0, retry_after_busy=2)
    await browser.goto(url)
    await expect(browser.locator("#model")).to_have_value("smollm2")
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100}
    hog = asyncio.create_task(harness.post("/v1/chat/completions", body))     # takes the only slot
    await eventually(lambda: engine.in_flight == 1)
    await _send(browser, "Hello?")
    notice = browser.locator("#notice")
    await expect(notice).to_contain_text("The LLM service is busy; retry in 2 s.", timeout=5_000)
    shown = asyncio.get_running_loop().time()
    assert "queue of 0 waiting requests is full" in await notice.inner_text()     # the gateway's detail
    assert "You can retry now." not in await notice.inner_text()
    await expect(browser.locator(".msg.assistant")).to_have_attribute("data-state", "error")
    await expect(notice).to_contain_text("You can retry now.", timeout=5_000)
    assert asyncio.get_running_loop().time() - shown > 1.5
    hog.cancel()


async def test_no_ready_replica_is_said_with_its_retry_after(harness, make_ui, browser):
    _, url = await _stack(harness, make_ui, state="starting", retry_after_unavailable=9)
    await browser.goto(url)
    await expect(browser.locator("#model")).to_have_value("smollm2")
    await _send(browser, "Hello?")
    await expect(browser.locator("#notice")).to_contain_text(
        "has no model ready to answer right now (starting, or scaled to zero); retry in 9 s.")
    assert await browser.locator("#send").is_enabled()


async def test_a_refused_token_is_fixed_by_typing_it_in_the_settings(harness, make_ui, browser):
    engine, url = await _stack(harness, make_ui, tokens=("s3cret",))
    await browser.goto(url)
    await expect(browser.locator("#notice")).to_contain_text("refused the token")
    await expect(browser.locator("#model option")).to_have_text(["(no models)"])
    await browser.click("#toggle-settings")
    await browser.fill("#token", "s3cret")
    await browser.press("#token", "Tab")            # change -> the models are asked for again, with the token
    await expect(browser.locator("#model")).to_have_value("smollm2")
    await expect(browser.locator("#notice")).to_be_hidden()
    await _send(browser, "Hello?")
    await expect(browser.locator(".msg.assistant")).to_have_attribute("data-state", "done")
    assert (await browser.inner_text(".msg.assistant .text")) == "".join(f" t{i}" for i in range(256))  # default max
    assert (await browser.inner_text(".msg.assistant .meta")) == "256 tokens · cut at max tokens"
    stored = await browser.evaluate("[sessionStorage.getItem('enova.chat.settings'), localStorage.length]")
    assert json.loads(stored[0])["token"] == "s3cret" and stored[1] == 0       # this tab only
    assert len(engine.requests) == 1


async def test_a_setting_out_of_range_is_named_before_anything_is_sent(harness, make_ui, browser):
    engine, url = await _stack(harness, make_ui)
    await browser.goto(url)
    await expect(browser.locator("#model")).to_have_value("smollm2")
    await browser.click("#toggle-settings")
    await browser.fill("#temperature", "5")
    await _send(browser, "Hello?")
    await expect(browser.locator("#notice")).to_have_text("Settings: temperature must be a number from 0 to 2.")
    assert engine.requests == [] and await browser.locator(".msg").count() == 0
    await browser.fill("#temperature", "0.2")
    await browser.fill("#max_tokens", "3")
    await browser.fill("#system", "Be brief.")
    await browser.click("#send")
    await expect(browser.locator(".msg.assistant")).to_have_attribute("data-state", "done")
    sent = engine.requests[0]
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 3
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    await browser.click("#clear")
    assert await browser.locator(".msg").count() == 0


async def test_new_chat_during_an_answer_cancels_it_and_forgets_the_conversation(harness, make_ui, browser):
    engine, url = await _stack(harness, make_ui, pace=0.05)
    await browser.goto(url)
    await expect(browser.locator("#model")).to_have_value("smollm2")
    await _send(browser, "Tell me everything.")
    await expect(browser.locator(".msg.assistant .text")).to_contain_text(" t3")
    await browser.click("#clear")
    await eventually(lambda: engine.disconnects == 1 and engine.in_flight == 0, timeout=5)
    assert engine.completed == 0
    await asyncio.sleep(0.3)                        # the aborted fetch has settled
    assert await browser.locator(".msg").count() == 0
    await expect(browser.locator("#notice")).to_be_hidden()
    assert await browser.evaluate("sessionStorage.getItem('enova.chat.history')") == "[]"
    assert await browser.locator("#send").is_enabled() and await browser.locator("#stop").is_disabled()
