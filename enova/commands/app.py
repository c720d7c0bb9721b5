"""`enova app run|token`: the application server on 8182 (enova.app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from enova.commands.common import err, fail, state
from enova.errors import EnovaError, UsageError

app_app = typer.Typer(help="The application server: a REST API and the /instance page (port 8182).",
                      no_args_is_help=True)


@app_app.command("run")
def app_run(
    specs: Annotated[Optional[Path], typer.Argument(
        help="Specs the plan and sync status are computed from (default: the running reconciler's).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind. Beyond loopback only with --token-file "
                                                     "(and then reads need the token too).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to bind.")] = 8182,
    token_file: Annotated[Optional[Path], typer.Option(
        "--token-file", help="Take the token from this file (one per line; made 0600 with a new token when "
                             "missing) instead of <state_dir>/app/token.")] = None,
    prometheus: Annotated[Optional[str], typer.Option(
        "--prometheus", help="Prometheus's URL for the /instance charts (default: the one `enova mon` runs).")] = None,
) -> None:
    """Serve the REST API (/api/v1, described at /openapi.json and /docs) and the /instance page
    in the foreground. Ctrl-C or SIGTERM stops it (injection runs it started write partial results)."""
    from enova.app.auth import ensure_token, token_from_file, token_path, tokens_from_file
    from enova.app.server import AppContext, serve
    from enova.spec.models import is_loopback
    settings = state.settings
    try:
        loopback = is_loopback(host)
        if not loopback and token_file is None:
            raise UsageError(f"--host {host} is beyond loopback: anyone who reaches it could read and act; give "
                             "--token-file FILE (made 0600 with a new token when missing) so that every request "
                             "needs the token, or bind 127.0.0.1 and use an SSH tunnel")
        if specs is not None and not specs.exists():
            raise UsageError(f"{specs}: no such file or folder")
        if prometheus is not None and not prometheus.startswith(("http://", "https://")):
            raise UsageError(f"--prometheus {prometheus}: expected an http:// or https:// URL")
        if token_file is not None:
            token, created = token_from_file(token_file)
            tokens = tokens_from_file(token_file)
            where = str(token_file)
        else:
            token, created = ensure_token(settings.state_dir)
            tokens = (token,)
            where = str(token_path(settings.state_dir))
        ctx = AppContext(settings=settings, specs=specs.resolve() if specs is not None else None, token=token,
                         tokens=tokens, reads_need_token=not loopback, prometheus_url=prometheus)
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else shown}:{port}"

        def ready() -> None:
            print(f"app server: {base}/instance", flush=True)
            print(f"  API: {base}/api/v1/deployments (described at {base}/docs)", flush=True)
            if created:
                print(f"  token (shown once; `enova app token` shows it again): {token}", flush=True)
                print(f"  kept in {where} (mode 0600)", flush=True)
            if not loopback:
                err(f"enova: bound to {host}: every request needs the token")
        serve(ctx, host=host, port=port, ready=ready)
    except EnovaError as exc:
        raise fail(exc, 2 if isinstance(exc, UsageError) else None)


@app_app.command("token")
def app_token() -> None:
    """Print the app server's token (made by the first `enova app run` in this state directory)."""
    from enova.app.auth import read_token, token_path
    try:
        token = read_token(state.settings.state_dir)
    except EnovaError as exc:
        raise fail(exc)
    if token is None:
        raise fail(UsageError(f"no token yet in {token_path(state.settings.state_dir)}: `enova app run` makes one "
                              "on its first start"))
    print(token)
