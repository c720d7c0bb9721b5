"""The Docker runtime: engine replicas as labelled containers on a Docker engine, local or
remote (`docker.host`: unix://, tcp://, ssh://, as the Docker SDK takes it).

A container is made from enova.engines.container.ContainerSpec: the engine's argv from the same
template as a local process, GPUs as NVIDIA device requests with explicit device ids, cores as a
cpuset, the port published on 127.0.0.1 by default, shared memory, a health check, and labels
that say it is enova's (deployment, replica id, config hash, revision, and the record itself).
No restart policy: an exited container is reported (exit code, last log lines) and replaced by
the plan, which a Docker restart policy would fight. enova never touches a container without
its `io.enova.managed-by` label. The handle is {"container": id, "docker_host": url}.

Implements enova.runtime.base.Runtime. The Docker SDK is the driver; its exceptions become
enova's errors here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlparse

from enova.engines import container as spec_of
from enova.engines.container import ContainerSpec
from enova.errors import PermanentError, TemporaryError
from enova.observe.gpus import Gpu, GpuInventory
from enova.observe.health import probe_many
from enova.observe.state import ReplicaRecord, StateStore

from .base import Discovered, Liveness, ReplicaStartError, StartRequest

Progress = Callable[[str], None]
# what a hub model's container needs from enova's environment to download weights
FORWARDED_ENV = ("HF_TOKEN", "HF_ENDPOINT", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY",
                 "https_proxy", "http_proxy", "no_proxy")
LOG_LINES_ON_EXIT = 5


def default_host() -> str:
    """The Docker engine a spec without docker.host means: DOCKER_HOST, else the local socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def is_local(host: str) -> bool:
    return urlparse(host).scheme in ("unix", "npipe", "")


def endpoint_host(host: str, bind: str) -> str:
    """Where enova reaches a container's published port: on this machine the bind address
    (127.0.0.1 for a wildcard); for a remote engine the bind address when it is a real one, else
    the engine's host name."""
    wildcard = bind in ("0.0.0.0", "::", "")
    if is_local(host):
        return "127.0.0.1" if wildcard else bind
    if wildcard or bind in ("127.0.0.1", "::1", "localhost"):
        return urlparse(host).hostname or "127.0.0.1"
    return bind


