"""The chat web UI (`enova webui run`, 127.0.0.1:8501): one page against the gateway.

The browser talks only to this server (same origin, so no CORS and a strict CSP); the server
relays to the gateway's OpenAI API, adding the gateway's bearer token when one is configured,
and turns the gateway's refusals (503/429 with Retry-After, 401/403, a refused connection)
into plain messages the page shows.

Modules, one purpose each:
  config   WebUIConfig, the gateway's address, the token file (re-read when it changes)
  relay    /api/models and /api/chat: the request check, the streamed relay, error messages
  server   the aiohttp application: the page's files (a whitelist), hardening headers, Host and
           Origin checks, lifecycle (`WebUI`, `serve`, `run_webui`)
  static/  index.html, app.js, style.css, favicon.svg (shipped in the wheel; no CDN)

Why aiohttp and a hand-written page rather than Streamlit: see docs/webui.md ("Why not
Streamlit"). In short, aiohttp is already enova's HTTP stack (the gateway), its handler
cancellation closes the upstream request the moment the browser's Stop aborts the fetch, and
the whole UI adds no dependency, starts in well under a second and stays small in memory.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WebUI", "WebUIConfig", "build_app", "run_webui", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `enova --help` does not import aiohttp.
    if name == "WebUIConfig":
        from .config import WebUIConfig
        return WebUIConfig
    if name in ("WebUI", "build_app", "run_webui", "serve"):
        from . import server
        return getattr(server, name)
    raise AttributeError(name)
