"""`enova inject report`: one self-contained HTML file for a run, with its figures, its SLO verdicts
and plots. Called by the CLI with a run read from its result file.

Self-contained means it opens on an offline GPU cluster: inline CSS, plots drawn here as inline SVG,
no script, no font, no stylesheet, no image fetched from anywhere. The page is rendered from
`templates/inject/report.html.j2` (found as `enova.engines.templates` finds its templates: inside
the wheel at `enova/templates/`, in a checkout at the top-level `templates/`), with autoescape on:
a profile, error text or model name is shown, never interpreted.

The plots: latency over time (each request's TTFT and E2E against its send time), the TTFT and ITL
distributions (histograms with p50/p95/p99 marked, and the SLO target when there is one), the target
vs achieved rate (per-second counts of requests scheduled, sent and completed), and SLO attainment
per time window (of the requests scheduled in it, the share that met every target).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import jinja2
import numpy as np
from markupsafe import Markup

from enova.engines.templates import templates_dir
from enova.errors import UsageError
from enova.inject.model import RunResult
from enova.inject.results import (
    Summary,
    attainment_base,
    finish_time,
    is_good,
    slo_targets,
    summarize,
)

TEMPLATE = "inject/report.html.j2"
MAX_POINTS = 4000          # scatter points drawn; beyond this every k-th request is shown
MAX_WINDOWS = 120          # attainment bars; windows widen (in 5 s steps) on long runs

COLORS = {
    "ttft": "#1f77b4", "e2e": "#ff7f0e", "failed": "#d62728", "scheduled": "#b8b8b8",
    "sent": "#1f77b4", "completed": "#2ca02c", "slo": "#d62728", "bar": "#4c9f70", "mark": "#444444",
}


def write_report(run: RunResult, path: Path, summary: Summary | None = None) -> Path:
    """Write the HTML report of `run` to `path` (parent folders created) and return the path.
    Idempotent: the same run gives the same file. Raises UsageError when the file cannot be written."""
    summary = summary or summarize(run)
    page = render_report(run, summary)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path


def render_report(run: RunResult, summary: Summary) -> str:
    """The report's HTML text."""
    targets = slo_targets(summary.slo)
    window = attainment_window(run.duration)
    started = datetime.fromtimestamp(run.started_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    plots = [
        ("Latency over time", latency_plot(run), "Each request's TTFT and end-to-end latency against the time it "
         "was sent; failed requests as red crosses on the time axis."),
        ("Time to first token", histogram_plot(
            [r.ttft * 1000 for r in run.requests if r.ok and r.ttft is not None], "TTFT (ms)", "requests",
            targets.get("ttft_p95_ms"), "SLO p95"), "Distribution of TTFT over successful requests."),
        ("Inter-token latency", histogram_plot(
            [gap * 1000 for r in run.requests if r.ok for gap in r.itl], "ITL (ms)", "gaps",
            targets.get("itl_p95_ms"), "SLO p95"), "Distribution of every gap between streamed token events."),
        ("Target vs achieved rate", rate_plot(run), "Requests per second: scheduled (the target), sent, and "
         "completed successfully, counted in one-second bins."),
    ]
    if targets:
        plots.append((f"SLO attainment per {window:g} s", attainment_plot(run, targets, window, summary.attainment),
                      f"Of the requests scheduled in each {window:g}-second window, the share that succeeded "
                      "within every per-request target (TTFT, TPOT, E2E)."))
    context = {
        "run": run,
        "s": summary,
        "started": started,
        "title": f"enova inject: {run.name or 'run'}" + (" (partial)" if run.partial else ""),
        "rows": figure_rows(summary),
        "distributions": distribution_rows(summary),
        "objectives": objective_rows(summary),
        "plots": [(title, Markup(svg), caption) for title, svg, caption in plots],
        "errors": list(summary.errors.items())[:10],
        "profile_json": json.dumps(run.profile, indent=2, sort_keys=True, default=str),
        "versions": sorted(run.versions.items()),
    }
    return _environment().get_template(TEMPLATE).render(**context)


# ---------------------------------------------------------------------------------------------
# Tables


def _num(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def figure_rows(s: Summary) -> list[tuple[str, str]]:
    rows = [
        ("Requests", f"{s.scheduled} scheduled, {s.sent} sent, {s.ok} ok, {s.failed} failed, {s.not_sent} not sent"),
        ("Error rate", _pct(s.error_rate)),
        ("Request rate", f"target {_num(s.target_rate, 2)}/s, achieved {_num(s.achieved_rate, 2)}/s "
                         f"({_pct(s.achieved_rate / s.target_rate if s.target_rate else None)} of target), "
                         f"completed {_num(s.completed_rate, 2)}/s"),
        ("Schedule lateness", f"p50 {_num(s.lateness_ms.p50, 2)} ms, p99 {_num(s.lateness_ms.p99, 2)} ms "
                              "(actual minus scheduled send)"),
        ("Request throughput", f"{_num(s.request_throughput, 2)} req/s over {_num(s.span, 1)} s"),
        ("Token throughput", f"{_num(s.output_throughput)} output tok/s, {_num(s.input_throughput)} input tok/s "
                             f"({s.output_tokens:,} output, {s.input_tokens:,} input tokens)"),
        ("Duration", f"{_num(s.duration, 1)} s scheduled"),
    ]
    if s.slo:
        rows.append(("SLO attainment", f"{_pct(s.attainment)} ({s.good} of the requests met every target)"))
        rows.append(("Goodput", f"{_num(s.goodput, 2)} req/s"))
    return rows


def distribution_rows(s: Summary) -> list[list[str]]:
    rows = []
    for label, d in (("TTFT", s.ttft_ms), ("TPOT", s.tpot_ms), ("ITL", s.itl_ms), ("E2E", s.e2e_ms)):
        rows.append([label, _num(d.mean), _num(d.p50), _num(d.p90), _num(d.p95), _num(d.p99), f"{d.count:,}"])
    return rows


def objective_rows(s: Summary) -> list[dict[str, Any]]:
    rows = []
    for o in s.objectives:
        shown = _pct if o.name == "max_error_rate" else (lambda v: _num(v, 1, " ms"))
        rows.append({"label": o.label, "target": shown(o.target), "measured": shown(o.measured), "met": o.met})
    return rows


# ---------------------------------------------------------------------------------------------
# Time series


def per_second(times: Iterable[float], end: float) -> np.ndarray:
    """Counts of `times` in the one-second bins [0, 1), [1, 2), ... up to `end` (rounded up)."""
    seconds = max(1, math.ceil(end))
    counts, _ = np.histogram(np.asarray(list(times), dtype=float), bins=np.arange(seconds + 1))
    return counts


def attainment_window(duration: float) -> float:
    """5 s, widened in steps of 5 s so a long run has at most MAX_WINDOWS windows."""
    return 5.0 * max(1, math.ceil(duration / (5.0 * MAX_WINDOWS)))


def attainment_series(run: RunResult, targets: dict[str, float], window: float) -> list[tuple[float, float | None]]:
    """(window start, share of its requests that were good; None if no request was scheduled in it)."""
    base = attainment_base(run)
    end = max([run.duration] + [r.scheduled for r in base])
    count = max(1, math.ceil(end / window - 1e-9))
    totals = [0] * count
    goods = [0] * count
    for r in base:
        k = min(int(r.scheduled // window), count - 1)
        totals[k] += 1
        goods[k] += is_good(r, targets)
    return [(k * window, goods[k] / totals[k] if totals[k] else None) for k in range(count)]


# ---------------------------------------------------------------------------------------------
# SVG plots


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if decimals == 0 and step % 1:
        decimals = 1
    if decimals and not float(f"{step:.{decimals}f}") == step:
        decimals += 1
    return f"{value:,.{decimals}f}"


@dataclass
class Chart:
    """A plot area with labelled axes; shapes are added in data coordinates, `svg()` draws them."""

    x_ticks: Sequence[float]
    y_ticks: Sequence[float]
    x_label: str
    y_label: str
    width: int = 600
    height: int = 300
    left: int = 72
    right: int = 20
    top: int = 30
    bottom: int = 48

    def __post_init__(self) -> None:
        self.shapes: list[str] = []
        self.legend: list[tuple[str, str, str]] = []   # (label, colour, shape)

    @property
    def x0(self) -> float:
        return self.x_ticks[0]

    @property
    def x1(self) -> float:
        return self.x_ticks[-1]

    @property
    def y0(self) -> float:
        return self.y_ticks[0]

    @property
    def y1(self) -> float:
        return self.y_ticks[-1]

    def sx(self, x: float) -> float:
        plot = self.width - self.left - self.right
        return self.left + (x - self.x0) / ((self.x1 - self.x0) or 1) * plot

    def sy(self, y: float) -> float:
        plot = self.height - self.top - self.bottom
        return self.top + plot - (y - self.y0) / ((self.y1 - self.y0) or 1) * plot

    def add(self, element: str) -> None:
        self.shapes.append(element)

    def points(self, xs: Sequence[float], ys: Sequence[float], color: str, radius: float = 2.2) -> None:
        for x, y in zip(xs, ys):
            self.add(f'<circle cx="{self.sx(x):.1f}" cy="{self.sy(y):.1f}" r="{radius}" fill="{color}" '
                     'fill-opacity="0.55"/>')

    def crosses(self, xs: Sequence[float], y: float, color: str) -> None:
        for x in xs:
            cx, cy = self.sx(x), self.sy(y)
            self.add(f'<path d="M{cx - 3:.1f},{cy - 3:.1f}L{cx + 3:.1f},{cy + 3:.1f}M{cx - 3:.1f},{cy + 3:.1f}'
                     f'L{cx + 3:.1f},{cy - 3:.1f}" stroke="{color}" stroke-width="1.5"/>')

    def polyline(self, xs: Sequence[float], ys: Sequence[float], color: str, dash: str = "", width: float = 1.6) -> None:
        path = " ".join(f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in zip(xs, ys))
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{width}"{dashed}/>')

    def bar(self, x_from: float, x_to: float, y: float, color: str, opacity: float = 1.0) -> None:
        left, right = self.sx(x_from), self.sx(x_to)
        top, base = self.sy(y), self.sy(self.y0)
        self.add(f'<rect x="{left:.1f}" y="{top:.1f}" width="{max(right - left, 0.5):.1f}" '
                 f'height="{max(base - top, 0):.1f}" fill="{color}" fill-opacity="{opacity}"/>')

    def vline(self, x: float, color: str, label: str, row: int = 0, dash: str = "4 3") -> None:
        cx = self.sx(x)
        self.add(f'<line x1="{cx:.1f}" y1="{self.top}" x2="{cx:.1f}" y2="{self.height - self.bottom}" '
                 f'stroke="{color}" stroke-width="1.4" stroke-dasharray="{dash}"/>')
        anchor = "end" if cx > self.width - self.right - 90 else "start"
        shift = -4 if anchor == "end" else 4
        self.add(f'<text x="{cx + shift:.1f}" y="{self.top + 12 + 13 * row}" font-size="11" fill="{color}" '
                 f'text-anchor="{anchor}" stroke="#ffffff" stroke-width="3" paint-order="stroke">'
                 f'{html.escape(label)}</text>')

    def hline(self, y: float, color: str, label: str, dash: str = "4 3") -> None:
        cy = self.sy(y)
        self.add(f'<line x1="{self.left}" y1="{cy:.1f}" x2="{self.width - self.right}" y2="{cy:.1f}" '
                 f'stroke="{color}" stroke-width="1.4" stroke-dasharray="{dash}"/>')
        self.add(f'<text x="{self.width - self.right - 4}" y="{cy - 4:.1f}" font-size="11" fill="{color}" '
                 f'text-anchor="end" stroke="#ffffff" stroke-width="3" paint-order="stroke">{html.escape(label)}</text>')

    def key(self, label: str, color: str, shape: str = "square") -> None:
        self.legend.append((label, color, shape))

    def svg(self) -> str:
        out = [f'<svg viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" '
               'role="img" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">']
        plot_bottom = self.height - self.bottom
        x_step = self.x_ticks[1] - self.x_ticks[0] if len(self.x_ticks) > 1 else 1
        y_step = self.y_ticks[1] - self.y_ticks[0] if len(self.y_ticks) > 1 else 1
        for y in self.y_ticks:
            cy = self.sy(y)
            out.append(f'<line x1="{self.left}" y1="{cy:.1f}" x2="{self.width - self.right}" y2="{cy:.1f}" '
                       'stroke="#e4e4e4"/>')
            out.append(f'<text x="{self.left - 6}" y="{cy + 4:.1f}" font-size="11" text-anchor="end" fill="#333">'
                       f'{tick_label(y, y_step)}</text>')
        for x in self.x_ticks:
            cx = self.sx(x)
            out.append(f'<line x1="{cx:.1f}" y1="{plot_bottom}" x2="{cx:.1f}" y2="{plot_bottom + 5}" stroke="#333"/>')
            out.append(f'<text x="{cx:.1f}" y="{plot_bottom + 18}" font-size="11" text-anchor="middle" fill="#333">'
                       f'{tick_label(x, x_step)}</text>')
        out.extend(self.shapes)
        out.append(f'<line x1="{self.left}" y1="{plot_bottom}" x2="{self.width - self.right}" y2="{plot_bottom}" '
                   'stroke="#333"/>')
        out.append(f'<line x1="{self.left}" y1="{self.top}" x2="{self.left}" y2="{plot_bottom}" stroke="#333"/>')
        out.append(f'<text x="{(self.left + self.width - self.right) / 2:.1f}" y="{self.height - 8}" font-size="12" '
                   f'text-anchor="middle" fill="#111">{html.escape(self.x_label)}</text>')
        middle = (self.top + plot_bottom) / 2
        out.append(f'<text x="16" y="{middle:.1f}" font-size="12" text-anchor="middle" fill="#111" '
                   f'transform="rotate(-90 16 {middle:.1f})">{html.escape(self.y_label)}</text>')
        x = self.left
        for label, color, shape in self.legend:
            if shape == "line":
                out.append(f'<line x1="{x}" y1="14" x2="{x + 14}" y2="14" stroke="{color}" stroke-width="2.5"/>')
            elif shape == "cross":
                out.append(f'<path d="M{x + 3},10L{x + 11},18M{x + 3},18L{x + 11},10" stroke="{color}" '
                           'stroke-width="1.8"/>')
            else:
                out.append(f'<rect x="{x}" y="8" width="12" height="12" fill="{color}"/>')
            out.append(f'<text x="{x + 18}" y="18" font-size="12" fill="#111">{html.escape(label)}</text>')
            x += 30 + 7 * len(label)
        out.append("</svg>")
        return "\n".join(out)


def _empty(message: str, x_label: str, y_label: str) -> str:
    chart = Chart(nice_ticks(0, 1), nice_ticks(0, 1), x_label, y_label)
    chart.add(f'<text x="{chart.width / 2}" y="{chart.height / 2}" font-size="14" text-anchor="middle" '
              f'fill="#888">{html.escape(message)}</text>')
    return chart.svg()


def _time_ticks(run: RunResult, extra: Iterable[float] = ()) -> list[float]:
    return nice_ticks(0.0, max([run.duration, 1.0] + list(extra)), 8)


def latency_plot(run: RunResult) -> str:
    sent = [r for r in run.requests if r.sent is not None]
    if not sent:
        return _empty("no request was sent", "send time (s)", "latency (ms)")
    stride = max(1, math.ceil(len(sent) / MAX_POINTS))
    shown = sent[::stride]
    ok = [r for r in shown if r.ok]
    failed = [r for r in shown if not r.ok]
    top = max([r.e2e * 1000 for r in ok if r.e2e is not None] + [r.ttft * 1000 for r in ok if r.ttft is not None]
              + [1.0])
    chart = Chart(_time_ticks(run, (r.sent for r in sent)), nice_ticks(0.0, top), "send time (s)", "latency (ms)")
    e2e = [(r.sent, r.e2e * 1000) for r in ok if r.e2e is not None]
    ttft = [(r.sent, r.ttft * 1000) for r in ok if r.ttft is not None]
    chart.points([x for x, _ in e2e], [y for _, y in e2e], COLORS["e2e"])
    chart.points([x for x, _ in ttft], [y for _, y in ttft], COLORS["ttft"])
    chart.crosses([r.sent for r in failed], 0.0, COLORS["failed"])
    chart.key("TTFT", COLORS["ttft"])
    chart.key("E2E", COLORS["e2e"])
    chart.key(f"failed ({sum(1 for r in sent if not r.ok)})", COLORS["failed"], "cross")
    if stride > 1:
        chart.key(f"every {stride}th request shown", "#ffffff")
    return chart.svg()


def histogram_plot(values: list[float], x_label: str, y_label: str, slo: float | None, slo_label: str,
                   bins: int = 40) -> str:
    if not values:
        return _empty("no measurement", x_label, y_label)
    data = np.asarray(values, dtype=float)
    p50, p95, p99 = (float(v) for v in np.percentile(data, (50, 95, 99)))
    # One far outlier would squeeze every bar into the first bin: the axis ends a little past p99
    # (or the SLO target), and the values beyond are counted in the last bin, which says so.
    hi = max(p99 * 1.5, slo * 1.1 if slo else 0.0, float(data.min()) + 1e-9)
    hi = min(hi, float(data.max())) if data.max() > 0 else 1.0
    x_ticks = nice_ticks(0.0, max(hi, 1e-6))
    edges = np.linspace(x_ticks[0], x_ticks[-1], bins + 1)
    counts, _ = np.histogram(np.clip(data, edges[0], edges[-1]), bins=edges)
    chart = Chart(x_ticks, nice_ticks(0.0, max(float(counts.max()), 1.0)), x_label, y_label)
    for k, count in enumerate(counts):
        if count:
            chart.bar(float(edges[k]), float(edges[k + 1]), float(count), COLORS["ttft"], 0.75)
    for row, (label, value) in enumerate((("p50", p50), ("p95", p95), ("p99", p99))):
        chart.vline(min(value, x_ticks[-1]), COLORS["mark"], f"{label} {value:,.1f}", row)
    if slo is not None:
        chart.vline(min(slo, x_ticks[-1]), COLORS["slo"], f"{slo_label} {slo:,.0f}", 3, dash="")
    beyond = int((data > edges[-1]).sum())
    chart.key(f"{y_label}: {data.size:,}", COLORS["ttft"])
    if beyond:
        chart.key(f"{beyond:,} beyond {x_ticks[-1]:,g} in the last bin", "#ffffff")
    return chart.svg()


def rate_plot(run: RunResult) -> str:
    finishes = [finish_time(r) for r in run.requests if r.ok]
    end = max([run.duration, 1.0] + [t for t in finishes if t is not None]
              + [r.scheduled for r in run.requests])
    scheduled = per_second((r.scheduled for r in run.requests), end)
    sent = per_second((r.sent for r in run.requests if r.sent is not None), end)
    completed = per_second((t for t in finishes if t is not None), end)
    top = max(float(scheduled.max(initial=0)), float(sent.max(initial=0)), float(completed.max(initial=0)), 1.0)
    chart = Chart(nice_ticks(0.0, float(len(scheduled)), 8), nice_ticks(0.0, top), "time since start (s)",
                  "requests per second")
    for k, count in enumerate(scheduled):
        if count:
            chart.bar(k, k + 1, float(count), COLORS["scheduled"])

    def steps(counts: np.ndarray) -> tuple[list[float], list[float]]:
        xs: list[float] = []
        ys: list[float] = []
        for k, count in enumerate(counts):
            xs += [k, k + 1]
            ys += [float(count), float(count)]
        return xs, ys

    chart.polyline(*steps(sent), COLORS["sent"])
    chart.polyline(*steps(completed), COLORS["completed"], dash="5 3")
    chart.key("scheduled (target)", COLORS["scheduled"])
    chart.key("sent", COLORS["sent"], "line")
    chart.key("completed ok", COLORS["completed"], "line")
    return chart.svg()


def attainment_plot(run: RunResult, targets: dict[str, float], window: float, overall: float | None) -> str:
    series = attainment_series(run, targets, window)
    end = len(series) * window
    chart = Chart(nice_ticks(0.0, end, 8), [0, 20, 40, 60, 80, 100], "time since start (s), by scheduled send",
                  "requests meeting the SLO (%)")
    for start, share in series:
        if share is not None:
            chart.bar(start + window * 0.06, start + window * 0.94, share * 100, COLORS["bar"])
    if overall is not None:
        chart.hline(overall * 100, COLORS["slo"], f"whole run {overall * 100:.1f}%")
    chart.key(f"attainment per {window:g} s window", COLORS["bar"])
    return chart.svg()


# ---------------------------------------------------------------------------------------------
# Template


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),  # enova's templates, in the wheel or a checkout
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )

