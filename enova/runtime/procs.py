"""Small helpers for the processes enova starts (replicas, the gateway): the environment they
inherit and the tail of their log. Called by runtime.local and apply.gateway."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

# systemd's notify variables belong to the controller; a replica or gateway must not inherit them.
SERVICE_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ONLY_ENV}
    env.update(extra or {})
    return env


def log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return "(no log)"
