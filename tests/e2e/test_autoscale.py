"""The autoscaler end to end with the real CPU engine (one core per replica) and load from
`enova inject`: a ramp takes a deployment from 1 to 2 replicas and back to 1 with zero failed
requests, `enova events` explains each step with its numbers, and `enova diff` leaves the
autoscaler's count alone (GitOps); a deployment idle past scale_to_zero_after goes to 0, a request
arriving then is held and answered by the replica that starts for it, and with an engine that
cannot start, held requests get 503 within the hold timeout."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx
import pytest

from .conftest import ENOVA
from .test_reconciler import Reconciler, wait_for

pytestmark = pytest.mark.slow
RAMP_PORT, ZERO_PORT = 19293, 19294


def deployment(name: str, scaling: str, *, extra_args: str = "", slo: str = "", serving: str = "") -> str:
    return f"""\
apiVersion: enova/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  model: builtin:smollm2-135m-instruct
  engine:
    args: {{max_model_len: 1024, max_num_seqs: 8{extra_args}}}
    startup_timeout: 3m
  replicas: 1
  resources: {{gpus: 0, cpus: 1}}
{slo}{serving}  scaling: {scaling}
"""


def gateway(port: int) -> str:
    return f"---\napiVersion: enova/v1\nkind: Gateway\nmetadata: {{name: g}}\nspec: {{port: {port}}}\n"


def ready(cli, name: str) -> int:
    return sum(1 for r in cli.replicas(name) if r["health"] == "healthy")


def events(cli, *reasons: str) -> list[dict]:
    out = cli("events", "-o", "json", "-n", "1000", check=0).out
    return [e for e in map(json.loads, out.splitlines()) if e["reason"] in reasons]


def test_a_ramp_scales_from_1_to_2_and_back_with_no_failed_request(cli, tmp_path):
    # Knative's rule, which a test can size: 2 in flight per replica at 70% is 1.4; the ramp's peak
    # (4 requests/s of 32 tokens) keeps more than that in flight, well within two replicas' capacity.
    # (The slo policy is measured against the others in bench/autoscale_policies.py.)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "app.yaml").write_text(deployment(
        "smollm2", "{min: 1, max: 2, policy: concurrency, target: {concurrency: 2}, scale_down_delay: 10s}",
        slo="  slo: chat\n") + gateway(RAMP_PORT) + """---
apiVersion: enova/v1
kind: SLO
metadata: {name: chat}
spec: {ttft_p95_ms: 400, e2e_p99_ms: 60000}
---
apiVersion: enova/v1
kind: LoadProfile
metadata: {name: ramp}
spec:
  target: smollm2
  slo: chat
  duration: 70s
  seed: 3
  arrival: {process: ramp, rate: 1, end_rate: 4}
  requests: {api: completions, output_tokens: {distribution: fixed, value: 32}, ignore_eos: true}
""")
    reconciler = Reconciler(cli, specs)
    reconciler.start()
    try:
        wait_for(lambda: ready(cli, "smollm2") == 1, 240, "the first replica")
        out = tmp_path / "ramp.json"
        load = subprocess.Popen([*ENOVA, "inject", str(specs), "--profile", "ramp", "--out", str(out)],
                                env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: ready(cli, "smollm2") == 2, 200, "a second replica under the ramp", interval=1)
        # GitOps: the spec says replicas: 1, the autoscaler holds 2, and diff/apply leave it alone
        diff = cli("diff", str(specs))
        assert diff.code == 0, diff.out + diff.err
        assert "managed by the autoscaler" in diff.out
        _, err = load.communicate(timeout=300)
        assert load.returncode in (0, 1), err
        requests = json.loads(out.read_text())["requests"]
        failed = [r for r in requests if not r["ok"]]
        assert requests and not failed, failed[:3]
        wait_for(lambda: ready(cli, "smollm2") == 1 and len(cli.replicas("smollm2")) == 1, 240,
                 "the scale back to 1 after the load stopped", interval=1)
        up = events(cli, "ScaledUp")
        down = events(cli, "ScaledDown")
        assert up and "1 -> 2" in up[0]["message"] and any(ch.isdigit() for ch in up[0]["message"])
        assert down and "2 -> 1" in down[-1]["message"]
        status = cli("scale", "status", "smollm2", "-o", "json", check=0)
        assert json.loads(status.out)[0]["target"] == 1
    finally:
        print(reconciler.log_tail(40))
        reconciler.stop()


def _post(port: int, results: list, key: str, timeout: float = 240) -> None:
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=timeout, trust_env=False,
                       json={"model": "tiny", "prompt": "Hello", "max_tokens": 4})
        results.append((key, r.status_code, r.headers.get("retry-after"), r.text[:200], time.monotonic()))
    except httpx.HTTPError as exc:
        results.append((key, None, None, repr(exc), time.monotonic()))


@pytest.mark.one_core     # max: 1, one core; ZERO_PORT is its own
def test_scale_to_zero_holds_requests_until_a_replica_starts_for_them(cli, tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    scaling = ("{min: 0, max: 1, policy: concurrency, target: {concurrency: 4}, scale_to_zero_after: 10s, "
               "scale_down_delay: 5s}")
    (specs / "app.yaml").write_text(deployment("tiny", scaling) + gateway(ZERO_PORT))
    reconciler = Reconciler(cli, specs)
    reconciler.start()
    try:
        wait_for(lambda: ready(cli, "tiny") == 1, 240, "the first replica")
        wait_for(lambda: not cli.replicas("tiny"), 120, "scale to zero after 10 s idle", interval=1)
        results: list = []
        began = time.monotonic()
        first = threading.Thread(target=_post, args=(ZERO_PORT, results, "first"))
        first.start()
        time.sleep(3)                                   # the replica is starting: a second request is held too
        second = threading.Thread(target=_post, args=(ZERO_PORT, results, "second"))
        second.start()
        first.join(260)
        second.join(260)
        assert sorted((k, code) for k, code, *_ in results) == [("first", 200), ("second", 200)], results
        print(f"scale from zero: first answer {max(t for *_, t in results) - began:.1f} s after the request")
        assert events(cli, "ScaledUp")

        # an engine that cannot start: held requests get 503 with Retry-After within the spec's
        # hold timeout (serving.hold_timeout, instead of the measured start time + 30 s)
        (specs / "app.yaml").write_text(deployment("tiny", scaling, extra_args=", max_num_batched_tokens: 1",
                                                   serving="  serving: {hold_timeout: 20s}\n")
                                        + gateway(ZERO_PORT))
        wait_for(lambda: not cli.replicas("tiny"), 120, "scale to zero again", interval=1)
        results.clear()
        began = time.monotonic()
        _post(ZERO_PORT, results, "doomed", timeout=400)
        [(_, code, retry_after, text, when)] = results
        assert code == 503 and retry_after, results
        assert "tiny" in text and "held" in text, text
        assert 19 < when - began < 40, f"held {when - began:.0f} s: serving.hold_timeout 20s must end the wait"
    finally:
        print(reconciler.log_tail(40))
        reconciler.stop()
