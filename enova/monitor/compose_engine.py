"""Compose mode, the containers: `start_compose`, `stop_compose`, `compose_view` for the project
enova.monitor.compose renders.

`start_compose` checks everything before anything is created (a local engine, no local-mode
Prometheus running, every pinned image present, every port free), then writes the files and
creates the containers itself with the Docker SDK from the rendered compose.yaml
(`container_kwargs`: only the keys the template writes are understood; any other is a bug, so
the file and what runs cannot drift apart), labelled as Compose labels a project
(`com.docker.compose.project=enova-monitoring`, service, container number) so that
`docker compose -p enova-monitoring` sees the same containers. Docker Compose v2 itself is not
used: one path, the same on every host, tested here where Compose v2 cannot be installed. A
service whose `io.enova.config-hash` is unchanged is left running; a changed one is recreated
(its data kept). `stop_compose` stops and removes the containers and keeps every data folder.
The Docker SDK is the driver; its exceptions become enova's errors here. Called by
enova.commands.mon; blocking (Docker API calls, up to `ready_timeout` for readiness).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from enova.errors import PermanentError, TemporaryError, UsageError
from enova.observe.gpus import GpuInventory
from enova.observe.lock import StateLock
from enova.observe.ports import port_is_free
from enova.observe.state import StateStore, write_json
from enova.runtime.docker import default_host, is_local

from .compose import (
    COLLECTOR_HEALTH_PORT,
    DCGM_PORT,
    GRAFANA_USER,
    HOST,
    LABEL_HASH,
    LABEL_MANAGED,
    LABEL_PROJECT,
    LABEL_SERVICE,
    OTLP_GRPC_PORT,
    OTLP_HTTP_PORT,
    PROJECT,
    TEMPO_GRPC_PORT,
    TEMPO_HTTP_PORT,
    TEMPO_MEMBERLIST_PORT,
    TEMPO_OTLP_PORT,
    ComposeOptions,
    compose_options,
    ComposePaths,
    RenderedProject,
    ensure_password,
    render_project,
)
from .prometheus import MonitoringConfig
from .targets import write_targets

Progress = Callable[[str], None]


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


def connect(docker_host: str | None = None, *, timeout: float = 60.0) -> Any:
    """A Docker client for the engine compose mode runs on (DOCKER_HOST, else the local socket),
    pinged; its API calls wait up to `timeout` seconds. Raises UsageError for a remote engine (the
    bind mounts are this host's state directory, the targets this host's loopback), PermanentError
    when it cannot be reached."""
    import docker
    from docker.errors import DockerException

    host = docker_host or default_host()
    if not is_local(host):
        raise UsageError(f"monitoring: compose mode needs this host's Docker engine (DOCKER_HOST is {host}): its "
                         "containers mount this state directory and scrape this host's loopback")
    try:
        client = docker.DockerClient(base_url=host, timeout=timeout)
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
    files, the target files, the password (once) and the SLO rules of `specs` (sending SIGHUP to
    a Prometheus container it leaves running when they changed), and creates, recreates or leaves
    each container. Blocks until each started service answers its readiness URL (TemporaryError after
    `ready_timeout`, the containers left running; PermanentError with the container's last log
    lines when one exits or restarts).
    Raises LockHeldError when another `enova mon` acts."""
    from .process import is_running, read_record, sync_rules

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
            rules_changed = sync_rules(paths.monitor.state_dir, specs)
            # recorded before any container is made, so that `mon stop` and `mon status` find a
            # half-done start too
            write_json(paths.record, {"docker_host": host, "started_at": clock(), "services": list(wanted),
                                      "images": rendered.images, "urls": rendered.urls,
                                      "compose_file": str(paths.compose_file), "password_file": str(paths.password),
                                      "dcgm": rendered.dcgm_reason})
            results = _apply(client, definitions, wanted, existing, keep, progress)
            if rules_changed and any(r.service == "prometheus" and r.action == "unchanged" for r in results):
                existing["prometheus"].kill(signal="SIGHUP")    # re-read the rule files; no restart
            for name in sorted(set(existing) - set(rendered.services)):
                progress(f"compose: removing {name}: no longer part of the project")
                _remove(existing[name])
                results.append(ServiceResult(name, "removed", existing[name].name))
            _wait_ready(client, rendered, results, ready_timeout)
            return ComposeResult(results, rendered.urls, str(paths.compose_file), str(paths.password), password,
                                 rendered.dcgm_reason, host)
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
            # with `unless-stopped`, a container that fails at start is "restarting" or has restarted
            if container.status in ("exited", "dead", "restarting") or container.attrs.get("RestartCount", 0):
                code = container.attrs.get("State", {}).get("ExitCode")
                logs = container.logs(tail=10).decode(errors="replace").rstrip()
                raise PermanentError(f"monitoring: {service} exited at start (code {code}); it is left to Docker's "
                                     f"restart policy; last lines of `docker logs {result.container}`:\n{logs}")
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
            try:
                record = json.loads(paths.record.read_text())
                write_json(paths.record, {**record, "stopped_at": time.time()})
            except (OSError, ValueError):
                pass
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
    state: str                      # Docker's word (running, restarting ...), exited (code N), stopped, missing
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
        client = connect(host, timeout=10)
    except (UsageError, PermanentError) as exc:
        return ComposeView(services=[ServiceView(s, "unknown") for s in wanted], error=str(exc), **base)
    try:
        found = project_containers(client)
        views = []
        for service in sorted(set(wanted) | set(found)):
            c = found.get(service)
            if c is None:   # gone: stopped by `enova mon stop`, or removed behind enova's back
                views.append(ServiceView(service, "stopped" if record.get("stopped_at") else "missing"))
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
    shown = {**view.paths, "config": composed.compose_file.replace("compose.yaml", "prometheus/prometheus.yml")}
    if answered is None:
        return replace(view, mode="compose", parts=parts, paths=shown)
    return replace(view, mode="compose", parts=parts, paths=shown, targets=_sorted(answered),
                   targets_from="prometheus")


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


