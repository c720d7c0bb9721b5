"""Scale from zero at the gateway: how long a request may be held for a deployment with no ready
replica, and how the gateway asks the reconciler for one.

A deployment whose record's serving has `"scale_from_zero": true` (apply writes it when
`scaling.min` is 0) keeps its route while it has no replica. `admission` holds its requests
instead of answering 503 (in the same bounded queue as requests waiting for a free slot), and
the first held request of an episode asks for a replica through a waker; while requests are
still held the request is repeated every half timeout. A request held past `hold_timeout` gets
503 with Retry-After.

The timeout (`hold_timeout`): the deployment's `serving.hold_timeout` when set; else the
replica start time the reconciler measured (`start_seconds` in
`<state_dir>/autoscaler/<deployment>.json`) plus `HOLD_MARGIN`; else `DEFAULT_HOLD_TIMEOUT`.
`WakeFile` is the waker for the state directory: it writes
`<state_dir>/autoscaler/wake/<deployment>` (a temp file outside wake/, renamed in) holding the wall-clock time in
seconds, which the reconciler watches. Used by `source` (the timeout) and `server` (the waker).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("enova.gateway")

HOLD_MARGIN = 30.0              # seconds added to the measured start time
DEFAULT_HOLD_TIMEOUT = 180.0    # when no start time was measured yet


def _positive(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def hold_timeout(override: Any, start_seconds: Any) -> float:
    """Seconds a request may be held: `override` (serving.hold_timeout) if a positive number,
    else a positive `start_seconds` + HOLD_MARGIN, else DEFAULT_HOLD_TIMEOUT. Pure."""
    chosen = _positive(override)
    if chosen is not None:
        return chosen
    start = _positive(start_seconds)
    return start + HOLD_MARGIN if start is not None else DEFAULT_HOLD_TIMEOUT


def scaler_path(state_dir: Path, deployment: str) -> Path:
    """The autoscaler's persisted state of `deployment` (written by the reconciler)."""
    return Path(state_dir) / "autoscaler" / f"{deployment}.json"


def wake_path(state_dir: Path, deployment: str) -> Path:
    """Where the gateway asks the reconciler for a replica of `deployment`."""
    return Path(state_dir) / "autoscaler" / "wake" / deployment


class WakeFile:
    """Asks for a replica by writing `<state_dir>/autoscaler/wake/<deployment>`."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time):
        self.state_dir = Path(state_dir)
        self.clock = clock

    def write(self, deployment: str) -> Path:
        """Write the wake file atomically (temp + rename) with the time. Blocks on a small
        write; idempotent (a rewrite only updates the time); raises OSError."""
        path = wake_path(self.state_dir, deployment)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temp file lives beside the folder, so a watcher of wake/ only ever sees whole files
        tmp = path.parent.parent / f".wake-{deployment}.{os.getpid()}.tmp"
        tmp.write_text(f"{self.clock():.3f}\n")
        os.replace(tmp, path)
        return path

    def _write_logged(self, deployment: str) -> None:
        try:
            path = self.write(deployment)
        except OSError as exc:
            log.error("deployment %s has no ready replica and the gateway could not ask for one (%s); held "
                      "requests wait for the reconciler's next interval", deployment, exc)
            return
        log.info("deployment %s has no ready replica: holding its requests, asked for one (%s)", deployment, path)

    def __call__(self, deployment: str) -> None:
        """Ask for a replica without blocking the event loop (the write runs in a thread; a
        failure is logged). Call on the gateway's loop."""
        asyncio.get_running_loop().run_in_executor(None, self._write_logged, deployment)
