"""`enova inject` against the real CPU engine through the gateway: a Poisson run from a LoadProfile
completes with every request accounted for, and its token counts agree with the server's usage
reports and the gateway's generation-token counter; bad input is refused before any load; Ctrl-C
writes a partial result."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ENOVA, write_spec

pytestmark = [pytest.mark.slow, pytest.mark.one_core]
PORT = 19296


def _generation_tokens(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "enova_gateway_generation_tokens":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


@pytest.fixture(scope="module")
def served(module_cli, tmp_path_factory):
    specs = write_spec(tmp_path_factory.mktemp("inject") / "specs", gateway_port=PORT, max_num_seqs=16)
    (specs / "load.yaml").write_text("""\
apiVersion: enova/v1
kind: SLO
metadata: {name: chat}
spec: {ttft_p95_ms: 5000, e2e_p99_ms: 30000, max_error_rate: 0.05}
---
apiVersion: enova/v1
kind: LoadProfile
metadata: {name: poisson-30s}
spec:
  target: smollm2
  slo: chat
  duration: 30s
  seed: 7
  arrival: {process: poisson, rate: 1}
  requests: {api: completions, prompts: builtin, output_tokens: {distribution: fixed, value: 16}, ignore_eos: true}
""")
    module_cli("apply", str(specs), check=0)
    yield module_cli, specs


def test_a_30_second_poisson_run_accounts_for_every_request_and_agrees_with_the_server(served, tmp_path):
    cli, specs = served
    before = _generation_tokens(PORT)
    out = tmp_path / "run.json"
    run = cli("inject", str(specs), "--profile", "poisson-30s", "--out", str(out), timeout=300)
    assert run.code in (0, 1), run.err
    data = json.loads(out.read_text())
    requests = data["requests"]
    assert not data["partial"] and len(requests) > 15, len(requests)
    assert [r["index"] for r in requests] == list(range(len(requests)))      # every request accounted for
    failed = [r for r in requests if not r["ok"]]
    assert not failed, failed[:3]
    assert all(r["output_tokens"] == 16 for r in requests)                    # ignore_eos: exactly max_tokens
    after = _generation_tokens(PORT)
    assert after - before == sum(r["output_tokens"] for r in requests)        # the gateway counted the same
    assert all(r["ttft"] is not None and r["ttft"] <= r["e2e"] for r in requests)
    assert "TTFT" in run.out and "goodput" in run.out.lower()
    report = cli("inject", "report", str(out), check=0)
    html = out.with_suffix(".html").read_text()
    assert report.out.strip().endswith(".html") and "<svg" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the report must open offline"


def test_bad_input_is_refused_before_any_load_is_sent(served, tmp_path):
    cli, specs = served
    unreachable = cli("inject", "--target", "http://127.0.0.1:9", "--model", "smollm2", "--rate", "5",
                      "--duration", "2s")
    assert unreachable.code == 2 and "unreachable" in unreachable.err
    unknown = cli("inject", "--target", f"http://127.0.0.1:{PORT}", "--model", "nope", "--rate", "5",
                  "--duration", "2s")
    assert unknown.code == 2 and "does not serve model 'nope'" in unknown.err and "smollm2" in unknown.err
    missing = cli("inject", str(specs), "--profile", "no-such-profile")
    assert missing.code == 2 and "poisson-30s" in missing.err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "trace.csv").write_text("timestamp,input_tokens,output_tokens\n0.0,10,5\nsoon,10,5\n")
    (tmp_path / "bad" / "p.yaml").write_text((specs / "smollm2.yaml").read_text() + """---
apiVersion: enova/v1
kind: LoadProfile
metadata: {name: replay}
spec: {target: smollm2, duration: 10s, arrival: {process: trace, trace: ./trace.csv}}
""")
    bad = cli("inject", str(tmp_path / "bad"), "--profile", "replay", "--target", f"http://127.0.0.1:{PORT}")
    assert bad.code == 2 and "trace.csv:3" in bad.err, bad.err


def test_ctrl_c_stops_sending_and_writes_a_partial_result(served, tmp_path):
    cli, specs = served
    out = tmp_path / "partial.json"
    proc = subprocess.Popen([*ENOVA, "inject", "--target", f"http://127.0.0.1:{PORT}", "--model", "smollm2",
                             "--rate", "2", "--duration", "60s", "--output-len", "8", "--seed", "1",
                             "--out", str(out)], env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    began = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - began < 20
    data = json.loads(out.read_text())
    assert data["partial"] is True
    sent = [r for r in data["requests"] if r["sent"] is not None]
    unsent = [r for r in data["requests"] if r["sent"] is None]
    assert sent and unsent and all("not sent" in r["error"] for r in unsent)
    assert len(data["requests"]) > len(sent)      # the whole schedule is kept, not only what was sent
