"""Observe what `engine.args: auto` is planned against: the host's GPUs (NVML) and memory, and
the geometry of every model an auto deployment serves. The result is plain data
(enova.plan.auto.PlanFacts) that plan.desired reads, so planning stays pure.

Called before planning by the CLI (diff, apply, status), enode and the reconciler. Blocking:
a hub model whose config is not cached costs one small download (bounded by the Hub timeout);
`FactsCache` keeps geometries for a long-running reconciler so the Hub is asked once per model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Union

from enova.errors import EnovaError
from enova.modelstore.config import read_geometry
from enova.observe.gpus import GpuInventory, gpu_inventory
from enova.observe.host import HostMemory, host_memory
from enova.plan.auto import GpuFact, HostFacts, PlanFacts, model_key
from enova.recommend.model import MiB, ModelGeometry
from enova.spec.loader import SpecSet

Geometry = Union[ModelGeometry, str]


def host_facts(inventory: GpuInventory, memory: HostMemory) -> HostFacts:
    return HostFacts(
        gpus=tuple(GpuFact(g.index, g.name, g.memory_total_mib * MiB) for g in inventory.gpus),
        memory_total=memory.total, memory_available=memory.available, cores=memory.cores,
        gpu_reason=inventory.reason, source="NVML" if inventory.gpus else "/proc/meminfo")


class FactsCache:
    """Geometries already read, by model key. A local folder is re-read every time (cheap, and
    its config may be edited); builtin and hub models are read once per process."""

    def __init__(self) -> None:
        self._models: dict[str, ModelGeometry] = {}

    def geometry(self, key: str, read: Callable[[], ModelGeometry], local: bool) -> Geometry:
        if not local and key in self._models:
            return self._models[key]
        try:
            geometry = read()
        except EnovaError as exc:
            return str(exc)
        if not local:
            self._models[key] = geometry
        return geometry


def gather_facts(specs: SpecSet, *, cache_dir: Path, cache: FactsCache | None = None,
                 inventory: Callable[[], GpuInventory] = gpu_inventory,
                 memory: Callable[[], HostMemory] = host_memory,
                 env: Mapping[str, str] | None = None) -> PlanFacts:
    """The facts for planning `specs`. Only auto deployments' models are read; an unreadable one
    is recorded with why (its deployment is then blocked, the others are planned). Never raises
    for a model's sake."""
    cache = cache or FactsCache()
    models: dict[str, Geometry] = {}
    for located in specs.deployments.values():
        spec = located.doc.spec
        if not spec.engine.auto:
            continue
        base_dir = os.path.dirname(os.path.realpath(str(located.file)))
        key = model_key(spec.model, base_dir)
        if key in models:
            continue
        local = key.startswith(os.sep)
        models[key] = cache.geometry(
            key, lambda ref=spec.model, base=base_dir: read_geometry(ref, base_dir=Path(base), cache_dir=cache_dir, env=env),
            local)
    if not models:  # nothing to size: do not query NVML for nothing
        return PlanFacts(host=HostFacts(), models={})
    return PlanFacts(host=host_facts(inventory(), memory()), models=models)
