"""`python -m enova.gateway --state-dir DIR [--config FILE] [...]`: the gateway as its own
process, as `enova apply` starts it (with `--config`, a JSON file of the Gateway settings).
SIGHUP re-reads the config file in place (see `server`); SIGTERM/SIGINT stop accepting and
exit 0 once in-flight requests finished; exit 2 for bad options or a bad config or token file,
1 if it cannot listen."""

from __future__ import annotations

import signal

# Until the reload handler is installed, a SIGHUP must not end the process (its default action).
signal.signal(signal.SIGHUP, signal.SIG_IGN)

import argparse  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from enova.errors import EnovaError

from .config import GatewayConfig, load_tokens, read_config_file  # noqa: E402
from .server import run_gateway  # noqa: E402


def parse_args(argv: list[str] | None = None) -> GatewayConfig:
    d = GatewayConfig(state_dir=Path("."))
    p = argparse.ArgumentParser(prog="python -m enova.gateway",
                                description="enova's gateway: /generate and the OpenAI API in front of the "
                                "replicas recorded in a state directory.")
    p.add_argument("--state-dir", type=Path, required=True, help="enova's state directory (ENOVA_STATE_DIR)")
    p.add_argument("--host", default=d.host, help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="port to bind (default %(default)s)")
    p.add_argument("--config", type=Path, help="JSON file of settings (host, port, token_file, max_body_bytes, "
                   "queue_size, queue_timeout, otlp_endpoint, service_name) over the options; re-read on SIGHUP")
    p.add_argument("--token-file", help="file of bearer tokens, one per line (any accepted), required by all but "
                   "/health and /metrics")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="413 above it (default %(default)s)")
    p.add_argument("--queue-size", type=int, default=d.queue_size,
                   help="requests waiting per deployment when every replica is full (default %(default)s)")
    p.add_argument("--queue-timeout", type=float, default=d.queue_timeout,
                   help="seconds a queued request waits before a 429 (default %(default)s)")
    p.add_argument("--shutdown-grace", type=float, default=d.shutdown_grace,
                   help="seconds in-flight requests may take after SIGTERM (default %(default)s)")
    a = p.parse_args(argv)
    for name in ("max_body_bytes", "queue_size", "queue_timeout", "shutdown_grace"):
        if getattr(a, name) < (1 if name == "max_body_bytes" else 0):
            p.error(f"--{name.replace('_', '-')} must be {'positive' if name == 'max_body_bytes' else '>= 0'}")
    config = GatewayConfig(state_dir=a.state_dir.expanduser(), host=a.host, port=a.port,
                           tokens=load_tokens(a.token_file) if a.token_file else (), token_file=a.token_file,
                           max_body_bytes=a.max_body_bytes, queue_size=a.queue_size,
                           queue_timeout=a.queue_timeout, shutdown_grace=a.shutdown_grace)
    return read_config_file(a.config.expanduser().absolute(), config) if a.config else config


def tune_process() -> list[str]:
    """Process-wide settings for the gateway's own process (never applied in-process elsewhere).
    Measured with bench/gateway.py at 200 concurrent streams (docs/benchmarks.md): Python's
    oldest-generation collections paused every stream at once for 16-23 ms, and uvloop costs
    ~12% less CPU per relayed token than the default loop. So: freeze what start-up allocated
    (the collector no longer scans it), collect less often, and run on uvloop when installed.
    ENOVA_GATEWAY_TUNING=0 turns this off (for A/B runs). Returns what was applied."""
    if os.environ.get("ENOVA_GATEWAY_TUNING", "1") == "0":
        return []
    applied = []
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    applied.append("gc frozen, thresholds 50000/20/20")
    try:
        import asyncio

        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        applied.append(f"uvloop {uvloop.__version__}")
    except ImportError:
        pass
    return applied


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)     # one line per file event otherwise
    try:
        config = parse_args(argv)
        tuning = tune_process()
        if tuning:
            logging.getLogger("enova.gateway").info("process tuning: %s", "; ".join(tuning))
        return run_gateway(config)
    except EnovaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
