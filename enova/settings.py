"""Where enova keeps its state and cache, and which ports it hands out.

Read once by the CLI from the environment and passed down; nothing deeper reads
the environment itself. A malformed variable is a UsageError naming it and the form
it should take, never a traceback.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import pydantic
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from enova.errors import UsageError

DEFAULT_PORT_RANGE = (19200, 19999)
_PORT_RANGE_FORM = "LO-HI, two ports from 1 to 65535 with LO <= HI, such as 19200-19999"


def parse_port_range(text: str) -> tuple[int, int]:
    """(lo, hi) from "19200-19999" (or one port, "19200"). Raises ValueError saying the form."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise ValueError(f"expected {_PORT_RANGE_FORM}")
    lo = int(match.group(1))
    hi = int(match.group(2) or lo)
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"expected {_PORT_RANGE_FORM}")
    return lo, hi


class _Environment(BaseSettings):
    """The ENOVA_* variables, as written; empty means unset."""

    model_config = SettingsConfigDict(env_prefix="ENOVA_", env_ignore_empty=True, extra="ignore")

    state_dir: Optional[Path] = None
    cache_dir: Optional[Path] = None
    port_range: Annotated[tuple[int, int], NoDecode] = DEFAULT_PORT_RANGE  # "LO-HI", not JSON

    @pydantic.field_validator("port_range", mode="before")
    @classmethod
    def _port_range(cls, value: object) -> object:
        return parse_port_range(value) if isinstance(value, str) else value


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


@dataclass(frozen=True)
class Settings:
    """state_dir: replica records and the lock. cache_dir: converted models, vLLM's argument table.
    port_range: the inclusive range replica ports are taken from."""

    state_dir: Path
    cache_dir: Path
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE

    @classmethod
    def from_env(cls, state_dir: Path | None = None) -> "Settings":
        """ENOVA_STATE_DIR, ENOVA_CACHE_DIR and ENOVA_PORT_RANGE ("19200-19999") override the defaults
        under XDG_STATE_HOME and XDG_CACHE_HOME. Raises UsageError naming a malformed variable."""
        try:
            env = _Environment()
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            name = "ENOVA_" + str(first["loc"][0]).upper() if first["loc"] else "ENOVA_*"
            raw = os.environ.get(name, "")
            reason = str(first.get("ctx", {}).get("error") or first["msg"]).removeprefix("Value error, ")
            raise UsageError(f"{name}={raw}: {reason}") from None
        state = state_dir or env.state_dir or _xdg("XDG_STATE_HOME", ".local/state") / "enova"
        cache = env.cache_dir or _xdg("XDG_CACHE_HOME", ".cache") / "enova"
        return cls(state_dir=state.expanduser(), cache_dir=cache.expanduser(), port_range=env.port_range)
