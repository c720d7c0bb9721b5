"""Health probes of engine replicas over HTTP (vLLM answers GET /health with 200 when ready).

Called by runtime.local (observation and readiness while starting).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import httpx

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _shared_client() -> httpx.Client:
    """One client for every probe: building one costs ~20 ms (an SSL context), a probe ~1 ms."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(trust_env=False, limits=httpx.Limits(max_keepalive_connections=32))
        return _client


def probe(host: str, port: int, timeout: float = 2.0) -> bool:
    """GET http://host:port/health; True on a 200. Blocks up to `timeout`; never raises. Thread-safe."""
    try:
        return _shared_client().get(f"http://{host}:{port}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def probe_many(targets: Iterable[tuple[str, int]], timeout: float = 2.0) -> dict[tuple[str, int], bool]:
    """Probe several endpoints concurrently. Blocks up to about `timeout`."""
    targets = list(dict.fromkeys(targets))
    if not targets:
        return {}
    if len(targets) == 1:
        return {targets[0]: probe(*targets[0], timeout)}
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        results = pool.map(lambda t: probe(t[0], t[1], timeout), targets)
        return dict(zip(targets, results))
