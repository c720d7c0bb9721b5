"""Grafana dashboards, generated from code: the seed's monitoring table as panels over enova's
Prometheus.

`dashboards(specs=None)` returns {file name: dashboard model} (Grafana's JSON model, schema 39);
`render_dashboard(model)` its text (keys sorted, two-space indent: the same input gives the same
bytes); `write_dashboards(directory, specs=None)` writes the files. `panel_queries(model)` lists
every panel query with Grafana's variables filled in, so tests can parse them with promtool and
run them against a real Prometheus. Pure apart from `write_dashboards`; imports no driver.

One dashboard, `enova.json` ("enova: LLM service"), variables `datasource` (any Prometheus) and
`deployment` (multi-select, All = `.*`, from `label_values(enova_gateway_requests_received_total,
deployment)`), rows:

- API service, from the gateway (enova.gateway.metrics): requests received (the seed's "sent"),
  processed and succeeded per second; success rate; requests in flight, queued and held; average
  execution time; average request and response size.
- LLM performance, from the engines (vLLM's own `vllm:*` series, target labels deployment,
  replica, runtime): prompt and generation throughput (tokens/s), running and waiting requests,
  KV-cache usage (with the EnovaKVCacheSaturated alert's 90% drawn).
- GPU: utilisation in percent from DCGM's exporter (`DCGM_FI_DEV_GPU_UTIL`) or, where it does not
  run, enova's NVML exporter (`enova_gpu_utilization_ratio`, 0-1): `max by (gpu)` of whichever
  exists (`or`), so one host's GPUs are shown once even when both run.
- Latency, from the gateway's histograms (what clients see): TTFT, ITL and E2E p50/p95/p99 and the
  engines' p95 beside them (the difference is time in the gateway's queue). With specs, each
  SLO target of the objective (ttft_p95_ms, itl_p95_ms, e2e_p99_ms) is a dashed threshold line;
  without specs there are no lines.
- Replicas and SLO: replica targets up and recorded per deployment over time, and per objective
  the good fraction over 1h and 3d from the SLO recording rules (enova.monitor.rules,
  `1 - enova:<sli>:ratio_rate<w>`) with the objective's level drawn (0.95 for a p95, 0.99 for a
  p99, 1 - max_error_rate). Without specs every objective has a panel; with specs only those an
  SLO sets, and no row when no deployment has an SLO.

Thresholds are per panel in Grafana, not per series: when deployments are held to different
targets every distinct target gets a line and the panel's description says whose it is.

Scaling events are an annotation computed by Prometheus, not read from the autoscaler's
`events.jsonl`: Grafana draws annotations only from a datasource, and that file is on the enova
host, where no datasource (Prometheus, Loki, a JSON API) serves it. The replica targets are what
every scale, start, stop and replacement changes, so the annotation marks each minute in which a
deployment's number of replica targets changed (a deployment that received traffic through the
gateway counts as 0 when it has none, so scaling to and from zero is marked too). It cannot say
why (autoscaler, apply or a crash): `enova scale status` and events.jsonl do.

Called by tests, and by whoever provisions Grafana (compose mode, not built yet). The files for
no specs are shipped in the wheel under `enova/monitor/grafana/` (`SHIPPED`), for a Grafana that
enova does not run; a test holds them equal to `dashboards()`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from enova.spec.loader import SpecSet
from enova.spec.models import SLOSpec

from .rules import (
    ERROR_RATE,
    GATEWAY_JOB,
    KV_CACHE_LIMIT,
    KV_CACHE_USAGE,
    LATENCY_OBJECTIVES,
    OBJECTIVES,
    REPLICAS_JOB,
    Objective,
)

SHIPPED = Path(__file__).parent / "grafana"
"""The dashboards for no specs, as shipped in the wheel."""

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DEPLOYMENT_METRIC = "enova_gateway_requests_received_total"
DEPLOYMENT_VARIABLE = f"label_values({DEPLOYMENT_METRIC}, deployment)"

# GPU utilisation: DCGM's exporter (percent) or enova's NVML exporter (a ratio, 0-1)
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
ENOVA_GPU_UTIL = "enova_gpu_utilization_ratio"
GPU_METRICS = (DCGM_GPU_UTIL, ENOVA_GPU_UTIL)

# What panel_queries puts in place of Grafana's variables (besides `deployment`, a parameter):
# $__rate_interval is at least 4 scrape intervals (1m at Grafana's default 15 s).
VARIABLES = {"__rate_interval": "1m"}

_GW = f'job="{GATEWAY_JOB}",deployment=~"$deployment"'
_ENGINE = f'job="{REPLICAS_JOB}",deployment=~"$deployment"'
_RATE = "[$__rate_interval]"

# Each latency objective's engine histogram (vLLM's), beside the gateway's
_ENGINE_HISTOGRAMS = {
    "ttft_p95_ms": "vllm:time_to_first_token_seconds",
    "itl_p95_ms": "vllm:inter_token_latency_seconds",
    "e2e_p99_ms": "vllm:e2e_request_latency_seconds",
}
_LATENCY_TITLES = {
    "ttft_p95_ms": ("Time to first token", "streamed requests, from arrival at the gateway to the first token sent"),
    "itl_p95_ms": ("Inter-token latency", "the gaps between token events of a stream"),
    "e2e_p99_ms": ("End-to-end latency", "successful requests, from arrival to the last byte sent"),
}
_ATTAINMENT_TITLES = {"ttft_p95_ms": "TTFT", "itl_p95_ms": "ITL", "e2e_p99_ms": "E2E latency",
                      "max_error_rate": "errors"}
ATTAINMENT_WINDOWS = ("1h", "3d")


# ---------------------------------------------------------------------------------------------
# The panels, as data


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Line:
    """A threshold line and whose it is."""

    value: float
    owners: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]
    lines: tuple[Line, ...] = ()
    min: Union[float, None] = None
    max: Union[float, None] = None
    decimals: Union[int, None] = None
    width: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def _per_second(metric: str, legend: str) -> Target:
    return Target(f"sum by (deployment) (rate({metric}{{{_GW}}}{_RATE}))", legend)


def _average(histogram: str, legend: str, selector: str = _GW) -> Target:
    return Target(f"sum by (deployment) (rate({histogram}_sum{{{selector}}}{_RATE}))\n/\n"
                  f"sum by (deployment) (rate({histogram}_count{{{selector}}}{_RATE}))", legend)


def _quantile(q: float, histogram: str, selector: str, legend: str) -> Target:
    return Target(f"histogram_quantile({q!r}, sum by (deployment, le) "
                  f"(rate({histogram}_bucket{{{selector}}}{_RATE})))", legend)


def _api_row() -> Row:
    return Row("API service (gateway)", (
        Panel("Requests per second",
              "Requests the gateway received (the seed's \"sent\"), answered (any status) and answered with "
              "success (2xx, streams sent to the end), per second: enova_gateway_requests_{received,processed,"
              "succeeded}_total.", "reqps",
              (_per_second("enova_gateway_requests_received_total", "{{deployment}} received"),
               _per_second("enova_gateway_requests_processed_total", "{{deployment}} processed"),
               _per_second("enova_gateway_requests_succeeded_total", "{{deployment}} succeeded")), min=0),
        Panel("Success rate",
              "Succeeded / processed requests: every answer counts, client errors (4xx) and clients that went "
              "away (499) too. The SLO's error rate, which leaves those out, is under Replicas and SLO.",
              "percentunit",
              (Target(f"sum by (deployment) (rate(enova_gateway_requests_succeeded_total{{{_GW}}}{_RATE}))\n/\n"
                      f"sum by (deployment) (rate(enova_gateway_requests_processed_total{{{_GW}}}{_RATE}))",
                      "{{deployment}}"),), min=0, max=1),
        Panel("Requests in flight",
              "Requests sent to a replica and not finished (enova_gateway_requests_in_flight), waiting in the "
              "gateway's queue for a slot (enova_gateway_queue_depth), and held while no replica is ready "
              "(enova_gateway_requests_held, scale from zero).", "short",
              (Target(f"sum by (deployment) (enova_gateway_requests_in_flight{{{_GW}}})", "{{deployment}} in flight"),
               Target(f"sum by (deployment) (enova_gateway_queue_depth{{{_GW}}})", "{{deployment}} queued"),
               Target(f"sum by (deployment) (enova_gateway_requests_held{{{_GW}}})", "{{deployment}} held")),
              min=0, decimals=0),
        Panel("Average execution time",
              "Time per request, from arrival at the gateway to the last byte sent, every answer: "
              "enova_gateway_request_duration_seconds.", "s",
              (_average("enova_gateway_request_duration_seconds", "{{deployment}}"),), min=0),
        Panel("Average request size", "Request body size: enova_gateway_request_size_bytes.", "bytes",
              (_average("enova_gateway_request_size_bytes", "{{deployment}}"),), min=0),
        Panel("Average response size", "Response body size sent: enova_gateway_response_size_bytes.", "bytes",
              (_average("enova_gateway_response_size_bytes", "{{deployment}}"),), min=0),
    ))


def _engine_row() -> Row:
    return Row("LLM performance (engines)", (
        Panel("Prompt and generation throughput",
              "Tokens per second the engines read (prompt) and wrote (generation): vllm:prompt_tokens_total, "
              "vllm:generation_tokens_total.", "suffix: tokens/s",
              (Target(f"sum by (deployment) (rate(vllm:prompt_tokens_total{{{_ENGINE}}}{_RATE}))",
                      "{{deployment}} prompt"),
               Target(f"sum by (deployment) (rate(vllm:generation_tokens_total{{{_ENGINE}}}{_RATE}))",
                      "{{deployment}} generation")), min=0),
        Panel("Running and waiting requests",
              "Per replica: requests in the engine's running batch (vllm:num_requests_running) and waiting for "
              "room in it (vllm:num_requests_waiting).", "short",
              (Target(f"sum by (deployment, replica) (vllm:num_requests_running{{{_ENGINE}}})", "{{replica}} running"),
               Target(f"sum by (deployment, replica) (vllm:num_requests_waiting{{{_ENGINE}}})", "{{replica}} waiting")),
              min=0, decimals=0),
        Panel("KV-cache usage",
              f"Per replica, the fullest engine's KV cache ({KV_CACHE_USAGE}). The line is the level of the "
              f"EnovaKVCacheSaturated alert ({KV_CACHE_LIMIT:.0%} for 5 minutes).", "percentunit",
              (Target(f"max by (deployment, replica) ({KV_CACHE_USAGE}{{{_ENGINE}}})", "{{replica}}"),),
              lines=(Line(KV_CACHE_LIMIT, "EnovaKVCacheSaturated"),), min=0, max=1),
    ))


def _gpu_row() -> Row:
    return Row("GPU", (
        Panel("GPU utilisation",
              f"Per GPU, the percentage of time a kernel ran: {DCGM_GPU_UTIL} from DCGM's exporter or, where "
              f"it does not run, {ENOVA_GPU_UTIL} from enova's NVML exporter. GPUs are not labelled by "
              "deployment, so the deployment variable does not apply. Empty on a host with no GPU.", "percent",
              (Target(f"max by (gpu) ({DCGM_GPU_UTIL})\nor\nmax by (gpu) ({ENOVA_GPU_UTIL} * 100)", "GPU {{gpu}}"),),
              min=0, max=100, width=24),
    ))


def _latency_row(lines: Mapping[str, tuple[Line, ...]]) -> Row:
    panels = []
    for objective in LATENCY_OBJECTIVES:
        assert objective.histogram is not None and objective.quantile is not None
        title, measured = _LATENCY_TITLES[objective.field]
        engine = _ENGINE_HISTOGRAMS[objective.field]
        own = lines.get(objective.field, ())
        described = (f"{title} of {measured}: p50, p95 and p99 of {objective.histogram}, and the engines' "
                     f"p95 ({engine}).")
        if own:
            described += f" Dashed: the SLO's {objective.field} target{'s' if len(own) > 1 else ''}: " + \
                         "; ".join(f"{line.value * 1000:g} ms ({line.owners})" for line in own) + "."
        percentiles = tuple(_quantile(q, objective.histogram, _GW, f"{{{{deployment}}}} p{round(q * 100)}")
                            for q in (0.5, 0.95, 0.99))
        panels.append(Panel(title, described, "s",
                            (*percentiles, _quantile(0.95, engine, _ENGINE, "{{deployment}} p95 in the engine")),
                            lines=own, min=0))
    return Row("Latency (gateway percentiles)", tuple(panels))


def _replicas_panel() -> Panel:
    return Panel("Replicas",
                 "Replica targets per deployment: up (the engine answers /metrics) and recorded (starting ones "
                 "too). Marked: minutes in which the number changed (the \"Replica count changes\" annotation).",
                 "short",
                 (Target(f"count by (deployment) (up{{{_ENGINE}}} == 1)", "{{deployment}} up"),
                  Target(f"count by (deployment) (up{{{_ENGINE}}})", "{{deployment}} recorded")),
                 min=0, decimals=0, width=24)


def _attainment_panel(objective: Objective, lines: tuple[Line, ...], width: int) -> Panel:
    record = f"enova:{objective.sli}"
    events = "requests answered (5xx and 429 are errors; other 4xx and 499 count neither way)" \
        if objective is ERROR_RATE else objective.events
    described = (f"The fraction of {events} that met the {objective.field} objective over {ATTAINMENT_WINDOWS[0]} "
                 f"and {ATTAINMENT_WINDOWS[1]}: 1 - {record}:ratio_rate<window>, recorded by the SLO rules of "
                 "deployments whose spec.slo names an SLO that sets it (evaluated every minute).")
    if lines:
        described += " Dashed: the objective's level: " + \
                     "; ".join(f"{line.value:.4g} ({line.owners})" for line in lines) + "."
    return Panel(f"SLO attainment: {_ATTAINMENT_TITLES[objective.field]}", described, "percentunit",
                 tuple(Target(f'1 - {record}:ratio_rate{w}{{deployment=~"$deployment"}}', f"{{{{deployment}}}} {w}")
                       for w in ATTAINMENT_WINDOWS),
                 lines=lines, max=1, width=width)


def _slo_row(objectives: tuple[Objective, ...], lines: Mapping[str, tuple[Line, ...]]) -> Row:
    width = 24 // len(objectives) if objectives else 24
    attainment = tuple(_attainment_panel(o, lines.get(f"attainment:{o.field}", ()), width) for o in objectives)
    return Row("Replicas and SLO", (_replicas_panel(), *attainment))


# ---------------------------------------------------------------------------------------------
# From the SLO documents: which objectives, which lines


def slo_lines(slos: Mapping[str, SLOSpec], deployments: Mapping[str, Union[str, None]]
              ) -> tuple[tuple[Objective, ...], dict[str, tuple[Line, ...]]]:
    """(the objectives some deployment is held to, in OBJECTIVES' order; the threshold lines by
    panel key): `<field>` for a latency panel (the target in seconds), `attainment:<field>` for an
    attainment panel (the good fraction the objective asks for). Lines sorted by value, each
    naming its deployments. Raises ValueError when a deployment names an SLO not in `slos`."""
    owners: dict[str, dict[float, list[str]]] = {}
    for deployment in sorted(deployments):
        slo = deployments[deployment]
        if slo is None:
            continue
        if slo not in slos:
            raise ValueError(f"deployment {deployment}: spec.slo names {slo!r}, which is not an SLO document "
                             f"(known: {', '.join(sorted(slos)) or 'none'})")
        spec = slos[slo]
        for objective in OBJECTIVES:
            target = getattr(spec, objective.field)
            if target is None:
                continue
            if objective is ERROR_RATE:
                keyed = {f"attainment:{objective.field}": round(1 - float(target), 9)}
            else:
                assert objective.quantile is not None
                keyed = {objective.field: float(target) / 1000, f"attainment:{objective.field}": objective.quantile}
            for key, value in keyed.items():
                owners.setdefault(key, {}).setdefault(value, []).append(f"{deployment}, SLO {slo}")
    lines = {key: tuple(Line(value, "; ".join(who)) for value, who in sorted(values.items()))
             for key, values in owners.items()}
    objectives = tuple(o for o in OBJECTIVES if f"attainment:{o.field}" in lines)
    return objectives, lines


# ---------------------------------------------------------------------------------------------
# The JSON model


def service_dashboard(objectives: tuple[Objective, ...] = OBJECTIVES,
                      lines: Union[Mapping[str, tuple[Line, ...]], None] = None) -> dict[str, Any]:
    """The "enova: LLM service" dashboard with attainment panels for `objectives` and `lines`
    (see `slo_lines`)."""
    lines = lines or {}
    rows = [_api_row(), _engine_row(), _gpu_row(), _latency_row(lines)]
    rows.append(_slo_row(objectives, lines) if objectives else Row("Replicas", (_replicas_panel(),)))
    return {
        "annotations": {"list": [_builtin_annotation(), _scaling_annotation()]},
        "description": "enova's gateway, engines and GPUs (generated by enova.monitor.dashboards).",
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": _layout(rows),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["enova"],
        "templating": {"list": [_datasource_variable(), _deployment_variable()]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "enova: LLM service",
        "uid": "enova-service",
        "version": 1,
    }


def dashboards(specs: Union[SpecSet, None] = None) -> dict[str, dict[str, Any]]:
    """{file name: dashboard model}. With `specs`, the SLO documents' targets are drawn as lines and
    only the objectives they set have attainment panels; without, every objective has one and
    there are no lines."""
    if specs is None:
        return {"enova.json": service_dashboard()}
    objectives, lines = slo_lines({name: located.doc.spec for name, located in specs.slos.items()},
                                  {name: located.doc.spec.slo for name, located in specs.deployments.items()})
    return {"enova.json": service_dashboard(objectives, lines)}


def render_dashboard(model: Mapping[str, Any]) -> str:
    """A dashboard's file text: JSON, keys sorted, two-space indent, one trailing newline."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_dashboards(directory: Path, specs: Union[SpecSet, None] = None) -> bool:
    """Write `dashboards(specs)` into `directory` (created if missing), each file replaced
    atomically and only when its content changes (Grafana's provisioning reloads what changed).
    Returns whether any file changed. Idempotent; blocks only on the disk; raises OSError."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    changed = False
    for name, model in sorted(dashboards(specs).items()):
        path, text = directory / name, render_dashboard(model)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        changed = True
    return changed


def _layout(rows: list[Row]) -> list[dict[str, Any]]:
    """Row panels and their panels on Grafana's 24-column grid, ids in order, 8 units high."""
    out: list[dict[str, Any]] = []
    y = 0
    for row in rows:
        out.append({"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": len(out) + 1,
                    "panels": [], "title": row.title, "type": "row"})
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            out.append(_panel(panel, {"h": 8, "w": panel.width, "x": x, "y": y}, len(out) + 1))
            x += panel.width
        y += 8
    return out


