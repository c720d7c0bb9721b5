"""The application server's FastAPI app and its process.

create_app(ctx) builds the app from routers: api (the REST API under /api/v1), series (chart
data for /instance) and pages (/instance and its static files). serve() runs it with uvicorn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fastapi import FastAPI

from enova.settings import Settings


@dataclass
class AppContext:
    """What every route reads: settings (state and cache dirs), the specs folder the plan is
    computed from (None: the running reconciler's, if any), the bearer token for mutations,
    whether reads need it too (a non-loopback bind), and Prometheus's URL (None: found from the
    state directory's monitoring record)."""
    settings: Settings
    specs: Optional[Path] = None
    token: str = ""
    reads_need_token: bool = False
    prometheus_url: Optional[str] = None
    extra: dict = field(default_factory=dict)


def create_app(ctx: AppContext) -> FastAPI:
    from . import api, pages, series
    app = FastAPI(title="enova application server", version=_version())
    app.state.ctx = ctx
    app.include_router(api.router)
    app.include_router(series.router)
    app.include_router(pages.router)
    return app


def _version() -> str:
    from enova import __version__
    return __version__
