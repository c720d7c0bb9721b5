"""The Prometheus server as a process enova owns, as it owns the gateway.

`start_monitoring` checks everything that can fail before anything starts (the mode, the
binary, the configuration by promtool, the port), writes the configuration and the target
files, starts `prometheus` in its own session with its output appended to
`<state_dir>/logs/prometheus.log`, records it at once in `<state_dir>/monitoring/prometheus.json`
(pid + start time, so no later enova signals a pid that now belongs to another process) and
waits until `/-/ready` answers 200. The process outlives enova; the next `enova mon` adopts it
through the record. Started again with the same settings it is left running (its targets are
refreshed); with other settings it is restarted. `stop_monitoring` sends SIGTERM and waits
(SIGKILL after a grace period). The TSDB under `<state_dir>/monitoring/data` is never removed,
so stored series survive a stop and a start. Nothing here touches a replica or the gateway.
`<state_dir>/monitoring/lock` keeps two `enova mon` from acting at once (apply's lock is not
taken: monitoring never waits for serving, nor serving for monitoring). Called by enova.cli.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from enova.errors import PermanentError, TemporaryError, UsageError
from enova.observe.lock import StateLock
from enova.observe.ports import port_is_free
from enova.observe.processes import check_process, process_start_time
from enova.observe.state import StateStore, record_from_dict, write_json
from enova.runtime.procs import child_environment, log_tail

from .prometheus import (
    MonitoringConfig,
    MonitorPaths,
    check_config,
    find_binary,
    find_promtool,
    prometheus_argv,
    render_config,
)
from .targets import read_target_files, write_targets

Progress = Callable[[str], None]


@dataclass
class PrometheusRecord:
    """`<state_dir>/monitoring/prometheus.json`: the Prometheus process enova started."""

    pid: int
    create_time: float          # with pid, the process's identity
    config_hash: str            # of argv + prometheus.yml: other settings mean a restart
    config: dict[str, Any]      # MonitoringConfig.to_dict()
    argv: list[str]
    log: str
    url: str
    started_at: float = 0.0     # wall clock
    ready_seconds: float | None = None  # from the start to /-/ready answering 200


@dataclass
class StartResult:
    """What start_monitoring did: action is "started", "restarted" or "already running"."""

    action: str
    record: PrometheusRecord
    reason: str = ""
    targets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def read_record(state_dir: Path) -> PrometheusRecord | None:
    """The recorded Prometheus, alive or not; None without a record. Raises PermanentError when
    the record is unreadable."""
    path = MonitorPaths(Path(state_dir)).record
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return record_from_dict(PrometheusRecord, data)
    except (OSError, ValueError, TypeError) as exc:
        raise PermanentError(f"{path}: unreadable monitoring record: {exc}") from None


def is_running(record: PrometheusRecord | None) -> bool:
    return record is not None and check_process(record.pid, record.create_time).alive


def config_hash(argv: list[str], config_text: str) -> str:
    return hashlib.sha256(json.dumps([argv, config_text]).encode()).hexdigest()[:12]


def port_holder(port: int) -> str | None:
    """"pid N (name)" of a process listening on TCP `port`, when psutil can tell; else None."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None


def start_monitoring(state_dir: Path, config: MonitoringConfig, *, progress: Progress = lambda m: None,
                     clock: Callable[[], float] = time.time, ready_timeout: float = 60.0,
                     stop_grace: float = 30.0) -> StartResult:
    """Make Prometheus run with `config`: start it, leave it running when it already runs with
    these settings, or restart it (data kept) when they changed. Writes the target files either
    way. Blocks until it is ready (up to `ready_timeout`). Raises UsageError (compose mode: not
    available yet), PermanentError (binary missing, configuration rejected, port held by another
    process, the process exited at start: nothing is left running) or TemporaryError (not ready in
    time: it is stopped), LockHeldError (another `enova mon` acts)."""
    if config.mode != "local":
        raise UsageError(f"monitoring: mode {config.mode} ({config.source}) is not local mode's: start it with "
                         "enova.monitor.compose_engine.ensure_monitoring (enova mon start, apply and the "
                         "reconciler do)")
    paths = MonitorPaths(Path(state_dir))
    lock = StateLock(paths.root, purpose="enova mon start")
    lock.acquire()
    try:
        return _start(paths, config, progress, clock, ready_timeout, stop_grace)
    finally:
        lock.release()


def _start(paths: MonitorPaths, config: MonitoringConfig, progress: Progress, clock: Callable[[], float],
           ready_timeout: float, stop_grace: float) -> StartResult:
    store = StateStore(paths.state_dir)
    binary = find_binary(config.binary)
    argv = prometheus_argv(binary, config, paths)
    text = render_config(config, paths)
    wanted = config_hash(argv, text)
    running = read_record(paths.state_dir)
    if running is not None and not is_running(running):
        progress(f"prometheus: pid {running.pid} had exited; forgetting its record")
        paths.record.unlink(missing_ok=True)
        running = None
    if running is not None and running.config_hash == wanted:
        write_targets(store, paths.targets)
        return StartResult("already running", running, targets=_targets(paths))

    # Everything that can fail is checked before the running one (if any) is touched.
    for folder in (paths.targets, paths.rules, paths.data, paths.log.parent):
        folder.mkdir(parents=True, exist_ok=True)
    write_targets(store, paths.targets)
    _check(binary, paths, text)
    ours = running is not None and running.config.get("port") == config.port
    if not ours and not port_is_free(config.host, config.port):
        holder = port_holder(config.port)
        raise PermanentError(f"monitoring: port {config.port} on {config.host} is in use"
                             f"{f' by {holder}' if holder else ' by another process'}; stop it, or set "
                             "spec.prometheus.port in a Monitoring document")
    reason = ""
    if running is not None:
        reason = "its settings changed"
        progress(f"prometheus: restarting pid {running.pid} ({reason}); stored data is kept")
        _stop(paths, running, stop_grace)
    _replace_text(paths.config, text)
    record = _spawn(paths, config, argv, wanted, clock)
    _wait_ready(paths, record, ready_timeout, stop_grace)
    return StartResult("restarted" if running is not None else "started", record, reason, _targets(paths))


