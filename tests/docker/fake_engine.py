"""A tiny stand-in for an inference engine, for fast runtime contract tests: it serves the two
endpoints enova probes, logs a line per request to stdout, stops promptly on SIGTERM, and can be
told to start unhealthy or to die. Standard library only, so it runs as a local process and, mounted
read-only, inside the test image (`python3 /fake/fake_engine.py --port 8000`).

    python3 fake_engine.py --port 8000 [--host 0.0.0.0] [--model fake]
                           [--unhealthy-for S] [--exit-after S] [--exit-code N]

- GET /health: 200, or 503 during the first S seconds (`--unhealthy-for`).
- GET /v1/models: an OpenAI-style list holding `--model`.
- Anything else: 404.
- SIGTERM or SIGINT: stops serving and exits 0 at once (it handles the signal itself, so it also
  stops as PID 1 in a container, where an unhandled SIGTERM is ignored).
- `--exit-after S`: exits with `--exit-code` (default 1) S seconds after it started, as a crash.
- The host defaults to 0.0.0.0, what a container's published port needs; pass 127.0.0.1 locally.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="a fake inference engine")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="fake")
    parser.add_argument("--unhealthy-for", type=float, default=0.0, metavar="S")
    parser.add_argument("--exit-after", type=float, default=None, metavar="S")
    parser.add_argument("--exit-code", type=int, default=1, metavar="N")
    return parser.parse_args(argv)


def log(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}", flush=True)


def make_handler(args: argparse.Namespace, started: float):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                healthy = time.monotonic() - started >= args.unhealthy_for
                self.reply(200 if healthy else 503, {"status": "ok" if healthy else "starting"})
            elif self.path == "/v1/models":
                self.reply(200, {"object": "list", "data": [
                    {"id": args.model, "object": "model", "created": int(time.time()), "owned_by": "fake"}]})
            else:
                self.reply(404, {"error": f"no route {self.path}"})

        def reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *values) -> None:   # one line per request, to stdout
            log(f"{self.client_address[0]} {format % values}")

    return Handler


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args, started))
    server.daemon_threads = True
    signalled: list[int] = []   # the handler only records: nothing that takes a lock runs in it
    signal.signal(signal.SIGTERM, lambda signum, _frame: signalled.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: signalled.append(signum))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    log(f"fake engine serving {args.model} on {args.host}:{args.port}")
    deadline = None if args.exit_after is None else started + args.exit_after
    while not signalled and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.05)   # a signal cuts the sleep short
    server.shutdown()
    server.server_close()
    if signalled:
        log(f"stopping on signal {signal.Signals(signalled[0]).name}")
        return 0
    log(f"exiting with {args.exit_code} after {args.exit_after} s, as asked")
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
