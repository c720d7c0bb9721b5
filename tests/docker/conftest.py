"""Fixtures for tests against a real Docker engine (tests/docker/engine.py) and the image that
runs this checkout's vLLM CPU build (tests/docker/image.py).

- `docker_engine` (session): the URL of a private dockerd started for the session,
  `unix:///tmp/enova-test-dockerd/docker.sock`; skips with the reason when this machine cannot
  run one (not root, docker.io not installable, another session holding it too long).
- `docker_client` (session): a `docker.DockerClient` for it.
- `cpu_engine_image` (session): the tag of the test image (`enova-test/vllm-cpu:<key>`), built
  once per machine and Python; run it with `venv_volume()` mounted (image.py).
- `fake_engine_script`: the path of fake_engine.py, to run locally or mount read-only.

Containers a test creates itself should carry `TEST_LABELS`, so teardown removes them.

A test module elsewhere may import these fixtures (`from tests.docker.conftest import
docker_engine`): pytest then registers a second copy of each, with its own session cache. Both
copies share one engine and one image through this module's state, so the session still starts
one dockerd (a second would wait for the first's lock) and stops it after the last copy ends.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .engine import RUN_DIR, TEST_LABEL, Dockerd, Unavailable
from .image import ensure_image

TEST_LABELS = {TEST_LABEL: "tests/docker"}
FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


class _Shared:
    """The session's one engine: started by the first fixture copy that asks, stopped when the
    last one is done; a reason to skip, once found, is given to every copy."""
    engine: Dockerd | None = None
    url: str | None = None
    users = 0
    unavailable: str | None = None
    images: dict[str, str] = {}
    summary: list[str] = []


@pytest.fixture(scope="session")
def docker_engine():
    if _Shared.unavailable:
        pytest.skip(_Shared.unavailable)
    if _Shared.engine is None:
        engine = Dockerd()
        try:
            _Shared.url = engine.start()
        except Unavailable as exc:
            _Shared.summary.extend(engine.notes)
            _Shared.unavailable = f"no Docker engine for the tests: {exc}"
            pytest.skip(_Shared.unavailable)
        _Shared.engine = engine
    _Shared.users += 1
    try:
        yield _Shared.url
    finally:
        _Shared.users -= 1
        if _Shared.users == 0:
            engine, _Shared.engine, _Shared.url = _Shared.engine, None, None
            _Shared.images.clear()
            engine.stop()
            _Shared.summary.extend(engine.notes)


@pytest.fixture(scope="session")
def docker_client(docker_engine):
    import docker

    client = docker.DockerClient(base_url=docker_engine, timeout=300)
    yield client
    client.close()


@pytest.fixture(scope="session")
def cpu_engine_image(docker_engine) -> str:
    if docker_engine not in _Shared.images:
        import docker

        client = docker.DockerClient(base_url=docker_engine, timeout=300)
        try:
            built = ensure_image(client, RUN_DIR / "build")
        finally:
            client.close()
        how = "reused the cached image" if built.cached else "built"
        line = (f"{how} {built.tag}: {built.size_bytes / 1e6:.0f} MB in {built.seconds:.1f} s "
                f"(Python {sys.version.split()[0]} from {sys.base_prefix}, {len(built.libraries)} host libraries)")
        print(f"\n{line}")
        _Shared.summary.append(line)
        _Shared.images[docker_engine] = built.tag
    return _Shared.images[docker_engine]


@pytest.fixture
def fake_engine_script() -> Path:
    return FAKE_ENGINE


def pytest_terminal_summary(terminalreporter):
    if _Shared.summary:
        terminalreporter.section("test Docker engine")
        for line in _Shared.summary:
            terminalreporter.write_line(line)