def create_kwargs(spec: ContainerSpec, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """The Docker SDK's containers.create arguments for `spec`. Pure."""
    from docker.types import DeviceRequest, Healthcheck, Mount

    mounts = [Mount(target=m.target, source=m.source, type="volume" if m.is_volume else "bind",
                    read_only=m.read_only) for m in spec.mounts]
    kwargs: dict[str, Any] = {
        "image": spec.image, "name": spec.name, "command": list(spec.command), "entrypoint": [],
        "environment": {**spec.env, **(extra_env or {})}, "labels": dict(spec.labels), "detach": True,
        "ports": {f"{spec.container_port}/tcp": (spec.bind, spec.host_port)}, "mounts": mounts,
        "shm_size": spec.shm_size, "ipc_mode": spec.ipc if spec.ipc != "private" else None,
        "restart_policy": {"Name": "no"},
    }
    if spec.gpu_ids:
        kwargs["device_requests"] = [DeviceRequest(driver="nvidia", device_ids=list(spec.gpu_ids),
                                                   capabilities=[["gpu"]])]
    if spec.cpuset:
        kwargs["cpuset_cpus"] = spec.cpuset
    if spec.network:
        kwargs["network"] = spec.network
    if spec.healthcheck is not None:
        hc = spec.healthcheck
        kwargs["healthcheck"] = Healthcheck(test=list(hc.test), interval=int(hc.interval_s * 1e9),
                                            timeout=int(hc.timeout_s * 1e9), retries=hc.retries,
                                            start_period=int(hc.start_period_s * 1e9))
    return {k: v for k, v in kwargs.items() if v is not None}


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__


class DockerRuntime:
    """Starts, watches and stops replica containers. Thread-safe: one Docker client per engine URL."""

    name = "docker"

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time,
                 progress: Progress = lambda m: None, hosts: Callable[[], Iterable[str]] = lambda: ()):
        self.store = store
        self.clock = clock
        self.progress = progress
        self.hosts = hosts          # engines to look for enova's containers on (besides the default)
        self._clients: dict[str, Any] = {}
        self._inventories: dict[str, GpuInventory] = {}

    # ---- the engine --------------------------------------------------------------------------
    def client(self, host: str | None) -> Any:
        """The Docker client for `host` (None: the default). Raises TemporaryError when the engine
        cannot be reached (it may be starting), naming it and what to check."""
        import docker
        from docker.errors import DockerException

        url = host or default_host()
        cached = self._clients.get(url)
        if cached is not None:
            return cached
        try:
            client = docker.DockerClient(base_url=url, timeout=30)
            client.ping()
        except DockerException as exc:
            raise TemporaryError(f"the Docker engine at {url} cannot be reached ({_first_line(exc)}); start "
                                 "dockerd there, or set docker.host (or DOCKER_HOST) to a reachable engine",
                                 delay=15.0) from None
        self._clients[url] = client
        return client

    def _container(self, record: ReplicaRecord) -> Any | None:
        """The record's container if it exists and is enova's replica of that id; None otherwise."""
        from docker.errors import DockerException, NotFound

        handle = record.handle or {}
        try:
            container = self.client(handle.get("docker_host") or None).containers.get(handle.get("container", ""))
        except NotFound:
            return None
        except (DockerException, TemporaryError):
            raise
        labels = container.labels or {}
        if labels.get(spec_of.MANAGED_BY) != spec_of.MANAGER or labels.get(spec_of.REPLICA) != record.id:
            return None  # not ours (a name or id reused): never touched
        return container

    # ---- the Runtime interface ---------------------------------------------------------------
    def check(self, config: dict[str, Any]) -> list[str]:
        from docker.errors import DockerException, ImageNotFound

        docker_cfg = config.get("docker") or {}
        host = docker_cfg.get("host") or default_host()
        image = config.get("image") or spec_of.DEFAULT_GPU_IMAGE
        try:
            client = self.client(host)
        except TemporaryError as exc:
            return [str(exc)]
        problems = []
        try:
            client.images.get(image)
        except ImageNotFound:
            problems.append(f"the image {image} is not on the Docker engine at {host}; get it with "
                            f"`docker pull {image}` there (or `docker load -i FILE` where there is no registry)")
        except DockerException as exc:
            problems.append(f"the Docker engine at {host} could not be asked for {image}: {_first_line(exc)}")
        if config["resources"]["gpus"] >= 1:
            runtimes = (client.info() or {}).get("Runtimes") or {}
            if "nvidia" not in runtimes and not _has_cdi(client):
                problems.append(f"resources.gpus is {config['resources']['gpus']} but the Docker engine at {host} "
                                "has no NVIDIA runtime; install the NVIDIA Container Toolkit there "
                                "(nvidia-ctk runtime configure --runtime=docker)")
        if not is_local(host) and config.get("model", "").startswith(("builtin:", "/", "./", "../", "~")):
            problems.append(f"model {config['model']}: a folder on this machine cannot be mounted into the remote "
                            f"Docker engine at {host}; use a Hugging Face id, or mount it there with docker.volumes")
        return problems

    def start(self, request: StartRequest) -> ReplicaRecord:
        from docker.errors import APIError, DockerException

        docker_cfg = request.config.get("docker") or {}
        host = docker_cfg.get("host") or default_host()
        client = self.client(host)
        record = ReplicaRecord(
            id=request.replica_id, deployment=request.deployment, host=request.endpoint.host,
            port=request.endpoint.port, config_hash=request.config_hash, config=request.config,
            argv=list(request.launch.argv), log="", runtime=self.name,
            handle={"container": "", "docker_host": host}, state="starting", started_at=self.clock(),
            start_timeout=request.start_timeout, cpus=list(request.cpus), gpus=list(request.gpus),
            model_path=request.model_path)
        spec = spec_of.container_spec(
            deployment=request.deployment, replica_id=request.replica_id, config=request.config,
            config_hash=request.config_hash, launch=request.launch, model_kind=request.model_kind,
            model_path=request.model_path, host_port=request.endpoint.port, cpus=list(request.cpus),
            gpus=list(request.gpus), start_timeout=request.start_timeout, revision=request.revision,
            record=_label_record(record, request))
        extra = {k: os.environ[k] for k in FORWARDED_ENV if request.model_kind == "hub" and os.environ.get(k)}
        container = None
        try:
            container = client.containers.create(**create_kwargs(spec, extra))
            record.handle = {"container": container.id, "docker_host": host}
            self.store.write_replica(record)
            container.start()
        except (APIError, DockerException) as exc:
            self._remove_quietly(container)
            self.store.remove_replica(record.deployment, record.id)
            raise self._start_error(request, spec, exc) from None
        return record

    def _start_error(self, request: StartRequest, spec: ContainerSpec, exc: BaseException) -> Exception:
        text = _first_line(exc)
        where = f"{request.deployment}: container {spec.name} ({spec.image})"
        if "port is already allocated" in text or "address already in use" in text:
            holder = self._port_holder(request.config, spec.host_port)
            return ReplicaStartError(f"{where}: {spec.bind}:{spec.host_port} is taken by {holder or 'a process'}, "
                                     f"which enova did not start (conflict): {text}", delay=5.0)
        if "No such image" in text:
            return PermanentError(f"{where}: the image is missing: `docker pull {spec.image}`")
        if "could not select device driver" in text:
            return PermanentError(f"{where}: the engine cannot give it GPUs ({text}); install the NVIDIA "
                                  "Container Toolkit on the Docker host")
        return ReplicaStartError(f"{where} could not be started: {text}")

    def _port_holder(self, config: dict[str, Any], port: int) -> str:
        """"container NAME (id)" when a container publishes `port` on the deployment's engine."""
        from docker.errors import DockerException
        try:
            client = self.client((config.get("docker") or {}).get("host") or None)
            holders = client.containers.list(filters={"publish": str(port)})
        except (DockerException, TemporaryError):
            return ""
        return ", ".join(f"container {c.name} ({c.short_id})" for c in holders)

    @staticmethod
    def _remove_quietly(container: Any) -> None:
        from docker.errors import DockerException
        if container is None:
            return
        try:
            container.remove(force=True)
        except DockerException:
            pass

    def liveness(self, record: ReplicaRecord) -> Liveness:
        from docker.errors import DockerException
        try:
            container = self._container(record)
        except (DockerException, TemporaryError) as exc:
            # the engine is out of reach: not known to be gone; report alive so nothing is replaced blindly
            return Liveness(True, f"Docker engine unreachable: {_first_line(exc)}")
        if container is None:
            return Liveness(False, f"container {self.describe(record)} is gone")
        state = container.attrs.get("State") or {}
        if state.get("Running") and not state.get("Restarting"):
            return Liveness(True)
        code = state.get("ExitCode")
        tail = self._tail(container, LOG_LINES_ON_EXIT)
        detail = f"container {container.short_id} exited with code {code}"
        if state.get("OOMKilled"):
            detail += " (out of memory)"
        return Liveness(False, detail + (f"; last lines: {tail}" if tail else ""))

    def probe(self, records: Iterable[ReplicaRecord], timeout: float = 2.0) -> dict[str, bool]:
        records = list(records)
        health = probe_many(((r.host, r.port) for r in records), timeout)
        return {r.id: health.get((r.host, r.port), False) for r in records}

    def stop(self, record: ReplicaRecord, grace: float = 30.0) -> float:
        """docker stop (SIGTERM, SIGKILL after `grace`), then remove the container and the record."""
        from docker.errors import DockerException, NotFound
        began = time.monotonic()
        container = self._container(record)
        if container is not None:
            record.state = "stopping"
            self.store.write_replica(record)
            try:
                container.stop(timeout=int(max(1, grace)))
                container.remove(force=True)
            except NotFound:
                pass
            except DockerException as exc:
                raise TemporaryError(f"{record.deployment}: stopping {self.describe(record)} failed: "
                                     f"{_first_line(exc)}") from None
        self.store.remove_replica(record.deployment, record.id)
        return time.monotonic() - began

    def forget(self, record: ReplicaRecord) -> None:
        """Remove an exited container (enova's, by label) and its record."""
        try:
            self._remove_quietly(self._container(record))
        except TemporaryError:
            pass
        self.store.remove_replica(record.deployment, record.id)

    def _tail(self, container: Any, lines: int) -> str:
        from docker.errors import DockerException
        try:
            raw = container.logs(tail=lines)
        except DockerException:
            return ""
        return raw.decode(errors="replace").strip().replace("\n", " | ")

    def log_tail(self, record: ReplicaRecord, lines: int = 25) -> str:
        from docker.errors import DockerException
        try:
            container = self._container(record)
            if container is None:
                return "(container gone)"
            return container.logs(tail=lines).decode(errors="replace").rstrip()
        except (DockerException, TemporaryError) as exc:
            return f"(no log: {_first_line(exc)})"

    def logs(self, record: ReplicaRecord, tail: int = 100, follow: bool = False) -> Iterator[str]:
        container = self._container(record)
        if container is None:
            return iter(())
        if not follow:
            return iter(container.logs(tail=tail).decode(errors="replace").splitlines())
        return _lines(container.logs(stream=True, follow=True, tail=tail))

    def describe(self, record: ReplicaRecord) -> str:
        return f"container {str((record.handle or {}).get('container', ''))[:12] or '?'}"

    def inventory(self, config: dict[str, Any]) -> GpuInventory | None:
        """A remote engine's GPUs, asked of NVIDIA's own tool in a throwaway container of the
        deployment's image (the NVIDIA runtime mounts nvidia-smi into it), once per engine.
        None for the local engine: this host's NVML applies."""
        from docker.errors import DockerException

        docker_cfg = config.get("docker") or {}
        host = docker_cfg.get("host") or default_host()
        if is_local(host) or config["resources"]["gpus"] < 1:
            return None
        if host in self._inventories:
            return self._inventories[host]
        from docker.types import DeviceRequest
        image = config.get("image") or spec_of.DEFAULT_GPU_IMAGE
        try:
            out = self.client(host).containers.run(
                image, entrypoint=["nvidia-smi"], remove=True, labels={spec_of.MANAGED_BY + "-probe": "gpus"},
                command=["--query-gpu=index,uuid,name,memory.total,memory.used", "--format=csv,noheader,nounits"],
                device_requests=[DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu"]])])
            inventory = parse_nvidia_smi(out.decode(errors="replace"), f"nvidia-smi on {host}")
        except (DockerException, TemporaryError) as exc:
            inventory = GpuInventory(reason=f"the GPUs of {host} could not be listed: {_first_line(exc)}")
        self._inventories[host] = inventory
        return inventory

    def discover(self, known: set[str]) -> list[Discovered]:
        """enova's containers (by label) on the default engine and every engine the specs or
        records name, whose replica ids have no record. Unreachable engines are skipped."""
        from docker.errors import DockerException
        found: dict[str, Discovered] = {}
        hosts = {default_host(), *self.hosts(),
                 *((r.handle or {}).get("docker_host") for r in self.store.all_replicas() if r.runtime == self.name)}
        for host in sorted(h for h in hosts if h):
            try:
                containers = self.client(host).containers.list(
                    all=True, filters={"label": f"{spec_of.MANAGED_BY}={spec_of.MANAGER}"})
            except (DockerException, TemporaryError):
                continue
            for container in containers:
                item = _discovered(container, host, self.name)
                if item is not None and item.record.id not in known and item.record.id not in found:
                    found[item.record.id] = item
        return [found[k] for k in sorted(found)]


def parse_nvidia_smi(text: str, driver: str) -> GpuInventory:
    """`nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            gpus.append(Gpu(index=int(parts[0]), uuid=parts[1], name=parts[2],
                            memory_total_mib=int(float(parts[3])), memory_used_mib=int(float(parts[4]))))
        except ValueError:
            continue
    return GpuInventory(gpus=tuple(gpus), driver=driver, reason="" if gpus else f"{driver} listed no GPU")


def _has_cdi(client: Any) -> bool:
    info = client.info() or {}
    return bool(info.get("CDISpecDirs"))


def _lines(stream: Iterable[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode(errors="replace")
    if buffer:
        yield buffer.decode(errors="replace")


def _label_record(record: ReplicaRecord, request: StartRequest) -> dict[str, Any]:
    """What the record label carries: enough to rebuild the replica's record and its
    deployment's in-place fields when a fresh enova adopts the container."""
    return {"host": record.host, "port": record.port, "config": record.config, "argv": record.argv,
            "start_timeout": record.start_timeout, "cpus": record.cpus, "gpus": record.gpus,
            "model_path": record.model_path, "serving": request.serving, "settings": request.settings}


def _started_at(container: Any) -> float:
    from datetime import datetime
    text = (container.attrs.get("State") or {}).get("StartedAt") or ""
    try:
        return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return time.time()


def _discovered(container: Any, host: str, runtime: str) -> Discovered | None:
    labels = container.labels or {}
    try:
        data = json.loads(labels.get(spec_of.RECORD, ""))
        replica, deployment = labels[spec_of.REPLICA], labels[spec_of.DEPLOYMENT]
    except (ValueError, KeyError):
        return None  # labelled by an enova that wrote no record label: not adopted blindly
    state = container.attrs.get("State") or {}
    healthy = (state.get("Health") or {}).get("Status") == "healthy"
    record = ReplicaRecord(
        id=replica, deployment=deployment, host=data.get("host", "127.0.0.1"), port=int(data.get("port", 0)),
        config_hash=labels.get(spec_of.CONFIG_HASH, ""), config=data.get("config") or {},
        argv=list(data.get("argv") or []), log="", runtime=runtime,
        handle={"container": container.id, "docker_host": host},
        state="ready" if healthy else "starting", started_at=_started_at(container),
        start_timeout=float(data.get("start_timeout", 600.0)), cpus=list(data.get("cpus") or []),
        gpus=list(data.get("gpus") or []), model_path=data.get("model_path", ""))
    return Discovered(record, dict(data.get("serving") or {}), dict(data.get("settings") or {}))
