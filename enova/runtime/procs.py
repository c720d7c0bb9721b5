"""Small helpers for the processes enova starts (replicas, the gateway): the environment they
inherit and the tail of their log. Called by runtime.local and apply.gateway."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
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


def follow_file(path: str | Path, tail: int, follow: bool, alive: Callable[[], bool],
                poll: float = 0.5) -> Iterator[str]:
    """The last `tail` lines of a log file, then (with `follow`) lines as they are appended,
    until `alive()` turns false. Copy-and-truncate rotation (enova.observe.logs) is followed by
    reading again from the start of the truncated file."""
    try:
        fh = open(path, errors="replace")
    except OSError:
        return
    with fh:
        for line in deque(fh, maxlen=tail):
            yield line.rstrip("\n")
        while follow:
            line = fh.readline()
            if line:
                yield line.rstrip("\n")
                continue
            if not alive():
                return
            try:
                if os.path.getsize(path) < fh.tell():  # truncated by rotation
                    fh.seek(0)
            except OSError:
                return
            time.sleep(poll)
