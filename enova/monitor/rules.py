"""Prometheus recording and alerting rules, generated from the SLO documents.

`slo_rules(slos, deployments)` returns a Prometheus rules file (`{"groups": [...]}`) and
`render_rules(specs)` its YAML text: deterministic (groups and rules in a fixed order, no time or
host in it), for `<state_dir>/monitoring/rules/*.yml`. Pure: reads nothing, imports no driver.
Called by `enova mon` (enova.monitor) and the tests, which run `promtool check rules` and
`promtool test rules` on the output.

The file holds three kinds of group:

- `enova-health`, always: `EnovaReplicaDown` (an engine's scrape target down for 1m, unless
  the reconciler records the replica as starting), `EnovaReplicaStartFailing` (the reconciler
  counted a StartFailed or CrashLoopBackOff in the last 15m),
  `EnovaKVCacheSaturated` (a replica's KV cache over 90% for 5m) and `EnovaGatewayRejecting`
  (the gateway answering 429/503 itself for lack of capacity, for more than 5m). Severity
  ticket: pages come from the burn-rate alerts, which measure what users see.
- `enova-sli`, always: the percentiles an SLO names, per deployment, as the gateway measures
  them and as the engines do (`enova:gateway_ttft_seconds:p95_rate5m`,
  `enova:engine_ttft_seconds:p95_rate5m`, ...). For TTFT and E2E the gap between the two is time queued
  in the gateway; the alerts' descriptions point at them.
- `enova-slo-<deployment>`, one per deployment whose spec.slo names an SLO: for each objective
  of that SLO, the fraction of bad events over 5m, 30m, 1h, 2h, 6h, 1d and 3d
  (`enova:<sli>:ratio_rate<window>`), and two alerts on the error budget, the Google SRE
  workbook's multi-window, multi-burn-rate alerts ("Alerting on SLOs", method 6):
  severity page when the 1h and 5m ratios both exceed 14.4x the budget, or 6h and 30m 6x;
  severity ticket when 1d and 2h exceed 3x, or 3d and 6h 1x. Evaluated every minute, not
  every scrape: the 1d and 3d ratios read days of samples.

The SLIs use the gateway's metrics (enova.gateway.metrics), which see what clients see:
queueing, retries and the gateway's own refusals that an engine never sees. Budgets:

- max_error_rate: an error is an answer 5xx or 429 (`enova_gateway_requests_processed_total`,
  label `code`); client errors (other 4xx, 499 when the client went away) count neither as
  errors nor as requests. Budget = max_error_rate.
- ttft_p95_ms, itl_p95_ms, e2e_p99_ms: a pN objective lets (100 - N)% of events be slower than
  the target (budget 0.05 for p95, 0.01 for p99); an event is slow when it is above the target
  in the gateway's histogram. A histogram only knows its bucket boundaries, so the threshold is
  the boundary equal to the target, or else the nearest one below it (a stricter SLI, that may
  alert early), or, for a target below the smallest boundary, the smallest boundary (a lenient
  one). `latency_threshold` chooses, and the alerts' descriptions say which it was. ITL's
  events are the gaps between tokens of a stream, TTFT's are streams, E2E's successful requests.

Prometheus's scrape jobs are those of enova.monitor.targets: `enova-gateway` (no target labels:
`deployment` is the gateway's own label) and `enova-replicas` (target labels deployment, replica,
runtime). The gateway's histogram boundaries are copied in `GATEWAY_HISTOGRAMS`; a test holds
them equal to a real /metrics page of the gateway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

import yaml

from enova.spec.loader import SpecSet
from enova.spec.models import SLOSpec

GATEWAY_JOB = "enova-gateway"
REPLICAS_JOB = "enova-replicas"
RECONCILER_JOB = "enova-reconciler"
REPLICA_STATE = "enova_replica_state"              # the reconciler's (enova.reconcile.metrics)
RECONCILER_ERRORS = "enova_reconciler_errors_total"
START_FAILURES = ("StartFailed", "CrashLoopBackOff")   # the reconciler's error reasons of replicas that cannot start

# The gateway's latency histograms and their bucket boundaries in seconds (enova.gateway.metrics).
GATEWAY_HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "enova_gateway_time_to_first_token_seconds": (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30),
    "enova_gateway_inter_token_latency_seconds": (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
                                                  0.1, 0.25, 0.5, 1),
    "enova_gateway_e2e_latency_seconds": (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
}
PROCESSED = "enova_gateway_requests_processed_total"
REJECTIONS = "enova_gateway_rejections_total"
ERROR_CODES = "5..|429"         # an answer that counts against max_error_rate
VALID_CODES = "[^4]..|429"      # every answer but the client's own errors (4xx other than 429, 499)
# enova_gateway_rejections_total reasons that mean "no capacity" (429 queue_*, 503 no replica)
CAPACITY_REASONS = ("hold_timeout", "no_ready_replica", "queue_full", "queue_timeout")
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
KV_CACHE_LIMIT = 0.9

SLO_DAYS = 30   # the budget period the workbook's burn factors assume
SLO_EVALUATION_INTERVAL = "1m"


@dataclass(frozen=True)
class BurnWindow:
    """One pair of windows of a multi-window alert: both ratios above factor x budget."""

    severity: Literal["page", "ticket"]
    long: str
    short: str
    factor: float


BURN_WINDOWS = (
    BurnWindow("page", "1h", "5m", 14.4),
    BurnWindow("page", "6h", "30m", 6.0),
    BurnWindow("ticket", "1d", "2h", 3.0),
    BurnWindow("ticket", "3d", "6h", 1.0),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")   # every window a ratio is recorded over
SEVERITIES = ("page", "ticket")


@dataclass(frozen=True)
class Objective:
    """How one field of SLOSpec becomes an SLI, its budget and its alerts."""

    field: str          # the SLOSpec field
    key: str            # the `objective` label
    alert: str          # the burn-rate alert's name
    sli: str            # the recorded ratio: enova:<sli>:ratio_rate<window>
    title: str          # for the summary
    quantile: Union[float, None] = None        # latency objectives: the percentile
    histogram: Union[str, None] = None         # ... and the gateway's histogram
    events: str = "requests"                   # what the ratio counts
    slow: str = ""                             # "<events> {slow} <threshold>"
    diagnose: str = ""                         # the percentile records to compare
    gap: str = ""                              # what a gateway/engine difference means


ERROR_RATE = Objective(field="max_error_rate", key="error_rate", alert="EnovaErrorRateBudgetBurn",
                       sli="slo_errors_per_request", title="error-rate")
LATENCY_OBJECTIVES = (
    Objective(field="ttft_p95_ms", key="ttft_p95", alert="EnovaTTFTBudgetBurn", sli="slo_slow_ttft_per_request",
              title="TTFT", quantile=0.95, histogram="enova_gateway_time_to_first_token_seconds",
              events="streamed requests", slow="waited longer than {} for their first token",
              diagnose="ttft_seconds:p95_rate5m",
              gap="the difference is time queued in the gateway: enova_gateway_queue_depth"),
    Objective(field="itl_p95_ms", key="itl_p95", alert="EnovaITLBudgetBurn", sli="slo_slow_itl_per_token",
              title="ITL", quantile=0.95, histogram="enova_gateway_inter_token_latency_seconds",
              events="gaps between streamed tokens", slow="were longer than {}",
              diagnose="itl_seconds:p95_rate5m",
              gap="the engine's own gaps grow with its batch: vllm:num_requests_running"),
    Objective(field="e2e_p99_ms", key="e2e_p99", alert="EnovaE2ELatencyBudgetBurn", sli="slo_slow_e2e_per_request",
              title="E2E-latency", quantile=0.99, histogram="enova_gateway_e2e_latency_seconds",
              events="successful requests", slow="took longer than {} end to end",
              diagnose="e2e_seconds:p99_rate5m",
              gap="the difference is time queued in the gateway: enova_gateway_queue_depth"),
)
OBJECTIVES = (*LATENCY_OBJECTIVES, ERROR_RATE)

# The percentiles of enova-sli: (record suffix, quantile, gateway histogram, engine histogram)
_PERCENTILES = (
    ("ttft_seconds:p95_rate5m", 0.95, "enova_gateway_time_to_first_token_seconds", "vllm:time_to_first_token_seconds"),
    ("itl_seconds:p95_rate5m", 0.95, "enova_gateway_inter_token_latency_seconds", "vllm:inter_token_latency_seconds"),
    ("e2e_seconds:p99_rate5m", 0.99, "enova_gateway_e2e_latency_seconds", "vllm:e2e_request_latency_seconds"),
)


@dataclass(frozen=True)
class Threshold:
    """The histogram boundary a latency target is measured against."""

    seconds: float
    fit: Literal["exact", "below", "above"]     # the boundary is the target, the nearest below it,
                                                # or (no boundary below) the smallest one, above it


def latency_threshold(target_ms: float, buckets: tuple[float, ...]) -> Threshold:
    """The boundary of `buckets` (seconds) a `target_ms` objective is measured against: the one
    equal to the target, else the nearest below it, else the smallest boundary."""
    target = target_ms / 1000
    below = [b for b in buckets if b <= target or math.isclose(b, target, rel_tol=1e-9)]
    if not below:
        return Threshold(min(buckets), "above")
    best = max(below)
    return Threshold(best, "exact" if math.isclose(best, target, rel_tol=1e-9) else "below")


def le_matcher(boundary: float) -> str:
    """A label matcher for the `le` of `boundary`. prometheus_client writes 1 as "1.0" and
    Prometheus 3 normalises it to "1", so a whole number matches either spelling."""
    if float(boundary).is_integer():
        whole = int(boundary)
        return f'le=~"{whole}|{whole}[.]0"'
    return f'le="{float(boundary)!r}"'


# ---------------------------------------------------------------------------------------------
# The rules file


def slo_rules(slos: Mapping[str, SLOSpec], deployments: Mapping[str, Union[str, None]]) -> dict[str, Any]:
    """The rules file for `deployments` ({deployment: the SLO its spec.slo names, or None}) held to
    `slos` ({name: SLOSpec}). Raises ValueError when a deployment names an SLO not in `slos`."""
    groups = [_health_group(), _sli_group()]
    for deployment in sorted(deployments):
        slo = deployments[deployment]
        if slo is None:
            continue
        if slo not in slos:
            raise ValueError(f"deployment {deployment}: spec.slo names {slo!r}, which is not an SLO document "
                             f"(known: {', '.join(sorted(slos)) or 'none'})")
        groups.append(_slo_group(deployment, slo, slos[slo]))
    return {"groups": groups}


def spec_rules(specs: SpecSet) -> dict[str, Any]:
    """`slo_rules` for every deployment and SLO document of `specs`."""
    return slo_rules({name: located.doc.spec for name, located in specs.slos.items()},
                     {name: located.doc.spec.slo for name, located in specs.deployments.items()})


def render_rules(specs: SpecSet) -> str:
    """The rules file of `specs` as YAML text."""
    return dump_rules(spec_rules(specs))


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)

HEADER = "# Written by enova from the SLO documents (enova.monitor.rules); edits are overwritten.\n"


def dump_rules(rules: dict[str, Any]) -> str:
    """A rules file as YAML text: keys in the order built, expressions as literal blocks."""
    return HEADER + yaml.dump(rules, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                              width=1 << 16, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# Groups


def _health_group() -> dict[str, Any]:
    reasons = "|".join(CAPACITY_REASONS)
    return {"name": "enova-health", "rules": [
        {"alert": "EnovaReplicaDown",
         # a replica the reconciler records as starting is not down: a large model loads for minutes
         # (its failures to start are EnovaReplicaStartFailing)
         "expr": (f'up{{job="{REPLICAS_JOB}"}} == 0\nunless on (deployment, replica)\n'
                  f'{REPLICA_STATE}{{job="{RECONCILER_JOB}",state="starting"}} == 1'),
         "for": "1m",
         "labels": {"severity": "ticket"},
         "annotations": {
             "summary": "{{ $labels.deployment }}: replica {{ $labels.replica }} is down",
             "description": ("Prometheus has not been able to scrape the engine of replica {{ $labels.replica }} "
                             "(deployment {{ $labels.deployment }}, runtime {{ $labels.runtime }}) at "
                             "{{ $labels.instance }}/metrics for 1 minute, and the reconciler does not record it "
                             f"as starting ({REPLICA_STATE}; without a running reconciler a starting replica "
                             "counts as down too). Check: `enova status` (exited, restarting?), `enova logs "
                             "{{ $labels.deployment }} --replica {{ $labels.replica }}`, and the host's memory "
                             "(an engine killed for memory leaves no error in its log)."),
         }},
        {"alert": "EnovaReplicaStartFailing",
         "expr": (f'sum by (deployment, reason) (increase({RECONCILER_ERRORS}'
                  f'{{job="{RECONCILER_JOB}",reason=~"{"|".join(START_FAILURES)}"}}[15m])) > 0'),
         "labels": {"severity": "ticket"},
         "annotations": {
             "summary": "{{ $labels.deployment }}: replicas fail to start ({{ $labels.reason }})",
             "description": ("The reconciler counted about {{ printf \"%.0f\" $value }} {{ $labels.reason }} for "
                             f"{{{{ $labels.deployment }}}} in the last 15 minutes ({RECONCILER_ERRORS}): its "
                             "replicas crash or never become healthy within engine.startup_timeout, and it "
                             "retries with growing delays. Check: `enova events -d {{ $labels.deployment }}` "
                             "(each failure with the engine's last log lines), "
                             "`enova logs {{ $labels.deployment }}`, the engine arguments, the model's size "
                             "against the GPU or host memory, and a recent spec change."),
         }},
        {"alert": "EnovaKVCacheSaturated",
         "expr": f'max by (deployment, replica) ({KV_CACHE_USAGE}{{job="{REPLICAS_JOB}"}}) > {KV_CACHE_LIMIT!r}',
         "for": "5m",
         "labels": {"severity": "ticket"},
         "annotations": {
             "summary": ("{{ $labels.deployment }}: replica {{ $labels.replica }}'s KV cache is "
                         "{{ $value | humanizePercentage }} full"),
             "description": (f"{KV_CACHE_USAGE} of replica {{{{ $labels.replica }}}} has stayed above "
                             f"{KV_CACHE_LIMIT:.0%} for 5 minutes (now {{{{ $value | humanizePercentage }}}}): new "
                             "requests wait for room in the batch and running ones may be preempted. Check: "
                             "vllm:num_requests_waiting and vllm:num_preemptions_total of the replica, "
                             "enova_gateway_queue_depth, the deployment's max_concurrency against the engine's "
                             "max_num_seqs and KV-cache size, and whether the autoscaler is at its max "
                             "(`enova scale status {{ $labels.deployment }}`)."),
         }},
        {"alert": "EnovaGatewayRejecting",
         "expr": (f'sum by (deployment, reason) '
                  f'(rate({REJECTIONS}{{job="{GATEWAY_JOB}",reason=~"{reasons}"}}[5m])) > 0'),
         "for": "10m",       # the 5m window stays > 0 for 5m after one rejection: 10m means 5m of them
         "labels": {"severity": "ticket"},
         "annotations": {
             "summary": "{{ $labels.deployment }}: the gateway is rejecting requests ({{ $labels.reason }})",
             "description": (f"For more than 5 minutes the gateway has been answering requests to "
                             f"{{{{ $labels.deployment }}}} itself with {{{{ $labels.reason }}}}, "
                             f"{{{{ printf \"%.2f\" $value }}}} a second over the last 5 minutes ({REJECTIONS}): "
                             "queue_full and queue_timeout (429) mean every replica is at max_concurrency "
                             "and the queue is full or too slow; no_ready_replica and hold_timeout (503) "
                             "mean no replica is ready. Check: `enova status` (ready replicas), "
                             "`enova scale status {{ $labels.deployment }}` (at max?), "
                             "enova_gateway_queue_depth and enova_gateway_requests_in_flight."),
         }},
    ]}


def _sli_group() -> dict[str, Any]:
    rules = []
    for suffix, quantile, gateway, engine in _PERCENTILES:
        for level, histogram, job in (("gateway", gateway, GATEWAY_JOB), ("engine", engine, REPLICAS_JOB)):
            rules.append({
                "record": f"enova:{level}_{suffix}",
                "expr": (f"histogram_quantile({quantile!r}, sum by (deployment, le) "
                         f'(rate({histogram}_bucket{{job="{job}"}}[5m])))'),
            })
    rules.append({"record": "enova:engine_requests_waiting:sum",
                  "expr": f'sum by (deployment) (vllm:num_requests_waiting{{job="{REPLICAS_JOB}"}})'})
    return {"name": "enova-sli", "rules": rules}


def _slo_group(deployment: str, slo: str, spec: SLOSpec) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    # `deployment` is on every series already; as a rule label it also tells promtool's lint that
    # two deployments' rules of one name are not duplicates
    labels = {"deployment": deployment, "slo": slo}
    dep = _quote(deployment)
    for objective in OBJECTIVES:
        target = getattr(spec, objective.field)
        if target is None:
            continue
        if objective is ERROR_RATE:
            budget = float(target)
            threshold = None
            exprs = {w: _error_ratio(dep, w) for w in WINDOWS}
        else:
            assert objective.quantile is not None and objective.histogram is not None
            budget = round(1 - objective.quantile, 6)
            threshold = latency_threshold(float(target), GATEWAY_HISTOGRAMS[objective.histogram])
            exprs = {w: _slow_ratio(objective.histogram, dep, threshold.seconds, w) for w in WINDOWS}
        for window in WINDOWS:
            rules.append({"record": _record(objective, window), "expr": exprs[window], "labels": dict(labels)})
        for severity in SEVERITIES:
            rules.append({
                "alert": objective.alert,
                "expr": _burn_expr(objective, dep, budget, severity),
                "labels": {"deployment": deployment, "objective": objective.key, "severity": severity},
                "annotations": _burn_annotations(objective, deployment, slo, float(target), budget, threshold,
                                                 severity),
            })
    # Every minute, not every scrape: the 1d and 3d ratios read days of samples, and a burn-rate
    # alert's shortest window is 5m.
    return {"name": f"enova-slo-{deployment}", "interval": SLO_EVALUATION_INTERVAL, "rules": rules}


def _record(objective: Objective, window: str) -> str:
    return f"enova:{objective.sli}:ratio_rate{window}"


def _quote(value: str) -> str:
    """A PromQL double-quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _error_ratio(dep: str, window: str) -> str:
    errors = f'{PROCESSED}{{job="{GATEWAY_JOB}",deployment={dep},code=~"{ERROR_CODES}"}}'
    valid = f'{PROCESSED}{{job="{GATEWAY_JOB}",deployment={dep},code=~"{VALID_CODES}"}}'
    # `or 0 * ...`: 0, not nothing, while no error has ever been counted
    return "\n".join((
        "(",
        f"  sum by (deployment) (rate({errors}[{window}]))",
        "  or",
        f"  0 * sum by (deployment) (rate({valid}[{window}]))",
        ")",
        "/",
        f"sum by (deployment) (rate({valid}[{window}]))",
    ))


