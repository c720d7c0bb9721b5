"""`enova mon start|status|stop`: the monitoring stack (enova.monitor)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from enova.commands.common import Output, OutputOpt, fail, progress, state
from enova.errors import EnovaError

mon_app = typer.Typer(help="Monitoring: a Prometheus that scrapes the gateway and every replica.",
                      no_args_is_help=True)


@mon_app.command("start")
def mon_start(specs: Annotated[Optional[Path], typer.Argument(
        help="Specs holding a Monitoring document (default: its defaults).")] = None) -> None:
    """Write Prometheus's configuration and scrape targets, start Prometheus (or keep the running
    one when its settings are unchanged) and print its URL and targets."""
    from enova.monitor.process import reload_monitoring, start_monitoring, sync_rules
    from enova.monitor.prometheus import monitoring_config
    from enova.spec.loader import load_specs
    try:
        spec_set = load_specs(specs) if specs is not None else None
        changed = sync_rules(state.settings.state_dir, spec_set)
        result = start_monitoring(state.settings.state_dir, monitoring_config(spec_set), progress=progress)
        if changed and result.action == "already running":
            reload_monitoring(state.settings.state_dir)
    except EnovaError as exc:
        raise fail(exc)
    record = result.record
    ready = f", ready in {record.ready_seconds:.2f} s" if result.action != "already running" and \
        record.ready_seconds is not None else ""
    print(f"prometheus {result.action}: {record.url} (pid {record.pid}{ready})")
    for job, groups in result.targets.items():
        addresses = [f"{a} {' '.join(f'{k}={v}' for k, v in sorted(g.get('labels', {}).items()))}".rstrip()
                     for g in groups for a in g.get("targets", [])]
        print(f"  {job}: {', '.join(addresses) if addresses else 'no targets yet'}")


@mon_app.command("status")
def mon_status(output: OutputOpt = Output.text) -> None:
    """Which monitoring parts run, their URLs, and every scrape target with whether it is up."""
    from enova.monitor.view import build_view, render_text
    try:
        view = build_view(state.settings.state_dir)
    except EnovaError as exc:
        raise fail(exc)
    if output is Output.json:
        print(json.dumps(view.to_dict(), indent=2))
    else:
        sys.stdout.write(render_text(view))


@mon_app.command("stop")
def mon_stop() -> None:
    """Stop the Prometheus `enova mon start` started; its stored metrics are kept."""
    from enova.monitor.process import stop_monitoring
    try:
        print(stop_monitoring(state.settings.state_dir))
    except EnovaError as exc:
        raise fail(exc)
