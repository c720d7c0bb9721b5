"""A Docker Compose file of the spec set's `runtime: docker` deployments: `enova render --format compose`.

Each replica becomes its own service, built from the same description the Docker runtime
creates a container from (enova.engines.container: `container_launch` + `container_spec`), so
the file holds the same image, argv, environment, labels, published port, mounts, GPUs, cores,
shared memory, IPC mode, network and health check. What the runtime decides at apply time is
decided here deterministically instead, so the same specs always render the same file:

- replica ids are `<deployment>-<n>`, n from 1 (no random suffix);
- host ports are handed out from `port_start` upward, in deployment-name then replica order;
- CPU deployments get cores from 0 upward, `resources.cpus` each, in the same order;
- GPUs: each replica gets `resources.gpus` device ids of its own, never shared. With `gpus`
  (render for a host with that many GPUs) the ids are "0".."gpus-1"; else this host's NVML
  UUIDs (`inventory_gpu_ids`) when there are any; else "0".."N-1", N being what the
  deployments need. Too few is a UsageError naming how many are needed;
- model folders: a builtin model is mounted from its model store folder
  (enova.modelstore.builtin.builtin_dir: nothing is converted by rendering), a local folder
  from its absolute path (resolved against its spec file's folder), a hub id is passed as is
  with the shared Hugging Face cache volume.

`restart` is "no": enova's plan replaces a failed replica; Docker restarting it behind enova's
back would fight the plan. Local deployments are skipped and named in the header.

The text comes from templates/compose/compose.yaml.j2 (every value through `tojson`, `$`
doubled beforehand so compose's variable interpolation leaves values as written). Before it is
returned it is validated against the Compose Specification's JSON Schema (vendored in
enova/apply/data/, see its README) and, when Compose v2 is installed, by `docker compose config
-q`; a failure there is a bug in enova and raises ComposeBug with the offending path.
Called by the CLI (`enova render`). Blocking only for the optional Compose check (a few
hundred ms at most).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import best_match

from enova.engines.container import container_launch, container_spec
from enova.engines.templates import render
from enova.engines.vllm import device_for
from enova.errors import PermanentError, UsageError
from enova.modelstore.builtin import builtin_dir
from enova.plan.auto import PlanFacts
from enova.plan.desired import desired_state
from enova.plan.model import DesiredDeployment
from enova.spec.loader import SpecSet
from enova.spec.models import classify_model

SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"
TEMPLATE = "compose/compose.yaml.j2"
PROJECT = "enova"
# Docker's own rule for volume and network names; compose keys must match ^[a-zA-Z0-9._-]+$
_DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
COMPOSE_CHECK_TIMEOUT_S = 60.0


class ComposeBug(PermanentError):
    """The rendered file is not a valid compose file: a bug in enova's rendering, not in the specs."""


@dataclass(frozen=True)
class _Replica:
    want: DesiredDeployment
    replica_id: str
    port: int
    cpus: list[int]
    gpus: list[str]


def render_compose(specs: SpecSet, *, cache_dir: Path, inventory_gpu_ids: list[str] | None, gpus: int | None,
                   port_start: int, revision: str = "", facts: PlanFacts | None = None) -> str:
    """The compose file (YAML text) for every `runtime: docker` deployment of `specs`; see the
    module docstring for how replicas get ids, ports, cores and GPUs. `facts`: what
    `engine.args: auto` is resolved against (enova.apply.facts.gather_facts). Deterministic.

    Raises UsageError when there is no docker deployment to render, when the GPUs are too few
    or a Docker name is unusable; PermanentError when a deployment cannot be planned (auto
    unresolvable) or its config cannot launch; ComposeBug when the result is not valid Compose."""
    desired = desired_state(specs, facts=facts)
    docker = [d for d in desired.values() if d.config.get("runtime") == "docker"]
    skipped = [(d.name, "runtime local: enova runs it as processes on this host, not as containers")
               for d in desired.values() if d.config.get("runtime") != "docker"]
    if not docker:
        names = ", ".join(name for name, _ in skipped) or "none"
        raise UsageError(f"no deployment with runtime docker to render (local deployments: {names})")
    for want in docker:
        if want.blocked:
            raise PermanentError(f"deployment {want.name} cannot be planned: {want.blocked}")
    replicas = _allocate(docker, inventory_gpu_ids, gpus, port_start)
    services = [_service(r, cache_dir, revision) for r in replicas]
    text = render(
        TEMPLATE, project=PROJECT, skipped=skipped,
        empty=[f"{d.name}: replicas 0, no service" for d in docker if d.replicas == 0],
        hosts=sorted({(d.name, d.config["docker"]["host"]) for d in docker
                      if (d.config.get("docker") or {}).get("host")}),
        services=services, volumes=_volumes(services), networks=_networks(services))
    validate_compose(text)
    check_with_compose_cli(text)
    return text


