"""Is the process a record names still running, and is it still the same process?

A pid alone is not an identity: after a process exits the kernel may give its pid to
another one. A record keeps the pid and the process's start time; both must match.
Called by runtime.world (the gateway record), runtime.local and apply.gateway (before any signal is sent).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
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


def signal_group(pid: int, sig: int) -> None:
    """`sig` to the process group `pid` leads (every process enova starts leads its own session),
    or to the process alone when it leads none or the group cannot be signalled. A process
    already gone is no error."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_group(pid: int, grace: float, *, own_group_only: bool = False,
                    on_kill: Callable[[], None] | None = None) -> bool:
    """SIGTERM to the group `pid` leads, SIGKILL after `grace` seconds to whatever of it is left;
    blocks until the processes are gone (5 s more at most after SIGKILL). `own_group_only`: wait
    for and kill only descendants still in that group (children that started sessions of their
    own, such as replicas a reconciler started, are left alone). `on_kill` is called before
    SIGKILL. Callers check the process's identity first (check_process). Returns whether it had
    to be killed."""
    try:
        root = psutil.Process(pid)
        tree = [root, *(c for c in root.children(recursive=True)
                        if not own_group_only or _group_of(c.pid) == pid)]
    except psutil.NoSuchProcess:
        return False
    signal_group(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=grace)
    if not alive:
        return False
    if on_kill is not None:
        on_kill()
    signal_group(pid, signal.SIGKILL)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return True


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
