"""Benchmark: how fast `enova webui run` serves its page, and how much memory it holds; optionally
the same for a minimal Streamlit chat app, to compare.

For each run: launch `enova webui run` (a fresh process, the console script a user runs) against
a stand-in gateway, poll GET / every 5 ms and take the time from launch to the first 200. Then
load what a browser loads (the page, app.js, style.css, /api/info, /api/models), relay one
streamed chat answer of --tokens tokens from the stand-in, and read the web UI process's memory
with psutil (RSS, and USS: what it alone holds). SIGTERM; the exit code must be 0.

With --browser, each run also opens the page in headless Chromium (/usr/bin/chromium) and takes
the time from launch until the page is usable (the model picker filled). With --streamlit
PATH (the `streamlit` script of a separate venv; enova does not depend on Streamlit), the same
launch -> first 200 -> usable-in-Chromium -> memory is measured for a minimal Streamlit chat app
(a title, a model select, the history, a chat input), which never talks to a gateway.

The stand-in gateway is a threaded http.server in this process speaking the slice of the
gateway's API the page uses (/v1/models; /v1/chat/completions streamed as SSE).

    .venv/bin/python bench/webui_start.py [--runs 5] [--tokens 200] [--browser] [--streamlit PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil

ENOVA = str(Path(sys.executable).with_name("enova"))
CHROMIUM = "/usr/bin/chromium"
TOKENS = 200

STREAMLIT_APP = '''\
import streamlit as st
st.title("chat")
if "history" not in st.session_state:
    st.session_state.history = []
st.selectbox("Model", ["smollm2"])
for role, text in st.session_state.history:
    st.chat_message(role).write(text)
if prompt := st.chat_input("Message"):
    st.session_state.history.append(("user", prompt))
    st.chat_message("user").write(prompt)
'''


class StandIn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:       # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i in range(TOKENS):
            chunk = {"choices": [{"index": 0, "delta": {"content": f" t{i}"}, "finish_reason": None}]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_200(proc: subprocess.Popen, client: httpx.Client, began: float) -> float:
    while True:
        try:
            if client.get("/").status_code == 200:
                return time.perf_counter() - began
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited {proc.returncode}")
        time.sleep(0.005)


def _usable(browser, url: str, selector: str, began: float) -> float:
    page = browser.new_page()
    try:
        page.goto(url)
        page.wait_for_selector(selector, timeout=60_000)
        return time.perf_counter() - began
    finally:
        page.close()


def _finish(proc: subprocess.Popen, row: dict[str, float]) -> dict[str, float]:
    info = psutil.Process(proc.pid).memory_full_info()
    row.update(rss_mib=info.rss / 2**20, uss_mib=info.uss / 2**20)
    proc.terminate()
    code = proc.wait(timeout=10)
    assert code == 0, f"exit {code}"
    return row


def enova_run(gateway_port: int, browser) -> dict[str, float]:
    port = free_port()
    began = time.perf_counter()
    proc = subprocess.Popen([ENOVA, "webui", "run", "--serving-port", str(gateway_port), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
            row = {"first_200_s": _first_200(proc, client, began)}
            if browser is not None:
                row["usable_s"] = _usable(browser, url, "#model:not([disabled])", began)
            for path in ("/static/app.js", "/static/style.css", "/api/info"):
                assert client.get(path).status_code == 200, path
            assert client.get("/api/models").json() == {"models": ["smollm2"]}
            body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": TOKENS}
            with client.stream("POST", "/api/chat", json=body) as r:
                events = sum(1 for line in r.iter_lines() if line.startswith("data: "))
            assert events == TOKENS + 1, events
        return _finish(proc, row)
    finally:
        if proc.poll() is None:
            proc.kill()


def streamlit_run(streamlit: str, app: Path, browser) -> dict[str, float]:
    port = free_port()
    began = time.perf_counter()
    proc = subprocess.Popen([streamlit, "run", str(app), "--server.headless", "true", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
            row = {"first_200_s": _first_200(proc, client, began)}
        if browser is not None:
            row["usable_s"] = _usable(browser, url, "textarea", began)
        time.sleep(1)       # let the script run settle before reading memory
        return _finish(proc, row)
    finally:
        if proc.poll() is None:
            proc.kill()


def report(name: str, runs: list[dict[str, float]]) -> None:
    labels = {"first_200_s": "launch -> first 200 of the page (s)",
              "usable_s": "launch -> page usable in Chromium (s)",
              "rss_mib": "RSS at the end (MiB)", "uss_mib": "USS, memory it alone holds (MiB)"}
    print(f"{name}, {len(runs)} runs:")
    for key, label in labels.items():
        values = [r[key] for r in runs if key in r]
        if values:
            print(f"  {label}: median {statistics.median(values):.2f}, min {min(values):.2f}, max {max(values):.2f}")


def main() -> None:
    global TOKENS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--browser", action="store_true", help="also time the page until usable in Chromium")
    parser.add_argument("--streamlit", help="the streamlit script of a venv that has it, to compare")
    args = parser.parse_args()
    TOKENS = args.tokens
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the start")
    pw = browser = None
    if args.browser:
        from playwright.sync_api import sync_playwright
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    try:
        report(f"enova webui run (a {TOKENS}-token answer relayed before the memory is read)",
               [enova_run(server.server_address[1], browser) for _ in range(args.runs)])
        if args.streamlit:
            with tempfile.TemporaryDirectory() as tmp:
                app = Path(tmp) / "chat.py"
                app.write_text(STREAMLIT_APP)
                report("streamlit run (minimal chat app)", [streamlit_run(args.streamlit, app, browser)
                                                             for _ in range(args.runs)])
    finally:
        if browser is not None:
            browser.close()
            pw.stop()
        server.shutdown()
    print(f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
