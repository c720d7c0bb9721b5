"""Prometheus's configuration: the settings a Monitoring document resolves to, where its files
live under the state directory, the rendered `prometheus.yml`, and promtool's verdict on it.

Layout under `<state_dir>/monitoring/`:
    prometheus.yml       rendered from templates/prometheus/prometheus.yml.j2
    prometheus.json      the Prometheus process enova runs (enova.monitor.process)
    targets/*.json       file-based service discovery (enova.monitor.targets)
    rules/*.yml          recording and alerting rules (another writer; an empty folder is fine)
    data/                Prometheus's TSDB, kept across stop and start
and its output goes to `<state_dir>/logs/prometheus.log`.

The configuration names no target: jobs `enova-gateway` and `enova-replicas` read theirs from
the target files, which Prometheus re-reads when they change. Scrape and rule evaluation
intervals are the document's `scrape_interval`. Rendering is pure; `find_binary` and
`check_config` look at the host. Called by enova.monitor.process and the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from enova.engines.templates import render
from enova.errors import PermanentError
from enova.observe.ports import connect_url
from enova.spec.loader import SpecSet
from enova.spec.models import MonitoringSpec

from .targets import JOB_FILES, targets_dir

TEMPLATE = "prometheus/prometheus.yml.j2"
INSTALL_HINT = ("install it with `apt-get install prometheus`, or set spec.prometheus.binary in a Monitoring "
                "document to its absolute path")
MAX_SCRAPE_TIMEOUT = 10.0           # Prometheus's default; a scrape never outlasts its interval
TARGET_REFRESH_INTERVAL = 30.0      # file_sd re-reads on change; this is only its fallback


@dataclass(frozen=True)
class MonitoringConfig:
    """What a Monitoring document (or the defaults) resolves to. Durations in seconds."""

    mode: str
    binary: str
    host: str
    port: int
    scrape_interval: float
    retention: float
    source: str                     # "specs/monitoring.yaml:1", or "defaults"

    @property
    def url(self) -> str:
        return connect_url(self.host, self.port)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def monitoring_config(specs: SpecSet | None) -> MonitoringConfig:
    """The settings of the spec set's Monitoring document, or the defaults when there is none."""
    located = specs.monitoring if specs is not None else None
    spec = located.doc.spec if located is not None else MonitoringSpec()
    p = spec.prometheus
    source = f"{located.file}:{located.line}" if located is not None else "defaults"
    return MonitoringConfig(mode=spec.mode, binary=p.binary, host=p.host, port=p.port,
                            scrape_interval=p.scrape_interval, retention=p.retention, source=source)


@dataclass(frozen=True)
class MonitorPaths:
    """Where monitoring keeps its files in one state directory."""

    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "monitoring"

    @property
    def config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def record(self) -> Path:
        return self.root / "prometheus.json"

    @property
    def targets(self) -> Path:
        return targets_dir(self.state_dir)

    @property
    def rules(self) -> Path:
        return self.root / "rules"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.state_dir / "logs" / "prometheus.log"


def prometheus_duration(seconds: float) -> str:
    """A duration as Prometheus writes one, to the millisecond: 5 -> "5s", 90 -> "1m30s",
    1296000 -> "15d", 1.5 -> "1s500ms". Raises ValueError below one millisecond."""
    ms = round(seconds * 1000)
    if ms < 1:
        raise ValueError(f"{seconds!r} s is below Prometheus's 1 ms resolution")
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def render_config(config: MonitoringConfig, paths: MonitorPaths) -> str:
    """prometheus.yml for `config`, its target files and rules under `paths` (absolute). Pure."""
    interval = prometheus_duration(config.scrape_interval)
    root = Path(os.path.abspath(paths.state_dir))
    absolute = MonitorPaths(root)
    jobs = [{"name": job, "metrics_path": "/metrics", "file": str(absolute.targets / name)}
            for job, name in JOB_FILES.items()]
    return render(TEMPLATE,
                  scrape_interval=interval,
                  scrape_timeout=prometheus_duration(min(config.scrape_interval, MAX_SCRAPE_TIMEOUT)),
                  evaluation_interval=interval,
                  refresh_interval=prometheus_duration(TARGET_REFRESH_INTERVAL),
                  rule_files=str(absolute.rules / "*.yml"),
                  jobs=jobs)


def prometheus_argv(binary: str, config: MonitoringConfig, paths: MonitorPaths) -> list[str]:
    """The Prometheus server's argv (no shell): config, storage and retention, listen address."""
    listen = connect_url(config.host, config.port).removeprefix("http://")  # loopback only: host as given
    return [binary,
            f"--config.file={paths.config}",
            f"--storage.tsdb.path={paths.data}",
            f"--storage.tsdb.retention.time={prometheus_duration(config.retention)}",
            f"--web.listen-address={listen}"]


def find_binary(binary: str) -> str:
    """The absolute path of the Prometheus server `binary` names (a name on PATH or an absolute
    path). Raises PermanentError saying how to install it when it is missing or not executable."""
    expanded = os.path.expanduser(binary)
    if os.path.isabs(expanded):
        if os.path.isfile(expanded) and os.access(expanded, os.X_OK):
            return expanded
        why = "does not exist" if not os.path.exists(expanded) else "is not an executable file"
        raise PermanentError(f"monitoring: the Prometheus server {expanded} {why}; {INSTALL_HINT}")
    found = shutil.which(expanded)
    if found is None:
        raise PermanentError(f"monitoring: the Prometheus server `{expanded}` is not on PATH; {INSTALL_HINT}")
    return os.path.abspath(found)


def find_promtool(prometheus: str) -> str | None:
    """promtool beside the Prometheus server, else on PATH; None when there is none."""
    beside = Path(prometheus).with_name("promtool")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("promtool")


def check_config(promtool: str, config_file: Path, *, shown: Path | None = None, timeout: float = 30.0) -> None:
    """Run `promtool check config` on `config_file` (it also reads the rule and target files the
    config names). Blocks up to `timeout`. Raises PermanentError carrying promtool's own message
    (its failures, without its SUCCESS lines) when the configuration is rejected, naming the file
    `shown` instead of `config_file` when given (a candidate checked before it is put in place)."""
    try:
        done = subprocess.run([promtool, "check", "config", str(config_file)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PermanentError(f"monitoring: could not run {promtool} check config: {exc}") from None
    if done.returncode != 0:
        name = str(shown or config_file)
        lines = [line.strip().replace(str(config_file), name) for line in (done.stdout + done.stderr).splitlines()]
        message = "\n".join(f"  {line}" for line in lines if line and "SUCCESS" not in line
                            and not line.startswith("Checking "))
        raise PermanentError(f"monitoring: Prometheus would reject its configuration {name} "
                             f"(promtool check config):\n{message}")
