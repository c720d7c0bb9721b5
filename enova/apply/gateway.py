"""Running the gateway (the data plane on :9199) as an owned process, and changing it without
refusing a connection.

`enova apply` drives it through `GatewayConverger`: `check` finds what would fail before
anything is touched (an unusable token file, a port another process holds), `begin` acts and
`finish` waits, so that the gateway's start overlaps the replicas'. A change of token file or
its tokens, body limit or queue settings is reloaded IN PLACE: the new settings are written to
`<state_dir>/gateway/config.json`, the gateway gets SIGHUP and re-reads it, keeping its
listening socket, and apply confirms the reload by the settings hash the gateway reports at
/admin/v1/config. A new host or port is a HANDOVER: the new gateway starts on the new
address, and only once it answers is the old one sent SIGTERM (it stops accepting and
finishes its in-flight requests). The process outlives enova and is adopted by the next
`enova` through its state record (pid + start time); a gateway being handed over from is
recorded in `gateway/retiring.json` until it has stopped, so an interrupted apply leaves
nothing running unowned. Before a replica is stopped, the `Drainer` asks every running
gateway to stop routing to it and waits for its in-flight requests. Called by apply.executor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from enova.errors import EnovaError, PermanentError, TemporaryError
from enova.gateway.config import SETTINGS, expected_hash, load_tokens
from enova.observe.ports import connect_url, port_is_free
from enova.observe.processes import check_process, process_start_time
from enova.observe.state import GatewayRecord, ReplicaRecord, StateStore, record_from_dict, write_json
from enova.plan.model import Change, DesiredGateway
from enova.runtime.procs import child_environment, log_tail

Progress = Callable[[str], None]
CONFIG_PATH = "admin/v1/config"


# -- the gateway process ------------------------------------------------------------------------

def gateway_url(config: dict) -> str:
    return connect_url(config["host"], config["port"])


def read_token(config: dict) -> str | None:
    """A bearer token the gateway accepts with `config` (the first of its token file), for
    enova's own admin requests. Raises UsageError naming the file if it is unusable."""
    path = config.get("token_file")
    return load_tokens(path)[0] if path else None


def file_settings(config: dict) -> dict[str, Any]:
    """The gateway's config file from a Gateway config: its settings, the token file made
    absolute (the gateway runs in the state directory)."""
    settings = {k: config.get(k) for k in SETTINGS}
    if settings["token_file"]:
        settings["token_file"] = os.path.abspath(os.path.expanduser(settings["token_file"]))
    return settings


def config_file(store: StateStore) -> Path:
    return store.root / "gateway" / "config.json"


def retiring_file(store: StateStore) -> Path:
    return store.root / "gateway" / "retiring.json"


def gateway_argv(state_dir: Path, config_path: Path) -> list[str]:
    return [sys.executable, "-m", "enova.gateway", "--state-dir", str(state_dir), "--config", str(config_path)]


def supports_reload(record: GatewayRecord) -> bool:
    """Started with a config file (by this enova): it re-reads it on SIGHUP. An older gateway
    would die of SIGHUP, so it is restarted instead."""
    return "--config" in record.argv


