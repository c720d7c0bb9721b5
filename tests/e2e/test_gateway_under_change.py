"""The gateway hides replica changes from clients: scale 2 -> 1 and a replace, both applied
while concurrent streaming requests run through the gateway, lose no request and cut no stream.
With the real CPU engine, `enova apply` as a subprocess, and the gateway it starts."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from .conftest import TEST_GATEWAY_PORT as GATEWAY_PORT
from .conftest import write_spec

pytestmark = pytest.mark.slow


@dataclass
class Load:
    """Closed-loop streaming clients through the gateway; every outcome is kept."""

    url: str
    clients: int = 6
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def one(self, client: httpx.Client, i: int) -> None:
        body = {"model": "smollm2", "prompt": f"Request {i}: tell me about", "max_tokens": 24,
                "temperature": 0, "ignore_eos": True, "stream": True}
        try:
            with client.stream("POST", self.url + "/v1/completions", json=body, timeout=120) as resp:
                if resp.status_code != 200:
                    raise AssertionError(f"status {resp.status_code}: {resp.read()[:200]!r}")
                done, finish, tokens = False, None, 0
                for line in resp.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    payload = line[6:]
                    if payload == "[DONE]":
                        done = True
                        continue
                    choice = json.loads(payload)["choices"][0]
                    tokens += 1
                    finish = choice.get("finish_reason") or finish
                if not done or finish != "length":
                    raise AssertionError(f"stream cut: done={done} finish={finish} chunks={tokens}")
            with self.lock:
                self.ok += 1
        except Exception as exc:  # every failure is a test failure, kept with its reason
            with self.lock:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def run(self, worker: int) -> None:
        with httpx.Client(trust_env=False) as client:
            i = 0
            while not self.stop.is_set():
                self.one(client, worker * 10000 + i)
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


def test_scale_down_and_replace_under_streaming_load_lose_no_request(cli, tmp_path):
    specs = write_spec(tmp_path / "specs", replicas=2, max_num_seqs=8)
    cli("apply", str(specs), check=0)
    url = f"http://127.0.0.1:{GATEWAY_PORT}"
    assert httpx.get(url + "/health", trust_env=False).status_code == 200

    with Load(url) as load:
        # every client has finished a request (so streams are steadily in flight) before the first change
        deadline = time.monotonic() + 60
        while load.ok < load.clients and not load.failures and time.monotonic() < deadline:
            time.sleep(0.2)
        before = load.ok
        assert before > 0, f"no request completed before the change: {load.failures[:3]}"

        write_spec(specs, replicas=1, max_num_seqs=8)
        run = cli("apply", str(specs), check=0)
        assert "drained" in run.err
        assert len(cli.replicas("smollm2", specs)) == 1
        time.sleep(3)

        write_spec(specs, replicas=1, max_num_seqs=4)
        run = cli("apply", str(specs), check=0)
        assert "1 to replace" in run.out and "drained" in run.err
        time.sleep(3)
    assert not load.failures, f"{len(load.failures)} failed of {load.ok + len(load.failures)}: {load.failures[:5]}"
    assert load.ok > before, "requests must keep completing during and after the changes"

    metrics = httpx.get(url + "/metrics", trust_env=False).text
    assert 'enova_gateway_requests_succeeded_total{deployment="smollm2"' in metrics
    cli("delete", "smollm2", check=0)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/health", trust_env=False, timeout=2)
