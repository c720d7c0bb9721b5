"""The figures of a run, and its judgement against an SLO. Pure: a `RunResult` in, a `Summary` out,
no I/O and no clock. Called by the CLI after a run, by `enova inject report` and by `compare`.

Definitions (each chosen to agree with `vllm bench serve`, vllm/benchmarks/serve.py
`calculate_metrics`, so the two tools' figures can be set side by side):

- Latency figures (TTFT, TPOT, ITL, E2E) are over the requests that succeeded (`ok`); ITL is over
  every gap of every such request, pooled. TPOT is per request, (E2E - TTFT) / (output tokens - 1);
  requests with fewer than 2 output tokens have none. Percentiles are numpy's default linear
  interpolation, as vLLM's (`np.percentile(x, p)`). Stored in milliseconds.
- Token figures count the server's `usage` report of successful requests (vLLM counts failed
  requests' output as 0). Throughputs divide by the span from the first send to the last finish.
  `vllm bench serve` divides by the time from its schedule's zero, which also holds the first
  arrival gap (about 1.5% of a short Poisson run): measured side by side, enova's throughput reads
  ~1.5% higher for that reason alone (docs/benchmarks.md, "Request injection").
- Rates: target = scheduled / duration, achieved = sent / duration, completed = ok / duration, with
  `duration` the schedule's length.
- Error rate = failed / sent. A failed request is one sent and not `ok`: it is never dropped; it
  counts in the error rate and against attainment.
- SLO attainment and goodput, DistServe's definition (arxiv 2401.09670), the one vLLM's `--goodput`
  implements: a request is good when it is ok AND its TTFT <= the TTFT target AND its TPOT <= the
  ITL target AND its E2E <= the E2E target (each where the SLO sets one). The per-token target is
  checked against the request's own TPOT, as vLLM's `--goodput tpot:` does, not its mean ITL: TPOT
  includes the gaps a stream bundles into one event, the mean ITL of events does not. A request with
  one output token has no TPOT and passes that check (vLLM counts it as 0). attainment = good /
  scheduled; goodput = good / duration, in requests per second. In a partial run (stopped by the
  user) requests never sent are left out of attainment's denominator: they were not the server's
  to serve. In a complete run an unsent request counts against attainment.
- The SLO's objectives are also judged on the whole run: p95 TTFT <= ttft_p95_ms, p95 ITL <=
  itl_p95_ms, p99 E2E <= e2e_p99_ms, error rate <= max_error_rate. A latency objective with no
  measurement (no request succeeded) is not met.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
from rich.console import Console
from rich.table import Table

from enova.inject.model import RequestResult, RunResult

PERCENTILES = (50, 90, 95, 99)

# name in the SLO spec -> (label, the Summary distribution, its statistic)
OBJECTIVES: dict[str, tuple[str, str, str]] = {
    "ttft_p95_ms": ("TTFT p95", "ttft_ms", "p95"),
    "itl_p95_ms": ("ITL p95", "itl_ms", "p95"),
    "e2e_p99_ms": ("E2E p99", "e2e_ms", "p99"),
    "max_error_rate": ("error rate", "error_rate", ""),
}


@dataclass(frozen=True)
class Distribution:
    """Mean and percentiles of one figure, in its unit (ms for latencies). None when empty."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: Iterable[float], scale: float = 1.0) -> "Distribution":
        data = np.asarray(list(values), dtype=float) * scale
        if data.size == 0:
            return cls()
        p50, p90, p95, p99 = (float(v) for v in np.percentile(data, PERCENTILES))
        return cls(count=int(data.size), mean=float(data.mean()), p50=p50, p90=p90, p95=p95, p99=p99)


@dataclass(frozen=True)
class Objective:
    """One SLO objective judged on the whole run: `measured` against `target`."""

    name: str                  # the SLO spec's key, e.g. "ttft_p95_ms"
    label: str                 # e.g. "TTFT p95"
    target: float
    measured: float | None
    met: bool


