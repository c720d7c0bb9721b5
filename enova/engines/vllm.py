"""How to launch and probe vLLM: the CPU build (gpus == 0) and the CUDA build (gpus >= 1).

`render_launch` turns a replica config and the resources assigned to it into an argv and
environment, from templates/vllm/*. It is pure (no process is started here) so GPU launches
are tested by rendering even on machines without a GPU. `launch_problems` says, before any
allocation, whether a config's parallelism fits its resources; `engine_problem` whether the
needed build is installed. Called by apply.executor (preflight, rendering a launch).
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from enova.errors import PermanentError
from enova.spec.models import AUTO_ARG

from .templates import load_yaml, render_yaml

HEALTH_PATH = "/health"
KV_SPACE_ENV = "VLLM_CPU_KVCACHE_SPACE"  # GiB; vLLM's CPU build gives it precedence over --kv-cache-memory-bytes


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]   # what enova adds to its own environment
    device: str           # "cpu" | "gpu"


def device_for(config: dict[str, Any]) -> str:
    return "gpu" if config["resources"]["gpus"] >= 1 else "cpu"


def engine_args(config: dict[str, Any]) -> dict[str, Any]:
    """The spec's engine args over the device defaults (spec wins), snake_case keys."""
    device = device_for(config)
    merged: dict[str, Any] = dict(load_yaml("vllm/defaults.yaml").get(device) or {})
    if device == "gpu":
        merged["tensor_parallel_size"] = config["resources"]["gpus"]
    if AUTO_ARG in config["engine"]["args"]:
        raise ValueError("engine.args still holds `auto`: plan.desired resolves it before a launch is rendered")
    if device == "cpu" and KV_SPACE_ENV in config["engine"]["env"]:
        merged.pop("kv_cache_memory_bytes", None)  # the spec sizes the KV cache by the env variable
    merged.update(config["engine"]["args"])
    return merged


_PARALLEL = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def _ranks(args: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Each parallelism arg's value (1 when unset) and a problem per one that is not a whole number >= 1."""
    sizes: dict[str, Any] = {}
    problems = []
    for name in _PARALLEL:
        value = args.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"engine.args.{name}: must be a whole number >= 1 (got {value!r})")
        sizes[name] = value
    return sizes, problems


def launch_problems(config: dict[str, Any]) -> list[str]:
    """Why replicas of the replica config `config` (plan.desired.replica_config's shape) cannot
    start with the resources it asks for, one sentence per problem naming the field; [] if they
    can. Pure. CPU build: every rank (tensor x pipeline x data parallel) gets its own cores, so
    resources.cpus must be at least that product. CUDA build: the product must equal resources.gpus."""
    args = engine_args(config)
    sizes, problems = _ranks(args)
    if problems:
        return problems
    ranks = sizes["tensor_parallel_size"] * sizes["pipeline_parallel_size"] * sizes["data_parallel_size"]
    written = config["engine"]["args"]
    product = " x ".join(
        f"{name} {sizes[name]}" + ("" if name in written else " (from resources.gpus)")
        for name in _PARALLEL if name in written or sizes[name] != 1)
    resources = config["resources"]
    if device_for(config) == "cpu":
        if ranks > resources["cpus"]:
            problems.append(f"engine.args: {product} is {ranks} rank(s), each bound to its own CPU core, "
                            f"but resources.cpus is {resources['cpus']}; raise resources.cpus to at least {ranks}")
    elif ranks != resources["gpus"]:
        problems.append(f"engine.args: {product} uses {ranks} GPU(s) per replica, but resources.gpus "
                        f"is {resources['gpus']}; make them equal")
    return problems


def _flag_values(key: str, value: Any) -> tuple[str, list[str]]:
    flag = "--" + key.replace("_", "-")
    if value is True:
        return flag, []
    if value is False:
        return "--no-" + key.replace("_", "-"), []
    if isinstance(value, list):
        return flag, [v if isinstance(v, str) else json.dumps(v) for v in value]
    if isinstance(value, dict):
        return flag, [json.dumps(value, sort_keys=True)]
    return flag, [value if isinstance(value, str) else json.dumps(value)]


