"""`enova inject` as a user runs it (a subprocess), against the fast test upstream: a quick run and
a LoadProfile run write complete result files, bad input is refused before any load is sent, and
report, compare and merge work on the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .upstream import Running

ENOVA = [sys.executable, "-m", "enova.cli"]


@pytest.fixture(scope="module")
def upstream():
    with Running() as up:
        yield up


def enova(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENOVA_STATE_DIR": str(cwd / "state")}
    return subprocess.run([*ENOVA, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_a_quick_run_sends_the_whole_schedule_and_writes_every_request(upstream, tmp_path):
    done = enova("inject", "--target", upstream.url, "--model", "fixture", "--rate", "20", "--duration", "3s",
                 "--output-len", "4", "--seed", "5", "--out", "run.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["seed"] == 5 and not data["partial"] and data["name"] == "quick"
    assert len(data["requests"]) > 30 and all(r["ok"] for r in data["requests"])
    assert len(upstream.stats()["arrivals"]) >= len(data["requests"])
    assert "TTFT" in done.stdout and "achieved" in done.stdout
    again = enova("inject", "--target", upstream.url, "--model", "fixture", "--rate", "20", "--duration", "3s",
                  "--output-len", "4", "--seed", "5", "--out", "again.json", cwd=tmp_path)
    assert again.returncode == 0
    first = [r["scheduled"] for r in data["requests"]]
    assert [r["scheduled"] for r in json.loads((tmp_path / "again.json").read_text())["requests"]] == first


def test_a_loadprofile_run_is_judged_by_its_slo(upstream, tmp_path):
    port = upstream.url.rsplit(":", 1)[1]
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "all.yaml").write_text(f"""\
apiVersion: enova/v1
kind: Deployment
metadata: {{name: fixture}}
spec: {{model: builtin:smollm2-135m-instruct, slo: strict}}
---
apiVersion: enova/v1
kind: Gateway
metadata: {{name: g}}
spec: {{port: {port}}}
---
apiVersion: enova/v1
kind: SLO
metadata: {{name: strict}}
spec: {{ttft_p95_ms: 0.001}}
---
apiVersion: enova/v1
kind: LoadProfile
metadata: {{name: steps}}
spec:
  target: fixture
  duration: 4s
  seed: 2
  arrival: {{process: steps, steps: [{{duration: 2s, rate: 5}}, {{duration: 2s, rate: 20}}]}}
  requests: {{api: chat, output_tokens: {{distribution: uniform, min: 2, max: 6}}}}
""")
    done = enova("inject", "specs", "--profile", "steps", "--out", "steps.json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr            # nobody meets a 1 µs TTFT: the SLO is missed
    data = json.loads((tmp_path / "steps.json").read_text())
    assert data["slo"]["ttft_p95_ms"] == 0.001 and data["api"] == "chat"
    assert all(r["ok"] for r in data["requests"]) and 2 <= min(r["output_tokens"] for r in data["requests"])
    assert "goodput" in done.stdout.lower()
    report = enova("inject", "report", "steps.json", cwd=tmp_path)
    assert report.returncode == 0 and (tmp_path / "steps.html").read_text().count("<svg") >= 4
    compare = enova("inject", "compare", "steps.json", "steps.json", cwd=tmp_path)
    assert compare.returncode == 0 and "TTFT" in compare.stdout


def test_bad_input_is_refused_before_any_load_is_sent(upstream, tmp_path):
    upstream.reset()
    unknown = enova("inject", "--target", upstream.url, "--model", "nope", "--rate", "5", "--duration", "2s",
                    cwd=tmp_path)
    assert unknown.returncode == 2 and "does not serve model 'nope' (served: fixture)" in unknown.stderr
    unreachable = enova("inject", "--target", "http://127.0.0.1:9", "--model", "x", "--rate", "5",
                        "--duration", "2s", cwd=tmp_path)
    assert unreachable.returncode == 2 and "unreachable" in unreachable.stderr
    missing = enova("inject", "--model", "x", cwd=tmp_path)
    assert missing.returncode == 2 and "--target" in missing.stderr and "--rate" in missing.stderr
    assert upstream.stats()["arrivals"] == []
    shard = enova("inject", "--target", upstream.url, "--model", "fixture", "--rate", "5", "--shard", "2/2",
                  cwd=tmp_path)
    assert shard.returncode == 2 and "--shard" in shard.stderr
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "p.yaml").write_text(
        "apiVersion: enova/v1\nkind: LoadProfile\nmetadata: {name: p}\n"
        "spec: {target: nowhere, duration: 5s, arrival: {process: poisson, rate: 2}}\n")
    orphan = enova("inject", "orphan", "--profile", "p", "--target", upstream.url, cwd=tmp_path)
    assert orphan.returncode == 2 and 'p.yaml:4 spec.target: no Deployment named "nowhere"' in orphan.stderr
    assert upstream.stats()["arrivals"] == []


def test_shard_results_merge_into_the_whole_run(upstream, tmp_path):
    args = ["--target", upstream.url, "--model", "fixture", "--rate", "30", "--duration", "2s", "--seed", "9",
            "--output-len", "2"]
    whole = enova("inject", *args, "--out", "whole.json", cwd=tmp_path)
    a = enova("inject", *args, "--shard", "0/2", "--out", "a.json", cwd=tmp_path)
    b = enova("inject", *args, "--shard", "1/2", "--out", "b.json", cwd=tmp_path)
    assert whole.returncode == a.returncode == b.returncode == 0
    merged = enova("inject", "merge", "a.json", "b.json", "--out", "m.json", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    indices = [r["index"] for r in json.loads((tmp_path / "m.json").read_text())["requests"]]
    assert indices == [r["index"] for r in json.loads((tmp_path / "whole.json").read_text())["requests"]]
    twice = enova("inject", "merge", "a.json", "a.json", "--out", "x.json", cwd=tmp_path)
    assert twice.returncode == 2 and "a.json" in twice.stderr
