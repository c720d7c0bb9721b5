"""The gateway's settings: one frozen dataclass, built by `__main__` from the command line
(which `enova apply` writes from the Gateway spec) or by tests and `enova enode run` directly.
Nothing in the gateway reads the environment or a file except `load_token`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from enova.errors import UsageError


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens, what it accepts, and how it treats replicas.

    Times are seconds. `port` 0 picks a free port (tests read `Gateway.port`)."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 9199
    token: str | None = None                # bearer token for everything but /health and /metrics
    max_body_bytes: int = 1 << 20           # 413 above it
    queue_size: int = 100                   # waiting requests per deployment when every replica is full
    queue_timeout: float = 30.0             # then 429
    shutdown_grace: float = 30.0            # on SIGTERM, how long in-flight requests may take
    retry_after_busy: int = 1               # Retry-After on 429
    retry_after_unavailable: int = 5        # Retry-After on 503 (no ready replica)
    default_concurrency: int = 256          # per replica, without serving.max_concurrency or max_num_seqs
    eject_after: int = 3                    # consecutive failures (connect error or 5xx) that eject a replica
    probe_interval: float = 2.0             # how often an ejected replica's /health is probed
    probe_timeout: float = 1.0
    watch_debounce_ms: int = 30             # watchfiles debounce on the state directory
    rescan_interval: float = 3.0            # full re-read of the state directory, whatever the watcher saw
    connect_timeout: float = 5.0            # to a replica
    read_timeout: float | None = 600.0      # longest silence from a replica mid-request
    upstream_keepalive: float = 4.0         # below uvicorn's 5 s, so a pooled connection is never stale


def load_token(path: str | Path) -> str:
    """The bearer token in `path` (surrounding whitespace stripped). Raises UsageError if the
    file is missing, unreadable or empty."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"--token-file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise UsageError(f"--token-file {path}: the file is empty")
    return token
