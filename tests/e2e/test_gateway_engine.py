"""The gateway in front of the real CPU engine: one replica started by `enova apply` (its own
gateway disabled), `python -m enova.gateway` run against the same state directory, and the
seed's /generate, completions and chat, streamed and not, answered through it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Cli, stop_recorded_processes, write_spec

pytestmark = [pytest.mark.slow, pytest.mark.one_core]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("gateway-engine")
    state = root / "state"
    env = {**os.environ, "ENOVA_STATE_DIR": str(state), "ENOVA_PORT_RANGE": "19620-19639", "PYTHONUNBUFFERED": "1"}
    cli = Cli(state, env)
    specs = write_spec(root / "specs", max_num_seqs=8)
    (specs / "gateway.yaml").write_text(
        "apiVersion: enova/v1\nkind: Gateway\nmetadata: {name: disabled}\nspec: {enabled: false}\n")
    proc = None
    log = root / "gateway.log"
    try:
        cli("apply", str(specs), check=0)
        port = _free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "enova.gateway", "--state-dir", str(state),
                                     "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/health", trust_env=False, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the gateway did not report a ready replica:\n" + log.read_text()
            time.sleep(0.1)
        yield url, cli, log
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(timeout=40) == 0, log.read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
        cli("delete", "smollm2")
        stop_recorded_processes(state)      # never leave an engine behind


def _sse(client: httpx.Client, url: str, body: dict) -> list[str]:
    with client.stream("POST", url, json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [line[6:] for line in r.iter_lines() if line.startswith("data: ")]


def test_the_seed_generate_call_answers_through_the_gateway(gateway):
    url, _, _ = gateway
    body = {"prompt": "San Francisco is a", "max_tokens": 16, "temperature": 0.9, "top_p": 0.9}
    r = httpx.post(url + "/generate", json=body, timeout=120, trust_env=False)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == "smollm2" and answer["finish_reason"] in ("length", "stop")
    assert answer["generated_text"].strip()
    assert answer["text"] == ["San Francisco is a" + answer["generated_text"]]
    assert answer["usage"]["prompt_tokens"] == 4 and 0 < answer["usage"]["completion_tokens"] <= 16


def test_generate_streams_ndjson_from_the_engine(gateway):
    url, _, _ = gateway
    with httpx.Client(trust_env=False) as client:
        with client.stream("POST", url + "/generate", timeout=120, json={
                "prompt": "San Francisco is a", "max_tokens": 12, "temperature": 0, "ignore_eos": True,
                "stream": True}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(x) for x in r.iter_lines() if x]
    assert len(lines) >= 2
    last = lines[-1]
    assert last["finish_reason"] == "length" and last["usage"]["completion_tokens"] == 12
    assert "".join(x["delta"] for x in lines) == last["generated_text"]
    assert last["text"] == ["San Francisco is a" + last["generated_text"]]


def test_completions_through_the_gateway_match_the_engine_itself(gateway):
    url, cli, _ = gateway
    port = cli.replicas("smollm2")[0]["port"]
    body = {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 10, "temperature": 0}
    direct = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=120, trust_env=False).json()
    via = httpx.post(url + "/v1/completions", json=body, timeout=120, trust_env=False)
    assert via.status_code == 200 and via.headers["x-enova-deployment"] == "smollm2"
    assert via.json()["choices"][0]["text"] == direct["choices"][0]["text"]
    with httpx.Client(trust_env=False) as client:
        events = _sse(client, url + "/v1/completions", {**body, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == direct["choices"][0]["text"]
    assert not any("usage" in c for c in chunks), "the usage chunk the gateway asked for is not forwarded"


def test_chat_through_the_gateway_streamed_and_not(gateway):
    url, _, _ = gateway
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
            "temperature": 0}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120, trust_env=False)
    assert r.status_code == 200, r.text
    whole = r.json()["choices"][0]["message"]["content"]
    assert whole.strip()
    with httpx.Client(trust_env=False) as client:
        events = _sse(client, url + "/v1/chat/completions",
                      {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    assert "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks[:-1]) == whole


def _samples(url: str) -> dict:
    text = httpx.get(url + "/metrics", trust_env=False).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _total(samples: dict, name: str) -> float:
    return sum(v for (n, labels), v in samples.items() if n == name and ("deployment", "smollm2") in labels)


def test_models_health_and_metrics_describe_what_was_served(gateway):
    url, _, _ = gateway
    assert [m["id"] for m in httpx.get(url + "/v1/models", trust_env=False).json()["data"]] == ["smollm2"]
    health = httpx.get(url + "/health", trust_env=False).json()
    assert health["status"] == "ok" and health["deployments"]["smollm2"]["ready"] == 1
    before = _samples(url)
    body = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 7, "temperature": 0, "ignore_eos": True}
    answer = httpx.post(url + "/v1/completions", json=body, timeout=120, trust_env=False)
    assert answer.status_code == 200
    prompt_tokens = answer.json()["usage"]["prompt_tokens"]
    with httpx.Client(trust_env=False) as client:
        events = _sse(client, url + "/v1/completions", {**body, "max_tokens": 9, "stream": True})
    after = _samples(url)
    delta = {name: _total(after, name) - _total(before, name) for name in (
        "enova_gateway_requests_received_total", "enova_gateway_requests_processed_total",
        "enova_gateway_requests_succeeded_total", "enova_gateway_time_to_first_token_seconds_count",
        "enova_gateway_inter_token_latency_seconds_count", "enova_gateway_e2e_latency_seconds_count",
        "enova_gateway_prompt_tokens_total", "enova_gateway_generation_tokens_total",
        "enova_gateway_request_duration_seconds_count")}
    assert delta == {
        "enova_gateway_requests_received_total": 2, "enova_gateway_requests_processed_total": 2,
        "enova_gateway_requests_succeeded_total": 2, "enova_gateway_time_to_first_token_seconds_count": 1,
        "enova_gateway_inter_token_latency_seconds_count": len(events) - 2,     # token events, less the first
        "enova_gateway_e2e_latency_seconds_count": 2, "enova_gateway_prompt_tokens_total": 2 * prompt_tokens,
        "enova_gateway_generation_tokens_total": 7 + 9, "enova_gateway_request_duration_seconds_count": 2}
    assert _total(after, "enova_gateway_requests_in_flight") == 0


def test_the_gateway_follows_a_replica_the_engine_no_longer_serves(gateway):
    """Last: `enova delete` takes the replica away; the gateway stops routing at once."""
    url, cli, _ = gateway
    cli("delete", "smollm2", check=0)
    deadline = time.monotonic() + 5
    while httpx.get(url + "/health", trust_env=False).status_code != 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = httpx.post(url + "/v1/completions", json={"model": "smollm2", "prompt": "x"}, trust_env=False)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
