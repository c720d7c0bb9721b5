"""`enova pilot run|stop`: everything from one command (enova.pilot)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from enova.commands.common import fail, progress, state
from enova.errors import EnovaError

pilot_app = typer.Typer(help="Everything from one command: specs, engine, gateway, monitoring, app server "
                             "and web UI.", no_args_is_help=True)

DEFAULT_MODEL = "builtin:smollm2-135m-instruct"


@pilot_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pilot_run(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(
        "--model", help=f"builtin:NAME, a Hugging Face id or a local folder (default when the specs are written: "
                        f"{DEFAULT_MODEL}, on vLLM's CPU build).")] = None,
    specs: Annotated[Path, typer.Option("--specs", help="The specs folder: written when absent or empty, "
                                                        "reused as it is otherwise.")] = Path("enova-pilot"),
    force: Annotated[bool, typer.Option("--force", help="Rewrite the specs pilot wrote in --specs from the "
                                                        "options (files without pilot's header are kept).")] = False,
    hf_proxy: Annotated[Optional[str], typer.Option(
        "--hf_proxy", "--hf-proxy", help="Proxy URL weights are downloaded through (HTTPS_PROXY/HTTP_PROXY of the "
                                         "reconciler and the engines; never written into the specs).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="The gateway's port, written "
                                                "into the specs (default 9199).")] = None,
    app_port: Annotated[int, typer.Option("--app-port", min=1, max=65535, help="The app server's port.")] = 8182,
    webui_port: Annotated[int, typer.Option("--webui-port", min=1, max=65535, help="The web UI's port.")] = 8501,
    prometheus_port: Annotated[Optional[int], typer.Option(
        "--prometheus-port", min=1, max=65535, help="Prometheus's port, written into the specs (default 9090).")] = None,
    metrics_port: Annotated[int, typer.Option("--metrics-port", min=0, max=65535, help="The reconciler's own "
                                              "/metrics (0: not served).")] = 9188,
) -> None:
    """Write the specs for a model (or reuse them) and start everything in the shared state
    directory: the reconciler (engine replicas, the gateway, Prometheus), the app server and the
    web UI; print every URL and follow the events. Other --flags are vLLM engine args
    (--max-num-seqs 8). Ctrl-C, SIGTERM, a closed terminal or `enova pilot stop` stops everything it
    started; the specs stay. Exit 0 stopped, 1 something failed (all stopped), 2 bad option or refused."""
    import signal
    import threading

    from enova.apply.enode import parse_engine_args
    from enova.pilot.run import Pilot, PilotConfig
    from enova.pilot.specs import PilotOptions

    stop = threading.Event()

    def _stop(*_):
        if not stop.is_set():
            progress("stopping (draining requests first)")
        stop.set()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
        signal.signal(sig, _stop)
    try:
        options = PilotOptions(model=model or DEFAULT_MODEL, model_given=model is not None,
                               engine_args=parse_engine_args(list(ctx.args)), port=port,
                               prometheus_port=prometheus_port, force=force)
        config = PilotConfig(specs_dir=specs, options=options, app_port=app_port, webui_port=webui_port,
                             metrics_port=metrics_port, hf_proxy=hf_proxy)
        code = Pilot(config, state.settings, stop, out=lambda line: print(line, flush=True),
                     progress=progress).run()
    except EnovaError as exc:
        raise fail(exc)
    raise typer.Exit(code)


@pilot_app.command("stop")
def pilot_stop(timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for the pilot "
                                                      "to finish stopping.")] = 300.0) -> None:
    """Stop the pilot running on this state directory and everything it started (from another
    shell); when that pilot was killed, stop what its record names. The specs stay."""
    from enova.pilot.stop import stop_pilot
    try:
        print(stop_pilot(state.settings, progress, timeout=timeout))
    except EnovaError as exc:
        raise fail(exc)