@dataclass(frozen=True)
class Summary:
    """A run's figures. Latencies in ms, rates in requests/s, throughputs in tokens/s."""

    name: str
    model: str
    target: str
    seed: int | None
    partial: bool
    duration: float                       # the schedule's length, s
    span: float                           # first send to last finish, s
    scheduled: int
    sent: int
    ok: int
    failed: int
    not_sent: int
    target_rate: float
    achieved_rate: float
    completed_rate: float
    request_throughput: float             # ok / span
    input_tokens: int
    output_tokens: int
    input_throughput: float               # tokens/s over span
    output_throughput: float
    error_rate: float
    ttft_ms: Distribution
    tpot_ms: Distribution
    itl_ms: Distribution
    e2e_ms: Distribution
    lateness_ms: Distribution
    slo: dict[str, Any] | None = None
    good: int | None = None               # requests meeting every target (None: no SLO)
    attainment: float | None = None
    goodput: float | None = None
    objectives: tuple[Objective, ...] = ()
    errors: dict[str, int] = field(default_factory=dict)   # error text -> count, most frequent first

    @property
    def slo_met(self) -> bool | None:
        """Every objective met on the whole run; None when there is no SLO."""
        return None if not self.objectives else all(o.met for o in self.objectives)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["objectives"] = [asdict(o) for o in self.objectives]
        data["slo_met"] = self.slo_met
        return data


def slo_targets(slo: dict[str, Any] | None) -> dict[str, float]:
    """The objectives an SLO dict sets (keys of SLOSpec; other keys such as a name are ignored)."""
    if not slo:
        return {}
    return {name: float(slo[name]) for name in OBJECTIVES if slo.get(name) is not None}


def finish_time(r: RequestResult) -> float | None:
    """When a sent request ended (its send time plus E2E, or its send time if it failed early)."""
    if r.sent is None:
        return None
    return r.sent + (r.e2e or 0.0)


def is_good(r: RequestResult, targets: dict[str, float]) -> bool:
    """DistServe's per-request test: ok, and within each per-request latency target (ms)."""
    if not r.ok:
        return False
    checks = (("ttft_p95_ms", r.ttft), ("itl_p95_ms", r.tpot), ("e2e_p99_ms", r.e2e))
    for name, seconds in checks:
        if name not in targets:
            continue
        if seconds is None:
            if name == "itl_p95_ms":      # one output token: no TPOT, counted as 0 as vLLM does
                continue
            return False
        if seconds * 1000.0 > targets[name]:
            return False
    return True


def error_text(r: RequestResult) -> str:
    """What went wrong with a failed request, in one line."""
    if r.error:
        return r.error
    return f"HTTP {r.status}" if r.status else "unknown error"


def attainment_base(run: RunResult) -> list[RequestResult]:
    """The requests attainment is a share of: all scheduled, or in a partial run those sent."""
    if run.partial:
        return [r for r in run.requests if r.sent is not None]
    return list(run.requests)


