"""The runtime interface: start a replica from a rendered launch, tell whether it still runs,
probe its health, stop it gracefully, forget it, read its log.

A runtime owns the *handle* in a replica record (enova.observe.state.ReplicaRecord.handle):
what identifies the running thing to that runtime (pid and start time for processes, a
container id for Docker). Everything above the runtime sees only the record's id, deployment,
endpoint (host, port), config hash and state. Records live in the state directory whichever
runtime runs the replica, so the planner, the gateway and status read one format.

Implementations: enova.runtime.local (processes), enova.runtime.docker (containers),
enova.runtime.memory (tests); enova.runtime.select routes each replica to its runtime by the
spec's `runtime` (records name theirs). Called by enova.runtime.world (observation, adoption),
enova.apply (preflight, start/stop/readiness) and the CLI.

The Docker runtime's handle is the container id and its engine's URL; liveness is the
container's state; labels carry the deployment, replica id, config hash and revision, and the
record itself, so `discover` finds containers with no record and observation adopts them; the
endpoint is the published host port. A Kubernetes runtime can map a replica to a Pod the same way (enova
keeps the rollout order); a runtime that rolls out by itself (a Deployment object) would take a
whole Change at once, an optional capability apply can check for before it falls back to the
replica-by-replica path here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from enova.engines.vllm import Launch
from enova.observe.gpus import GpuInventory
from enova.errors import TemporaryError
from enova.observe.state import ReplicaRecord


class ReplicaStartError(TemporaryError):
    """A replica exited or did not become healthy in time. The message carries its last log lines.
    Temporary: the reconciler retries it with backoff (CrashLoopBackOff when it repeats)."""


class StartInterrupted(TemporaryError):
    """Waiting for a starting replica was interrupted (enova is stopping). The replica is left
    running and recorded as starting, so the next enova adopts it instead of losing its load."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def url(self, path: str = "") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"


@dataclass(frozen=True)
class StartRequest:
    """Everything a runtime needs to start one replica: allocation and rendering are done."""

    deployment: str
    replica_id: str
    launch: Launch
    endpoint: Endpoint
    config: dict[str, Any]
    config_hash: str
    model_path: str
    start_timeout: float
    cpus: list[int] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)
    model_kind: str = "local"     # builtin | local | hub: how a container mounts the model
    revision: str = ""            # the spec revision (git commit) it was started from, for labels
    # the deployment record's in-place fields, so a runtime that labels what it starts can
    # rebuild the record when a fresh enova adopts it
    serving: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Discovered:
    """A replica the runtime runs that the state directory has no record of (a container a
    fresh enova finds by its labels): its record, and the deployment record's in-place fields."""

    record: ReplicaRecord
    serving: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Liveness:
    alive: bool
    detail: str = ""   # why not alive ("pid 123 exited", "container exited with code 1")


class Runtime(Protocol):
    """Every method may be called from several threads for different replicas."""

    name: str

    def start(self, request: StartRequest) -> ReplicaRecord:
        """Start the replica and write its record (state "starting") before returning. Does not
        wait for health. Raises ReplicaStartError if it cannot be started at all."""

    def liveness(self, record: ReplicaRecord) -> Liveness:
        """Whether the thing the record's handle names still runs. Non-blocking, read-only; never
        reports alive for something enova did not start (a reused pid, another container)."""

    def probe(self, records: Iterable[ReplicaRecord], timeout: float = 2.0) -> dict[str, bool]:
        """Health of each replica by id (True: its engine answers /health with 200). Blocks up
        to about `timeout`; never raises."""

    def stop(self, record: ReplicaRecord, grace: float = 30.0) -> float:
        """Stop it (SIGTERM-like, then forcefully after `grace`) and remove its record.
        Idempotent. Returns the seconds taken. Does not drain: apply drains first."""

    def forget(self, record: ReplicaRecord) -> None:
        """Remove the record of a replica that no longer runs (and any runtime leftovers)."""

    def log_tail(self, record: ReplicaRecord, lines: int = 25) -> str:
        """The last lines of the replica's output, for error messages."""

    def describe(self, record: ReplicaRecord) -> str:
        """A short human name for the handle ("pid 1234", "container 3f2a1b")."""

    def logs(self, record: ReplicaRecord, tail: int = 100, follow: bool = False) -> Iterator[str]:
        """The replica's output, line by line: the last `tail` lines, then (with `follow`) new
        ones as they come until the replica stops or the caller stops iterating."""

    def check(self, config: dict[str, Any]) -> list[str]:
        """Why replicas of `config` cannot be started by this runtime, one sentence each (an
        unreachable engine, a missing image with the command to get it); [] when they can.
        Called by apply's preflight before anything is touched. Blocks briefly."""

    def inventory(self, config: dict[str, Any]) -> "GpuInventory | None":
        """The GPUs of the machine that runs replicas of `config` when that is not this host (a
        remote Docker engine); None: this host's NVML inventory applies. Blocks briefly."""

    def discover(self, known: set[str]) -> list[Discovered]:
        """Replicas this runtime runs and owns (by its labels) whose ids are not in `known`, so
        observation can adopt them. Never returns anything enova did not start. Never raises."""
