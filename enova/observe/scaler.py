"""The autoscaler's files in the state directory: its persisted state per deployment, and the
wake requests the gateway leaves for a deployment scaled to zero.

Layout under `state_dir`:
    autoscaler/<deployment>.json     ScalerState.to_dict() plus "start_seconds" and "updated_at",
                                     written by the reconciler after each decision
    autoscaler/wake/<deployment>     {"at": <time>}: the gateway holds a request for a deployment
                                     at zero replicas and asks for one; the reconciler watches the
                                     folder, acts at once, and clears the request it acted on

The store knows nothing of the autoscaler's types (this layer sits below enova.autoscale): it
reads and writes JSON objects. `targets()` is what `enova diff`, `apply`, `status` and the
reconciler pass to plan.desired.desired_state as `scaled`, so the count the autoscaler chose is
the desired count. Writes are atomic and fsynced (observe.state.write_json). No method blocks on
anything but the disk; all are idempotent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from enova.errors import PermanentError
from enova.observe.state import write_json


def _read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`; None when the file does not exist. Raises PermanentError when
    it is unreadable or not an object (atomic writes never leave half a file)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise PermanentError(f"{path}: unreadable autoscaler state: {exc}") from exc
    if not isinstance(data, dict):
        raise PermanentError(f"{path}: autoscaler state is not a JSON object")
    return data


class ScalerStore:
    """The autoscaler's persisted state and the wake requests, under `<state_dir>/autoscaler/`."""

    def __init__(self, state_dir: Path | str):
        self.root = Path(state_dir) / "autoscaler"

    # ---- persisted state ----------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def read(self, name: str) -> dict[str, Any] | None:
        """The persisted state of deployment `name`, None when it has none. Raises PermanentError
        for an unreadable file."""
        return _read_object(self.path(name))

    def write(self, name: str, data: dict[str, Any]) -> None:
        """Replace the persisted state of `name` (atomic and fsynced: a crash leaves the old or
        the new file, never half of one)."""
        if not isinstance(data, dict):
            raise TypeError("autoscaler state must be a dict")
        write_json(self.path(name), data)

    def remove(self, name: str) -> None:
        """Forget `name`'s state (its spec dropped `scaling`, or the deployment was deleted)."""
        self.path(name).unlink(missing_ok=True)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if p.is_file() and not p.name.startswith("."))

    def targets(self) -> dict[str, int]:
        """Deployment -> the replica count the autoscaler last decided, for every persisted state.
        Raises PermanentError naming a file whose target is not a whole number >= 0."""
        out: dict[str, int] = {}
        for name in self.names():
            data = self.read(name)
            if data is None:  # removed since listed
                continue
            target = data.get("target")
            if isinstance(target, bool) or not isinstance(target, int) or target < 0:
                raise PermanentError(f"{self.path(name)}: target must be a whole number >= 0 (got {target!r})")
            out[name] = target
        return out

    # ---- wake requests ------------------------------------------------------------------
    @property
    def wake_dir(self) -> Path:
        return self.root / "wake"

    def wake_path(self, name: str) -> Path:
        return self.wake_dir / name

    def wake(self, name: str, at: float) -> None:
        """Ask for a replica of `name` (the gateway, holding a request at zero replicas): written
        atomically with the time, so the reconciler never reads half a request."""
        write_json(self.wake_path(name), {"at": float(at)})

    def wakes(self) -> dict[str, float]:
        """Deployment -> when its wake request was written. A file that is not {"at": <time>}
        (written by hand, say) counts from its modification time: a request is never lost."""
        if not self.wake_dir.is_dir():
            return {}
        out: dict[str, float] = {}
        for path in sorted(self.wake_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue  # write_json's temporary files
            try:
                at = _read_object(path)
            except PermanentError:
                at = None
            value = at.get("at") if at else None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                try:
                    value = path.stat().st_mtime
                except FileNotFoundError:
                    continue  # cleared since listed
            out[path.name] = float(value)
        return out

    def clear_wake(self, name: str, seen: float | None = None) -> None:
        """Remove `name`'s wake request. With `seen` (the time wakes() reported when the caller
        acted), a request written after it is kept: a request that arrives while the reconciler
        acts on the previous one is not lost (a request written between the check and the unlink
        still is: a gateway that keeps holding requests should renew its request)."""
        if seen is not None:
            now = self.wakes().get(name)
            if now is not None and now > seen:
                return
        self.wake_path(name).unlink(missing_ok=True)
