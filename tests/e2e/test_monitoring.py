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
    (folder / "monitoring.yaml").write_text(
        "apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: local}\n"
        f"spec: {{prometheus: {{port: {PROM_PORT}, scrape_interval: {INTERVAL:g}s}}}}\n")


def test_prometheus_follows_the_replicas_and_keeps_its_data(module_cli: Cli, tmp_path: Path) -> None:
    cli = module_cli
    specs = write_spec(tmp_path / "specs", replicas=1)
    monitoring(specs)
    applied = cli("apply", str(specs), check=0)
    assert "monitoring: Prometheus started" in applied.err
    [first] = [r["id"] for r in cli.replicas("smollm2", specs)]
    for _ in range(3):
        complete(TEST_GATEWAY_PORT)
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

    # scale 1 -> 2: the new replica is scraped with no Prometheus restart
    write_spec(specs, replicas=2)
    cli("apply", str(specs), check=0)
    [second] = [r["id"] for r in cli.replicas("smollm2", specs) if r["id"] != first]
    up_after = wait_for(lambda: replicas_up() == {first, second}, FOLLOW_WITHIN, "both replicas' targets")

    # 2 -> 1: the stopped replica leaves
    write_spec(specs, replicas=1)
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
