"""Joining the result files of one profile run by several hosts (`--shard i/N` on each) into one
run. Pure; called by `enova inject merge`.

The runs must be shards of the same run: the same profile, seed, duration, model and API, the
same N, and shard numbers that are disjoint and cover 0..N-1. Anything else is refused with a
UsageError naming what differs. The merged run has every request sorted by index, the earliest
start, the workers summed, shard (0, 1), and is partial if any shard was.
"""

from __future__ import annotations

import json
from dataclasses import replace

from enova.errors import UsageError

from .model import RunResult

SAME = ("profile", "seed", "duration", "model", "api")


def _show(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def merge_runs(runs: list[RunResult], names: list[str] | None = None) -> RunResult:
    """One run from its shards. `names` (e.g. the files read) label the runs in error messages."""
    if not runs:
        raise UsageError("nothing to merge: give the result files of every shard")
    names = names or [f"run {k + 1}" for k in range(len(runs))]
    first = runs[0]
    for field in SAME:
        for name, run in zip(names[1:], runs[1:]):
            if getattr(run, field) != getattr(first, field):
                raise UsageError(f"{names[0]} and {name} are not shards of one run: their {field} differs "
                                 f"({_show(getattr(first, field))} vs {_show(getattr(run, field))})")
    counts = {tuple(run.shard)[1] for run in runs}
    if len(counts) != 1:
        shards = ", ".join(f"{name}: {run.shard[0]}/{run.shard[1]}" for name, run in zip(names, runs))
        raise UsageError(f"the runs split the schedule differently ({shards})")
    count = counts.pop()
    seen: dict[int, str] = {}
    for name, run in zip(names, runs):
        index = run.shard[0]
        if index in seen:
            raise UsageError(f"{seen[index]} and {name} are both shard {index}/{count}")
        seen[index] = name
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise UsageError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{i}/{count}' for i in missing)} "
                         f"missing: give the result file of every host")
    indices: dict[int, str] = {}
    for name, run in zip(names, runs):
        for r in run.requests:
            if r.index in indices:
                raise UsageError(f"request {r.index} is in both {indices[r.index]} and {name}")
            indices[r.index] = name
    requests = sorted((r for run in runs for r in run.requests), key=lambda r: r.index)
    return replace(first, requests=requests, started_at=min(run.started_at for run in runs),
                   partial=any(run.partial for run in runs), workers=sum(run.workers for run in runs),
                   shard=(0, 1))
