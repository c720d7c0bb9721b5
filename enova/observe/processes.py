"""Is the process a record names still running, and is it still the same process?

A pid alone is not an identity: after a process exits the kernel may give its pid to
another one. A record keeps the pid and the process's start time; both must match.
Called by runtime.world (the gateway record), runtime.local and apply.gateway (before any signal is sent).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

# psutil derives create_time from /proc's start ticks and the boot time; allow for rounding.
_CREATE_TIME_TOLERANCE = 0.05


@dataclass(frozen=True)
class ProcessCheck:
    alive: bool
    detail: str  # "running", "pid 123 exited", "pid 123 now belongs to another process"


def process_start_time(pid: int) -> float:
    """The start time psutil reports for pid. Raises psutil.NoSuchProcess if it is gone."""
    return psutil.Process(pid).create_time()


def check_process(pid: int, create_time: float) -> ProcessCheck:
    """Non-blocking, read-only. A zombie counts as exited."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > _CREATE_TIME_TOLERANCE:
            return ProcessCheck(False, f"pid {pid} now belongs to another process")
        if proc.status() == psutil.STATUS_ZOMBIE:
            return ProcessCheck(False, f"pid {pid} exited")
        return ProcessCheck(True, "running")
    except psutil.NoSuchProcess:
        return ProcessCheck(False, f"pid {pid} exited")
    except psutil.AccessDenied:
        # Exists but belongs to someone else: cannot be ours.
        return ProcessCheck(False, f"pid {pid} now belongs to another user's process")
