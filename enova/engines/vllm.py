"""How to launch and probe vLLM: the CPU build (gpus == 0) and the CUDA build (gpus >= 1).

`render_launch` turns a replica config and the resources assigned to it into an argv and
environment, from templates/vllm/*. It is pure (no process is started here) so GPU launches
are tested by rendering even on machines without a GPU. `engine_problem` says whether the
needed build is installed. Called by apply.local.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from dataclasses import dataclass
from typing import Any

from .templates import load_yaml, render_yaml

HEALTH_PATH = "/health"


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
    merged.update(config["engine"]["args"])
    return merged


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
    """VLLM_CPU_OMP_THREADS_BIND for `ranks` tensor-parallel ranks over `cpus`, split evenly."""
    if ranks < 1 or len(cpus) < ranks:
        raise ValueError(f"{len(cpus)} CPU core(s) cannot host {ranks} tensor-parallel rank(s)")
    per = len(cpus) // ranks
    groups = [cpus[i * per:(i + 1) * per] for i in range(ranks)]
    return "|".join(",".join(str(c) for c in g) for g in groups)


def render_launch(*, deployment: str, replica_id: str, config: dict[str, Any], config_hash: str,
                  model_path: str, offline: bool, host: str, port: int,
                  cpus: list[int], gpus: list[str], python: str | None = None) -> Launch:
    """The argv and env for one replica. Pure; raises ValueError on impossible resources."""
    device = device_for(config)
    args = engine_args(config)
    python = python or sys.executable
    tp = int(args.get("tensor_parallel_size", 1) or 1)
    if device == "gpu" and len(gpus) != config["resources"]["gpus"]:
        raise ValueError(f"{config['resources']['gpus']} GPU(s) requested, {len(gpus)} assigned")
    pin: list[str] = []
    if device == "cpu":
        pin = [python, "-m", "enova.engines.pin", "--cpus", ",".join(str(c) for c in cpus), "--"]
    argv = render_yaml(
        "vllm/argv.yaml.j2",
        pin=pin, python=python, model=model_path, served_model_name=deployment,
        host=host, port=port,
        args=[_flag_values(k, args[k]) for k in sorted(args)],
    )
    env = render_yaml(
        "vllm/env.yaml.j2",
        device=device, offline=offline, gpus=gpus,
        omp_bind=omp_bind(cpus, tp) if device == "cpu" else "",
        deployment=deployment, replica_id=replica_id, config_hash=config_hash,
    )
    env = {str(k): str(v) for k, v in env.items()}
    env.update(config["engine"]["env"])
    if not all(isinstance(a, str) for a in argv):
        raise ValueError("rendered argv holds a non-string element")
    return Launch(argv=argv, env=env, device=device)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


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
