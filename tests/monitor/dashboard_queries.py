"""Run every dashboard panel's query against a real Prometheus and say which returned no series.

For the end-to-end test of monitoring (issue 12: "every dashboard panel's query, run against that
Prometheus after traffic, returns at least one series"):

    from ..monitor.dashboard_queries import check_dashboards, wait_for_dashboards
    result = wait_for_dashboards(f"http://127.0.0.1:{PROM_PORT}", dashboards(load_specs(specs)))
    assert not result.empty and not result.failed, result.report()

Each query runs as Grafana runs it: a range query (`/api/v1/query_range`) over the last `window`
seconds, with `$deployment` and `$__rate_interval` filled in (enova.monitor.dashboards.substitute).
A query "returns no series" when the range result is empty. GPU panels are skipped, with the
reason, when Prometheus has no GPU metric at all (no DCGM exporter and no enova NVML exporter: a
host with no GPU); annotations are left out unless asked for (they show only around a change).

For every panel to have a series the traffic must include streamed requests of a few tokens (the
TTFT and ITL histograms count streams), and, for the attainment panels, the specs an SLO that
sets the objectives and one evaluation of the SLO rules (every minute) after the traffic:
`wait_for_dashboards` retries until nothing is empty or its timeout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from enova.monitor.dashboards import GPU_METRICS, annotation_queries, panel_queries


@dataclass
class QueryCheck:
    """What running a set of dashboards' queries found."""

    empty: list[tuple[str, str]] = field(default_factory=list)           # (title, expr): no series
    failed: list[tuple[str, str, str]] = field(default_factory=list)     # (title, expr, Prometheus's error)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)    # (title, expr, why)
    answered: int = 0                                                    # queries that returned series

    def report(self) -> str:
        lines = [f"{self.answered} queries returned series, {len(self.empty)} none, {len(self.failed)} failed, "
                 f"{len(self.skipped)} skipped"]
        lines += [f"  no series: {title}: {expr}" for title, expr in self.empty]
        lines += [f"  failed: {title}: {expr}: {error}" for title, expr, error in self.failed]
        lines += [f"  skipped: {title}: {why}" for title, _, why in self.skipped]
        return "\n".join(lines)


def _gpu_query(expr: str) -> bool:
    return any(name in expr for name in GPU_METRICS)


def _series(client: httpx.Client, base: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    response = client.get(f"{base}/api/v1/query_range",
                          params={"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    body = response.json()
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType', response.status_code)}: {body.get('error', response.text)}")
    return body["data"]["result"]


def check_dashboards(base_url: str, models: Mapping[str, Mapping[str, Any]], *, deployment: str = ".*",
                     window: float = 300.0, step: float = 15.0, annotations: bool = False,
                     timeout: float = 10.0) -> QueryCheck:
    """Run every panel query of `models` ({file name: dashboard}, as enova.monitor.dashboards.
    dashboards() returns) once against the Prometheus at `base_url`, over the last `window`
    seconds. `deployment` is the regex `$deployment` stands for; `annotations` adds the
    annotation queries. Blocks on HTTP; raises httpx.HTTPError when Prometheus cannot be reached."""
    base = base_url.rstrip("/")
    result = QueryCheck()
    end = time.time()
    start = end - window
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        # a GPU utilisation series from either exporter; enova_gpu_available 0 (the reconciler's
        # exporter on a host without a GPU) is not one
        gpus = _series(client, base, "count({__name__=~\"%s\"})" % "|".join(GPU_METRICS), start, end, step)
        queries = []
        for name in sorted(models):
            queries += panel_queries(models[name], deployment)
            if annotations:
                queries += annotation_queries(models[name], deployment)
        for title, expr in queries:
            if _gpu_query(expr) and not gpus:
                result.skipped.append((title, expr, "no GPU utilisation series in Prometheus (neither DCGM's "
                                                    "exporter nor enova's NVML exporter reports a GPU: none here)"))
                continue
            try:
                series = _series(client, base, expr, start, end, step)
            except ValueError as e:
                result.failed.append((title, expr, str(e)))
                continue
            if series:
                result.answered += 1
            else:
                result.empty.append((title, expr))
    return result


def wait_for_dashboards(base_url: str, models: Mapping[str, Mapping[str, Any]], *, timeout: float = 150.0,
                        interval: float = 5.0, **options: Any) -> QueryCheck:
    """`check_dashboards` again every `interval` seconds until no query is empty or failed, or
    `timeout` seconds passed; returns the last result (the SLO rules are evaluated every minute,
    so their series may come a minute after the traffic)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check_dashboards(base_url, models, **options)
        if (not result.empty and not result.failed) or time.monotonic() >= deadline:
            return result
        time.sleep(interval)
