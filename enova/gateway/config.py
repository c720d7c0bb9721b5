"""The gateway's settings: one frozen dataclass, and the two files they may come from.

`GatewayConfig` is built by `__main__` from its options and, when given `--config FILE`, from
that JSON file (which `enova apply` writes from the Gateway spec); tests and `enova enode run`
build it directly. The reloadable settings (`SETTINGS`: token_file, max_body_bytes,
queue_size, queue_timeout, otlp_endpoint, service_name; host and port need a new process) are
re-read from the config file on SIGHUP (`read_config_file`). The two tracing settings are
optional (`OPTIONAL`, with their defaults) and left out of the hash at their defaults, so a
config written before they existed keeps its hash. A token file holds one or more bearer tokens, one per line,
blank lines and `#` comments ignored; all are accepted, which is how tokens are rotated.
`settings_hash` is what the gateway reports at /admin/v1/config and what apply computes to
confirm a reload took. Nothing in the gateway reads the environment or a file but these.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enova.errors import UsageError

# The settings a Gateway document sets, in the config file's keys.
SETTINGS = ("host", "port", "token_file", "max_body_bytes", "queue_size", "queue_timeout", "otlp_endpoint",
            "service_name")
DEFAULT_SERVICE_NAME = "enova-gateway"
# Settings a config file may leave out, with their defaults (tracing: off).
OPTIONAL = {"otlp_endpoint": None, "service_name": DEFAULT_SERVICE_NAME}


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens, what it accepts, and how it treats replicas.

    Times are seconds. `port` 0 picks a free port (tests read `Gateway.port`)."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 9199
    tokens: tuple[str, ...] = ()            # bearer tokens, any accepted, for everything but /health and /metrics
    token_file: str | None = None           # where `tokens` came from (re-read on reload)
    config_file: Path | None = None         # re-read on SIGHUP
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
    token_poll_interval: float = 1.0        # how often the token file is checked for an in-place edit
    otlp_endpoint: str | None = None        # OTLP/HTTP traces URL; None: no tracing (see `tracing`)
    service_name: str = DEFAULT_SERVICE_NAME    # the traces' service.name

    @property
    def settings(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "token_file": self.token_file,
                "max_body_bytes": self.max_body_bytes, "queue_size": self.queue_size,
                "queue_timeout": self.queue_timeout, "otlp_endpoint": self.otlp_endpoint,
                "service_name": self.service_name}

    @property
    def config_hash(self) -> str:
        return settings_hash(self.settings, self.tokens)


def load_tokens(path: str | Path) -> tuple[str, ...]:
    """The bearer tokens in `path`: one per line, surrounding whitespace stripped, blank lines
    and lines starting with `#` ignored. Raises UsageError naming the file if it is missing,
    unreadable or holds no token."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"token_file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    tokens = tuple(dict.fromkeys(line.strip() for line in text.splitlines()
                                 if line.strip() and not line.strip().startswith("#")))
    if not tokens:
        raise UsageError(f"token_file {path}: the file holds no token (one per line; # starts a comment)")
    return tokens


def _int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise UsageError(f"gateway config: {name} must be an integer {bound} (got {value!r})")
    return value


def normalize_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """The settings in canonical types, checked. Raises UsageError naming the first bad key."""
    unknown = sorted(set(raw) - set(SETTINGS))
    if unknown:
        raise UsageError(f"gateway config: unknown key(s) {', '.join(unknown)}")
    raw = {**OPTIONAL, **{k: v for k, v in raw.items() if v is not None or k not in OPTIONAL}}
    missing = [k for k in SETTINGS if k not in raw]
    if missing:
        raise UsageError(f"gateway config: missing key(s) {', '.join(missing)}")
    host, token_file, timeout = raw["host"], raw["token_file"], raw["queue_timeout"]
    if not isinstance(host, str) or not host:
        raise UsageError(f"gateway config: host must be a non-empty string (got {host!r})")
    if token_file is not None and (not isinstance(token_file, str) or not token_file):
        raise UsageError(f"gateway config: token_file must be a path or null (got {token_file!r})")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
        raise UsageError(f"gateway config: queue_timeout must be a number >= 0 (got {timeout!r})")
    endpoint, service = raw["otlp_endpoint"], raw["service_name"]
    if endpoint is not None and (not isinstance(endpoint, str) or urlsplit(endpoint).scheme not in ("http", "https")
                                 or not urlsplit(endpoint).netloc):
        raise UsageError(f"gateway config: otlp_endpoint must be an http(s) URL or null (got {endpoint!r})")
    if not isinstance(service, str) or not service:
        raise UsageError(f"gateway config: service_name must be a non-empty string (got {service!r})")
    return {"host": host, "port": _int("port", raw["port"], 0, 65535), "token_file": token_file,
            "max_body_bytes": _int("max_body_bytes", raw["max_body_bytes"], 1),
            "queue_size": _int("queue_size", raw["queue_size"], 0), "queue_timeout": float(timeout),
            "otlp_endpoint": endpoint, "service_name": service}


def settings_hash(settings: dict[str, Any], tokens: tuple[str, ...]) -> str:
    """12 hex digits over the normalized settings and the tokens (a token file edited in place
    changes it). Served only behind the token: it is derived from the tokens."""
    normal = {k: v for k, v in normalize_settings(settings).items() if k not in OPTIONAL or v != OPTIONAL[k]}
    canonical = json.dumps({**normal, "tokens": sorted(tokens)}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def expected_hash(settings: dict[str, Any]) -> str:
    """The hash a gateway running `settings` reports, its token file read now (as the gateway
    reads it). Raises UsageError for bad settings or an unusable token file."""
    settings = normalize_settings({k: settings.get(k) for k in SETTINGS})
    tokens = load_tokens(settings["token_file"]) if settings["token_file"] else ()
    return settings_hash(settings, tokens)


def read_config_file(path: Path, base: GatewayConfig) -> GatewayConfig:
    """`base` with the settings of the JSON file at `path` (keys it lacks keep `base`'s values)
    and the tokens of its token file. Raises UsageError naming the file and the problem."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--config {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: not a JSON object")
    try:
        settings = normalize_settings({**base.settings, **raw})
        tokens = load_tokens(settings["token_file"]) if settings["token_file"] else ()
    except UsageError as exc:
        raise UsageError(f"--config {path}: {exc}") from None
    return replace(base, **settings, tokens=tokens, config_file=Path(path))
