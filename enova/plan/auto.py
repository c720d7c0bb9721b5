"""`engine.args: auto`, resolved during planning from the observed inventory.

The facts (the host's GPUs and memory, each model's geometry) are observed by the drivers
(enova.apply.facts) and handed in as data, so planning stays pure and the same spec set gives
GPU settings on a GPU host and CPU settings on a host without one. The values the recommender
chooses are merged into the replica config's engine.args, under the ones the spec sets, so
they are part of the config hash: a different inventory that changes a chosen value is a
visible replace in `enova diff`, never a silent drift. A deployment whose args cannot be
resolved (its model's config is unreadable, the host has too few GPUs, the model does not
fit) is *blocked*: the planner keeps whatever runs for it and says why.

Called by plan.desired.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Union

from enova.errors import EnovaError
from enova.recommend.model import CpuTarget, ModelGeometry, Recommendation, Refusal, Target
from enova.spec.models import AUTO_ARG, DeploymentSpec, classify_model

KV_SPACE_ENV = "VLLM_CPU_KVCACHE_SPACE"  # GiB; vLLM's CPU build lets it override --kv-cache-memory-bytes
GiB = 1024 ** 3


@dataclass(frozen=True)
class GpuFact:
    index: int
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class HostFacts:
    """The inventory `auto` is sized for: GPUs (from NVML) and the host's memory."""

    gpus: tuple[GpuFact, ...] = ()
    memory_total: int = 0
    memory_available: int = 0
    cores: int = 0
    gpu_reason: str = ""   # why there is no GPU, when there is none
    source: str = ""       # "NVML, /proc/meminfo"


@dataclass(frozen=True)
class PlanFacts:
    """What planning `auto` needs beyond the specs. models: model_key(ref, base_dir) -> the
    model's geometry, or why it could not be read."""

    host: HostFacts
    models: Mapping[str, Union[ModelGeometry, str]] = field(default_factory=dict)


def model_key(ref: str, base_dir: str) -> str:
    """The key a model's facts are stored under: a local folder by its absolute path (a relative
    one is relative to the spec file's folder), a builtin or hub model by its reference."""
    try:
        kind = classify_model(ref)
    except ValueError:
        return ref
    if kind == "local":
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(ref)))
    return ref


@dataclass(frozen=True)
class Resolved:
    """The outcome for one deployment: the args to run with and the recommendation behind
    them, or why it is blocked."""

    args: dict[str, Any]
    recommendation: Union[Recommendation, None] = None
    blocked: str = ""
    chosen: tuple[str, ...] = ()   # the args the recommender chose (not set in the spec)


def _target(spec: DeploymentSpec, host: HostFacts) -> Target:
    from enova.recommend.gpus import from_nvml
    wanted = spec.resources.gpus
    if wanted >= 1:
        if len(host.gpus) < wanted:
            have = f"{len(host.gpus)} GPU(s)" if host.gpus else f"no GPU ({host.gpu_reason or 'none found'})"
            raise Refusal(spec.model, f"resources.gpus {wanted}", f"needs {wanted} GPU(s) per replica, this host has {have}")
        smallest = min(host.gpus, key=lambda g: (g.memory_bytes, g.index))
        return replace(from_nvml(smallest.name, smallest.memory_bytes, wanted), fixed_count=True)
    # sized against the host's total memory, not what is free now: the replicas this plan starts
    # take memory, and a choice that moved with them would replace them again and again
    return CpuTarget(total_bytes=host.memory_total, available_bytes=host.memory_total,
                     cores=spec.resources.cpus, source="MemTotal: planning sizes for the whole host")


def resolve_auto(spec: DeploymentSpec, base_dir: str, facts: Union[PlanFacts, None]) -> Resolved:
    """The engine args for `spec`: its own when it does not ask for `auto`, else the
    recommender's choice for what it leaves unset. Pure."""
    given = dict(spec.engine.args)
    if not spec.engine.auto:
        given.pop(AUTO_ARG, None)
        return Resolved(args=given)
    from enova.recommend.sizing import recommend  # imported only when a spec asks for auto
    fixed = {k: v for k, v in given.items() if k != AUTO_ARG}
    if facts is None:
        return Resolved(args=fixed, blocked="engine.args auto: the host's inventory was not observed")
    geometry = facts.models.get(model_key(spec.model, base_dir))
    if geometry is None or isinstance(geometry, str):
        return Resolved(args=fixed, blocked=f"engine.args auto: model {spec.model}: {geometry or 'config not read'}")
    sizing_fixed = dict(fixed)
    kv_env = spec.engine.env.get(KV_SPACE_ENV, "").strip()
    if spec.resources.gpus == 0 and kv_env:
        try:
            sizing_fixed["kv_cache_memory_bytes"] = int(kv_env) * GiB
        except ValueError:
            return Resolved(args=fixed, blocked=f"engine.env.{KV_SPACE_ENV}: must be a whole number of GiB "
                                                f"(got {kv_env!r})")
    try:
        rec = recommend(geometry, _target(spec, facts.host), None, sizing_fixed)
    except Refusal as refusal:
        return Resolved(args=fixed, blocked=f"engine.args auto: {refusal}")
    except EnovaError as exc:
        return Resolved(args=fixed, blocked=f"engine.args auto: {exc}")
    chosen = {k: v for k, v in rec.args.items() if k not in sizing_fixed}
    return Resolved(args={**chosen, **fixed}, recommendation=rec, chosen=tuple(sorted(chosen)))