def _panel(panel: Panel, grid: dict[str, int], panel_id: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "color": {"mode": "palette-classic"},
        "custom": {"drawStyle": "line", "fillOpacity": 10, "lineWidth": 1, "showPoints": "never",
                   "spanNulls": False, "thresholdsStyle": {"mode": "dashed" if panel.lines else "off"}},
        "thresholds": {"mode": "absolute", "steps": [{"color": "transparent", "value": None},
                                                     *({"color": "red", "value": line.value} for line in panel.lines)]},
        "unit": panel.unit,
    }
    for key in ("min", "max", "decimals"):
        if getattr(panel, key) is not None:
            defaults[key] = getattr(panel, key)
    return {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": grid,
        "id": panel_id,
        "options": {"legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"datasource": DATASOURCE, "editorMode": "code", "expr": t.expr, "legendFormat": t.legend,
                     "range": True, "refId": chr(ord("A") + i)} for i, t in enumerate(panel.targets)],
        "title": panel.title,
        "type": "timeseries",
    }


def _builtin_annotation() -> dict[str, Any]:
    return {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}


def replica_count_expr() -> str:
    """The number of replica targets per deployment, and 0 for a deployment with none that has
    gateway series (so that scaling to and from zero is a change of the count, not a series
    appearing or vanishing)."""
    return (f"count by (deployment) (up{{{_ENGINE}}})\nor\n"
            f"0 * group by (deployment) ({DEPLOYMENT_METRIC}{{{_GW}}})")


