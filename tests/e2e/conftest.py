"""Helpers for end-to-end tests: run the `enova` CLI as a user would, in a subprocess, with
its own state directory and port range so tests never touch a user's deployments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

_SCRIPT = Path(sys.executable).with_name("enova")
ENOVA = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "enova.cli"]


@dataclass
class Run:
    code: int
    out: str
    err: str


class Cli:
    def __init__(self, state: Path, env: dict[str, str]):
        self.state = state
        self.env = env

    def __call__(self, *args: str, timeout: float = 600, check: int | None = None) -> Run:
        proc = subprocess.run([*ENOVA, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        run = Run(proc.returncode, proc.stdout, proc.stderr)
        if check is not None:
            assert run.code == check, f"enova {' '.join(args)} exited {run.code}:\n{run.out}\n{run.err}"
        return run

    def status(self, specs: Path | None = None) -> dict:
        args = ["status", *([str(specs)] if specs else []), "-o", "json"]
        return json.loads(self(*args, check=0).out)

    def replicas(self, name: str, specs: Path | None = None) -> list[dict]:
        for dep in self.status(specs)["deployments"]:
            if dep["name"] == name:
                return dep["replica_details"]
        return []


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The CLI with its own state directory (<tmp>/state) and port range; afterwards every
    process its records name is killed, whatever the test did."""
    tool = _cli_in(tmp_path)
    yield tool
    stop_recorded_processes(tool.state)


def complete(port: int, prompt: str = "San Francisco is a", model: str = "smollm2") -> str:
    resp = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60, trust_env=False,
                      json={"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0})
    assert resp.status_code == 200, resp.text
    text = resp.json()["choices"][0]["text"]
    assert text.strip(), "empty completion"
    return text


# Not 9199, so tests never meet a user's gateway. scripts/test.sh runs the `one_core` tests in a
# second lane beside the others and gives that lane its own gateway port and replica port range.
TEST_GATEWAY_PORT = int(os.environ.get("ENOVA_TEST_GATEWAY_PORT", "19297"))
TEST_PORT_RANGE = os.environ.get("ENOVA_TEST_PORT_RANGE", "19300-19399")


def write_spec(folder: Path, *, replicas: int = 1, max_num_seqs: int = 16, extra_args: str = "",
               model: str = "builtin:smollm2-135m-instruct", name: str = "smollm2",
               gateway_port: int | None = TEST_GATEWAY_PORT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if gateway_port is not None and not (folder / "gateway.yaml").exists():
        (folder / "gateway.yaml").write_text(
            f"apiVersion: enova/v1\nkind: Gateway\nmetadata: {{name: main}}\nspec: {{port: {gateway_port}}}\n")
    (folder / f"{name}.yaml").write_text(f"""\
apiVersion: enova/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  model: {model}
  engine:
    args: {{max_model_len: 1024, max_num_seqs: {max_num_seqs}{extra_args}}}
    startup_timeout: 4m
  replicas: {replicas}
  resources: {{gpus: 0, cpus: 1}}
""")
    return folder


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_recorded_processes(state: Path) -> None:
    """Kill every process tree a record under `state` names: replicas by their runtime handle
    ({"pid", "create_time"}; records from before handles carry a top-level pid) and the gateway.
    A process whose start time no longer matches its record is someone else's and left alone."""
    for rec in [*state.glob("**/deployments/*/replicas/*.json"), *state.glob("**/gateway/gateway.json")]:
        try:
            data = json.loads(rec.read_text())
        except (OSError, ValueError):
            continue
        handle = data.get("handle") or data
        pid, created = handle.get("pid"), handle.get("create_time")
        if not isinstance(pid, int):
            continue
        try:
            root = psutil.Process(pid)
            if created and abs(root.create_time() - created) > 0.05:
                continue
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=10)


def _cli_in(root: Path) -> Cli:
    env = {**os.environ, "ENOVA_STATE_DIR": str(root / "state"), "ENOVA_PORT_RANGE": TEST_PORT_RANGE,
           "PYTHONUNBUFFERED": "1"}
    return Cli(root / "state", env)


@pytest.fixture(scope="module")
def module_cli(tmp_path_factory) -> Cli:
    """One state directory shared by the tests of a module (state = <dir>/state), for scenarios
    that reuse one engine start; every process its records name is killed after the module."""
    tool = _cli_in(tmp_path_factory.mktemp("module"))
    yield tool
    stop_recorded_processes(tool.state)