def _gpu_ids(needed: int, inventory: list[str] | None, gpus: int | None) -> tuple[list[str], str]:
    """The device ids replicas are given, in order, and where they came from (for the error)."""
    if gpus is not None:
        return [str(i) for i in range(gpus)], f"--gpus {gpus}"
    if inventory:
        return list(inventory), f"this host has {len(inventory)} (NVML)"
    return [str(i) for i in range(needed)], ""


def _allocate(docker: list[DesiredDeployment], inventory: list[str] | None, gpus: int | None,
              port_start: int) -> list[_Replica]:
    """Ids, ports, cores and GPUs for every replica, in deployment-name then replica order."""
    per_gpu = [(d, d.config["resources"]["gpus"]) for d in docker if device_for(d.config) == "gpu"]
    needed = sum(d.replicas * n for d, n in per_gpu)
    ids, source = _gpu_ids(needed, inventory, gpus)
    if len(ids) < needed:
        breakdown = ", ".join(f"{d.name}: {d.replicas} x {n}" for d, n in per_gpu if d.replicas)
        raise UsageError(f"the docker deployments need {needed} GPU(s) ({breakdown}), each replica its own, "
                         f"but {source} gives {len(ids)}; lower replicas or resources.gpus, or render with "
                         f"--gpus {needed} for a host that has them")
    out: list[_Replica] = []
    port, core, gpu = port_start, 0, 0
    for want in sorted(docker, key=lambda d: d.name):
        resources = want.config["resources"]
        for n in range(1, want.replicas + 1):
            if port > 65535:
                raise UsageError(f"ports from {port_start} run past 65535 before every replica has one; "
                                 "choose a lower port range (ENOVA_PORT_RANGE)")
            cpus, taken_gpus = [], []
            if device_for(want.config) == "gpu":
                taken_gpus, gpu = ids[gpu:gpu + resources["gpus"]], gpu + resources["gpus"]
            else:
                cpus, core = list(range(core, core + resources["cpus"])), core + resources["cpus"]
            out.append(_Replica(want, f"{want.name}-{n}", port, cpus, taken_gpus))
            port += 1
    return out


def model_source(want: DesiredDeployment, cache_dir: Path) -> tuple[str, str]:
    """(kind, path) of a deployment's model as the container mounts it: a builtin model's model
    store folder, a local folder's absolute path (against the spec file's folder), a hub id as is."""
    ref = want.config["model"]
    kind = classify_model(ref)
    if kind == "builtin":
        return kind, str(builtin_dir(ref.removeprefix("builtin:"), Path(cache_dir)))
    if kind == "local":
        return kind, os.path.normpath(os.path.join(want.base_dir, os.path.expanduser(ref)))
    return kind, ref


def replica_container(replica: _Replica, cache_dir: Path, revision: str):
    """The ContainerSpec of one replica: what the Docker runtime would create for it."""
    want = replica.want
    kind, path = model_source(want, cache_dir)
    launch = container_launch(deployment=want.name, replica_id=replica.replica_id, config=want.config,
                              config_hash=want.config_hash, model_kind=kind, model_path=path,
                              cpus=replica.cpus, gpus=replica.gpus)
    return container_spec(deployment=want.name, replica_id=replica.replica_id, config=want.config,
                          config_hash=want.config_hash, launch=launch, model_kind=kind, model_path=path,
                          host_port=replica.port, cpus=replica.cpus, gpus=replica.gpus,
                          start_timeout=want.start_timeout, revision=revision)


def literal(value: str) -> str:
    """`value` as compose must be given it to use it as written: `$` doubled (no interpolation)."""
    return value.replace("$", "$$")


