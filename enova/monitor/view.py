"""The view `enova mon status` prints: which monitoring parts run, their URLs, and every scrape
target with whether it is up, as data (`to_dict`, for `-o json` and later the app server) and as
text (`render_text`).

Target health is Prometheus's own, from its `/api/v1/targets`; while Prometheus does not run,
the targets are those of the target files, with health "unknown". Reads the state directory and
asks Prometheus over HTTP; changes nothing. Called by enova.cli.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from enova.observe.processes import check_process

from .process import read_record
from .prometheus import MonitorPaths
from .targets import read_target_files


@dataclass(frozen=True)
class TargetView:
    job: str
    address: str
    labels: dict[str, str]          # deployment, replica, runtime for replicas
    health: str                     # up | down | unknown (Prometheus's word, or unknown without it)
    last_error: str = ""
    last_scrape: str = ""           # RFC 3339, as Prometheus reports it
    scrape_url: str = ""


@dataclass(frozen=True)
class PartView:
    name: str                       # prometheus
    state: str                      # running | not ready | stopped | exited
    url: str = ""
    pid: int | None = None
    started_at: float | None = None
    ready_seconds: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class MonitorView:
    state_dir: str
    mode: str
    parts: list[PartView]
    targets: list[TargetView]
    targets_from: str               # "prometheus" or "files"
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_view(state_dir: Path, *, timeout: float = 2.0) -> MonitorView:
    """The monitoring view of `state_dir`. Blocks up to about 2 x `timeout` on Prometheus's HTTP
    API. Raises PermanentError for an unreadable record; an unreachable Prometheus is a state."""
    paths = MonitorPaths(Path(state_dir))
    record = read_record(paths.state_dir)
    mode = str(record.config.get("mode", "local")) if record is not None else "local"
    answered: list[dict[str, Any]] | None = None
    if record is None:
        part = PartView("prometheus", "stopped")
    elif not check_process(record.pid, record.create_time).alive:
        part = PartView("prometheus", "exited", record.url, record.pid, record.started_at, record.ready_seconds,
                        f"pid {record.pid} exited; see {record.log}")
    else:
        ready = _get(f"{record.url}/-/ready", timeout)
        answered = _active_targets(record.url, timeout)
        state = "running" if ready is not None and ready.status_code == 200 else "not ready"
        part = PartView("prometheus", state, record.url, record.pid, record.started_at, record.ready_seconds)
    if answered is not None:
        targets, source = answered, "prometheus"
    else:
        targets, source = _file_targets(paths), "files"
    shown = {"config": paths.config, "targets": paths.targets, "rules": paths.rules, "data": paths.data,
             "log": paths.log}
    return MonitorView(str(paths.state_dir), mode, [part], _sorted(targets), source,
                       {k: str(v) for k, v in shown.items()})


def _get(url: str, timeout: float) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None


def _active_targets(url: str, timeout: float) -> list[TargetView] | None:
    resp = _get(f"{url}/api/v1/targets?state=active", timeout)
    try:
        active = resp.json()["data"]["activeTargets"] if resp is not None and resp.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        active = None
    if not isinstance(active, list):
        return None
    out = []
    for t in active:
        labels = dict(t.get("labels") or {})
        job = labels.pop("job", t.get("scrapePool", ""))
        address = labels.pop("instance", (t.get("discoveredLabels") or {}).get("__address__", ""))
        out.append(TargetView(job, address, labels, str(t.get("health", "unknown")), str(t.get("lastError", "")),
                              str(t.get("lastScrape", "")), str(t.get("scrapeUrl", ""))))
    return out


def _file_targets(paths: MonitorPaths) -> list[TargetView]:
    out = []
    for job, groups in read_target_files(paths.targets).items():
        for group in groups:
            for address in group.get("targets", []):
                out.append(TargetView(job, address, dict(group.get("labels") or {}), "unknown"))
    return out


def _sorted(targets: list[TargetView]) -> list[TargetView]:
    return sorted(targets, key=lambda t: (t.job, t.labels.get("deployment", ""), t.labels.get("replica", ""),
                                          t.address))


def render_text(view: MonitorView) -> str:
    """The view as `enova mon status` prints it."""
    lines = []
    for part in view.parts:
        where = f" on {part.url}" if part.url and part.state != "stopped" else ""
        pid = f" (pid {part.pid})" if part.pid and part.state != "stopped" else ""
        line = f"{part.name}: {part.state}{where}{pid}"
        if part.state == "stopped":
            line += " (`enova mon start` starts it)"
        lines.append(line + (f"; {part.detail}" if part.detail else ""))
    if not view.targets:
        lines.append("targets: none (no gateway or replica is recorded in this state directory)")
    else:
        source = "" if view.targets_from == "prometheus" else " (from the target files: Prometheus does not answer)"
        lines.append(f"targets{source}:")
        lines.append(f"  {'JOB':<16} {'TARGET':<22} {'HEALTH':<8} {'DEPLOYMENT':<16} {'REPLICA':<24} ERROR")
        for t in view.targets:
            lines.append(f"  {t.job:<16} {t.address:<22} {t.health:<8} {t.labels.get('deployment', '-'):<16} "
                         f"{t.labels.get('replica', '-'):<24} {t.last_error}".rstrip())
    lines.append(f"config {view.paths['config']}; data {view.paths['data']}")
    return "\n".join(lines) + "\n"
