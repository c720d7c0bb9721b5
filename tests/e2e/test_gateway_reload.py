"""Rotating the gateway's token under load with the real engine: `enova apply` reloads the
gateway in place (no restart, no refused connection), clients streaming and not streaming
through it see no failed request, and the old token is refused at the end. The procedure of
the README: add the new token (a token file holding both), move the clients, remove the old."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import psutil
import pytest

from .conftest import write_spec

pytestmark = [pytest.mark.slow, pytest.mark.one_core]

PORT = 19291  # neither 9199 nor the other e2e tests' port


@dataclass
class Load:
    """Closed-loop clients through the gateway, half streaming; the token is read per request."""

    url: str
    token: str
    clients: int = 4
    ok: int = 0
    refused: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def one(self, client: httpx.Client, i: int, stream: bool) -> None:
        body = {"model": "smollm2", "prompt": f"Request {i}: tell me about", "max_tokens": 12,
                "temperature": 0, "ignore_eos": True, "stream": stream}
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with client.stream("POST", self.url + "/v1/completions", json=body, headers=headers,
                               timeout=120) as resp:
                text = resp.read().decode()
                if resp.status_code != 200:
                    raise AssertionError(f"status {resp.status_code}: {text[:200]}")
                if stream and not text.rstrip().endswith("data: [DONE]"):
                    raise AssertionError(f"stream cut: {text[-120:]!r}")
                if not stream and json.loads(text)["choices"][0]["finish_reason"] != "length":
                    raise AssertionError(f"unexpected answer: {text[:200]}")
            with self.lock:
                self.ok += 1
        except httpx.ConnectError as exc:
            with self.lock:
                self.refused.append(str(exc))
        except Exception as exc:  # every failure is a test failure, kept with its reason
            with self.lock:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def run(self, worker: int) -> None:
        # even workers keep their connection alive, odd ones open a new one per request
        limits = httpx.Limits(max_keepalive_connections=0) if worker % 2 else httpx.Limits()
        with httpx.Client(trust_env=False, limits=limits) as client:
            i = 0
            while not self.stop.is_set():
                self.one(client, worker * 10000 + i, stream=(worker + i) % 2 == 0)
                i += 1

    def __enter__(self) -> "Load":
        self.threads = [threading.Thread(target=self.run, args=(w,), daemon=True) for w in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=180)


def gateway_doc(folder, token_file: str) -> None:
    (folder / "gateway.yaml").write_text(
        "apiVersion: enova/v1\nkind: Gateway\nmetadata: {name: main}\n"
        f"spec: {{port: {PORT}, token_file: {token_file}}}\n")


def status(url: str, token: str) -> int:
    return httpx.post(url + "/v1/completions", trust_env=False, timeout=60,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"model": "smollm2", "prompt": "Hi", "max_tokens": 2}).status_code


def test_a_token_rotation_under_load_refuses_no_connection_and_fails_no_request(cli, tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tokens").write_text("old-token\n")
    gateway_doc(specs, "tokens")
    write_spec(specs, replicas=1, max_num_seqs=8, gateway_port=None)
    try:
        rotate_under_load(cli, specs)
    finally:
        cli("delete", "smollm2")
        record = cli.state / "gateway" / "gateway.json"
        if record.exists():  # whatever happened, no gateway is left listening
            try:
                psutil.Process(json.loads(record.read_text())["pid"]).kill()
            except psutil.NoSuchProcess:
                pass


def rotate_under_load(cli, specs) -> None:
    cli("apply", str(specs), check=0)
    url = f"http://127.0.0.1:{PORT}"
    assert status(url, "old-token") == 200
    pid = cli.status(specs)["gateway"]["pid"]

    with Load(url, "old-token") as load:
        time.sleep(5)
        before = load.ok
        assert before > 0, f"no request completed before the rotation: {load.failures[:3]}"
        # 1. add the new token: a token file holding both, named in the Gateway document
        (specs / "tokens-1").write_text("# rotating\nold-token\nnew-token\n")
        gateway_doc(specs, "tokens-1")
        run = cli("apply", str(specs), check=0)
        assert "reload in place" in run.out and "reloaded in place" in run.err, run.out + run.err
        assert status(url, "new-token") == 200
        # 2. clients move to the new token
        load.token = "new-token"
        time.sleep(4)
        # 3. the old token goes: a new token file named in the Gateway document (an in-place update)
        (specs / "tokens-2").write_text("new-token\n")
        gateway_doc(specs, "tokens-2")
        run = cli("apply", str(specs), check=0)
        assert "reload in place" in run.out and "reloaded in place" in run.err, run.out + run.err
        time.sleep(4)
    total = load.ok + len(load.failures) + len(load.refused)
    assert not load.refused, f"{len(load.refused)} refused of {total}: {load.refused[:3]}"
    assert not load.failures, f"{len(load.failures)} failed of {total}: {load.failures[:5]}"
    assert load.ok > before, "requests must keep completing during and after the rotation"
    assert status(url, "old-token") == 401
    assert status(url, "new-token") == 200
    assert cli.status(specs)["gateway"]["pid"] == pid, "reloaded in place, never restarted"
    print(f"token rotation under load: {load.ok} requests ({before} before it), 0 refused, 0 failed")
