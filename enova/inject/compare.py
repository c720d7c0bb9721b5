"""`enova inject compare A.json B.json`: what changed between two runs. Pure: two `RunResult`s in, a
`Comparison` out (and its text rendering); the CLI reads the files and prints.

For each figure of `results.Summary`: A, B, the difference B - A, the ratio B / A, and a verdict.
Lower is better for latencies, lateness, the error rate and failed requests; higher is better for
the achieved share of the target rate, the completed rate, throughputs, SLO attainment and goodput;
figures that describe the run rather than judge it (the target and achieved rates, the counts)
get no verdict. A change within `tolerance` of A (1% by
default) is "same". Notes say when the two runs are not like for like: a different profile, seed,
target, model, API, SLO, worker count, or a partial run. Each run is judged against its own SLO
unless one is given for both.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from enova.inject.model import RunResult
from enova.inject.results import Summary, summarize

LOWER, HIGHER, NEITHER = "lower", "higher", ""


def _figures() -> list[tuple[str, str, str, str, Callable[[Summary], float | None]]]:
    """(key, label, unit, which is better, getter), in the order shown."""
    rows: list[tuple[str, str, str, str, Callable[[Summary], float | None]]] = [
        ("scheduled", "requests scheduled", "", NEITHER, lambda s: s.scheduled),
        ("sent", "requests sent", "", NEITHER, lambda s: s.sent),
        ("ok", "requests ok", "", NEITHER, lambda s: s.ok),
        ("failed", "requests failed", "", LOWER, lambda s: s.failed),
        ("error_rate", "error rate", "%", LOWER, lambda s: s.error_rate * 100),
        ("target_rate", "target rate", "req/s", NEITHER, lambda s: s.target_rate),
        ("achieved_rate", "achieved rate", "req/s", NEITHER, lambda s: s.achieved_rate),
        ("achieved_share", "achieved / target rate", "%", HIGHER,
         lambda s: s.achieved_rate / s.target_rate * 100 if s.target_rate else None),
        ("completed_rate", "completed rate", "req/s", HIGHER, lambda s: s.completed_rate),
        ("request_throughput", "request throughput", "req/s", HIGHER, lambda s: s.request_throughput),
        ("output_throughput", "output token throughput", "tok/s", HIGHER, lambda s: s.output_throughput),
        ("input_throughput", "input token throughput", "tok/s", HIGHER, lambda s: s.input_throughput),
        ("attainment", "SLO attainment", "%", HIGHER, lambda s: None if s.attainment is None else s.attainment * 100),
        ("goodput", "goodput", "req/s", HIGHER, lambda s: s.goodput),
    ]
    for figure, name in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2e_ms", "E2E")):
        for statistic in ("mean", "p50", "p90", "p95", "p99"):
            rows.append((f"{figure}.{statistic}", f"{name} {statistic}", "ms", LOWER,
                         lambda s, f=figure, st=statistic: getattr(getattr(s, f), st)))
    for statistic in ("p50", "p99"):
        rows.append((f"lateness_ms.{statistic}", f"lateness {statistic}", "ms", LOWER,
                     lambda s, st=statistic: getattr(s.lateness_ms, st)))
    return rows


FIGURES = _figures()


@dataclass(frozen=True)
class Row:
    """One figure in both runs. `verdict`: "better", "worse", "same", "" (no better way) or "n/a"."""

    key: str
    label: str
    unit: str
    a: float | None
    b: float | None
    diff: float | None
    ratio: float | None
    verdict: str


@dataclass(frozen=True)
class Comparison:
    a_label: str
    b_label: str
    rows: tuple[Row, ...]
    notes: tuple[str, ...]
    a: Summary
    b: Summary
    tolerance: float = 0.01

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    @property
    def better(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "better"]

    @property
    def worse(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "worse"]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a_label, "b": self.b_label, "rows": [asdict(r) for r in self.rows],
                "notes": list(self.notes), "summary_a": self.a.to_dict(), "summary_b": self.b.to_dict()}


def verdict(a: float | None, b: float | None, better: str, tolerance: float = 0.01) -> str:
    if a is None or b is None:
        return "n/a"
    if not better:
        return ""
    if abs(b - a) <= tolerance * abs(a) or a == b:
        return "same"
    return "better" if (b < a) == (better == LOWER) else "worse"


def compare_runs(a: RunResult, b: RunResult, slo: dict[str, Any] | None = None,
                 tolerance: float = 0.01) -> Comparison:
    """A and B figure by figure; `slo` (if given) judges both, else each run's own."""
    sa, sb = summarize(a, slo), summarize(b, slo)
    rows = []
    for key, label, unit, better, get in FIGURES:
        va, vb = get(sa), get(sb)
        va = None if va is None else float(va)
        vb = None if vb is None else float(vb)
        diff = None if va is None or vb is None else vb - va
        ratio = None if va is None or vb is None or va == 0 else vb / va
        rows.append(Row(key, label, unit, va, vb, diff, ratio, verdict(va, vb, better, tolerance)))
    return Comparison(_label(a), _label(b), tuple(rows), tuple(differences(a, b, slo)), sa, sb,
                      tolerance)


