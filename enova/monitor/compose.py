"""Compose mode: the monitoring stack as a Docker Compose project (`enova mon start --mode compose`,
or `mode: compose` in the Monitoring document).

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
files and Grafana can read the admin password file, which is generated once
(`<state_dir>/monitoring/grafana-admin-password`, mode 0600) and printed once.

`start_compose` checks everything before anything is created (a local engine, no local-mode
Prometheus running, every pinned image present, every port free), then writes the files and
creates the containers itself with the Docker SDK from the rendered compose.yaml
(`container_kwargs`: only the keys the template writes are understood; any other is a bug),
labelled as Compose labels a project (`com.docker.compose.project=enova-monitoring`) so that
`docker compose -p enova-monitoring` sees the same containers. A service whose rendered
definition and mounted files are unchanged (`io.enova.config-hash`) is left running.
`stop_compose` stops and removes the containers and keeps every data folder. Called by
enova.commands.mon; blocking (Docker API calls, up to `ready_timeout` for readiness).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from enova.apply.compose import literal, validate_compose
from enova.engines.templates import render
from enova.errors import PermanentError, TemporaryError, UsageError
from enova.observe.gpus import GpuInventory
from enova.observe.lock import StateLock
from enova.observe.ports import connect_url, port_is_free
from enova.observe.state import StateStore, write_json
from enova.runtime.docker import default_host, is_local

from .dashboards import dashboards, render_dashboard
from .prometheus import MonitoringConfig, MonitorPaths, prometheus_argv, prometheus_duration, render_config
from .targets import write_targets

Progress = Callable[[str], None]

PROJECT = "enova-monitoring"
IMAGES: Mapping[str, str] = {
    "prometheus": "prom/prometheus:v2.55.1",
    "grafana": "grafana/grafana:11.3.1",
    "otel-collector": "otel/opentelemetry-collector:0.114.0",
    "tempo": "grafana/tempo:2.6.1",
    "dcgm-exporter": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04",
}
"""Every image the project may run, pinned by exact tag (never `latest`)."""

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
    name = image.rsplit("/", 1)[-1]
    tag = name.partition(":")[2] if "@" not in image else "digest"
    if not tag or tag == "latest":
        raise UsageError(f"the {service} image {image!r} must be pinned by an exact tag (repository:tag), "
                         "never `latest`")


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


# ---- the Docker SDK path ---------------------------------------------------------------------

_KNOWN_KEYS = {"container_name", "image", "user", "network_mode", "restart", "command", "environment", "labels",
               "volumes", "cap_add", "security_opt", "deploy"}


def container_kwargs(service: str, definition: Mapping[str, Any], project: str = PROJECT) -> dict[str, Any]:
    """The Docker SDK's containers.create arguments for one service of the rendered compose file,
    as `docker compose up` would create it, with Compose's project and service labels. Only the
    keys the template writes are understood: any other raises PermanentError (an enova bug), so
    the file and what is started cannot drift apart silently. Pure."""
    from docker.types import DeviceRequest, Mount

    unknown = sorted(set(definition) - _KNOWN_KEYS)
    if unknown:
        raise PermanentError(f"enova bug: compose service {service} has keys the Docker SDK path does not "
                             f"translate: {', '.join(unknown)}")

    def plain(value: str) -> str:       # compose reads `$$` as `$`
        return str(value).replace("$$", "$")

    mounts = []
    for v in definition.get("volumes", []):
        if v.get("type") != "bind":
            raise PermanentError(f"enova bug: compose service {service} has a {v.get('type')} volume; "
                                 "only bind mounts are translated")
        mounts.append(Mount(target=plain(v["target"]), source=plain(v["source"]), type="bind",
                            read_only=bool(v.get("read_only", False))))
    labels = {k: plain(v) for k, v in (definition.get("labels") or {}).items()}
    labels.update({LABEL_PROJECT: project, LABEL_SERVICE: service, "com.docker.compose.oneoff": "False",
                   "com.docker.compose.container-number": "1"})
    kwargs: dict[str, Any] = {
        "image": plain(definition["image"]), "name": plain(definition["container_name"]), "detach": True,
        "labels": labels, "network_mode": definition.get("network_mode", "bridge"), "mounts": mounts,
        "environment": {k: plain(v) for k, v in (definition.get("environment") or {}).items()},
        "restart_policy": {"Name": definition.get("restart", "no")},
    }
    if definition.get("command"):
        kwargs["command"] = [plain(a) for a in definition["command"]]
    if definition.get("user"):
        kwargs["user"] = plain(definition["user"])
    if definition.get("cap_add"):
        kwargs["cap_add"] = list(definition["cap_add"])
    if definition.get("security_opt"):
        kwargs["security_opt"] = list(definition["security_opt"])
    devices = (((definition.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
    if devices:
        kwargs["device_requests"] = [
            DeviceRequest(driver=d.get("driver", ""), count=-1 if d.get("count") == "all" else int(d.get("count", 0)),
                          device_ids=d.get("device_ids"), capabilities=[list(d.get("capabilities", []))])
            for d in devices]
    return kwargs


def connect(docker_host: str | None = None) -> Any:
    """A Docker client for the engine compose mode runs on (DOCKER_HOST, else the local socket),
    pinged. Raises UsageError for a remote engine (the bind mounts are this host's state directory,
    the targets this host's loopback), PermanentError when it cannot be reached."""
    import docker
    from docker.errors import DockerException

    host = docker_host or default_host()
    if not is_local(host):
        raise UsageError(f"monitoring: compose mode needs this host's Docker engine (DOCKER_HOST is {host}): its "
                         "containers mount this state directory and scrape this host's loopback")
    try:
        client = docker.DockerClient(base_url=host, timeout=60)
        client.ping()
    except DockerException as exc:
        raise PermanentError(f"monitoring: the Docker engine at {host} cannot be reached ({_first_line(exc)}); "
                             "start dockerd, or set DOCKER_HOST") from None
    return client


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def project_containers(client: Any) -> dict[str, Any]:
    """{service: container} of the project on `client`'s engine, stopped ones included."""
    found = client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={PROJECT}"]})
    return {c.labels.get(LABEL_SERVICE, c.name): c for c in found}


def missing_images(client: Any, images: Mapping[str, str]) -> list[str]:
    """The images of `images` (service -> image) the engine does not have, sorted, deduplicated."""
    from docker.errors import ImageNotFound

    missing = set()
    for image in images.values():
        try:
            client.images.get(image)
        except ImageNotFound:
            missing.add(image)
    return sorted(missing)


@dataclass
class ServiceResult:
    service: str
    action: str                     # created | recreated | started | unchanged | removed
    container: str = ""
    image: str = ""
    ready_seconds: float | None = None


@dataclass
class ComposeResult:
    services: list[ServiceResult]
    urls: dict[str, str]
    compose_file: str
    password_file: str
    password: str | None            # only when generated by this start: print it once
    dcgm_reason: str
    docker_host: str


def _ports(config: MonitoringConfig, options: ComposeOptions, services: tuple[str, ...]) -> dict[str, list[int]]:
    ports = {"prometheus": [config.port], "grafana": [options.grafana_port],
             "otel-collector": [OTLP_GRPC_PORT, OTLP_HTTP_PORT, COLLECTOR_HEALTH_PORT],
             "tempo": [TEMPO_HTTP_PORT, TEMPO_GRPC_PORT, TEMPO_OTLP_PORT, TEMPO_MEMBERLIST_PORT],
             "dcgm-exporter": [DCGM_PORT]}
    return {s: ports[s] for s in services}


def start_compose(state_dir: Path, config: MonitoringConfig, options: ComposeOptions, specs: Any | None,
                  inventory: GpuInventory, *, docker_host: str | None = None, services: tuple[str, ...] | None = None,
                  progress: Progress = lambda m: None, ready_timeout: float = 90.0,
                  clock: Callable[[], float] = time.time) -> ComposeResult:
    """Bring the compose project up (see the module docstring). `services`: only these (default:
    all the project has). Checks first, and creates nothing unless every check passes: a local
    engine that answers (UsageError / PermanentError), no Prometheus of local mode running
    (PermanentError), every image present (UsageError listing the `docker pull` commands), the
    ports of every service it will create free (PermanentError naming them). Then writes the
    files, the target files and the password (once), and creates, recreates or leaves each
    container. Blocks until each started service answers its readiness URL (TemporaryError after
    `ready_timeout`, with the container's last log lines; PermanentError when a container exits).
    Raises LockHeldError when another `enova mon` acts."""
    from .process import is_running, read_record

    paths = ComposePaths(Path(state_dir))
    rendered = render_project(state_dir, config, options, specs, inventory)
    wanted = tuple(s for s in rendered.services if services is None or s in services)
    host = docker_host or default_host()
    lock = StateLock(paths.monitor.root, purpose="enova mon start (compose)")
    lock.acquire()
    try:
        client = connect(host)
        try:
            local = read_record(paths.monitor.state_dir)
            if is_running(local):
                assert local is not None
                raise PermanentError(f"monitoring: local mode's Prometheus runs (pid {local.pid}, {local.url}); "
                                     "stop it with `enova mon stop` before starting compose mode")
            missing = missing_images(client, {s: rendered.images[s] for s in wanted})
            if missing:
                pulls = "\n".join(f"  docker pull {image}" for image in missing)
                raise UsageError(f"monitoring: {len(missing)} image(s) of the compose project are missing from the "
                                 f"Docker engine at {host}; nothing was created. Get them with:\n{pulls}\n"
                                 "(or `docker load -i FILE` where there is no registry)")
            definitions = rendered.compose["services"]
            existing = project_containers(client)
            keep = {s for s in wanted if s in existing
                    and existing[s].labels.get(LABEL_HASH) == definitions[s]["labels"][LABEL_HASH]}
            taken = [f"{port} ({s})" for s, ports in _ports(config, options, wanted).items()
                     if s not in existing for port in ports if not port_is_free(HOST, port)]
            if taken:
                raise PermanentError(f"monitoring: port(s) {', '.join(taken)} on {HOST} are in use; nothing was "
                                     "created. Stop what holds them (or set spec.prometheus.port / --grafana-port)")
            _write_files(paths, rendered)
            password = ensure_password(paths.password)
            results = _apply(client, definitions, wanted, existing, keep, progress)
            for name in sorted(set(existing) - set(rendered.services)):
                progress(f"compose: removing {name}: no longer part of the project")
                _remove(existing[name])
                results.append(ServiceResult(name, "removed", existing[name].name))
            _wait_ready(client, rendered, results, ready_timeout)
            result = ComposeResult(results, rendered.urls, str(paths.compose_file), str(paths.password), password,
                                   rendered.dcgm_reason, host)
            write_json(paths.record, {"docker_host": host, "started_at": clock(), "services": list(wanted),
                                      "images": rendered.images, "urls": rendered.urls,
                                      "compose_file": str(paths.compose_file), "password_file": str(paths.password),
                                      "dcgm": rendered.dcgm_reason})
            return result
        finally:
            client.close()
    finally:
        lock.release()


def _write_files(paths: ComposePaths, rendered: RenderedProject) -> None:
    mon = paths.monitor
    for folder in (mon.targets, mon.rules, mon.data, paths.grafana_data, paths.tempo_data):
        folder.mkdir(parents=True, exist_ok=True)
    write_targets(StateStore(mon.state_dir), mon.targets)
    for relative, text in sorted(rendered.files.items()):
        _replace_text(paths.root / relative, text)


def _replace_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove(container: Any, timeout: int = 30) -> None:
    from docker.errors import NotFound

    try:
        container.stop(timeout=timeout)
        container.remove()
    except NotFound:
        pass


def _apply(client: Any, definitions: Mapping[str, Any], wanted: tuple[str, ...], existing: Mapping[str, Any],
           keep: set[str], progress: Progress) -> list[ServiceResult]:
    from docker.errors import DockerException

    results = []
    for service in wanted:
        current = existing.get(service)
        if service in keep and current is not None:
            current.reload()
            if current.status != "running":
                current.start()
                results.append(ServiceResult(service, "started", current.name, definitions[service]["image"]))
            else:
                results.append(ServiceResult(service, "unchanged", current.name, definitions[service]["image"]))
            continue
        if current is not None:
            progress(f"compose: recreating {service}: its definition or files changed (data kept)")
            _remove(current)
        kwargs = container_kwargs(service, definitions[service])
        try:
            container = client.containers.create(**kwargs)
            container.start()
        except DockerException as exc:
            raise PermanentError(f"monitoring: could not start {service} ({kwargs['image']}): "
                                 f"{_first_line(exc)}") from None
        results.append(ServiceResult(service, "recreated" if current is not None else "created", container.name,
                                     kwargs["image"]))
    return results


def _wait_ready(client: Any, rendered: RenderedProject, results: list[ServiceResult], timeout: float) -> None:
    """Wait until each service this start created or started answers 200 on its readiness URL."""
    pending = {r.service: r for r in results if r.action in ("created", "recreated", "started")}
    began = time.monotonic()
    while pending and time.monotonic() - began < timeout:
        for service, result in list(pending.items()):
            container = client.containers.get(result.container)
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                logs = container.logs(tail=10).decode(errors="replace").rstrip()
                raise PermanentError(f"monitoring: {service} exited at start (code {code}); last lines of "
                                     f"`docker logs {result.container}`:\n{logs}")
            try:
                if httpx.get(rendered.ready_urls[service], timeout=1, trust_env=False).status_code == 200:
                    result.ready_seconds = round(time.monotonic() - began, 2)
                    del pending[service]
            except httpx.HTTPError:
                pass
        if pending:
            time.sleep(0.2)
    if pending:
        names = ", ".join(f"{s} ({rendered.ready_urls[s]})" for s in sorted(pending))
        raise TemporaryError(f"monitoring: not ready within {timeout:.0f} s: {names}; the containers are left "
                             f"running: see `docker logs {PROJECT}-<service>`")


def reload_prometheus(state_dir: Path, docker_host: str | None = None) -> bool:
    """SIGHUP to the project's Prometheus container (after rules changed). False when none runs."""
    client = connect(docker_host or recorded_host(ComposePaths(Path(state_dir))))
    try:
        container = project_containers(client).get("prometheus")
        if container is None or container.status != "running":
            return False
        container.kill(signal="SIGHUP")
        return True
    finally:
        client.close()


def recorded_host(paths: ComposePaths) -> str | None:
    """The Docker engine the last compose start used, from its record; None without one."""
    try:
        host = json.loads(paths.record.read_text()).get("docker_host")
    except (OSError, ValueError, AttributeError):
        return None
    return str(host) if host else None


def stop_compose(state_dir: Path, *, docker_host: str | None = None, timeout: int = 30) -> str:
    """Stop and remove the project's containers; every data folder (Prometheus's TSDB, Grafana's
    and Tempo's data, the password file) is kept. Idempotent. Returns what was done. Raises
    PermanentError when the engine cannot be reached, LockHeldError when another `enova mon` acts."""
    paths = ComposePaths(Path(state_dir))
    lock = StateLock(paths.monitor.root, purpose="enova mon stop (compose)")
    lock.acquire()
    try:
        client = connect(docker_host or recorded_host(paths))
        try:
            found = project_containers(client)
            ours = {s: c for s, c in found.items() if c.labels.get(LABEL_MANAGED) == "enova"}
            for container in ours.values():
                _remove(container, timeout)
        finally:
            client.close()
    finally:
        lock.release()
    if not ours:
        return "compose: no container of the project runs"
    return (f"compose: stopped and removed {', '.join(sorted(ours))}; data kept in {paths.monitor.data} "
            f"and {paths.root / 'data'}")


# ---- the view -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceView:
    service: str
    state: str                      # running | exited (code N) | missing
    container: str = ""
    image: str = ""


@dataclass(frozen=True)
class ComposeView:
    docker_host: str
    services: list[ServiceView]
    urls: dict[str, str]
    compose_file: str
    password_file: str
    error: str = ""                 # the engine could not be asked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compose_view(state_dir: Path, *, docker_host: str | None = None) -> ComposeView | None:
    """The compose project's state, or None when compose mode was never started here. An engine
    that does not answer is a state (`error`), not an exception."""
    paths = ComposePaths(Path(state_dir))
    try:
        record = json.loads(paths.record.read_text())
    except (OSError, ValueError):
        return None
    host = docker_host or str(record.get("docker_host") or default_host())
    wanted = list(record.get("services") or [])
    base = dict(docker_host=host, urls=dict(record.get("urls") or {}), compose_file=str(paths.compose_file),
                password_file=str(paths.password))
    try:
        client = connect(host)
    except (UsageError, PermanentError) as exc:
        return ComposeView(services=[ServiceView(s, "unknown") for s in wanted], error=str(exc), **base)
    try:
        found = project_containers(client)
        views = []
        for service in sorted(set(wanted) | set(found)):
            c = found.get(service)
            if c is None:
                views.append(ServiceView(service, "missing"))
                continue
            state = c.status
            if state in ("exited", "dead"):
                state = f"exited (code {c.attrs.get('State', {}).get('ExitCode')})"
            views.append(ServiceView(service, state, c.name, str(c.attrs.get("Config", {}).get("Image", ""))))
    finally:
        client.close()
    return ComposeView(services=views, **base)


def merge_view(view: Any, composed: ComposeView | None, *, timeout: float = 2.0) -> Any:
    """`enova mon status`'s view (enova.monitor.view.MonitorView) with compose mode's Prometheus in
    place of local mode's when its container runs: the part says so and the targets' health is
    that Prometheus's own. Unchanged otherwise. Asks Prometheus over HTTP (up to `timeout`)."""
    from dataclasses import replace

    from .view import PartView, _active_targets, _sorted

    running = composed is not None and any(s.service == "prometheus" and s.state == "running"
                                           for s in composed.services)
    if not running or any(p.name == "prometheus" and p.state != "stopped" for p in view.parts):
        return view
    assert composed is not None
    url = composed.urls.get("prometheus", "")
    part = PartView("prometheus", "running", url, detail=f"container {PROJECT}-prometheus (compose mode)")
    parts = [part if p.name == "prometheus" else p for p in view.parts]
    answered = _active_targets(url, timeout) if url else None
    if answered is None:
        return replace(view, mode="compose", parts=parts)
    return replace(view, mode="compose", parts=parts, targets=_sorted(answered), targets_from="prometheus")


def render_view_text(view: ComposeView) -> str:
    """The compose part of `enova mon status`."""
    lines = [f"compose project {PROJECT} on {view.docker_host}:"]
    if view.error:
        lines.append(f"  engine: {view.error}")
    for s in view.services:
        lines.append(f"  {s.service:<16} {s.state:<18} {s.image}".rstrip())
    urls = view.urls
    if urls:
        lines.append(f"  grafana {urls.get('grafana', '')} (user {GRAFANA_USER}, password in {view.password_file})")
        lines.append(f"  prometheus {urls.get('prometheus', '')}; traces: otlp_endpoint {urls.get('otlp_http', '')}")
    lines.append(f"  compose file {view.compose_file}")
    return "\n".join(lines) + "\n"