def _slow_ratio(histogram: str, dep: str, boundary: float, window: str) -> str:
    fast = f'{histogram}_bucket{{job="{GATEWAY_JOB}",deployment={dep},{le_matcher(boundary)}}}'
    every = f'{histogram}_count{{job="{GATEWAY_JOB}",deployment={dep}}}'
    return "\n".join((
        "1 - (",
        f"  sum by (deployment) (rate({fast}[{window}]))",
        "  /",
        f"  sum by (deployment) (rate({every}[{window}]))",
        ")",
    ))


def _burn_expr(objective: Objective, dep: str, budget: float, severity: str) -> str:
    pairs = []
    for w in (w for w in BURN_WINDOWS if w.severity == severity):
        bound = f"({_num(w.factor)} * {_num(budget)})"
        pairs.append("\n".join((
            "(",
            f"  {_record(objective, w.long)}{{deployment={dep}}} > {bound}",
            "  and",
            f"  {_record(objective, w.short)}{{deployment={dep}}} > {bound}",
            ")",
        )))
    return "\nor\n".join(pairs)


def _burn_annotations(objective: Objective, deployment: str, slo: str, target: float, budget: float,
                      threshold: Union[Threshold, None], severity: str) -> dict[str, str]:
    pace = "fast" if severity == "page" else "steadily"
    windows = [w for w in BURN_WINDOWS if w.severity == severity]
    value = "{{ $value | humanizePercentage }}"
    if threshold is None:
        bad = "failed"
        summary = f"{deployment}: the error budget of SLO {slo} is burning {pace}: {value} of requests fail"
        allowance = f"the budget of max_error_rate {_pct(budget)}"
        measure = ("An error is an answer 5xx or 429 from the gateway; other 4xx and 499 (the client went "
                   "away) count neither as errors nor as requests.")
        check = (f"{REJECTIONS} by reason (queue_full, queue_timeout: no capacity; no_ready_replica, "
                 f"hold_timeout: no replica ready), {PROCESSED} by code, `enova status` and "
                 f"`enova logs {deployment}`.")
    else:
        assert objective.quantile is not None
        at = _duration(threshold.seconds)
        bad = objective.slow.format(at)
        summary = f"{deployment}: the {objective.title} budget of SLO {slo} is burning {pace}: {value} of " \
                  f"{objective.events} {bad}"
        allowance = (f"the {_pct(budget)} a p{round(objective.quantile * 100)} objective of "
                     f"{_duration(target / 1000)} allows")
        measure = _fit_note(objective, target, threshold)
        check = (f"enova:gateway_{objective.diagnose} against enova:engine_{objective.diagnose} "
                 f"({objective.gap}), "
                 f"enova:engine_requests_waiting:sum and {KV_CACHE_USAGE}, and whether the autoscaler "
                 f"is at its max (`enova scale status {deployment}`).")
    parts = []
    for w in windows:
        reach = "" if w.factor * budget < 1 else ", out of reach at this budget"
        parts.append(f"over {w.long} and {w.short} more than {_pct(w.factor * budget)} ({_num(w.factor)}x: a "
                     f"{SLO_DAYS}-day budget spent in {SLO_DAYS / w.factor:.2g} days{reach})")
    events = "requests" if threshold is None else objective.events
    description = (f"Of {deployment}'s {events}, {' or '.join(parts)} {bad}, against {allowance}. "
                   f"{measure} Check: {check}")
    return {"summary": summary, "description": description}


def _fit_note(objective: Objective, target: float, threshold: Threshold) -> str:
    want, at = _duration(target / 1000), _duration(threshold.seconds)
    if threshold.fit == "exact":
        return f"{at} is a bucket boundary of {objective.histogram}."
    if threshold.fit == "below":
        return (f"{objective.histogram} has no {want} bucket boundary, so events above {at}, the nearest "
                f"boundary below the target, count as slow: stricter than the objective.")
    return (f"{objective.histogram} has no bucket boundary at or below {want}, so events above {at}, its "
            f"smallest boundary, count as slow: more lenient than the objective.")


def _num(value: float) -> str:
    return f"{value:g}" if value == float(f"{value:g}") else repr(value)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"


def _duration(seconds: float) -> str:
    return f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1000:g} ms"
