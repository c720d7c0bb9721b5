"""Running the gateway (the data plane on :9199) as an owned process, like a replica.

`enova apply` starts it before the replicas it serves, restarts it when its config changed,
and stops it when it is no longer wanted; the process outlives enova and is adopted by the
next `enova` through its state record (pid + start time). Before a replica is stopped, the
`Drainer` asks the gateway to stop routing to it and waits for its in-flight requests.
Called by apply.executor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from enova.errors import EnovaError, PermanentError, TemporaryError
from enova.gateway.config import load_token
from enova.observe.processes import check_process, process_start_time
from enova.observe.state import GatewayRecord, ReplicaRecord, StateStore

from .local import child_environment, log_tail, port_is_free

Progress = Callable[[str], None]


def gateway_url(config: dict) -> str:
    host = config["host"]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config['port']}"


def read_token(config: dict) -> str | None:
    """The bearer token from the gateway's token file, if it has one (read as the gateway reads
    it). Raises UsageError naming the file if it is missing, unreadable or empty."""
    path = config.get("token_file")
    return load_token(path) if path else None


def gateway_argv(state_dir: Path, config: dict) -> list[str]:
    argv = [sys.executable, "-m", "enova.gateway", "--state-dir", str(state_dir),
            "--host", config["host"], "--port", str(config["port"]),
            "--max-body-bytes", str(config["max_body_bytes"]), "--queue-size", str(config["queue_size"]),
            "--queue-timeout", str(config["queue_timeout"])]
    if config.get("token_file"):
        argv += ["--token-file", config["token_file"]]
    return argv


def spawn_gateway(store: StateStore, config: dict, config_hash: str, *,
                  clock: Callable[[], float] = time.time) -> GatewayRecord:
    """Start the gateway process and record it; returns at once: apply starts the replicas, then
    calls wait_gateway, so the two start-ups overlap.
    Raises PermanentError if its port is taken or its token file is unusable."""
    read_token(config)  # a bad token file is an error before anything starts
    bind_host = config["host"] if config["host"] not in ("", "::") else "0.0.0.0"
    if not port_is_free(bind_host, config["port"]):
        raise PermanentError(f"gateway: port {config['port']} on {config['host']} is in use by another process "
                             "(set spec.port in a Gateway document)")
    log = store.root / "logs" / "gateway.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = gateway_argv(store.root, config)
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


def stop_gateway(store: StateStore, record: GatewayRecord, grace: float = 35.0) -> None:
    """SIGTERM (the gateway finishes in-flight requests), SIGKILL after `grace`; forget the record.
    Idempotent; never signals a process whose identity does not match the record."""
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
    store.remove_gateway()


class Drainer:
    """Takes a replica out of the gateway's rotation and waits for its in-flight requests."""

    def __init__(self, store: StateStore, progress: Progress = lambda m: None):
        self.store = store
        self.progress = progress

    def drain(self, record: ReplicaRecord, timeout: float) -> None:
        """Mark the replica draining (the gateway stops routing new requests to it at once),
        then wait up to `timeout` until the gateway reports nothing in flight for it. Without a
        running gateway nothing is routed to the replica by enova, so it returns at once."""
        record.state = "draining"
        self.store.write_replica(record)
        gateway = self.store.read_gateway()
        if gateway is None or not check_process(gateway.pid, gateway.create_time).alive:
            return
        from enova.gateway.admin import DrainOutcome, wait_drained
        try:
            token = read_token(gateway.config)
        except EnovaError:
            token = None
        outcome = wait_drained(gateway_url(gateway.config), record.id, timeout, token=token)
        if outcome is DrainOutcome.TIMED_OUT:
            self.progress(f"{record.deployment}: {record.id} still had requests in flight after "
                          f"{timeout:.0f} s (serving.drain_timeout); stopping it anyway")
        elif outcome is not DrainOutcome.DRAINED:
            self.progress(f"{record.deployment}: could not confirm drain of {record.id} with the gateway "
                          f"({outcome.value}); stopping it")
