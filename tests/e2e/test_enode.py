"""`enova enode run`: one model from the command line, in the foreground, behind the gateway, in the
shared state directory (so `enova status` sees it); Ctrl-C drains and stops everything. With the
real CPU engine."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import psutil
import pytest

from .conftest import ENOVA

pytestmark = [pytest.mark.slow, pytest.mark.one_core]
PORT = 19296


def test_enode_serves_generate_and_openai_and_stops_cleanly_on_ctrl_c(cli, tmp_path):
    proc = subprocess.Popen([*ENOVA, "enode", "run", "--model", "builtin:smollm2-135m-instruct",
                             "--port", str(PORT), "--name", "smol", "--max-num-seqs", "4", "--max_model_len=1024"],
                            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{PORT}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", trust_env=False, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("enode never became healthy")
        generated = httpx.post(url + "/generate", trust_env=False, timeout=60, json={
            "prompt": "San Francisco is a", "max_tokens": 16, "temperature": 0.9, "top_p": 0.9}).json()
        assert generated["text"][0].startswith("San Francisco is a") and generated["generated_text"]
        models = httpx.get(url + "/v1/models", trust_env=False).json()
        assert [m["id"] for m in models["data"]] == ["smol"]
        chat = httpx.post(url + "/v1/chat/completions", trust_env=False, timeout=60, json={
            "model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}).json()
        assert chat["choices"][0]["message"]["content"]
        status = cli.status()
        [dep] = [d for d in status["deployments"] if d["name"] == "smol"]
        assert [r["health"] for r in dep["replica_details"]] == ["healthy"]
        second = cli("enode", "run", "--model", "builtin:smollm2-135m-instruct", "--port", str(PORT + 1),
                     "--name", "smol", timeout=60)
        assert second.code != 0 and "holds the state lock" in second.err, second
        records = list(cli.state.glob("deployments/smol/replicas/*.json"))
        [record] = [json.loads(r.read_text()) for r in records]
        assert "--max-num-seqs" in record["argv"] and record["argv"][record["argv"].index("--max-num-seqs") + 1] == "4"
        pid = record["handle"]["pid"]
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "stopped" in out
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/health", trust_env=False, timeout=2)
    assert [d["name"] for d in cli.status()["deployments"]] == []
    assert not (cli.state / "gateway" / "gateway.json").exists()
