"""Compose mode, the files: the monitoring stack as a Docker Compose project, rendered for
`enova mon start --mode compose` (or `mode: compose` in the Monitoring document).

`render_project` is pure: from the Monitoring settings it renders, under
`<state_dir>/monitoring/compose/`,

    compose.yaml                                 templates/monitor/compose.yaml.j2
    prometheus/prometheus.yml                    the same configuration as local mode
                                                 (enova.monitor.prometheus.render_config), plus
                                                 DCGM's job when its exporter runs
    grafana/provisioning/datasources/enova.yaml  Prometheus (the default) and Tempo
    grafana/provisioning/dashboards/enova.yaml   a file provider for grafana/dashboards/
    grafana/dashboards/enova.json                enova's dashboard (enova.monitor.dashboards)
    otel-collector/config.yaml                   OTLP on 127.0.0.1:4317 (gRPC) and :4318 (HTTP) -> Tempo
    tempo/tempo.yaml                             Tempo, local storage, loopback only

Services: prometheus, grafana (127.0.0.1:32827), otel-collector, tempo, and dcgm-exporter when
the host has an NVIDIA GPU (NVML's inventory) or it is forced on. Images are pinned by exact tag
(IMAGES). Every service uses the host's network and binds 127.0.0.1: Prometheus must reach the
gateway and replicas on the host's loopback. Prometheus reads the target files and rule files of
the state directory at their own absolute paths (mounted read-only), so the configuration is
local mode's, byte for byte, and it stores its TSDB in `<state_dir>/monitoring/data` like local
mode (switching modes keeps the history). Grafana's and Tempo's data are bind mounts under
`compose/data/`; every container but DCGM's runs as the user who runs enova, so they own their
files and Grafana can read the admin password file, which `ensure_password` generates once
(`<state_dir>/monitoring/grafana-admin-password`, mode 0600) for the caller to print once.
Each service carries `io.enova.config-hash`, a hash of its definition and the files it mounts.

Running the project is enova.monitor.compose_engine's. Called by it and the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from enova.apply.compose import literal, validate_compose
from enova.engines.templates import render
from enova.errors import PermanentError, UsageError
from enova.observe.gpus import GpuInventory
from enova.observe.ports import connect_url
from enova.spec.models import COMPOSE_SERVICES, unpinned_image

from .dashboards import dashboards, render_dashboard
from .prometheus import MonitoringConfig, MonitorPaths, prometheus_argv, prometheus_duration, render_config

PROJECT = "enova-monitoring"
IMAGES: Mapping[str, str] = {
    "prometheus": "prom/prometheus:v2.55.1",
    "grafana": "grafana/grafana:11.3.1",
    "otel-collector": "otel/opentelemetry-collector:0.114.0",
    "tempo": "grafana/tempo:2.6.1",
    "dcgm-exporter": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04",
}
"""Every image the project may run, pinned by exact tag (never `latest`)."""
assert tuple(IMAGES) == COMPOSE_SERVICES, "the spec's service names and the pinned images must agree"

HOST = "127.0.0.1"
GRAFANA_PORT = 32827
GRAFANA_USER = "admin"
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
COLLECTOR_HEALTH_PORT = 13133
TEMPO_HTTP_PORT = 3200
TEMPO_GRPC_PORT = 9095
TEMPO_OTLP_PORT = 4417          # Tempo's own OTLP receiver, fed by the collector only
TEMPO_MEMBERLIST_PORT = 7946
DCGM_PORT = 9400
DCGM_JOB = "dcgm"
PASSWORD_FILE = "grafana-admin-password"
PASSWORD_IN_CONTAINER = "/run/secrets/grafana-admin-password"
DASHBOARDS_IN_CONTAINER = "/etc/grafana/dashboards"

LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_MANAGED = "io.enova.managed-by"
LABEL_HASH = "io.enova.config-hash"
TEMPLATE = "monitor/compose.yaml.j2"


@dataclass(frozen=True)
class ComposeOptions:
    """What compose mode adds to the Monitoring settings. `dcgm`: "auto" (when NVML reports a
    GPU), "on" or "off". `images`: service -> image, IMAGES unless overridden (a registry
    mirror, a test). `user`: "uid:gid" the containers run as (default: this process's)."""

    grafana_port: int = GRAFANA_PORT
    dcgm: str = "auto"
    images: Mapping[str, str] = field(default_factory=lambda: dict(IMAGES))
    user: str | None = None

    def __post_init__(self) -> None:
        if self.dcgm not in ("auto", "on", "off"):
            raise UsageError(f"--dcgm must be auto, on or off (got {self.dcgm!r})")
        if not 1 <= self.grafana_port <= 65535:
            raise UsageError(f"--grafana-port must be 1..65535 (got {self.grafana_port})")
        for service, image in self.images.items():
            check_pinned(service, image)


def check_pinned(service: str, image: str) -> None:
    """Raise UsageError unless `image` names an exact tag or digest (not `latest`, not bare)."""
    problem = unpinned_image(image)
    if problem:
        raise UsageError(f"the {service} image {image!r} {problem}")


def compose_options(specs: Any, *, grafana_port: int | None = None, dcgm: str | None = None,
                    image_overrides: list[str] | None = None) -> ComposeOptions:
    """Compose mode's options: the Monitoring document's `compose` settings (defaults without
    one), then the command line's, which win. Raises UsageError naming the option."""
    located = specs.monitoring if specs is not None else None
    spec = located.doc.spec.compose if located is not None else None
    images = dict(IMAGES)
    if spec is not None:
        images.update(spec.images)
    images.update(parse_images(image_overrides or [], base=images))
    return ComposeOptions(grafana_port=grafana_port if grafana_port is not None else
                          (spec.grafana_port if spec is not None else GRAFANA_PORT),
                          dcgm=dcgm if dcgm is not None else (spec.dcgm if spec is not None else "auto"),
                          images=images)


def parse_images(overrides: list[str], base: Mapping[str, str] = IMAGES) -> dict[str, str]:
    """`base` (IMAGES) with `--image SERVICE=IMAGE` overrides applied. Raises UsageError naming the
    option for a malformed entry, an unknown service, or an image not pinned by tag."""
    images = dict(base)
    for entry in overrides:
        service, sep, image = entry.partition("=")
        if not sep or not service or not image:
            raise UsageError(f"--image {entry!r}: must be SERVICE=IMAGE, such as "
                             f"prometheus=registry.example/prom/prometheus:v2.55.1")
        if service not in IMAGES:
            raise UsageError(f"--image {entry!r}: unknown service {service!r}; one of {', '.join(IMAGES)}")
        check_pinned(service, image)
        images[service] = image
    return images


def dcgm_wanted(option: str, inventory: GpuInventory) -> tuple[bool, str]:
    """Whether DCGM's exporter runs, and why (for the output)."""
    if option == "on":
        return True, "forced on (--dcgm on)"
    if option == "off":
        return False, "turned off (--dcgm off); enova's NVML exporter on the reconciler's /metrics remains"
    if inventory.available:
        return True, f"this host has {len(inventory.gpus)} NVIDIA GPU(s)"
    return False, f"no NVIDIA GPU here ({inventory.reason}); enova's NVML exporter covers GPUs where they exist"


@dataclass(frozen=True)
class ComposePaths:
    """Where compose mode keeps its files in one state directory (absolute)."""

    state_dir: Path

    @property
    def monitor(self) -> MonitorPaths:
        return MonitorPaths(Path(os.path.abspath(self.state_dir)))

    @property
    def root(self) -> Path:
        return self.monitor.root / "compose"

    @property
    def compose_file(self) -> Path:
        return self.root / "compose.yaml"

    @property
    def record(self) -> Path:
        return self.root / "project.json"

    @property
    def password(self) -> Path:
        return self.monitor.root / PASSWORD_FILE

    @property
    def grafana_data(self) -> Path:
        return self.root / "data" / "grafana"

    @property
    def tempo_data(self) -> Path:
        return self.root / "data" / "tempo"


@dataclass(frozen=True)
class RenderedProject:
    """The project's files, relative to ComposePaths.root, and what it runs."""

    files: dict[str, str]           # relative path -> text; "compose.yaml" among them
    services: tuple[str, ...]
    images: dict[str, str]
    ready_urls: dict[str, str]      # service -> a URL answering 200 once it serves
    dcgm_reason: str
    urls: dict[str, str]            # what a user opens or points at

    @property
    def compose(self) -> dict[str, Any]:
        return yaml.safe_load(self.files["compose.yaml"])


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _mount(source: Path | str, target: Path | str, read_only: bool) -> dict[str, Any]:
    return {"source": literal(str(source)), "target": literal(str(target)), "read_only": read_only}


def render_project(state_dir: Path, config: MonitoringConfig, options: ComposeOptions, specs: Any | None,
                   inventory: GpuInventory) -> RenderedProject:
    """Every file of the compose project for `config` (see the module docstring). Pure apart from
    resolving `state_dir` to an absolute path and the default user (this process's uid:gid).
    Raises ComposeBug when the compose file breaks the Compose Specification (a bug in enova)."""
    paths = ComposePaths(Path(state_dir))
    mon = paths.monitor
    user = options.user or f"{os.getuid()}:{os.getgid()}"
    dcgm, dcgm_reason = dcgm_wanted(options.dcgm, inventory)
    images = {s: options.images.get(s, IMAGES[s]) for s in IMAGES}

    prometheus_url = connect_url(config.host, config.port)
    tempo_url = connect_url(HOST, TEMPO_HTTP_PORT)
    prometheus_yml = render_config(config, mon)
    if dcgm:
        prometheus_yml += render("monitor/prometheus-dcgm.yml.j2", job=DCGM_JOB, address=f"{HOST}:{DCGM_PORT}")
    files = {
        "prometheus/prometheus.yml": prometheus_yml,
        "grafana/provisioning/datasources/enova.yaml": render(
            "monitor/grafana-datasources.yaml.j2",
            prometheus={"name": "Prometheus (enova)", "uid": "enova-prometheus", "url": prometheus_url,
                        "scrape_interval": prometheus_duration(config.scrape_interval)},
            tempo={"name": "Tempo (enova)", "uid": "enova-tempo", "url": tempo_url}),
        "grafana/provisioning/dashboards/enova.yaml": render("monitor/grafana-dashboards.yaml.j2",
                                                            path=DASHBOARDS_IN_CONTAINER),
        "otel-collector/config.yaml": render(
            "monitor/otel-collector.yaml.j2", grpc=f"{HOST}:{OTLP_GRPC_PORT}", http=f"{HOST}:{OTLP_HTTP_PORT}",
            tempo=f"{HOST}:{TEMPO_OTLP_PORT}", health=f"{HOST}:{COLLECTOR_HEALTH_PORT}"),
        "tempo/tempo.yaml": render(
            "monitor/tempo.yaml.j2", host=HOST, http_port=TEMPO_HTTP_PORT, grpc_port=TEMPO_GRPC_PORT,
            grpc_address=f"{HOST}:{TEMPO_GRPC_PORT}", memberlist_port=TEMPO_MEMBERLIST_PORT,
            otlp_grpc=f"{HOST}:{TEMPO_OTLP_PORT}", data="/var/tempo",
            retention=f"{max(1, round(config.retention / 3600))}h"),
    }
    for name, model in sorted(dashboards(specs).items()):
        files[f"grafana/dashboards/{name}"] = render_dashboard(model)

    root = paths.root
    prom_argv = prometheus_argv("prometheus", config, mon)[1:]
    prom_argv[0] = "--config.file=/etc/prometheus/prometheus.yml"
    services: list[dict[str, Any]] = [
        {"key": "prometheus", "command": prom_argv, "environment": [], "user": user,
         "volumes": [_mount(root / "prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml", True),
                     _mount(mon.targets, mon.targets, True), _mount(mon.rules, mon.rules, True),
                     _mount(mon.data, mon.data, False)],
         "files": ["prometheus/prometheus.yml"], "ready": f"{prometheus_url}/-/ready"},
        {"key": "grafana", "command": [], "user": user,
         "environment": sorted({
             "GF_SERVER_HTTP_ADDR": HOST, "GF_SERVER_HTTP_PORT": str(options.grafana_port),
             "GF_SECURITY_ADMIN_USER": GRAFANA_USER, "GF_SECURITY_ADMIN_PASSWORD__FILE": PASSWORD_IN_CONTAINER,
             "GF_AUTH_ANONYMOUS_ENABLED": "false", "GF_USERS_ALLOW_SIGN_UP": "false",
             "GF_SECURITY_DISABLE_GRAVATAR": "true", "GF_ANALYTICS_REPORTING_ENABLED": "false",
             "GF_ANALYTICS_CHECK_FOR_UPDATES": "false", "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
             "GF_LOG_MODE": "console",
             "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": f"{DASHBOARDS_IN_CONTAINER}/enova.json"}.items()),
         "volumes": [_mount(paths.grafana_data, "/var/lib/grafana", False),
                     _mount(root / "grafana/provisioning", "/etc/grafana/provisioning", True),
                     _mount(root / "grafana/dashboards", DASHBOARDS_IN_CONTAINER, True),
                     _mount(paths.password, PASSWORD_IN_CONTAINER, True)],
         "files": sorted(f for f in files if f.startswith("grafana/")),
         "ready": connect_url(HOST, options.grafana_port, "/api/health")},
        {"key": "otel-collector", "command": ["--config=/etc/otelcol/config.yaml"], "environment": [],
         "user": user, "volumes": [_mount(root / "otel-collector/config.yaml", "/etc/otelcol/config.yaml", True)],
         "files": ["otel-collector/config.yaml"], "ready": connect_url(HOST, COLLECTOR_HEALTH_PORT, "/")},
        {"key": "tempo", "command": ["-config.file=/etc/tempo/tempo.yaml"], "environment": [], "user": user,
         "volumes": [_mount(root / "tempo/tempo.yaml", "/etc/tempo/tempo.yaml", True),
                     _mount(paths.tempo_data, "/var/tempo", False)],
         "files": ["tempo/tempo.yaml"], "ready": connect_url(HOST, TEMPO_HTTP_PORT, "/ready")},
    ]
    if dcgm:
        # DCGM runs as the image's root with SYS_ADMIN, as NVIDIA documents: it starts its own host engine
        services.append({"key": "dcgm-exporter", "command": [], "user": None,
                         "environment": [("DCGM_EXPORTER_LISTEN", f"{HOST}:{DCGM_PORT}")], "volumes": [],
                         "cap_add": ["SYS_ADMIN"], "gpus": True, "files": [],
                         "ready": connect_url(HOST, DCGM_PORT, "/metrics")})
    for s in services:
        s["container_name"] = f"{PROJECT}-{s['key']}"
        s["image"] = literal(images[s["key"]])
        s["command"] = [literal(a) for a in s["command"]]
        s["environment"] = [(k, literal(v)) for k, v in s["environment"]]
        s.setdefault("cap_add", [])
        s.setdefault("gpus", False)
        s["security_opt"] = [] if s["key"] == "dcgm-exporter" else ["no-new-privileges:true"]
        digest = _hash({k: v for k, v in s.items() if k not in ("files", "ready")},
                       [files[f] for f in s["files"]])
        s["labels"] = sorted({LABEL_MANAGED: "enova", LABEL_HASH: digest}.items())
    files["compose.yaml"] = render(TEMPLATE, project=PROJECT, services=services)
    validate_compose(files["compose.yaml"])
    return RenderedProject(
        files=files, services=tuple(s["key"] for s in services),
        images={s["key"]: images[s["key"]] for s in services},
        ready_urls={s["key"]: s["ready"] for s in services}, dcgm_reason=dcgm_reason,
        urls={"prometheus": prometheus_url, "grafana": connect_url(HOST, options.grafana_port),
              "otlp_http": connect_url(HOST, OTLP_HTTP_PORT, "/v1/traces"),
              "otlp_grpc": f"{HOST}:{OTLP_GRPC_PORT}", "tempo": tempo_url})


# ---- the password ---------------------------------------------------------------------------

def ensure_password(path: Path) -> str | None:
    """Grafana's admin password in `path`: generated when the file is missing (mode 0600, created
    exclusively, 32 random URL-safe characters) and returned then, so the caller prints it once;
    None when it already existed (its mode is tightened to 0600 if it was looser). Raises
    PermanentError for an empty file or one that is not a regular file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        password = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password)
        return password
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        raise PermanentError(f"monitoring: {path} must be a non-empty file holding Grafana's admin password; "
                             "remove it and `enova mon start` generates a new one")
    if stat.S_IMODE(info.st_mode) != 0o600:
        os.chmod(path, 0o600)
    return None
