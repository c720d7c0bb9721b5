"""Health probes of engine replicas over HTTP (vLLM answers GET /health with 200 when ready).

Called by observe.world (status) and apply.local (readiness while starting).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import httpx


def probe(host: str, port: int, timeout: float = 2.0) -> bool:
    """GET http://host:port/health; True on a 200. Blocks up to `timeout`; never raises."""
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            return client.get(f"http://{host}:{port}/health").status_code == 200
    except httpx.HTTPError:
        return False


def probe_many(targets: Iterable[tuple[str, int]], timeout: float = 2.0) -> dict[tuple[str, int], bool]:
    """Probe several endpoints concurrently. Blocks up to about `timeout`."""
    targets = list(dict.fromkeys(targets))
    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        results = pool.map(lambda t: probe(t[0], t[1], timeout), targets)
        return dict(zip(targets, results))
