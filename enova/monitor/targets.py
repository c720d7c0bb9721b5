"""What Prometheus scrapes: file-based service discovery files written from the state directory.

Prometheus reads its targets from `<state_dir>/monitoring/targets/`, JSON files in its file_sd
format (a list of `{"targets": ["host:port"], "labels": {...}}` groups):

    gateway.json    the gateway on :9199, from gateway/gateway.json (its configured host and port)
    replicas.json   every replica record, whatever its state, one group each, labelled
                    deployment, replica and runtime (a starting replica shows as down until it
                    serves; one that left the records leaves the file)
    reconciler.json the reconciler's own /metrics (its counters and the NVML GPU exporter), at the
                    address its status (reconciler/status.json, `metrics`) names; none when it
                    serves none. A stopped reconciler's status stays, so it shows as down.

Prometheus watches that folder and re-reads a file when it is replaced, so a replica added or
removed appears or disappears with no restart of Prometheus. The content is a pure function of
the records (`target_files`: sorted, deterministic), and `write_targets` replaces a file (temp
file + rename, so Prometheus never reads half a file) only when its content changes. Called by
`enova mon start` (enova.monitor.process) and, through `refresh_targets`, by whatever changes
replicas (apply, the reconciler).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from enova.observe.ports import connect_url
from enova.observe.state import GatewayRecord, ReplicaRecord, StateStore

GATEWAY_JOB = "enova-gateway"
REPLICAS_JOB = "enova-replicas"
GATEWAY_FILE = "gateway.json"
RECONCILER_JOB = "enova-reconciler"
REPLICAS_FILE = "replicas.json"
RECONCILER_FILE = "reconciler.json"
JOB_FILES = {GATEWAY_JOB: GATEWAY_FILE, REPLICAS_JOB: REPLICAS_FILE, RECONCILER_JOB: RECONCILER_FILE}
"""Each scrape job and the file its targets come from."""


def targets_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "monitoring" / "targets"


def target_address(host: str, port: int) -> str:
    """The host:port Prometheus scrapes for a server bound to `host`: a wildcard bind is reached on
    loopback, an IPv6 address is bracketed (as enova's own clients reach it)."""
    return connect_url(host, port).removeprefix("http://")


def gateway_groups(record: GatewayRecord | None) -> list[dict[str, Any]]:
    """The gateway's target group, from its record's configured address; none without a record."""
    if record is None:
        return []
    return [{"targets": [target_address(record.config["host"], int(record.config["port"]))], "labels": {}}]


def replica_groups(records: Iterable[ReplicaRecord]) -> list[dict[str, Any]]:
    """One target group per replica record, sorted by deployment and replica id."""
    return [{"targets": [target_address(r.host, r.port)],
             "labels": {"deployment": r.deployment, "replica": r.id, "runtime": r.runtime}}
            for r in sorted(records, key=lambda r: (r.deployment, r.id))]


def reconciler_groups(status: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The reconciler's target group, from its status's `metrics` address; none without one."""
    address = (status or {}).get("metrics")
    if not isinstance(address, dict) or not address.get("port"):
        return []
    return [{"targets": [target_address(str(address.get("host", "127.0.0.1")), int(address["port"]))], "labels": {}}]


def read_reconciler_status(state_dir: Path) -> dict[str, Any] | None:
    """reconciler/status.json as enova.reconcile.controller writes it; None when missing or unreadable."""
    try:
        data = json.loads((Path(state_dir) / "reconciler" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def render_groups(groups: list[dict[str, Any]]) -> str:
    """A file_sd file's text: the groups as JSON, keys sorted, one trailing newline."""
    return json.dumps(groups, indent=2, sort_keys=True) + "\n"


def target_files(gateway: GatewayRecord | None, replicas: Iterable[ReplicaRecord],
                 reconciler: dict[str, Any] | None = None) -> dict[str, str]:
    """{file name: content} for every target file, from the records (and the reconciler's status) alone."""
    return {GATEWAY_FILE: render_groups(gateway_groups(gateway)),
            REPLICAS_FILE: render_groups(replica_groups(replicas)),
            RECONCILER_FILE: render_groups(reconciler_groups(reconciler))}


def write_targets(store: StateStore, directory: Path) -> bool:
    """Write the target files for the records in `store` into `directory` (created if missing).
    Each file is replaced atomically, and only when its content changes. Returns whether any file
    changed. Idempotent; blocks only on the disk. Raises PermanentError for an unreadable record,
    OSError when the folder cannot be written."""
    files = target_files(store.read_gateway(), store.all_replicas(), read_reconciler_status(store.root))
    changed = False
    for name, text in files.items():
        changed |= _replace_if_changed(Path(directory) / name, text)
    return changed


def refresh_targets(state_dir: Path) -> bool:
    """Bring `<state_dir>/monitoring/targets/` up to date with the state directory's records; for
    apply and the reconciler after they start or stop a replica or the gateway. Returns whether a
    file changed (Prometheus, if it runs, picks the change up by itself). Never touches a replica
    or a process. Raises as write_targets does; a caller that serves should report, not fail."""
    return write_targets(StateStore(Path(state_dir)), targets_dir(state_dir))


def read_target_files(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """{job: its target groups} as written in `directory`; a missing or unreadable file gives none."""
    out: dict[str, list[dict[str, Any]]] = {}
    for job, name in JOB_FILES.items():
        try:
            groups = json.loads((Path(directory) / name).read_text())
        except (OSError, ValueError):
            groups = []
        out[job] = groups if isinstance(groups, list) else []
    return out


def _replace_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name does not end in .json: Prometheus never reads it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
