"""Where enova keeps its state and cache, and which ports it hands out.

Read once by the CLI from the environment and passed down; nothing deeper reads
the environment itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


@dataclass(frozen=True)
class Settings:
    """state_dir: replica records and the lock. cache_dir: converted models.
    port_range: the inclusive range replica ports are taken from."""

    state_dir: Path
    cache_dir: Path
    port_range: tuple[int, int] = (19200, 19999)

    @classmethod
    def from_env(cls, state_dir: Path | None = None) -> "Settings":
        """ENOVA_STATE_DIR, ENOVA_CACHE_DIR and ENOVA_PORT_RANGE ("19200-19999") override the defaults
        under XDG_STATE_HOME and XDG_CACHE_HOME."""
        env_state = os.environ.get("ENOVA_STATE_DIR")
        state = state_dir or (Path(env_state) if env_state else _xdg("XDG_STATE_HOME", ".local/state") / "enova")
        env_cache = os.environ.get("ENOVA_CACHE_DIR")
        cache = Path(env_cache) if env_cache else _xdg("XDG_CACHE_HOME", ".cache") / "enova"
        ports = (19200, 19999)
        raw = os.environ.get("ENOVA_PORT_RANGE")
        if raw:
            lo, _, hi = raw.partition("-")
            ports = (int(lo), int(hi or lo))
        return cls(state_dir=state.expanduser(), cache_dir=cache.expanduser(), port_range=ports)
