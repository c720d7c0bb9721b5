"""The host's memory and cores, for sizing CPU-engine replicas (`engine.args: auto`,
`enova recommend` without a GPU). Called by enova.apply.facts and the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class HostMemory:
    total: int       # bytes (MemTotal)
    available: int   # bytes (MemAvailable: what can be allocated without swapping)
    cores: int       # cores this process may run on


def host_memory() -> HostMemory:
    """Read /proc/meminfo (through psutil) and the CPU affinity. Never blocks."""
    mem = psutil.virtual_memory()
    return HostMemory(total=int(mem.total), available=int(mem.available), cores=len(os.sched_getaffinity(0)))
