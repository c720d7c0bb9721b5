"""The web UI server itself: the page's files by whitelist, hardening headers, Host and Origin
checks, and `enova webui run` as a user runs it (its URL line, clean exit on SIGINT/SIGTERM,
a port in use, the seed's underscore flags)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from enova.webui.server import STATIC

from .conftest import chat, free_port

_SCRIPT = Path(sys.executable).with_name("enova")
ENOVA = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "enova.cli"]


@pytest.mark.anyio
async def test_the_page_and_its_files_are_served_with_hardening_headers(make_ui):
    ui = await make_ui(free_port())
    for path, (name, content_type) in STATIC.items():
        status, headers, body = await ui.get(path)
        assert status == 200, path
        assert headers["Content-Type"] == content_type
        assert headers["X-Content-Type-Options"] == "nosniff"
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "http" not in csp and "*" not in csp and "unsafe" not in csp, csp
    page = (await ui.get("/"))[2]
    assert '<script src="/static/app.js"' in page and "<script>" not in page      # no inline script (CSP)
    assert "http://" not in page and "https://" not in page                      # nothing from a CDN


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/static/index.html", "/static/../server.py", "/static/%2e%2e/server.py",
                                  "/enova/webui/server.py", "/static/", "/static/app.js/../../relay.py",
                                  "/etc/passwd"])
async def test_nothing_outside_the_whitelist_is_served(make_ui, path):
    ui = await make_ui(free_port())
    status, headers, body = await ui.get(path)
    assert status == 404, (path, body)
    assert body["error"]["message"].startswith("no such page")
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.anyio
async def test_a_wrong_method_is_405_naming_the_allowed_one(make_ui):
    ui = await make_ui(free_port())
    status, headers, body = await ui.get("/api/chat")
    assert status == 405 and headers["Allow"] == "POST"
    assert body["error"]["message"] == "method GET is not allowed on /api/chat; use POST"
    status, _, body = await ui.post("/", {})
    assert status == 405 and body["error"]["message"].startswith("method POST is not allowed on /; use GET")


@pytest.mark.anyio
async def test_a_foreign_host_name_is_refused_on_a_loopback_bind(make_ui):
    ui = await make_ui(free_port())
    status, _, body = await ui.get("/api/info", headers={"Host": "attacker.example"})
    assert status == 403 and "unexpected Host" in body["error"]["message"]
    for host in ("localhost", f"127.0.0.1:{ui.webui.port}", f"[::1]:{ui.webui.port}"):
        assert (await ui.get("/api/info", headers={"Host": host}))[0] == 200, host


@pytest.mark.anyio
async def test_a_post_from_another_origin_is_refused(make_ui):
    ui = await make_ui(free_port())
    status, _, body = await ui.post("/api/chat", chat(), headers={"Origin": "http://attacker.example"})
    assert status == 403 and "cross-origin" in body["error"]["message"]
    same = f"http://127.0.0.1:{ui.webui.port}"
    status, _, body = await ui.post("/api/chat", chat(), headers={"Origin": same})
    assert status == 502 and body["error"]["kind"] == "unreachable"     # let through; no gateway there


@pytest.mark.anyio
async def test_info_names_the_gateway_and_never_the_token(make_ui, tmp_path):
    token = tmp_path / "token"
    token.write_text("very-secret\n")
    ui = await make_ui(19999, serving_host="::1", token_file=token)
    status, _, body = await ui.get("/api/info")
    assert status == 200 and body["gateway"] == "[::1]:19999" and body["token_file"] is True
    assert "very-secret" not in json.dumps(body)


# -- the command ----------------------------------------------------------------------------

def _start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*ENOVA, "webui", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    assert line.startswith("web UI: http://"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split(": ", 1)[1].strip()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_command_prints_its_url_and_exits_cleanly_on_a_signal(sig):
    port = free_port()
    proc, url = _start("--port", str(port), "--serving-port", "19998")
    try:
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/", trust_env=False).status_code == 200
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_seeds_underscore_flags_are_accepted():
    port = free_port()
    proc, url = _start("--serving_host", "127.0.0.1", "--serving_port", "19997", "--host", "127.0.0.1",
                       "--port", str(port))
    try:
        assert httpx.get(url + "/api/info", trust_env=False).json()["gateway"] == "127.0.0.1:19997"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_port_in_use_is_a_clear_error_with_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([*ENOVA, "webui", "run", "--port", str(port)], capture_output=True, text=True,
                             timeout=30)
    assert run.returncode == 2, run
    assert run.stderr.strip().endswith(f"error: web UI: cannot listen on 127.0.0.1:{port}: the port is in use "
                                       "(another web UI? choose one with --port)"), run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_a_bad_token_file_is_exit_2_naming_the_file(tmp_path):
    run = subprocess.run([*ENOVA, "webui", "run", "--port", str(free_port()), "--token-file",
                          str(tmp_path / "nope")], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and f"token_file {tmp_path / 'nope'}" in run.stderr, run
    assert "Traceback" not in run.stderr


def test_a_non_loopback_bind_warns_that_the_gateway_is_exposed():
    port = free_port()
    proc = subprocess.Popen([*ENOVA, "webui", "run", "--host", "0.0.0.0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == f"web UI: http://127.0.0.1:{port}"
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert "anyone who can reach it can use the gateway at 127.0.0.1:9199" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run_webui_serves_in_a_thread_until_its_stop_event():
    import threading

    from enova.webui.config import WebUIConfig
    from enova.webui.server import run_webui

    stop, up, result = threading.Event(), threading.Event(), {}

    def started(webui) -> None:
        result["url"] = webui.url
        up.set()

    thread = threading.Thread(target=lambda: result.update(code=run_webui(
        WebUIConfig(port=0, serving_port=free_port()), stop_event=stop, started=started)))
    thread.start()
    try:
        assert up.wait(10)
        assert httpx.get(result["url"] + "/api/info", trust_env=False).status_code == 200
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive() and result["code"] == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(result["url"] + "/", trust_env=False)