def _check(binary: str, paths: MonitorPaths, text: str) -> None:
    """promtool on the configuration as it will be written, before it replaces the current one."""
    promtool = find_promtool(binary)
    if promtool is None:
        return  # Prometheus itself will refuse a bad file; its log is then shown
    candidate = paths.config.with_name(".prometheus.yml.check")
    candidate.write_text(text)
    try:
        check_config(promtool, candidate, shown=paths.config)
    finally:
        candidate.unlink(missing_ok=True)


def _spawn(paths: MonitorPaths, config: MonitoringConfig, argv: list[str], wanted: str,
           clock: Callable[[], float]) -> PrometheusRecord:
    with open(paths.log, "ab") as out:
        out.write(f"--- enova: starting prometheus: {argv}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=paths.root, env=child_environment())
    record = PrometheusRecord(pid=proc.pid, create_time=process_start_time(proc.pid), config_hash=wanted,
                              config=config.to_dict(), argv=argv, log=str(paths.log), url=config.url,
                              started_at=clock())
    write_json(paths.record, asdict(record))
    return record


def _wait_ready(paths: MonitorPaths, record: PrometheusRecord, timeout: float, stop_grace: float) -> None:
    began = time.monotonic()
    deadline = began + timeout
    url = f"{record.url}/-/ready"
    while time.monotonic() < deadline:
        if not check_process(record.pid, record.create_time).alive:
            paths.record.unlink(missing_ok=True)
            raise PermanentError(f"monitoring: prometheus exited at start; last lines of {record.log}:\n"
                                 f"{log_tail(record.log)}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                record.ready_seconds = round(time.monotonic() - began, 3)
                write_json(paths.record, asdict(record))
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    _stop(paths, record, stop_grace)
    raise TemporaryError(f"monitoring: prometheus was not ready on {url} within {timeout:.0f} s; it was stopped; "
                         f"see {record.log}")


def stop_monitoring(state_dir: Path, *, grace: float = 30.0) -> str:
    """Stop the Prometheus enova started (SIGTERM; SIGKILL after `grace`), and forget its record.
    Blocks until it is gone. Stored data is kept. Idempotent; never signals a process that is not
    the recorded one. Returns what was done. Raises LockHeldError (another `enova mon` acts)."""
    paths = MonitorPaths(Path(state_dir))
    if not paths.root.is_dir():
        return "prometheus is not running (monitoring was never started here)"
    lock = StateLock(paths.root, purpose="enova mon stop")
    lock.acquire()
    try:
        record = read_record(paths.state_dir)
        if record is None:
            return "prometheus is not running"
        if not is_running(record):
            paths.record.unlink(missing_ok=True)
            return f"prometheus (pid {record.pid}) had already exited; its record is forgotten"
        began = time.monotonic()
        _stop(paths, record, grace)
        return (f"prometheus (pid {record.pid}) stopped in {time.monotonic() - began:.1f} s; "
                f"stored data kept in {paths.data}")
    finally:
        lock.release()


RULES_FILE = "enova-slo.yml"


def sync_rules(state_dir: Path, specs: Any | None) -> bool:
    """Write the SLO recording and alerting rules of `specs` (enova.monitor.rules; without specs
    the health alerts alone) to `<state>/monitoring/rules/enova-slo.yml`, atomically and only when
    they changed. Returns whether they changed: a running Prometheus then needs reload_monitoring."""
    from .rules import dump_rules, render_rules, slo_rules
    text = render_rules(specs) if specs is not None else dump_rules(slo_rules({}, {}))
    paths = MonitorPaths(Path(state_dir))
    paths.rules.mkdir(parents=True, exist_ok=True)
    target = paths.rules / RULES_FILE
    try:
        if target.read_text() == text:
            return False
    except OSError:
        pass
    _replace_text(target, text)
    return True


def reload_monitoring(state_dir: Path) -> bool:
    """Ask the running Prometheus to re-read its configuration and rule files (SIGHUP), after
    rules were written. Returns False when none runs. Non-blocking: Prometheus reloads on its own
    (a rejected file keeps the old rules and is logged). Never signals another process."""
    record = read_record(Path(state_dir))
    if not is_running(record):
        return False
    assert record is not None
    try:
        os.kill(record.pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    return True


def _stop(paths: MonitorPaths, record: PrometheusRecord, grace: float) -> None:
    """SIGTERM to its process group, SIGKILL after `grace`; waits until it has exited (a zombie
    that no one reaps counts as exited), then forgets the record."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not check_process(record.pid, record.create_time).alive:
            break
        try:
            os.killpg(record.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and check_process(record.pid, record.create_time).alive:
            _reap(record.pid)
            time.sleep(0.05)
    paths.record.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (started in this process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _targets(paths: MonitorPaths) -> dict[str, list[dict[str, Any]]]:
    return read_target_files(paths.targets)


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
