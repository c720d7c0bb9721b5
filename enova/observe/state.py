"""The state directory: records of the deployments and replicas enova started.

Layout under `state_dir`:
    deployments/<name>/deployment.json        what was last applied (config hash, replicas)
    deployments/<name>/replicas/<id>.json     one per replica process enova started
    gateway/gateway.json                      the gateway process (the data plane on :9199)
    logs/<name>/<id>.log                      the replica's stdout and stderr
    lock                                      held by the process that acts (see observe.lock)

Records are enova's ownership labels: a replica record names the runtime that runs it and
an opaque `handle` only that runtime reads (the local runtime: pid and process start time;
a container runtime: the container id), plus the endpoint (host, port) the gateway routes
to. enova only ever acts on what a record names, and the runtime checks the handle still
denotes the same thing first. Writes are atomic (temp file + rename), so a crash never
leaves half a record. Called by enova.runtime (world, local, memory), apply, the gateway's
endpoint source and the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from enova.errors import PermanentError


T = TypeVar("T")


def record_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """A record from its JSON, ignoring fields a newer or older enova wrote. Replica records
    written before runtimes had handles (top-level pid and create_time) are read into one."""
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    if cls is ReplicaRecord and "handle" not in data and "pid" in data:
        data = {**data, "runtime": "local",
                "handle": {"pid": data["pid"], "create_time": data.get("create_time", 0.0)}}
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ReplicaRecord:
    id: str
    deployment: str
    host: str                   # the endpoint the gateway routes to
    port: int
    config_hash: str
    config: dict[str, Any]
    argv: list[str]
    log: str
    runtime: str = "local"      # which runtime runs it (enova.runtime)
    handle: dict[str, Any] = field(default_factory=dict)  # opaque to all but that runtime
    state: str = "starting"     # starting | ready | draining | stopping (see the gateway)
    started_at: float = 0.0     # wall clock, seconds since the epoch
    start_timeout: float = 600.0  # engine.startup_timeout when it was started: past it, never healthy = failed
    ready_at: float | None = None
    cpus: list[int] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)  # GPU UUIDs
    model_path: str = ""



@dataclass
class DeploymentRecord:
    name: str
    replicas: int
    config_hash: str
    config: dict[str, Any]
    applied_at: float
    source: str = ""
    # How the gateway serves this deployment: {"default": bool, "max_concurrency": int | None,
    # "drain_timeout": float}. Written by apply from the plan; read by the gateway.
    serving: dict[str, Any] = field(default_factory=dict)
    # The other in-place settings (engine.startup_timeout, slo), as last applied.
    settings: dict[str, Any] = field(default_factory=dict)



@dataclass
class GatewayRecord:
    pid: int
    create_time: float
    config_hash: str
    config: dict[str, Any]   # host, port, token_file, max_body_bytes, queue_size, queue_timeout
    argv: list[str]
    log: str
    started_at: float = 0.0



def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # and the rename itself survives a power cut
    finally:
        os.close(dir_fd)


write_json = _write_json  # for other owners of files under the state directory


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise PermanentError(f"{path}: unreadable state record: {exc}") from exc
    if not isinstance(data, dict):
        raise PermanentError(f"{path}: state record is not a JSON object")
    return data


class StateStore:
    """Reads and writes records. Every method is idempotent; none blocks on anything but the disk."""

    def __init__(self, state_dir: Path):
        self.root = Path(state_dir)

    # paths
    def _dep_dir(self, name: str) -> Path:
        return self.root / "deployments" / name

    def replica_path(self, name: str, replica_id: str) -> Path:
        return self._dep_dir(name) / "replicas" / f"{replica_id}.json"

    def log_path(self, name: str, replica_id: str) -> Path:
        return self.root / "logs" / name / f"{replica_id}.log"

    # the gateway
    @property
    def gateway_path(self) -> Path:
        return self.root / "gateway" / "gateway.json"

    def read_gateway(self) -> GatewayRecord | None:
        path = self.gateway_path
        return record_from_dict(GatewayRecord, _read_json(path)) if path.exists() else None

    def write_gateway(self, record: GatewayRecord) -> None:
        _write_json(self.gateway_path, asdict(record))

    def remove_gateway(self) -> None:
        self.gateway_path.unlink(missing_ok=True)

    # deployments
    def deployment_names(self) -> list[str]:
        base = self.root / "deployments"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def has_deployment(self, name: str) -> bool:
        return self._dep_dir(name).is_dir()

    def read_deployment(self, name: str) -> DeploymentRecord | None:
        path = self._dep_dir(name) / "deployment.json"
        return record_from_dict(DeploymentRecord, _read_json(path)) if path.exists() else None

    def write_deployment(self, record: DeploymentRecord) -> None:
        _write_json(self._dep_dir(record.name) / "deployment.json", asdict(record))

    def remove_deployment(self, name: str) -> None:
        """Remove the deployment's records (its logs are kept for post-mortems)."""
        shutil.rmtree(self._dep_dir(name), ignore_errors=True)

    # replicas
    def replicas(self, name: str) -> list[ReplicaRecord]:
        base = self._dep_dir(name) / "replicas"
        if not base.is_dir():
            return []
        out = []
        for path in sorted(base.glob("*.json")):
            if not path.exists():
                continue  # removed since listed (another deployment's pass stopped a replica)
            try:
                out.append(record_from_dict(ReplicaRecord, _read_json(path)))
            except PermanentError:
                if path.exists():
                    raise
        return out

    def all_replicas(self) -> list[ReplicaRecord]:
        return [r for name in self.deployment_names() for r in self.replicas(name)]

    def write_replica(self, record: ReplicaRecord) -> None:
        _write_json(self.replica_path(record.deployment, record.id), asdict(record))

    def remove_replica(self, name: str, replica_id: str) -> None:
        self.replica_path(name, replica_id).unlink(missing_ok=True)
