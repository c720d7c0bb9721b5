"""`enova recommend`: gather the inputs (the model's config, the GPUs or the CPU host, a
LoadProfile and a measured replica capacity) and call the pure recommender.

One function, `advise`, shared by the CLI, the application server and pilot. Drivers used:
enova.modelstore.config (config.json from a folder, the model store or the Hub), NVML and
/proc/meminfo, the injector's prompt sets and results. Raises EnovaError subclasses: Refusal
and ConfigError (exit 2), UsageError (exit 2) for a bad option.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enova.apply.facts import host_facts
from enova.errors import UsageError
from enova.modelstore.config import read_geometry
from enova.observe.gpus import GpuInventory, gpu_inventory
from enova.observe.host import HostMemory, host_memory
from enova.recommend.gpus import from_nvml, gpu_target, memory_target, parse_memory
from enova.recommend.model import CpuTarget, Lengths, Recommendation, Target, Workload
from enova.recommend.sizing import recommend
from enova.recommend.workload import workload
from enova.spec.loader import SpecSet


@dataclass(frozen=True)
class Request:
    """What `enova recommend` was asked. gpu: a catalogue name; gpu_memory: "24GiB"; neither:
    the GPUs NVML finds, else the CPU engine on this host (cpus cores, memory: "24GiB" or the
    host's). fixed: engine args the user sets (kept as given)."""

    model: str
    gpu: str | None = None
    gpu_memory: str | None = None
    gpus: int | None = None
    cpus: int | None = None
    memory: str | None = None
    profile: str | None = None
    capacity_rps: float | None = None
    capacity_from: Path | None = None
    run_replicas: int = 1
    fixed: Mapping[str, Any] = field(default_factory=dict)
    kv_cache_dtype: str = "auto"


def target_for(req: Request, inventory: Callable[[], GpuInventory] = gpu_inventory,
               memory: Callable[[], HostMemory] = host_memory) -> Target:
    """The hardware to size for, from the options or from this host."""
    if req.gpu and req.gpu_memory:
        raise UsageError("give --gpu NAME or --gpu-memory SIZE, not both")
    count = req.gpus or 1
    if req.gpus is not None and req.gpus < 1:
        raise UsageError(f"--gpus: must be >= 1 (got {req.gpus})")
    if req.gpu:
        return gpu_target(req.gpu, count)
    if req.gpu_memory:
        return memory_target(parse_memory(req.gpu_memory), count)
    facts = host_facts(inventory(), memory())
    if facts.gpus:
        if req.gpus is not None and req.gpus > len(facts.gpus):
            raise UsageError(f"--gpus {req.gpus}: this host has {len(facts.gpus)} GPU(s)")
        smallest = min(facts.gpus, key=lambda g: g.memory_bytes)
        return from_nvml(smallest.name, smallest.memory_bytes, req.gpus or len(facts.gpus))
    if req.gpus is not None:
        raise UsageError(f"--gpus {req.gpus}: this host has no GPU ({facts.gpu_reason}); name one with --gpu or "
                         "--gpu-memory to size for another host")
    total = parse_memory(req.memory) if req.memory else facts.memory_total
    available = min(total, facts.memory_available) if not req.memory else total
    cores = req.cpus or 1
    if cores < 1:
        raise UsageError(f"--cpus: must be >= 1 (got {cores})")
    return CpuTarget(total_bytes=total, available_bytes=available, cores=cores,
                     source="--memory" if req.memory else "/proc/meminfo")


def _capacity(req: Request) -> tuple[float | None, str]:
    if req.capacity_rps is not None:
        if req.capacity_rps <= 0:
            raise UsageError(f"--capacity: must be > 0 requests/s (got {req.capacity_rps:g})")
        return req.capacity_rps, "--capacity (given)"
    if req.capacity_from is None:
        return None, ("no measured replica capacity: run `enova inject run PROFILE -o run.json` against one "
                      "replica and pass --capacity-from run.json (or --capacity RPS)")
    from enova.inject.results import summarize
    from enova.inject.session import read_result
    summary = summarize(read_result(req.capacity_from))
    if not summary.ok or summary.span <= 0:
        raise UsageError(f"--capacity-from {req.capacity_from}: the run has no successful request to measure")
    per_replica = summary.request_throughput / max(1, req.run_replicas)
    saturated = summary.achieved_rate < 0.95 * summary.target_rate if summary.target_rate else True
    bound = "" if saturated else "; a lower bound: the run got every request it sent served, so a replica may take more"
    return per_replica, (f"measured in {req.capacity_from}: {summary.ok} requests succeeded over {summary.span:.1f} s "
                         f"on {max(1, req.run_replicas)} replica(s){bound}")


def _prompt_lengths(specs: SpecSet, name: str, cache_dir: Path) -> Lengths | None:
    """Token lengths of a profile's prompt set (builtin or file), counted with the target
    model's tokenizer when it can be loaded; None otherwise (sizing then says it is unknown)."""
    from enova.inject.datasets import count_tokens, load_prompts
    from enova.inject.session import _tokenizer_for
    located = specs.load_profiles[name]
    spec = located.doc.spec
    if spec.requests.prompts == "synthetic":
        return None
    prompts = load_prompts(spec.requests.prompts, Path(located.file).parent)
    deployment = specs.deployments.get(spec.target)
    if deployment is None:
        return None
    tokenizer = _tokenizer_for(deployment.doc.spec.model, Path(deployment.file).parent, cache_dir, needed=False)
    if tokenizer is None:
        return None
    counts = sorted(count_tokens(tokenizer, [p.text for p in prompts]))
    return Lengths(mean=sum(counts) / len(counts), p99=counts[min(len(counts) - 1, math.ceil(0.99 * len(counts)) - 1)])


def advise(req: Request, *, base_dir: Path, cache_dir: Path, specs: SpecSet | None = None,
           inventory: Callable[[], GpuInventory] = gpu_inventory,
           memory: Callable[[], HostMemory] = host_memory, env: Mapping[str, str] | None = None) -> Recommendation:
    """The recommendation for `req`. Blocking: reads the model's config (a hub model's from the
    Hub when not cached), NVML and, with a profile of builtin or file prompts, the model's
    tokenizer. Raises Refusal when the model does not fit."""
    geometry = read_geometry(req.model, base_dir=base_dir, cache_dir=cache_dir, env=env)
    target = target_for(req, inventory, memory)
    load: Workload | None = None
    if req.profile:
        if specs is None or req.profile not in specs.load_profiles:
            known = ", ".join(sorted(specs.load_profiles)) if specs else "no specs given"
            raise UsageError(f"--profile {req.profile}: no such LoadProfile (known: {known or 'none'})")
        capacity, source = _capacity(req)
        load = workload(req.profile, specs.load_profiles[req.profile].doc.spec,
                        prompt_lengths=_prompt_lengths(specs, req.profile, cache_dir),
                        capacity_rps=capacity, capacity_source=source)
    elif req.capacity_rps is not None or req.capacity_from is not None:
        raise UsageError("--capacity and --capacity-from size replicas for a profile's rate: name it with --profile")
    return recommend(geometry, target, load, dict(req.fixed), kv_cache_dtype=req.kv_cache_dtype)