def duration(seconds: float) -> str:
    """A compose duration: "10s", or "2500ms" for a fraction."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def _docker_name(name: str, what: str) -> str:
    if not _DOCKER_NAME.match(name):
        raise UsageError(f"{what} {name!r} is not a Docker name (letters, digits, '_', '.', '-', "
                         "starting with a letter or digit)")
    return name


def _service(replica: _Replica, cache_dir: Path, revision: str) -> dict[str, Any]:
    """What the template writes for one replica, every string already `literal`."""
    spec = replica_container(replica, cache_dir, revision)
    mounts = []
    for m in spec.mounts:
        source = _docker_name(m.source, "docker volume") if m.is_volume else m.source
        mounts.append({"type": "volume" if m.is_volume else "bind", "source": literal(source),
                       "target": literal(m.target), "read_only": m.read_only})
    health = spec.healthcheck
    return {
        "key": replica.replica_id, "deployment": replica.want.name, "source": replica.want.source,
        "config_hash": replica.want.config_hash,
        "name": spec.name, "image": literal(spec.image), "command": [literal(a) for a in spec.command],
        "env": sorted((k, literal(v)) for k, v in spec.env.items()),
        "labels": sorted((k, literal(v)) for k, v in spec.labels.items()),
        "bind": literal(spec.bind), "host_port": spec.host_port, "container_port": spec.container_port,
        "mounts": mounts, "volume_names": sorted(m.source for m in spec.mounts if m.is_volume),
        "gpu_ids": [literal(g) for g in spec.gpu_ids], "cpuset": spec.cpuset,
        "shm_size": literal(spec.shm_size), "ipc": literal(spec.ipc),
        "network": _docker_name(spec.network, "docker network") if spec.network else None,
        "healthcheck": None if health is None else {
            "test": [literal(t) for t in health.test], "interval": duration(health.interval_s),
            "timeout": duration(health.timeout_s), "retries": health.retries,
            "start_period": duration(health.start_period_s)},
    }


def _volumes(services: list[dict[str, Any]]) -> list[str]:
    return sorted({name for s in services for name in s["volume_names"]})


def _networks(services: list[dict[str, Any]]) -> list[str]:
    return sorted({s["network"] for s in services if s["network"]})


@lru_cache(maxsize=1)
def compose_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def _where(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def validate_compose(text: str) -> None:
    """Raise ComposeBug, naming each offending path, unless `text` is a valid compose file by the
    vendored Compose Specification schema."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ComposeBug(f"enova bug: the rendered compose file is not YAML: {exc}") from None
    validator = jsonschema.Draft7Validator(compose_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        # best_match: for a oneOf, the alternative that came closest (the object form of a port)
        problems = "; ".join(f"{_where(best)}: {best.message}" for best in (best_match([e]) for e in errors))
        raise ComposeBug(f"enova bug: the rendered compose file breaks the Compose Specification: {problems}")


@lru_cache(maxsize=1)
def compose_command() -> tuple[str, ...] | None:
    """The Compose v2 command installed here (`docker compose`, or a v2 `docker-compose`), or None.
    Compose v1 is left alone: it predates parts of the specification the file uses."""
    docker = shutil.which("docker")
    if docker and _runs([docker, "compose", "version"]):
        return (docker, "compose")
    legacy = shutil.which("docker-compose")
    if legacy:
        done = _run([legacy, "version", "--short"])
        if done is not None and done.returncode == 0 and done.stdout.strip().lstrip("v").startswith("2"):
            return (legacy,)
    return None


def _run(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=COMPOSE_CHECK_TIMEOUT_S, cwd=cwd,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _runs(argv: list[str]) -> bool:
    done = _run(argv)
    return done is not None and done.returncode == 0


def check_with_compose_cli(text: str) -> None:
    """`docker compose config -q` on `text` when Compose v2 is installed (silently nothing when it
    is not, or does not answer in time); raises ComposeBug with its message when it refuses."""
    command = compose_command()
    if command is None:
        return
    with tempfile.TemporaryDirectory(prefix="enova-compose-") as tmp:
        path = Path(tmp) / "compose.yaml"
        path.write_text(text)
        done = _run([*command, "--file", str(path), "config", "--quiet"], cwd=tmp)
    if done is not None and done.returncode != 0:
        message = (done.stderr or done.stdout).strip()
        raise ComposeBug(f"enova bug: `{' '.join(command[-2:] if len(command) > 1 else command)} config` "
                         f"refuses the rendered compose file: {message}")