def spawn_gateway(store: StateStore, config: dict, config_hash: str, *,
                  clock: Callable[[], float] = time.time) -> GatewayRecord:
    """Write the config file, start the gateway process and record it in gateway.json; returns
    at once (the caller waits with wait_gateway, overlapping other start-ups).
    Raises PermanentError if its port is taken or its token file is unusable."""
    try:
        expected_hash(file_settings(config))     # a bad token file is an error before anything starts
    except EnovaError as exc:
        raise PermanentError(f"gateway: {exc}") from None
    if not port_is_free(config["host"], config["port"]):
        raise PermanentError(f"gateway: port {config['port']} on {config['host']} is in use by another process "
                             "(set spec.port in a Gateway document)")
    path = config_file(store)
    write_json(path, file_settings(config))
    log = store.root / "logs" / "gateway.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = gateway_argv(store.root, path)
    with open(log, "ab") as out:
        out.write(f"--- enova: starting gateway: {argv}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=store.root, env=child_environment())
    record = GatewayRecord(pid=proc.pid, create_time=process_start_time(proc.pid), config_hash=config_hash,
                           config=config, argv=argv, log=str(log), started_at=clock())
    store.write_gateway(record)
    return record


def wait_gateway(store: StateStore, record: GatewayRecord, timeout: float = 20.0) -> None:
    """Block until the gateway answers HTTP (any status), up to `timeout`. On failure it is
    stopped and forgotten, and PermanentError (it exited) or TemporaryError (no answer) is raised."""
    deadline = time.monotonic() + timeout
    url = gateway_url(record.config) + "/health"
    log = record.log
    while time.monotonic() < deadline:
        if not check_process(record.pid, record.create_time).alive:
            store.remove_gateway()
            raise PermanentError(f"gateway exited at start; last lines of {log}:\n{log_tail(log)}")
        try:
            httpx.get(url, timeout=1, trust_env=False)  # any answer (200 or 503) means it is serving
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    stop_gateway(store, record)
    raise TemporaryError(f"gateway did not answer on {url} within {timeout:.0f} s; see {log}")


def stop_gateway(store: StateStore, record: GatewayRecord, grace: float = 35.0, *, forget: bool = True) -> None:
    """SIGTERM (the gateway stops accepting and finishes in-flight requests), SIGKILL after
    `grace`; then forget gateway.json unless `forget` is False (the record is another's).
    Blocks until the process is gone. Idempotent; never signals a process whose identity does
    not match the record."""
    if check_process(record.pid, record.create_time).alive:
        try:
            proc = psutil.Process(record.pid)
            os.killpg(record.pid, signal.SIGTERM)
            _, alive = psutil.wait_procs([proc], timeout=grace)
            if alive:
                os.killpg(record.pid, signal.SIGKILL)
                psutil.wait_procs(alive, timeout=5)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    if forget:
        store.remove_gateway()


def gateway_status(config: dict, token: str | None, timeout: float = 2.0) -> dict[str, Any] | None:
    """GET /admin/v1/config of the gateway at `config`'s address: {"config_hash", "last_reload",
    ...}, or None when nothing answers, the token is refused or the answer is not that shape.
    Raises nothing."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.get(f"{gateway_url(config)}/{CONFIG_PATH}", headers=headers, timeout=timeout, trust_env=False)
        body = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) and "config_hash" in body else None


def _retiring(store: StateStore) -> GatewayRecord | None:
    path = retiring_file(store)
    try:
        return record_from_dict(GatewayRecord, json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running_gateways(store: StateStore) -> list[GatewayRecord]:
    """Every gateway process enova runs: the current one and one being handed over from."""
    out = []
    for record in (store.read_gateway(), _retiring(store)):
        if record is not None and check_process(record.pid, record.create_time).alive:
            out.append(record)
    return out


# -- converging the gateway to the plan --------------------------------------------------------

@dataclass
class PendingGateway:
    """What `begin` started and `finish` must wait for. kind: start | handover | reload."""

    kind: str
    record: GatewayRecord                   # the new gateway, or (reload) the running one
    desired: DesiredGateway
    old: GatewayRecord | None = None        # handover: the gateway to stop once the new one answers
    expected: str = ""                      # reload: the settings hash to confirm
    reloads_before: int | None = None       # reload: last_reload.count before the SIGHUP


class GatewayConverger:
    """Makes the running gateway match a plan's gateway Change, never leaving the service down
    for a bad new config and never refusing a connection for a change it can make in place.

    - check(change, desired): the problems that would make it fail (token file unusable, port
      held by another process); touches nothing.
    - begin(change, desired): acts. CREATE starts the gateway; UPDATE (or a REPLACE that keeps
      host and port) reloads it in place; REPLACE to a new host/port starts the new gateway
      beside the old; DELETE stops it (blocking, in-flight requests finish first); NOOP with
      `forget` drops an exited record; a plain NOOP reloads only if the running gateway's
      settings hash differs from the one expected now (a token file edited in place). Returns a
      PendingGateway when something must be waited for, else None. Raises EnovaError.
    - finish(pending): waits until a started gateway answers, a reload is confirmed, and after a
      handover stops the old gateway (it finishes its in-flight requests). Returns what was
      done; raises EnovaError (a failed handover leaves the old gateway serving and recorded).
    """

    def __init__(self, store: StateStore, *, progress: Progress = lambda m: None,
                 clock: Callable[[], float] = time.time, start_timeout: float = 20.0,
                 reload_timeout: float = 10.0, stop_grace: float = 35.0):
        self.store = store
        self.progress = progress
        self.clock = clock
        self.start_timeout = start_timeout
        self.reload_timeout = reload_timeout
        self.stop_grace = stop_grace

    # -- deciding --------------------------------------------------------------------------
    def _running(self) -> GatewayRecord | None:
        record = self.store.read_gateway()
        if record is not None and check_process(record.pid, record.create_time).alive:
            return record
        return None

    def _mode(self, change: Change, desired: DesiredGateway | None) -> str:
        action = change.action.value
        if action == "delete" or desired is None:
            return "stop" if change.stop or action == "delete" else "forget" if change.forget else "none"
        running = self._running()
        if action == "noop":
            if change.forget and running is None:
                return "forget"
            return "verify" if running is not None else "none"
        if running is None:
            return "start"
        same_address = (running.config.get("host"), running.config.get("port")) == \
            (desired.config["host"], desired.config["port"])
        if not same_address:
            return "handover"
        return "reload" if supports_reload(running) else "restart"

    def check(self, change: Change, desired: DesiredGateway | None) -> list[str]:
        """What would make `begin` fail, one line each (without a "gateway:" prefix); empty when
        it can go ahead. Touches nothing; blocks only on reading the token file and a bind test."""
        mode = self._mode(change, desired)
        if desired is None or mode in ("stop", "forget", "none"):
            return []
        problems = []
        try:
            expected_hash(file_settings(desired.config))
        except EnovaError as exc:
            problems.append(str(exc))
        if mode in ("start", "handover"):
            host, port = desired.config["host"], desired.config["port"]
            running = self._running()
            held_by_ours = running is not None and running.config.get("port") == port
            if not held_by_ours and not port_is_free(host, port):
                problems.append(f"port {port} on {host} is in use by another process "
                                "(set spec.port in the Gateway document)")
        return problems

    # -- acting ----------------------------------------------------------------------------
    def begin(self, change: Change, desired: DesiredGateway | None) -> PendingGateway | None:
        self._stop_retiring()
        mode = self._mode(change, desired)
        record = self.store.read_gateway()
        if mode == "stop":
            if record is not None:
                self.progress(f"gateway: stopping pid {record.pid} ({change.reason})")
                stop_gateway(self.store, record, self.stop_grace)
            return None
        if mode == "forget":
            if record is not None:
                self.progress(f"gateway: forgetting its exited record ({change.reason})")
                self.store.remove_gateway()
            return None
        if mode == "none":
            return None
        assert desired is not None
        if mode == "start":
            if record is not None:
                self.store.remove_gateway()     # exited: its record goes
            return self._spawn(desired, "start")
        assert record is not None
        if mode == "verify":
            expected = self._expected(desired)
            status = gateway_status(record.config, self._token(desired))
            if status is None or status["config_hash"] == expected or not supports_reload(record):
                return None
            self.progress("gateway: its token file changed; reloading it in place")
            return self._reload(record, desired, expected, status)
        if mode == "reload":
            expected = self._expected(desired)
            status = gateway_status(record.config, self._token(desired))
            self.progress(f"gateway: reloading in place ({change.reason})")
            return self._reload(record, desired, expected, status)
        new_host, new_port = desired.config["host"], desired.config["port"]
        if mode == "handover" and port_is_free(new_host, new_port):
            self._expected(desired)
            write_json(retiring_file(self.store), asdict(record))
            self.progress(f"gateway: starting on {new_host}:{new_port} beside pid {record.pid} "
                          f"({change.reason}); the old one stops once the new one answers")
            try:
                pending = self._spawn(desired, "handover")
            except BaseException:
                retiring_file(self.store).unlink(missing_ok=True)
                raise
            pending.old = record
            return pending
        if mode == "handover" and record.config.get("port") != new_port:
            raise PermanentError(f"gateway: port {new_port} on {new_host} is in use by another process")
        # The new address overlaps the old one's (same port), or the running gateway cannot reload:
        # no handover is possible, so it is a restart with a short gap.
        self._expected(desired)
        self.progress(f"gateway: restarting pid {record.pid} ({change.reason}); new connections are refused "
                      "until the new one listens")
        stop_gateway(self.store, record, self.stop_grace)
        return self._spawn(desired, "start")

    def finish(self, pending: PendingGateway | None) -> str:
        if pending is None:
            return "nothing to wait for"
        if pending.kind == "reload":
            return self._confirm_reload(pending)
        new = pending.record
        where = f"{new.config['host']}:{new.config['port']}"
        if pending.kind == "start":
            wait_gateway(self.store, new, self.start_timeout)
            return f"listening on {where} (pid {new.pid})"
        old = pending.old
        assert old is not None
        try:
            wait_gateway(self.store, new, self.start_timeout)
        except EnovaError:
            self.store.write_gateway(old)       # the old gateway still serves: it stays the gateway
            retiring_file(self.store).unlink(missing_ok=True)
            raise
        began = time.monotonic()
        stop_gateway(self.store, old, self.stop_grace, forget=False)
        retiring_file(self.store).unlink(missing_ok=True)
        return (f"handed over to {where} (pid {new.pid}); the old gateway on {old.config['host']}:"
                f"{old.config['port']} finished its requests and stopped in {time.monotonic() - began:.1f} s")

    # -- helpers ---------------------------------------------------------------------------
    def _expected(self, desired: DesiredGateway) -> str:
        try:
            return expected_hash(file_settings(desired.config))
        except EnovaError as exc:
            raise PermanentError(f"gateway: {exc}") from None

    def _token(self, desired: DesiredGateway) -> str | None:
        try:
            return read_token(desired.config)
        except EnovaError:
            return None

    def _spawn(self, desired: DesiredGateway, kind: str) -> PendingGateway:
        record = spawn_gateway(self.store, desired.config, desired.config_hash, clock=self.clock)
        return PendingGateway(kind, record, desired)

    def _reload(self, record: GatewayRecord, desired: DesiredGateway, expected: str,
                status: dict | None) -> PendingGateway:
        write_json(config_file(self.store), file_settings(desired.config))
        if not check_process(record.pid, record.create_time).alive:
            raise TemporaryError(f"gateway: pid {record.pid} exited before its reload")
        os.kill(record.pid, signal.SIGHUP)
        before = (status or {}).get("last_reload", {}).get("count")
        return PendingGateway("reload", record, desired, expected=expected,
                              reloads_before=before if isinstance(before, int) else None)

    def _confirm_reload(self, pending: PendingGateway) -> str:
        record, desired = pending.record, pending.desired
        token = self._token(desired)
        deadline = time.monotonic() + self.reload_timeout
        status = None
        while True:
            status = gateway_status(record.config, token)
            if status is not None and status["config_hash"] == pending.expected:
                record.config, record.config_hash = desired.config, desired.config_hash
                self.store.write_gateway(record)
                return f"reloaded in place (settings {pending.expected}, pid {record.pid}, socket kept)"
            last = (status or {}).get("last_reload") or {}
            if (pending.reloads_before is not None and isinstance(last.get("count"), int)
                    and last["count"] > pending.reloads_before and not last.get("ok")):
                raise PermanentError(f"gateway: reload refused, running settings kept: {last.get('error')}")
            if time.monotonic() >= deadline:
                seen = status["config_hash"] if status else "no answer with the new token"
                raise TemporaryError(f"gateway: reload not confirmed within {self.reload_timeout:.0f} s "
                                     f"(expected settings {pending.expected}, got {seen}); see {record.log}")
            time.sleep(0.05)

    def _stop_retiring(self) -> None:
        """A gateway left from an interrupted handover is stopped (its successor is recorded)."""
        old = _retiring(self.store)
        if old is None:
            return
        current = self.store.read_gateway()
        if current is None or (current.pid, current.create_time) != (old.pid, old.create_time):
            self.progress(f"gateway: stopping pid {old.pid} left from an interrupted handover")
            stop_gateway(self.store, old, self.stop_grace, forget=False)
        retiring_file(self.store).unlink(missing_ok=True)


class Drainer:
    """Takes a replica out of the gateway's rotation and waits for its in-flight requests."""

    def __init__(self, store: StateStore, progress: Progress = lambda m: None):
        self.store = store
        self.progress = progress

    def drain(self, record: ReplicaRecord, timeout: float) -> None:
        """Mark the replica draining (every gateway stops routing new requests to it at once),
        then wait up to `timeout` until each running gateway (two during a handover) reports
        nothing in flight for it. Without a running gateway nothing is routed to the replica
        by enova, so it returns at once."""
        record.state = "draining"
        self.store.write_replica(record)
        from enova.gateway.admin import DrainOutcome, wait_drained
        deadline = time.monotonic() + timeout
        for gateway in running_gateways(self.store):
            try:
                token = read_token(gateway.config)
            except EnovaError:
                token = None
            outcome = wait_drained(gateway_url(gateway.config), record.id, max(0.0, deadline - time.monotonic()),
                                   token=token)
            if outcome is DrainOutcome.TIMED_OUT:
                self.progress(f"{record.deployment}: {record.id} still had requests in flight after "
                              f"{timeout:.0f} s (serving.drain_timeout); stopping it anyway")
            elif outcome is not DrainOutcome.DRAINED:
                self.progress(f"{record.deployment}: could not confirm drain of {record.id} with the gateway "
                              f"({outcome.value}); stopping it")
