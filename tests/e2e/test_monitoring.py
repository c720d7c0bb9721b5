"""Monitoring in local mode with Debian's Prometheus and the real CPU engine: a Monitoring
document makes `enova apply` start Prometheus; after requests through the gateway, Prometheus
has the gateway's and the engine's series per replica; scaling 1 -> 2 -> 1 adds and removes the
scrape target with no Prometheus restart; `enova mon stop` then `start` keeps stored series."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from enova.monitor.dashboards import dashboards
from enova.spec import load_specs
from tests.monitor.dashboard_queries import wait_for_dashboards

from .conftest import TEST_GATEWAY_PORT, Cli, complete, write_spec

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")]

PROM_PORT = 19791
INTERVAL = 2.0
# Prometheus 2.42 applies file-SD changes in batches of up to 5 s; then one scrape
FOLLOW_WITHIN = 2 * INTERVAL + 5 + 2


def query(expr: str, at: float | None = None) -> list[dict]:
    params = {"query": expr, **({"time": f"{at:.3f}"} if at else {})}
    body = httpx.get(f"http://127.0.0.1:{PROM_PORT}/api/v1/query", params=params, timeout=10, trust_env=False).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def replicas_up() -> set[str]:
    return {r["metric"].get("replica", "") for r in query('up{job="enova-replicas"} == 1')}


def wait_for(predicate, timeout: float, what: str):
    began, last = time.monotonic(), None
    while time.monotonic() - began < timeout:
        last = predicate()
        if last:
            return time.monotonic() - began
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def monitoring(folder: Path) -> None:
    """A Monitoring document, and an SLO on the deployment (so the attainment panels have data)."""
    (folder / "monitoring.yaml").write_text(
        "apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: local}\n"
        f"spec: {{prometheus: {{port: {PROM_PORT}, scrape_interval: {INTERVAL:g}s}}}}\n"
        "---\napiVersion: enova/v1\nkind: SLO\nmetadata: {name: chat}\n"
        "spec: {ttft_p95_ms: 2000, itl_p95_ms: 500, e2e_p99_ms: 30000, max_error_rate: 0.05}\n")
    deployment = folder / "smollm2.yaml"
    deployment.write_text(deployment.read_text().rstrip("\n") + "\n  slo: chat\n")


def stream(count: int) -> None:
    """Streamed completions through the gateway (the TTFT and ITL histograms count streams)."""
    with httpx.Client(trust_env=False, timeout=60) as client:
        for i in range(count):
            with client.stream("POST", f"http://127.0.0.1:{TEST_GATEWAY_PORT}/v1/completions",
                               json={"model": "smollm2", "prompt": f"Story {i}:", "max_tokens": 8, "stream": True,
                                     "ignore_eos": True}) as resp:
                assert resp.status_code == 200
                resp.read()


def test_prometheus_follows_the_replicas_and_keeps_its_data(module_cli: Cli, tmp_path: Path) -> None:
    cli = module_cli
    specs = write_spec(tmp_path / "specs", replicas=1)
    monitoring(specs)
    applied = cli("apply", str(specs), check=0)
    assert "monitoring: Prometheus started" in applied.err
    [first] = [r["id"] for r in cli.replicas("smollm2", specs)]
    for _ in range(3):
        complete(TEST_GATEWAY_PORT)
    stream(4)
    wait_for(lambda: first in replicas_up(), FOLLOW_WITHIN + 10, "the first replica's target to be up")
    wait_for(lambda: query('enova_gateway_requests_succeeded_total{deployment="smollm2"}'), 30, "gateway series")
    engine = wait_for(lambda: query(f'vllm:generation_tokens_total{{replica="{first}"}}'), 30, "engine series")
    series = query(f'vllm:generation_tokens_total{{replica="{first}"}}')
    assert series[0]["metric"]["deployment"] == "smollm2" and series[0]["metric"]["runtime"] == "local"
    assert float(series[0]["value"][1]) > 0
    pid = json.loads((cli.state / "monitoring" / "prometheus.json").read_text())["pid"]
    rules = httpx.get(f"http://127.0.0.1:{PROM_PORT}/api/v1/rules", timeout=10, trust_env=False).json()
    loaded = {rule["name"] for group in rules["data"]["groups"] for rule in group["rules"]}
    assert {"EnovaReplicaDown", "EnovaKVCacheSaturated", "EnovaGatewayRejecting"} <= loaded

    # every dashboard panel's query returns a series after that traffic (GPU panels: no GPU here)
    result = wait_for_dashboards(f"http://127.0.0.1:{PROM_PORT}", dashboards(load_specs(specs)))
    assert not result.empty and not result.failed, result.report()

    # scale 1 -> 2: the new replica is scraped with no Prometheus restart
    write_spec(specs, replicas=2)
    monitoring(specs)
    cli("apply", str(specs), check=0)
    [second] = [r["id"] for r in cli.replicas("smollm2", specs) if r["id"] != first]
    up_after = wait_for(lambda: replicas_up() == {first, second}, FOLLOW_WITHIN, "both replicas' targets")

    # 2 -> 1: the stopped replica leaves
    write_spec(specs, replicas=1)
    monitoring(specs)
    cli("apply", str(specs), check=0)
    [kept] = [r["id"] for r in cli.replicas("smollm2", specs)]
    gone_after = wait_for(lambda: {t["labels"]["replica"] for t in targets()} == {kept}, FOLLOW_WITHIN,
                          "the stopped replica's target to go")
    assert json.loads((cli.state / "monitoring" / "prometheus.json").read_text())["pid"] == pid

    # stop, start: the stored series survive
    stored_at = time.time()
    before = query(f'vllm:generation_tokens_total{{replica="{first}"}}', at=stored_at)
    cli("mon", "stop", check=0)
    cli("mon", "start", str(specs), check=0)
    after = query(f'vllm:generation_tokens_total{{replica="{first}"}}', at=stored_at)
    assert after and after[0]["value"][1] == before[0]["value"][1]
    status = json.loads(cli("mon", "status", "-o", "json", check=0).out)
    assert status
    cli("mon", "stop", check=0)
    print(f"monitoring e2e: engine series after {engine:.1f} s; a new replica scraped {up_after:.1f} s after "
          f"apply returned, a stopped one gone {gone_after:.1f} s after (interval {INTERVAL:g} s)")


def targets() -> list[dict]:
    body = httpx.get(f"http://127.0.0.1:{PROM_PORT}/api/v1/targets", timeout=10, trust_env=False).json()
    return [t for t in body["data"]["activeTargets"] if t["labels"].get("job") == "enova-replicas"]
