"""`enova mon start|status|stop|password`: the monitoring stack (enova.monitor): local mode (a
Prometheus process) or compose mode (Prometheus, Grafana, the OpenTelemetry collector, Tempo and,
on GPU hosts, DCGM's exporter as containers: enova.monitor.compose)."""

from __future__ import annotations

import dataclasses
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from enova.commands.common import Output, OutputOpt, fail, progress, state
from enova.errors import EnovaError, UsageError

mon_app = typer.Typer(help="Monitoring: a Prometheus that scrapes the gateway and every replica "
                      "(with Grafana, an OpenTelemetry collector and Tempo in compose mode).",
                      no_args_is_help=True)


class Mode(str, Enum):
    local = "local"
    compose = "compose"


class Dcgm(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


@mon_app.command("start")
def mon_start(specs: Annotated[Optional[Path], typer.Argument(
        help="Specs holding a Monitoring document (default: its defaults).")] = None,
        mode: Annotated[Optional[Mode], typer.Option(
            "--mode", help="local: a Prometheus process; compose: the stack as containers on this host's "
            "Docker engine. Default: the Monitoring document's mode, else local.")] = None,
        grafana_port: Annotated[Optional[int], typer.Option(
            "--grafana-port", min=1, max=65535, help="Compose mode: Grafana's port on 127.0.0.1 (default: the "
            "Monitoring document's compose.grafana_port, else 32827).")] = None,
        dcgm: Annotated[Optional[Dcgm], typer.Option(
            "--dcgm", help="Compose mode: run DCGM's exporter: auto (when NVML reports a GPU), on, off "
            "(default: the document's compose.dcgm, else auto).")] = None,
        image: Annotated[Optional[list[str]], typer.Option(
            "--image", metavar="SERVICE=IMAGE", help="Compose mode: run SERVICE (prometheus, grafana, "
            "otel-collector, tempo, dcgm-exporter) from IMAGE, pinned by tag, instead of the default: a "
            "registry mirror. Repeatable.")] = None,
        ) -> None:
    """Write Prometheus's configuration and scrape targets, start Prometheus (or keep the running
    one when its settings are unchanged) and print its URL and targets. In compose mode, render
    the compose project and bring its containers up."""
    from enova.monitor.process import reload_monitoring, start_monitoring, sync_rules
    from enova.monitor.prometheus import monitoring_config
    from enova.spec.loader import load_specs
    try:
        spec_set = load_specs(specs) if specs is not None else None
        config = monitoring_config(spec_set)
        if mode is not None:
            config = dataclasses.replace(config, mode=mode.value, source=f"--mode {mode.value}")
        if config.mode == "compose":
            _start_compose(config, spec_set, grafana_port, dcgm.value if dcgm is not None else None, image or [])
            return
        if image:
            raise UsageError("--image is for compose mode (--mode compose, or mode: compose in the Monitoring "
                             "document)")
        _refuse_while_compose_runs()
        changed = sync_rules(state.settings.state_dir, spec_set)
        result = start_monitoring(state.settings.state_dir, config, progress=progress)
        if changed and result.action == "already running":
            reload_monitoring(state.settings.state_dir)
    except EnovaError as exc:
        raise fail(exc)
    record = result.record
    ready = f", ready in {record.ready_seconds:.2f} s" if result.action != "already running" and \
        record.ready_seconds is not None else ""
    print(f"prometheus {result.action}: {record.url} (pid {record.pid}{ready})")
    _print_targets(result.targets)


def _refuse_while_compose_runs() -> None:
    """Local mode's start, while compose mode's containers run here: a clear error instead of a
    port conflict. Asks the engine only when compose mode was started in this state directory."""
    from enova.monitor.compose_engine import compose_view
    composed = compose_view(state.settings.state_dir)
    running = [s.service for s in composed.services if s.state == "running"] if composed else []
    if running:
        raise UsageError(f"monitoring: compose mode runs here ({', '.join(running)}); `enova mon stop` it "
                         "before starting local mode, or start with --mode compose")


def _print_targets(targets: dict) -> None:
    for job, groups in targets.items():
        addresses = [f"{a} {' '.join(f'{k}={v}' for k, v in sorted(g.get('labels', {}).items()))}".rstrip()
                     for g in groups for a in g.get("targets", [])]
        print(f"  {job}: {', '.join(addresses) if addresses else 'no targets yet'}")


def _start_compose(config, spec_set, grafana_port: int | None, dcgm: str | None, image: list[str]) -> None:
    from enova.monitor.compose import compose_options
    from enova.monitor.compose_engine import start_compose
    from enova.monitor.targets import read_target_files
    from enova.observe.gpus import gpu_inventory

    options = compose_options(spec_set, grafana_port=grafana_port, dcgm=dcgm, image_overrides=image)
    state_dir = state.settings.state_dir
    result = start_compose(state_dir, config, options, spec_set, gpu_inventory(), progress=progress)
    print(f"compose project enova-monitoring on {result.docker_host} ({result.compose_file}):")
    for s in result.services:
        ready = f", ready in {s.ready_seconds:.1f} s" if s.ready_seconds is not None else ""
        print(f"  {s.service:<16} {s.action:<10} {s.image}{ready}")
    print(f"grafana: {result.urls['grafana']} (user admin)")
    if result.password is not None:
        print(f"grafana admin password (shown once; kept in {result.password_file}, mode 0600): {result.password}")
    else:
        print(f"grafana admin password: in {result.password_file} (`enova mon password`)")
    print(f"prometheus: {result.urls['prometheus']}")
    print(f"traces: the collector takes OTLP on {result.urls['otlp_http']} (HTTP) and {result.urls['otlp_grpc']} "
          "(gRPC); set the Gateway document's otlp_endpoint to the first")
    print(f"dcgm-exporter: {'runs' if any(s.service == 'dcgm-exporter' for s in result.services) else 'not run'}: "
          f"{result.dcgm_reason}")
    _print_targets(read_target_files(Path(state_dir) / "monitoring" / "targets"))


@mon_app.command("status")
def mon_status(output: OutputOpt = Output.text) -> None:
    """Which monitoring parts run, their URLs, and every scrape target with whether it is up."""
    from enova.monitor.compose_engine import compose_view, merge_view, render_view_text
    from enova.monitor.view import build_view, render_text
    try:
        composed = compose_view(state.settings.state_dir)
        view = merge_view(build_view(state.settings.state_dir), composed)
    except EnovaError as exc:
        raise fail(exc)
    if output is Output.json:
        print(json.dumps({**view.to_dict(), "compose": composed.to_dict() if composed else None}, indent=2))
    else:
        sys.stdout.write(render_text(view))
        if composed is not None:
            sys.stdout.write(render_view_text(composed))


@mon_app.command("stop")
def mon_stop() -> None:
    """Stop what `enova mon start` started (the Prometheus process; the compose project's
    containers); stored metrics and every data folder are kept."""
    from enova.monitor.compose import ComposePaths
    from enova.monitor.compose_engine import stop_compose
    from enova.monitor.process import read_record, stop_monitoring
    try:
        composed = ComposePaths(state.settings.state_dir).record.exists()
        if read_record(state.settings.state_dir) is not None or not composed:
            print(stop_monitoring(state.settings.state_dir))
        if composed:
            print(stop_compose(state.settings.state_dir))
    except EnovaError as exc:
        raise fail(exc)


@mon_app.command("password")
def mon_password() -> None:
    """Where Grafana's admin password is (compose mode); it is printed only when generated."""
    from enova.monitor.compose import GRAFANA_USER, ComposePaths
    path = ComposePaths(state.settings.state_dir).password
    if not path.exists():
        print(f"no Grafana password yet: `enova mon start --mode compose` generates it in {path}")
        return
    print(f"grafana user {GRAFANA_USER}; password in {path} (mode 0600): read it with `cat {path}`")
