"""--hf_proxy: how it reaches the processes that download weights. The reconciler resolves a hub
model with huggingface_hub (and the engines it starts inherit its environment and download the
weights the same way), so a real subprocess with pilot's child environment must send its Hub
request through the proxy, while enova's own loopback calls must not go through it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from enova.errors import UsageError
from enova.pilot.run import check_proxy, child_env


class RecordingProxy:
    """A real TCP listener that records the first line of each request and refuses it (403), so
    the client fails fast instead of reaching the internet."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.lines.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.sock.close()


@pytest.fixture
def proxy():
    p = RecordingProxy()
    yield p
    p.close()


def test_proxy_urls_are_checked_and_name_the_option():
    assert check_proxy(None) is None
    assert check_proxy("http://proxy.corp:3128") == "http://proxy.corp:3128"
    assert check_proxy("socks5h://user:pw@10.0.0.1:1080")
    for bad in ("ftp://proxy:21", "proxy.corp:3128", "http://", "http://proxy:99999"):
        with pytest.raises(UsageError, match=r"^--hf_proxy "):
            check_proxy(bad)


def test_child_environment_sets_both_spellings_and_keeps_loopback_direct():
    env = child_env({"PATH": "/usr/bin", "NO_PROXY": "internal.corp"}, "http://proxy:3128")
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        assert env[name] == "http://proxy:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "internal.corp,localhost,127.0.0.1,::1"
    assert env["PATH"] == "/usr/bin" and env["PYTHONUNBUFFERED"] == "1"
    untouched = child_env({"PATH": "/usr/bin"}, None)
    assert "HTTPS_PROXY" not in untouched and "NO_PROXY" not in untouched


def test_a_hub_model_is_resolved_through_the_proxy_by_a_process_with_pilots_environment(tmp_path, proxy):
    base = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and not k.startswith("HF_")}
    env = child_env({**base, "HF_HUB_CACHE": str(tmp_path / "hub")}, proxy.url)
    code = ("from pathlib import Path\n"
            "from enova.errors import EnovaError\n"
            "from enova.modelstore.resolve import resolve_model\n"
            "try:\n"
            "    resolve_model('mistralai/Mistral-7B-Instruct-v0.1', base_dir=Path('.'), cache_dir=Path('.'))\n"
            "except EnovaError as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert proxy.lines and proxy.lines[0].startswith("CONNECT huggingface.co:443"), (proxy.lines, run.stdout)
    assert "could not be reached" in run.stdout or "answered" in run.stdout


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_loopback_requests_of_a_process_with_pilots_environment_bypass_the_proxy(proxy):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = child_env(dict(os.environ), proxy.url)
        # httpx with trust_env (its default), as enova's autoscaler scraper uses it
        code = f"import httpx; print(httpx.get('http://127.0.0.1:{server.server_address[1]}/').status_code)"
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
        assert run.stdout.strip() == "200", run.stderr
        assert proxy.lines == []
    finally:
        server.shutdown()
