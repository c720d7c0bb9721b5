"""Fixtures of the app server's tests: a state directory made by real code paths (apply on the
in-memory runtime writes the records, the EventLog the events, the ScalerStore the autoscaler's
state) and an app on it, reached through FastAPI's TestClient on a loopback Host."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enova.app.server import AppContext, create_app
from enova.observe.gpus import GpuInventory
from enova.reconcile.events import EventLog
from enova.runtime.select import Runtimes
from enova.settings import Settings
from tests.fast.memworld import MemWorld, deployment_doc

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class App:
    """A MemWorld with deployments alpha (1 replica) and beta (2) applied, and an app on it."""

    def __init__(self, tmp_path: Path):
        self.world = MemWorld(tmp_path)
        self.world.write(deployment_doc("alpha"), deployment_doc("beta", replicas=2))
        self.world.apply()
        # the shared cache holds vLLM's argument table (extracted once, seconds); the state is private
        self.settings = Settings(state_dir=self.world.settings.state_dir, cache_dir=Settings.from_env().cache_dir)
        self.events = EventLog(self.settings.state_dir / "events.jsonl", clock=self.world.clock)

    def context(self, **overrides) -> AppContext:
        memory = self.world.runtime
        options = dict(settings=self.settings, specs=self.world.specs_dir, token=TOKEN,
                       runtime=lambda store, specs=None: Runtimes(store, runtimes={"memory": memory}),
                       inventory=lambda: GpuInventory(reason="no GPU (test)"), stream_seconds=0.5,
                       allowed_hosts=("127.0.0.1", "localhost"))
        options.update(overrides)
        return AppContext(**options)

    def client(self, **overrides) -> TestClient:
        return TestClient(create_app(self.context(**overrides)), base_url="http://127.0.0.1")


@pytest.fixture
def app_world(tmp_path: Path) -> App:
    return App(tmp_path)


__all__ = ["App", "AUTH", "TOKEN", "deployment_doc"]