def summarize(run: RunResult, slo: dict[str, Any] | None = None) -> Summary:
    """The figures of `run`, judged against `slo` (default: `run.slo`; None: no judgement)."""
    slo = run.slo if slo is None else slo
    requests = run.requests
    sent = [r for r in requests if r.sent is not None]
    ok = [r for r in sent if r.ok]
    failed = [r for r in sent if not r.ok]
    duration = run.duration if run.duration > 0 else 0.0

    finishes = [t for t in (finish_time(r) for r in sent) if t is not None]
    span = (max(finishes) - min(r.sent for r in sent)) if sent else 0.0
    input_tokens = sum(r.prompt_tokens or 0 for r in ok)
    output_tokens = sum(r.output_tokens or 0 for r in ok)

    def per(count: float, seconds: float) -> float:
        return count / seconds if seconds > 0 else 0.0

    ttft = Distribution.of((r.ttft for r in ok if r.ttft is not None), 1000.0)
    tpot = Distribution.of((t for t in (r.tpot for r in ok) if t is not None), 1000.0)
    itl = Distribution.of((gap for r in ok for gap in r.itl), 1000.0)
    e2e = Distribution.of((r.e2e for r in ok if r.e2e is not None), 1000.0)
    lateness = Distribution.of((r.lateness for r in sent), 1000.0)
    error_rate = per(len(failed), len(sent)) if sent else 0.0

    targets = slo_targets(slo)
    good = attainment = goodput = None
    objectives: list[Objective] = []
    if targets:
        good = sum(1 for r in ok if is_good(r, targets))
        attainment = per(good, len(attainment_base(run)))
        goodput = per(good, duration)
        figures = {"ttft_ms": ttft, "itl_ms": itl, "e2e_ms": e2e}
        for name, target in targets.items():
            label, figure, statistic = OBJECTIVES[name]
            measured = error_rate if figure == "error_rate" else getattr(figures[figure], statistic)
            if figure == "error_rate" and not sent:
                measured = None
            objectives.append(Objective(name, label, target, measured, measured is not None and measured <= target))

    errors = Counter(error_text(r) for r in failed)

    return Summary(
        name=run.name,
        model=run.model,
        target=run.target,
        seed=run.seed,
        partial=run.partial,
        duration=run.duration,
        span=span,
        scheduled=len(requests),
        sent=len(sent),
        ok=len(ok),
        failed=len(failed),
        not_sent=len(requests) - len(sent),
        target_rate=per(len(requests), duration),
        achieved_rate=per(len(sent), duration),
        completed_rate=per(len(ok), duration),
        request_throughput=per(len(ok), span),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_throughput=per(input_tokens, span),
        output_throughput=per(output_tokens, span),
        error_rate=error_rate,
        ttft_ms=ttft,
        tpot_ms=tpot,
        itl_ms=itl,
        e2e_ms=e2e,
        lateness_ms=lateness,
        slo=dict(slo) if slo else None,
        good=good,
        attainment=attainment,
        goodput=goodput,
        objectives=tuple(objectives),
        errors=dict(sorted(errors.items(), key=lambda item: (-item[1], item[0]))),
    )


# ---------------------------------------------------------------------------------------------
# Terminal rendering


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render_summary(summary: Summary, width: int = 100) -> str:
    """A compact text table of the figures, for the terminal (plain text, no colour codes)."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None, markup=False,
                      highlight=False, emoji=False)
    s = summary
    title = f"{s.name or 'run'} -> {s.target} ({s.model})" + ("  PARTIAL: stopped early" if s.partial else "")
    console.print(title)
    console.print(
        f"requests: {s.scheduled} scheduled, {s.sent} sent, {s.ok} ok, {s.failed} failed, "
        f"{s.not_sent} not sent; error rate {pct(s.error_rate)}"
    )
    console.print(
        f"rate: target {fmt(s.target_rate, 2)}/s, achieved {fmt(s.achieved_rate, 2)}/s, "
        f"completed {fmt(s.completed_rate, 2)}/s over {fmt(s.duration)} s; "
        f"lateness p50 {fmt(s.lateness_ms.p50, 2)} ms, p99 {fmt(s.lateness_ms.p99, 2)} ms"
    )
    console.print(
        f"throughput: {fmt(s.request_throughput, 2)} req/s, {fmt(s.output_throughput)} output tok/s, "
        f"{fmt(s.input_throughput)} input tok/s over {fmt(s.span)} s "
        f"({s.input_tokens} input, {s.output_tokens} output tokens)"
    )

    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("ms", "mean", "p50", "p90", "p95", "p99", "n"):
        table.add_column(column, justify="left" if column == "ms" else "right")
    for label, d in (("TTFT", s.ttft_ms), ("TPOT", s.tpot_ms), ("ITL", s.itl_ms), ("E2E", s.e2e_ms)):
        table.add_row(label, fmt(d.mean), fmt(d.p50), fmt(d.p90), fmt(d.p95), fmt(d.p99), str(d.count))
    console.print(table)

    if s.objectives:
        console.print(
            f"SLO: {'MET' if s.slo_met else 'MISSED'}; attainment {pct(s.attainment)} "
            f"({s.good} good requests), goodput {fmt(s.goodput, 2)} req/s"
        )
        for o in s.objectives:
            shown = pct if o.name == "max_error_rate" else (lambda v: f"{fmt(v)} ms")
            console.print(f"  {'ok  ' if o.met else 'MISS'} {o.label}: {shown(o.measured)} (target {shown(o.target)})")
    else:
        console.print("SLO: none given, no attainment or goodput")
    for text, count in list(s.errors.items())[:5]:
        console.print(f"  error x{count}: {text[:200]}")
    return console.export_text()

