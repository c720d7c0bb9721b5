"""Client of the gateway's admin API, for `enova apply`: wait until a replica is drained.

The contract (served by `server` at GET /admin/v1/replicas, token required if the gateway
has one):

    {"replicas": [{"id", "deployment", "state", "in_flight", "limit", "url",
                   "consecutive_failures"}, ...],
     "queues": {deployment: requests waiting for a slot on a ready replica},
     "held": {deployment: requests held while no replica is ready (scale from zero)},
     "generation": n}

`state` is ready | ejected | starting | draining | stopping | gone (record removed, requests
still in flight). `generation` increases on every membership reload. A replica is drained
when the gateway lists it as draining, stopping or gone with `in_flight == 0`, or no longer
lists it at all. The caller first writes the replica's record as `draining` (the gateway
stops routing to it within ~100 ms), then calls `wait_drained`, then stops the process.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import httpx

REPLICAS_PATH = "/admin/v1/replicas"
_DRAINED_STATES = ("draining", "stopping", "gone")


class DrainOutcome(enum.Enum):
    DRAINED = "drained"
    TIMED_OUT = "timed out with requests still in flight"
    UNREACHABLE = "gateway not running"
    REJECTED = "gateway refused the admin request"


def wait_drained(base_url: str, replica_id: str, timeout: float, token: str | None = None, *,
                 interval: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> DrainOutcome:
    """Poll the gateway until `replica_id` is drained (see the module docstring). Blocks up to
    `timeout` seconds. Returns DRAINED, TIMED_OUT, UNREACHABLE (nothing answers at `base_url`:
    the caller may stop the replica without a drain) or REJECTED (the gateway answered with an
    error, e.g. 401 for a wrong token). Raises nothing."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = clock() + timeout
    with httpx.Client(base_url=base_url, headers=headers, timeout=min(2.0, max(timeout, 0.1)),
                      trust_env=False) as client:
        while True:
            try:
                resp = client.get(REPLICAS_PATH)
            except httpx.TransportError:
                return DrainOutcome.UNREACHABLE
            if resp.status_code != 200:
                return DrainOutcome.REJECTED
            try:
                rows = resp.json()["replicas"]
                row = next((r for r in rows if r.get("id") == replica_id), None)
            except (ValueError, KeyError, TypeError, AttributeError):
                return DrainOutcome.REJECTED
            if row is None or (row.get("state") in _DRAINED_STATES and row.get("in_flight") == 0):
                return DrainOutcome.DRAINED
            if clock() >= deadline:
                return DrainOutcome.TIMED_OUT
            sleep(interval)
