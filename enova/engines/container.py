"""One replica as a container: image, argv, environment, labels, the published port, mounts,
GPU device requests, cpuset, shared memory and a health check, as plain data.

The one description both the Docker runtime (enova.runtime.docker, which turns it into Docker
SDK calls) and compose rendering (enova.apply.compose, which writes it as a compose service)
are made from, so a rendered compose file is what the runtime creates. The argv comes from the
same template as a local process (enova.engines.vllm.render_launch with container=True). Pure.

Labels make ownership explicit: every container enova creates carries `io.enova.managed-by`,
the deployment, the replica id, the config hash, the spec revision, and a record label (JSON)
from which a fresh enova with an empty state directory rebuilds the replica's record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from enova.spec.models import DEFAULT_GPU_IMAGE

from .vllm import Launch, device_for, render_launch

CONTAINER_PORT = 8000          # the engine's port inside every container
HF_CACHE_VOLUME = "enova-hf-cache"   # a named volume: weights downloaded once per Docker host
# where the volume is mounted, named to the engine by HF_HOME, so it holds whatever user the image runs as
HF_CACHE_TARGET = "/hf-cache"
MODELS_TARGET = "/models"      # local and builtin model folders are mounted read-only below it

LABEL = "io.enova."
MANAGED_BY = LABEL + "managed-by"
DEPLOYMENT = LABEL + "deployment"
REPLICA = LABEL + "replica"
CONFIG_HASH = LABEL + "config-hash"
REVISION = LABEL + "revision"
RECORD = LABEL + "record"
MANAGER = "enova"


@dataclass(frozen=True)
class Mount:
    source: str        # a host path (bind) or a volume name
    target: str
    read_only: bool = True

    @property
    def is_volume(self) -> bool:
        return not self.source.startswith(("/", "~", "."))


@dataclass(frozen=True)
class HealthCheck:
    test: tuple[str, ...]
    interval_s: float = 10.0
    timeout_s: float = 5.0
    retries: int = 3
    start_period_s: float = 600.0


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...]            # the whole argv; the image's entrypoint is cleared
    env: dict[str, str]
    labels: dict[str, str]
    bind: str                           # host address the port is published on
    host_port: int
    container_port: int
    mounts: tuple[Mount, ...]
    gpu_ids: tuple[str, ...] = ()       # device ids for the NVIDIA device request (UUIDs or indices)
    cpuset: str = ""                    # "0,1": the cores it may run on (CPU engine)
    shm_size: str = "2g"
    ipc: str = "private"
    network: str | None = None
    healthcheck: HealthCheck | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def container_name(replica_id: str) -> str:
    return f"enova-{replica_id}"


def parse_volume(text: str) -> Mount:
    """`host_path:container_path[:ro|rw]` (a named volume works as host_path), as a spec writes
    it (validated there). A host path's `~` is expanded."""
    parts = text.split(":")
    mode = parts[2] if len(parts) > 2 else "rw"
    source = os.path.expanduser(parts[0])
    return Mount(source=source, target=parts[1], read_only=mode == "ro")


def model_mount(model_kind: str, model_path: str) -> tuple[str, tuple[Mount, ...]]:
    """Where the engine finds the model inside the container, and what to mount for it: a
    folder (builtin or local) read-only below /models; a hub id as is, with the shared Hugging
    Face cache volume (at HF_CACHE_TARGET, named by HF_HOME) so weights are downloaded once per
    Docker host."""
    if model_kind == "hub":
        return model_path, (Mount(HF_CACHE_VOLUME, HF_CACHE_TARGET, read_only=False),)
    target = f"{MODELS_TARGET}/{os.path.basename(os.path.normpath(model_path))}"
    return target, (Mount(model_path, target, read_only=True),)


def health_check(start_timeout: float) -> HealthCheck:
    """Docker's own view of the engine's health (shown by `docker ps`); enova probes /health
    through the published port itself and never acts on Docker's verdict alone."""
    probe = ("import sys, urllib.request; "
             f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}/health', timeout=4).status "
             "== 200 else 1)")
    return HealthCheck(test=("CMD", "python3", "-c", probe), start_period_s=max(30.0, start_timeout))


def container_launch(*, deployment: str, replica_id: str, config: dict[str, Any], config_hash: str,
                     model_kind: str, model_path: str, cpus: list[int], gpus: list[str]) -> Launch:
    """The engine's argv and env inside a container, from the same template as a local process:
    bound to 0.0.0.0:CONTAINER_PORT, the model at its mount point, no pinning trampoline (the
    cpuset pins), no CUDA_VISIBLE_DEVICES (the device request does)."""
    engine_model, _ = model_mount(model_kind, model_path)
    return render_launch(
        deployment=deployment, replica_id=replica_id, config=config, config_hash=config_hash,
        model_path=engine_model, offline=model_kind != "hub", host="0.0.0.0", port=CONTAINER_PORT,
        cpus=cpus, gpus=gpus, python="python3", container=True)


def container_spec(*, deployment: str, replica_id: str, config: dict[str, Any], config_hash: str,
                   launch: Launch, model_kind: str, model_path: str, host_port: int, cpus: list[int],
                   gpus: list[str], start_timeout: float, revision: str = "",
                   record: dict[str, Any] | None = None) -> ContainerSpec:
    """The container of one replica running `launch` (container_launch's, or any argv that
    serves /health on CONTAINER_PORT). `gpus`: device ids (NVML UUIDs from the inventory, or
    indices when rendering for another host); `record`: what the record label carries for
    adoption."""
    docker = config.get("docker") or {}
    _, mounts = model_mount(model_kind, model_path)
    env = dict(launch.env)
    if model_kind == "hub":
        env["HF_HOME"] = HF_CACHE_TARGET
    env.update({str(k): str(v) for k, v in (docker.get("env") or {}).items()})
    labels = {MANAGED_BY: MANAGER, DEPLOYMENT: deployment, REPLICA: replica_id, CONFIG_HASH: config_hash,
              REVISION: revision}
    if record is not None:
        labels[RECORD] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    extra = tuple(parse_volume(v) for v in docker.get("volumes") or [])
    return ContainerSpec(
        name=container_name(replica_id), image=config.get("image") or DEFAULT_GPU_IMAGE,
        command=tuple(launch.argv), env=env, labels=labels, bind=docker.get("bind") or "127.0.0.1",
        host_port=host_port, container_port=CONTAINER_PORT, mounts=mounts + extra,
        gpu_ids=tuple(gpus) if device_for(config) == "gpu" else (),
        cpuset=",".join(str(c) for c in cpus) if device_for(config) == "cpu" else "",
        shm_size=docker.get("shm_size") or "2g", ipc=docker.get("ipc") or "private",
        network=docker.get("network"), healthcheck=health_check(start_timeout))
