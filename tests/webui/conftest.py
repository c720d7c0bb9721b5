"""The web UI in front of a real gateway: the gateway test harness (a real `Gateway` over
`FakeEngine`s, real aiohttp servers speaking vLLM's OpenAI API) plus the web UI's own
application bound to a free port, all on the test's event loop."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from enova.webui.config import WebUIConfig
from enova.webui.server import WebUI
from tests.gateway.conftest import FakeEngine, Harness, eventually  # noqa: F401  (re-exported for the tests)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UI:
    """The web UI on a free port and a client for it, like a browser's fetch."""

    def __init__(self, config: WebUIConfig):
        self.config = config
        self.webui = WebUI(config)
        self.client: aiohttp.ClientSession | None = None

    async def start(self) -> "UI":
        await self.webui.start()
        self.client = aiohttp.ClientSession(base_url=self.webui.url)
        return self

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        await self.webui.stop()

    async def get(self, path: str, **kw: Any) -> tuple[int, Any, Any]:
        assert self.client is not None
        async with self.client.get(path, **kw) as r:
            raw = await r.read()
            return r.status, r.headers, _parse(raw)

    async def post(self, path: str, body: Any = None, *, raw: bytes | None = None,
                   headers: dict | None = None) -> tuple[int, Any, Any]:
        assert self.client is not None
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.client.post(path, data=data, headers={"Content-Type": "application/json",
                                                               **(headers or {})}) as r:
            return r.status, r.headers, _parse(await r.read())


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def chat(model: str = "smollm2", text: str = "Hello", **kw: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **kw}


@pytest.fixture
async def harness(tmp_path: Path):
    h = Harness(tmp_path)
    yield h
    await h.close()


@pytest.fixture
async def make_ui():
    made: list[UI] = []

    async def make(port: int, **config: Any) -> UI:
        ui = await UI(WebUIConfig(serving_port=port, port=0, **config)).start()
        made.append(ui)
        return ui

    yield make
    for ui in made:
        await ui.close()


__all__ = ["FakeEngine", "Harness", "UI", "chat", "eventually", "free_port", "web"]
