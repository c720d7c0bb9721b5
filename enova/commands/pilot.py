"""`enova pilot run|stop`: everything from one command (enova.pilot)."""

from __future__ import annotations

import typer

pilot_app = typer.Typer(help="Everything from one command: specs, engine, gateway, monitoring, app server "
                             "and web UI.", no_args_is_help=True)