def omp_bind(cpus: list[int], ranks: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `ranks` ranks (tensor x pipeline x data parallel) over `cpus`,
    split evenly; vLLM's CPU worker takes one "|"-separated group per rank."""
    if ranks < 1 or len(cpus) < ranks:
        raise ValueError(f"{len(cpus)} CPU core(s) cannot host {ranks} tensor-parallel rank(s)")
    per = len(cpus) // ranks
    groups = [cpus[i * per:(i + 1) * per] for i in range(ranks)]
    return "|".join(",".join(str(c) for c in g) for g in groups)


def render_launch(*, deployment: str, replica_id: str, config: dict[str, Any], config_hash: str,
                  model_path: str, offline: bool, host: str, port: int,
                  cpus: list[int], gpus: list[str], python: str | None = None,
                  container: bool = False) -> Launch:
    """The argv and env for one replica. Pure. Raises PermanentError when the config's resources
    are impossible (see launch_problems), ValueError when the cores or GPUs assigned do not match
    what the config asks for (a bug in allocation). `container`: for a container, which pins its
    cores by cpuset (no trampoline) and gets its GPUs as device requests (no CUDA_VISIBLE_DEVICES)."""
    problems = launch_problems(config)
    if problems:
        raise PermanentError(f"{deployment}: " + "; ".join(problems))
    device = device_for(config)
    args = engine_args(config)
    python = python or sys.executable
    ranks = 1
    for name in _PARALLEL:
        ranks *= args.get(name, 1)
    if device == "gpu" and len(gpus) != config["resources"]["gpus"]:
        raise PermanentError(f"{deployment}: {config['resources']['gpus']} GPU(s) requested, {len(gpus)} assigned")
    pin: list[str] = []
    if device == "cpu" and not container:
        pin = [python, "-m", "enova.engines.pin", "--cpus", ",".join(str(c) for c in cpus), "--"]
    argv = render_yaml(
        "vllm/argv.yaml.j2",
        pin=pin, python=python, model=model_path, served_model_name=deployment,
        host=host, port=port,
        args=[_flag_values(k, args[k]) for k in sorted(args)],
    )
    env = render_yaml(
        "vllm/env.yaml.j2",
        device=device, offline=offline, gpus=gpus, gpus_by_env=not container,
        omp_bind=omp_bind(cpus, ranks) if device == "cpu" else "",
        deployment=deployment, replica_id=replica_id, config_hash=config_hash,
    )
    env = {str(k): str(v) for k, v in env.items()}
    env.update(config["engine"]["env"])
    if not all(isinstance(a, str) for a in argv):
        raise ValueError("rendered argv holds a non-string element")
    return Launch(argv=argv, env=env, device=device)


_VERSIONS: dict[str, tuple[float, str | None]] = {}
VERSION_TTL = 30.0  # package metadata costs ~2 ms a read; an install is seen within this long


def _version(dist: str) -> str | None:
    """The installed version of `dist` (None if absent), remembered for VERSION_TTL seconds:
    validation asks once per deployment, and a long-running reconciler must still see an install."""
    now = time.monotonic()
    cached = _VERSIONS.get(dist)
    if cached is not None and now - cached[0] < VERSION_TTL:
        return cached[1]
    try:
        version: str | None = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = None
    _VERSIONS[dist] = (now, version)
    return version


def engine_problem(device: str) -> str | None:
    """None if the vLLM build for `device` is installed in this interpreter, else what to do."""
    cpu_build = _version("vllm-cpu")
    plain = _version("vllm")
    if device == "cpu":
        if cpu_build or (plain and "cpu" in plain):
            return None
        if plain:
            return (f"vLLM {plain} here is the CUDA build; deployments with resources.gpus: 0 need the "
                    "CPU build: pip install 'enova[cpu]'")
        return "vLLM is not installed; for the CPU engine: pip install 'enova[cpu]'"
    if plain and "cpu" not in plain:
        return None
    if cpu_build or plain:
        return ("only vLLM's CPU build is installed; deployments with resources.gpus >= 1 need the "
                "CUDA build: pip install 'enova[gpu]'")
    return "vLLM is not installed; on a GPU host: pip install 'enova[gpu]'"
