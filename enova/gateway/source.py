"""Where the gateway learns its endpoints: the `EndpointSource` interface and its one
implementation today, the state directory that `enova apply` writes.

A source answers two things: `read(previous)`, the whole current `Snapshot` (blocking, never
raising: a bad entry is skipped with a problem message and its last good view kept), and
`changes()`, an async iterator that yields whenever something may have changed (a hint only:
the watcher re-reads everything and also rescans on a timer, so a missed hint costs latency,
never correctness). A container or cluster source (Docker, Kubernetes) implements the same two
methods and fills the same views: endpoints (host, port) and serving state, never processes.
Used by `watch`; built by `server`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from watchfiles import Change, awatch

from enova.observe.state import StateStore

from .hold import hold_timeout, scaler_path
from .membership import DeploymentView, ReplicaView, Snapshot, replica_limit


class EndpointSource(Protocol):
    def read(self, previous: Snapshot | None) -> Snapshot:
        """Every deployment and replica endpoint now. Blocks on I/O; never raises."""
        ...

    def changes(self) -> AsyncIterator[None]:
        """Yield when something may have changed, until cancelled. May raise when watching
        fails; the caller retries later and rescans meanwhile."""
        ...


def _records_only(change: Change, path: str) -> bool:
    return path.endswith(".json")       # temp files of atomic writes end in .tmp


def _load(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


class StateDirectorySource:
    """Deployment and replica records under a state directory (see enova.observe.state). Only
    the endpoint fields of a replica record are read: `id`, `host`, `port`, `state`, and the
    engine args in `config` for its default limit. For a deployment whose serving has
    `scale_from_zero`, its hold timeout (see `hold`) also reads the start time the reconciler
    measured (`autoscaler/<deployment>.json`), re-read on every rescan."""

    def __init__(self, store: StateStore, *, default_limit: int = 256, debounce_ms: int = 30):
        self.store = store
        self.default_limit = default_limit
        self.debounce_ms = debounce_ms

    def __str__(self) -> str:
        return str(self.store.root)

    def read(self, previous: Snapshot | None = None) -> Snapshot:
        store = self.store
        problems: list[str] = []
        deployments: dict[str, DeploymentView] = {}
        try:
            names = store.deployment_names()
        except OSError as exc:
            return Snapshot(previous.deployments if previous else {}, (f"{store.root}: {exc}",))
        for name in names:
            serving: dict[str, Any] = {}
            dep_path = store.root / "deployments" / name / "deployment.json"
            if dep_path.exists():
                try:
                    value = _load(dep_path).get("serving")
                    serving = value if isinstance(value, dict) else {}
                except (OSError, ValueError) as exc:
                    problems.append(f"{dep_path}: skipped ({exc}); serving defaults used")
            replicas: list[ReplicaView] = []
            for path in sorted(store.replica_path(name, "x").parent.glob("*.json")):
                try:
                    rec = _load(path)
                    config = rec.get("config")
                    replicas.append(ReplicaView(
                        id=str(rec["id"]), deployment=name, host=str(rec["host"]), port=int(rec["port"]),
                        state=str(rec.get("state", "starting")),
                        limit=replica_limit(serving, config if isinstance(config, dict) else {}, self.default_limit)))
                except (OSError, ValueError, TypeError, KeyError) as exc:
                    kept = previous.replica(name, path.stem) if previous else None
                    why = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                    problems.append(f"{path}: skipped ({why})" + ("; its last readable record is kept" if kept else ""))
                    if kept is not None:
                        replicas.append(kept)
            max_c = serving.get("max_concurrency")
            scale_from_zero = serving.get("scale_from_zero") is True
            deployments[name] = DeploymentView(
                name=name, default=serving.get("default") is True,
                max_concurrency=max_c if isinstance(max_c, int) and not isinstance(max_c, bool) else None,
                replicas=tuple(replicas), scale_from_zero=scale_from_zero,
                hold_timeout=(hold_timeout(serving.get("hold_timeout"), self._start_seconds(name))
                              if scale_from_zero else None))
        return Snapshot(deployments, tuple(problems))

    def _start_seconds(self, name: str) -> Any:
        """The replica start time the reconciler measured for `name`, or None (no file yet, or
        unreadable: the default hold timeout is used)."""
        try:
            return _load(scaler_path(self.store.root, name)).get("start_seconds")
        except (OSError, ValueError):
            return None

    async def changes(self) -> AsyncIterator[None]:
        """watchfiles on deployments/ (records are replaced by atomic renames, so a changed
        record is seen whole, typically within ~50 ms)."""
        folder = self.store.root / "deployments"
        folder.mkdir(parents=True, exist_ok=True)
        async for _ in awatch(folder, watch_filter=_records_only, debounce=max(self.debounce_ms, 1),
                              step=max(1, min(10, self.debounce_ms)), recursive=True):
            yield None


def read_snapshot(store: StateStore, previous: Snapshot | None = None, default_limit: int = 256) -> Snapshot:
    """The state directory's snapshot (StateDirectorySource.read)."""
    return StateDirectorySource(store, default_limit=default_limit).read(previous)