@dataclass(frozen=True)
class Ensured:
    """What ensure_monitoring did: one line to show, and whether anything was started or changed
    (False when everything was already running as the specs say)."""
    line: str
    changed: bool


def ensure_monitoring(state_dir: Path, specs: Any, *, progress: Progress = lambda m: None,
                      docker_host: str | None = None) -> Ensured:
    """Make the spec set's Monitoring document true, in whichever mode it names: local mode's
    Prometheus process (enova.monitor.process: rules synced, started or left running, reloaded
    when the rules changed) or compose mode's containers (start_compose with the default options:
    Grafana on 32827, DCGM when NVML reports a GPU). For apply and the reconciler, which keep
    monitoring running from the specs. Raises what start_monitoring or start_compose raise; never
    touches a replica or the gateway."""
    from enova.observe.gpus import gpu_inventory

    from .process import reload_monitoring, start_monitoring, sync_rules
    from .prometheus import monitoring_config

    config = monitoring_config(specs)
    if config.mode == "compose":
        result = start_compose(state_dir, config, compose_options(specs), specs, gpu_inventory(), docker_host=docker_host,
                               progress=progress)
        changed = [f"{s.service} {s.action}" for s in result.services if s.action != "unchanged"]
        return Ensured(f"compose project {PROJECT}: {', '.join(changed) if changed else 'unchanged'}; "
                       f"Grafana at {result.urls['grafana']}, Prometheus at {result.urls['prometheus']}"
                       + (f"; Grafana's admin password was generated in {result.password_file}"
                          if result.password else ""), bool(changed))
    changed_rules = sync_rules(state_dir, specs)
    local = start_monitoring(state_dir, config, progress=progress)
    if changed_rules and local.action == "already running":
        reload_monitoring(state_dir)
    return Ensured(f"Prometheus {local.action} at {local.record.url}" + (f" ({local.reason})" if local.reason else ""),
                   local.action != "already running" or changed_rules)
