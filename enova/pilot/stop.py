"""Stopping what a pilot started, in the order that loses no request: the web UI and the app
server, then the reconciler (so nothing restarts what follows), then the deployments of the
pilot's specs (each replica drained through the gateway, then stopped), then the gateway and
Prometheus unless they ran before the pilot started. The specs folder is never touched.

`shutdown(record)` is what a running pilot does on Ctrl-C / SIGTERM, and what `enova pilot stop`
does itself when the pilot process is gone (killed) but left its record. `stop_pilot` is
`enova pilot stop`: signal the running pilot and wait, or clean up after a dead one.
Called by enova.pilot.run and enova.commands.pilot.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from enova.apply.executor import Applier
from enova.apply.gateway import stop_gateway
from enova.errors import EnovaError, LockHeldError
from enova.monitor import process as monitor
from enova.monitor.targets import refresh_targets
from enova.observe.lock import StateLock
from enova.observe.state import StateStore
from enova.runtime.select import Runtimes
from enova.settings import Settings

from .record import Handle, PilotRecord, read_record, remove_record, terminate, wait_gone

Progress = Callable[[str], None]
CHILD_GRACE = {"webui": 10.0, "app": 10.0, "reconciler": 60.0}


def shutdown(record: PilotRecord, settings: Settings, progress: Progress = lambda m: None,
             lock_wait: float = 15.0) -> list[str]:
    """Stop everything `record` names (see the module docstring) and remove the record. Blocks
    (draining may take each deployment's serving.drain_timeout). Returns the problems met (each
    already reported through `progress`); what could be stopped is stopped regardless."""
    problems: list[str] = []
    for name in ("webui", "app", "reconciler"):
        handle = record.processes.get(name)
        if handle is None or not handle.alive():
            continue
        progress(f"stopping the {_LABEL[name]} (pid {handle.pid})")
        if terminate(handle, CHILD_GRACE[name]):
            progress(f"{_LABEL[name]} did not stop within {CHILD_GRACE[name]:.0f} s: killed")
    state_dir = settings.state_dir
    try:
        lock = _acquire(state_dir, lock_wait)
    except LockHeldError as exc:
        problems.append(f"replicas and gateway left running: {exc}")
        progress(problems[-1])
        return problems
    try:
        store = StateStore(state_dir)
        on_change = lambda: _refresh(state_dir, progress)  # noqa: E731 - Prometheus follows the stops
        applier = Applier(store=store, settings=settings, runtime=Runtimes(store, progress=progress),
                          progress=progress, on_change=on_change)
        for name in record.deployments:
            if not store.has_deployment(name):
                continue
            try:
                stopped = applier.delete(name)
                progress(f"deleted {name}: {stopped} replica(s) stopped")
            except EnovaError as exc:
                problems.append(f"{name}: {exc}")
                progress(f"{name}: not deleted: {exc}")
        gateway = store.read_gateway()
        if gateway is not None and not _same(gateway.pid, gateway.create_time, record.gateway_before):
            progress(f"stopping the gateway (pid {gateway.pid})")
            stop_gateway(store, gateway)
    finally:
        lock.release()
    try:
        prometheus = monitor.read_record(state_dir)
        if monitor.is_running(prometheus) and not _same(prometheus.pid, prometheus.create_time,
                                                        record.prometheus_before):
            progress(monitor.stop_monitoring(state_dir))
    except EnovaError as exc:
        problems.append(f"monitoring: {exc}")
        progress(problems[-1])
    remove_record(state_dir)
    return problems


_LABEL = {"webui": "web UI", "app": "app server", "reconciler": "reconciler"}


def _same(pid: int, create_time: float, before: Handle | None) -> bool:
    return before is not None and before.pid == pid and abs(before.create_time - create_time) < 0.05


def _refresh(state_dir: Path, progress: Progress) -> None:
    try:
        refresh_targets(state_dir)
    except (EnovaError, OSError) as exc:
        progress(f"monitoring targets not updated: {exc}")


def _acquire(state_dir: Path, wait: float) -> StateLock:
    """The state lock, waiting up to `wait` s for the reconciler that just exited to let go."""
    deadline = time.monotonic() + wait
    while True:
        lock = StateLock(state_dir, "enova pilot (stopping)")
        try:
            lock.acquire()
            return lock
        except LockHeldError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def stop_pilot(settings: Settings, progress: Progress = lambda m: None, timeout: float = 300.0) -> str:
    """`enova pilot stop`: SIGTERM to the running pilot and wait until it has stopped everything
    (up to `timeout`); when its process is gone, stop what its record names here. Idempotent.
    Raises EnovaError when the pilot does not finish in time."""
    record = read_record(settings.state_dir)
    if record is None:
        return f"no pilot is running with state in {settings.state_dir}"
    if record.pilot.alive():
        began = time.monotonic()
        progress(f"asking the pilot (pid {record.pilot.pid}) to stop everything it started")
        try:
            os.kill(record.pilot.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not wait_gone(record.pilot, timeout):
            raise EnovaError(f"the pilot (pid {record.pilot.pid}) is still stopping after {timeout:.0f} s; "
                             f"see its output, or run `enova pilot stop` again")
        return f"pilot (pid {record.pilot.pid}) stopped in {time.monotonic() - began:.1f} s; specs kept in {record.specs}"
    progress(f"the pilot (pid {record.pilot.pid}) is not running; stopping what it started")
    problems = shutdown(record, settings, progress)
    if problems:
        raise EnovaError("pilot stop left things running:\n  " + "\n  ".join(problems))
    return f"stopped what pilot (pid {record.pilot.pid}) started; specs kept in {record.specs}"
