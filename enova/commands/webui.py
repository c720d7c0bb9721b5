"""`enova webui run`: the chat web UI on 8501 (enova.webui)."""

from __future__ import annotations

import typer

webui_app = typer.Typer(help="The chat web UI (port 8501) against the gateway.", no_args_is_help=True)
