"""`enova webui run`: the chat web UI on 8501 (enova.webui)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from enova.errors import EnovaError

from .common import err, fail

webui_app = typer.Typer(help="The chat web UI (port 8501) against the gateway.", no_args_is_help=True)


@webui_app.command("run")
def run(
    serving_host: Annotated[str, typer.Option(
        "--serving-host", "--serving_host", help="The gateway's host.")] = "127.0.0.1",
    serving_port: Annotated[int, typer.Option(
        "--serving-port", "--serving_port", min=1, max=65535, help="The gateway's port.")] = 9199,
    host: Annotated[str, typer.Option(
        "--host", help="Where the page listens. Anything but a loopback address exposes the gateway (and the "
                       "token of --token-file) to that network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="The page's port (0: any free one).")] = 8501,
    token_file: Annotated[Optional[Path], typer.Option(
        "--token-file", "--token_file", help="A file holding the gateway's bearer token (the gateway's format: one "
                                             "per line, # comments; the first is sent). Read by the server, never "
                                             "sent to the browser; re-read when it changes.")] = None,
) -> None:
    """Serve the chat page: pick a model, stream answers, stop them. Ctrl-C or SIGTERM stops it.
    Exit 0 stopped, 2 bad option or the port in use."""
    from enova.webui.config import WebUIConfig, is_loopback
    from enova.webui.server import run_webui

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = WebUIConfig(serving_host=serving_host, serving_port=serving_port, host=host, port=port,
                         token_file=token_file)
    if not is_loopback(host):
        err(f"enova: warning: the web UI listens on {host}: anyone who can reach it can use the gateway at "
            f"{config.gateway}" + (" with the token of --token-file" if token_file else ""))

    def started(webui) -> None:
        print(f"web UI: {webui.url}", flush=True)

    try:
        run_webui(config, started=started)
    except EnovaError as exc:
        raise fail(exc, 2)
