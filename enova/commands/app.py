"""`enova app run|token`: the application server on 8182 (enova.app)."""

from __future__ import annotations

import typer

app_app = typer.Typer(help="The application server: a REST API and the /instance page (port 8182).",
                      no_args_is_help=True)