def scaling_expr() -> str:
    """1 at each step within a minute after a deployment's number of replica targets changed
    (`replica_count_expr`, so scaling to and from zero is marked too). The count is sampled at
    Prometheus's evaluation interval (`[1m:]`; enova's configuration sets it to the scrape
    interval), not at a fixed step that could miss a change undone within it; `clamp_max(..., 1)` because Grafana (before 10) makes an event only of a 1."""
    return f"clamp_max(changes((\n{replica_count_expr()}\n)[1m:]), 1) == 1"


def _scaling_annotation() -> dict[str, Any]:
    return {"datasource": DATASOURCE, "enable": True, "expr": scaling_expr(), "hide": False,
            "iconColor": "orange", "name": "Replica count changes", "step": "15s", "tagKeys": "deployment",
            "textFormat": "{{deployment}}: the number of replica targets changed (scale, rollout, start or stop)",
            "titleFormat": "replicas changed", "useValueForTime": False}


def _datasource_variable() -> dict[str, Any]:
    return {"current": {}, "hide": 0, "includeAll": False, "label": "Prometheus", "multi": False,
            "name": "datasource", "options": [], "query": "prometheus", "refresh": 1, "regex": "",
            "type": "datasource"}


def _deployment_variable() -> dict[str, Any]:
    return {"allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "datasource": DATASOURCE, "definition": DEPLOYMENT_VARIABLE, "hide": 0, "includeAll": True,
            "label": "deployment", "multi": True, "name": "deployment", "options": [],
            "query": {"query": DEPLOYMENT_VARIABLE, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2, "regex": "", "sort": 1, "type": "query"}


# ---------------------------------------------------------------------------------------------
# The queries, for tests


_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def substitute(expr: str, deployment: str = ".*") -> str:
    """`expr` with Grafana's variables replaced as a dashboard would run it: `$deployment` by the
    regex `deployment`, `$__rate_interval` by 1m. Raises ValueError for any other variable."""
    values = {**VARIABLES, "deployment": deployment}

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def _panels(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in model.get("panels", []):
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))     # a collapsed row holds its panels
        else:
            out.append(panel)
    return out


def panel_queries(model: Mapping[str, Any], deployment: str = ".*") -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, in layout order, variables filled in
    (`substitute`)."""
    return [(panel["title"], substitute(target["expr"], deployment))
            for panel in _panels(model) for target in panel.get("targets", [])]


def annotation_queries(model: Mapping[str, Any], deployment: str = ".*") -> list[tuple[str, str]]:
    """(annotation name, PromQL) for every Prometheus annotation, variables filled in."""
    return [(a["name"], substitute(a["expr"], deployment))
            for a in model.get("annotations", {}).get("list", []) if "expr" in a]
