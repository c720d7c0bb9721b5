"""Every runtime behind one Runtime: a replica goes to the runtime its spec names
(`runtime: local | docker`) when it starts, and to the runtime its record names afterwards.

The Docker runtime is made only when something needs it (a docker deployment, a docker record,
or discovery with docker specs), so a host without Docker never notices it. Called by the CLI,
enode and the reconciler, which hand this to apply and observation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from enova.observe.state import ReplicaRecord, StateStore

from .base import Discovered, Liveness, Runtime, StartRequest
from .local import LocalRuntime

Progress = Callable[[str], None]


class Runtimes:
    """Routes each call to the runtime that owns the replica. Implements Runtime."""

    name = "select"

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time,
                 progress: Progress = lambda m: None, runtimes: dict[str, Runtime] | None = None,
                 docker_hosts: Callable[[], Iterable[str]] = lambda: ()):
        self.store = store
        self.clock = clock
        self.progress = progress
        self.docker_hosts = docker_hosts   # the engines docker deployments in the specs name
        self.runtimes: dict[str, Runtime] = dict(runtimes or {})
        self.runtimes.setdefault("local", LocalRuntime(store, clock=clock, progress=progress))
        for runtime in list(self.runtimes.values()):  # records name their runtime by its name
            self.runtimes.setdefault(runtime.name, runtime)

    def get(self, name: str) -> Runtime:
        runtime = self.runtimes.get(name)
        if runtime is None and name == "docker":
            from .docker import DockerRuntime
            runtime = DockerRuntime(self.store, clock=self.clock, progress=self.progress, hosts=self.docker_hosts)
            self.runtimes[name] = runtime
        if runtime is None:
            raise KeyError(f"no runtime named {name!r}")
        return runtime

    def of(self, record: ReplicaRecord) -> Runtime:
        return self.get(record.runtime or "local")

    def start(self, request: StartRequest) -> ReplicaRecord:
        return self.get(request.config.get("runtime", "local")).start(request)

    def liveness(self, record: ReplicaRecord) -> Liveness:
        return self.of(record).liveness(record)

    def probe(self, records: Iterable[ReplicaRecord], timeout: float = 2.0) -> dict[str, bool]:
        groups: dict[str, list[ReplicaRecord]] = {}
        for record in records:
            groups.setdefault(record.runtime or "local", []).append(record)
        out: dict[str, bool] = {}
        for name, group in groups.items():
            out.update(self.get(name).probe(group, timeout))
        return out

    def stop(self, record: ReplicaRecord, grace: float = 30.0) -> float:
        return self.of(record).stop(record, grace)

    def forget(self, record: ReplicaRecord) -> None:
        self.of(record).forget(record)

    def log_tail(self, record: ReplicaRecord, lines: int = 25) -> str:
        return self.of(record).log_tail(record, lines)

    def logs(self, record: ReplicaRecord, tail: int = 100, follow: bool = False) -> Iterator[str]:
        return self.of(record).logs(record, tail, follow)

    def describe(self, record: ReplicaRecord) -> str:
        return self.of(record).describe(record)

    def check(self, config: dict[str, Any]) -> list[str]:
        return self.get(config.get("runtime", "local")).check(config)

    def inventory(self, config: dict[str, Any]) -> Any:
        return self.get(config.get("runtime", "local")).inventory(config)

    def discover(self, known: set[str]) -> list[Discovered]:
        """From every runtime in use; Docker is asked only when the specs name it or a docker
        record was already handled (a container without specs or records is not looked for)."""
        # no store read here: observation calls this on every pass, over every record
        uses_docker = "docker" in self.runtimes or any(True for _ in self.docker_hosts())
        found: list[Discovered] = []
        seen: set[int] = set()
        for name in [n for n in self.runtimes if n != "docker"] + (["docker"] if uses_docker else []):
            runtime = self.get(name)
            if id(runtime) not in seen:
                seen.add(id(runtime))
                found += runtime.discover(known)
        return found


def spec_docker_hosts(specs: Any) -> list[str]:
    """The Docker engines the docker deployments of a spec set (enova.spec.loader.SpecSet, or
    None) name: docker.host, else the default engine."""
    if specs is None:
        return []
    from .docker import default_host
    hosts = set()
    for located in specs.deployments.values():
        spec = located.doc.spec
        if spec.runtime == "docker":
            hosts.add((spec.docker.host if spec.docker else None) or default_host())
    return sorted(hosts)
