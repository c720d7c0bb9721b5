"""What every command shares: the settings read once by the root callback, the output option,
one handler that turns an EnovaError into a single message and its exit code, and the
Workspace (load, observe, plan) built on those settings."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from enova.errors import EnovaError
from enova.settings import Settings
from enova.workspace import Workspace


class Output(str, Enum):
    text = "text"
    json = "json"


class _State:
    settings: Settings
    state_dir_given: bool = False


state = _State()


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress(message: str) -> None:
    err(f"enova: {message}")


def fail(exc: EnovaError, code: int | None = None) -> typer.Exit:
    err(f"error: {exc}")
    return typer.Exit(code if code is not None else exc.exit_code)


def workspace() -> Workspace:
    return Workspace(state.settings, progress)


SpecsArg = Annotated[Path, typer.Argument(help="A spec file or a directory of them (read recursively).")]
PruneOpt = Annotated[bool, typer.Option("--prune", help="Delete deployments that are no longer in the specs.")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json.")]
