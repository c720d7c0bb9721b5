"""Choosing ports, CPU cores and GPUs for a new replica. Pure functions over what is in use.

Called by apply.executor. Kept apart so allocation rules are table-tested without processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from enova.errors import PermanentError


def choose_cpus(host_cpus: Sequence[int], used: dict[int, str], n: int,
                prefer: Iterable[int] = ()) -> list[int]:
    """n cores for a replica: first the `prefer`red ones (the cores of a replica this one
    replaces, which stops once the new one is ready), then the lowest free ones.
    `used` maps a bound core to the replica holding it. Raises PermanentError if there
    are not enough."""
    chosen = [c for c in prefer if c in host_cpus][:n]
    for cpu in sorted(host_cpus):
        if len(chosen) >= n:
            break
        if cpu not in used and cpu not in chosen:
            chosen.append(cpu)
    if len(chosen) < n:
        holders = ", ".join(f"{cpu} -> {used[cpu]}" for cpu in sorted(used)) or "none"
        raise PermanentError(
            f"needs {n} free CPU core(s) per replica but only {len(chosen)} of the host's "
            f"{len(host_cpus)} are free (bound: {holders}); lower replicas or resources.cpus")
    return sorted(chosen)


def choose_gpus(host_gpus: Sequence[str], used: dict[str, str], n: int) -> list[str]:
    """n free GPUs (by UUID, in inventory order). Raises PermanentError if there are not enough."""
    free = [g for g in host_gpus if g not in used]
    if not host_gpus:
        raise PermanentError(f"needs {n} GPU(s) per replica but this host has no GPU")
    if len(free) < n:
        raise PermanentError(
            f"needs {n} free GPU(s) per replica but {len(free)} of {len(host_gpus)} are free "
            f"(in use by: {', '.join(sorted(set(used.values())))})")
    return free[:n]


def choose_port(port_range: tuple[int, int], taken: set[int], is_free) -> int:
    """The lowest port in the range that no record holds and `is_free(port)` accepts."""
    lo, hi = port_range
    for port in range(lo, hi + 1):
        if port not in taken and is_free(port):
            return port
    raise PermanentError(f"no free port in {lo}-{hi} for a new replica (ENOVA_PORT_RANGE sets the range)")