def _label(run: RunResult) -> str:
    when = datetime.fromtimestamp(run.started_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{run.name or 'run'} ({when}{', partial' if run.partial else ''})"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key in value:
            flat.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differences(a: RunResult, b: RunResult, slo: dict[str, Any] | None = None) -> list[str]:
    """Why A and B may not be like for like, one sentence each."""
    notes = []
    pa, pb = _flatten(a.profile), _flatten(b.profile)
    changed = [f"{k}: {pa.get(k, '(unset)')} -> {pb.get(k, '(unset)')}" for k in sorted(set(pa) | set(pb))
               if pa.get(k) != pb.get(k)]
    if changed:
        notes.append("the profiles differ: " + "; ".join(changed))
    for attribute, what in (("seed", "seeds"), ("target", "targets"), ("model", "models"), ("api", "APIs"),
                            ("workers", "worker counts")):
        if getattr(a, attribute) != getattr(b, attribute):
            notes.append(f"the {what} differ: {getattr(a, attribute)} -> {getattr(b, attribute)}")
    if a.seed is None and b.seed is None:
        notes.append("neither run has a seed: their schedules are different draws")
    if slo is None and (a.slo or None) != (b.slo or None):
        notes.append(f"each run is judged against its own SLO: {a.slo} -> {b.slo}")
    for run, which in ((a, "A"), (b, "B")):
        if run.partial:
            notes.append(f"{which} is partial: stopped before its schedule ended")
    return notes


def _value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "" and float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.2f}"


def render_comparison(c: Comparison, width: int = 110) -> str:
    """The comparison as a plain-text table for the terminal."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None, markup=False,
                      highlight=False, emoji=False)
    console.print(f"A: {c.a_label}")
    console.print(f"B: {c.b_label}")
    for note in c.notes:
        console.print(f"note: {note}")
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("figure", "unit", "A", "B", "B - A", "B / A", ""):
        table.add_column(column, justify="left" if column in ("figure", "unit", "") else "right")
    for r in c.rows:
        diff = "-" if r.diff is None else (f"{r.diff:+,.0f}" if r.unit == "" else f"{r.diff:+,.2f}")
        ratio = "-" if r.ratio is None else f"{r.ratio:.3f}"
        table.add_row(r.label, r.unit, _value(r.a, r.unit), _value(r.b, r.unit), diff, ratio, r.verdict)
    console.print(table)
    console.print(f"B vs A: {len(c.better)} better, {len(c.worse)} worse "
                  f"(within {c.tolerance:.0%} counts as same; lower is better for latency and errors)")
    return console.export_text()
