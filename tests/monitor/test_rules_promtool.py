"""The rendered rules file under Prometheus's own tools: `promtool check rules`, and `promtool
test rules` with hand-chosen input series in which each alert fires, and cases where it must not
(a burn just under a threshold, a long window still hot after the short one has cooled, a blip
shorter than `for`). Skipped only when promtool is missing (Debian: `apt-get install prometheus`).

Traffic is 100 requests (or tokens, for ITL) a minute to deployment `chat` unless a case says
otherwise; a case says, per stretch of minutes, how many times its budget the bad fraction is (the
burn rate), and the same burn is applied to every objective: 500s and 429s for errors, events
above the chosen boundary for latency. Client errors (400, 499) and buckets the rules must not
read run beside them. Each window pair of the workbook's alerts has a case that fires through it
alone and one just under its factor.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from enova.monitor.rules import dump_rules, slo_rules
from enova.spec import SLOSpec

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")

SLO = SLOSpec(ttft_p95_ms=300, itl_p95_ms=50, e2e_p99_ms=10000, max_error_rate=0.01)
GATEWAY = {"job": "enova-gateway", "instance": "127.0.0.1:9199"}
RATE = 100          # events a minute
# alert -> (budget, the series of good and of every event, and the histogram buckets it must not read)
BURN_ALERTS = {
    "EnovaTTFTBudgetBurn": ("ttft_p95", 0.05),
    "EnovaITLBudgetBurn": ("itl_p95", 0.05),
    "EnovaE2ELatencyBudgetBurn": ("e2e_p99", 0.01),
    "EnovaErrorRateBudgetBurn": ("error_rate", 0.01),
}
HISTOGRAMS = {   # objective -> (histogram, le of the boundary the SLI reads, an le it must not read, all fast there?)
    "ttft_p95": ("enova_gateway_time_to_first_token_seconds", "0.25", "0.5", True),
    "itl_p95": ("enova_gateway_inter_token_latency_seconds", "0.05", "0.03", False),
    "e2e_p99": ("enova_gateway_e2e_latency_seconds", "10.0", "5.0", False),
}


def rules() -> dict:
    return slo_rules({"standard": SLO}, {"chat": "standard", "code": "standard", "batch": None})


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "enova.yml"
    path.write_text(dump_rules(rules()))
    return path


def test_promtool_check_rules_accepts_the_rendered_file(rules_file):
    result = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in rules()["groups"])
    assert f"SUCCESS: {count} rules found" in result.stdout


# ---------------------------------------------------------------------------------------------
# input series


def counter(stretches: list[tuple[int, float]]) -> str:
    """promtool's expanding notation for a counter from 0 at t=0 rising by `per_minute` for each
    stretch of `minutes` (one sample a minute)."""
    parts, value = [], 0.0
    for i, (minutes, per_minute) in enumerate(stretches):
        start = value if i == 0 else value + per_minute
        parts.append(f"{start:.12g}+{per_minute:.12g}x{minutes if i == 0 else minutes - 1}")
        value += per_minute * minutes
    return " ".join(parts)


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


Stretch = tuple  # (minutes, burn) or (minutes, burn, events a minute)


def traffic(deployment: str, burns: list[Stretch]) -> list[dict[str, str]]:
    """The gateway's series for `deployment` when each objective burns its budget `burn` times
    over each stretch."""
    labels = {**GATEWAY, "deployment": deployment}

    def each(f) -> str:
        """A counter rising by f(burn) x events a minute (f: the share of events it counts)."""
        return counter([(stretch[0], f(stretch[1]) * (stretch[2] if len(stretch) > 2 else RATE))
                        for stretch in burns])

    budget = dict(BURN_ALERTS.values())
    processed = "enova_gateway_requests_processed_total"
    out = [
        series(processed, {**labels, "code": "200"}, each(lambda b: 1 - b * budget["error_rate"])),
        series(processed, {**labels, "code": "500"}, each(lambda b: b * budget["error_rate"] / 2)),
        series(processed, {**labels, "code": "429"}, each(lambda b: b * budget["error_rate"] / 2)),
        series(processed, {**labels, "code": "400"}, each(lambda b: 0.5)),     # the client's errors
        series(processed, {**labels, "code": "499"}, each(lambda b: 0.2)),     # the client went away
    ]
    for objective, (histogram, le, other, other_fast) in HISTOGRAMS.items():
        slow = budget[objective]
        out += [
            series(f"{histogram}_bucket", {**labels, "le": le}, each(lambda b, s=slow: 1 - b * s)),
            series(f"{histogram}_bucket", {**labels, "le": other}, each(lambda b: 1 if other_fast else 0)),
            series(f"{histogram}_count", labels, each(lambda b: 1)),
        ]
    return out


# ---------------------------------------------------------------------------------------------
# expected alerts


def annotations(alert: str, severity: str | None, labels: dict[str, str], value: float) -> dict[str, str]:
    """The alert's annotations as Prometheus expands them, for the templates the rules use."""
    rule = next(r for g in rules()["groups"] for r in g["rules"]
                if r.get("alert") == alert and (severity is None or r["labels"]["severity"] == severity)
                and (g["name"] == "enova-health" or g["name"] == f"enova-slo-{labels.get('deployment')}"))
    out = {}
    for key, text in rule["annotations"].items():
        text = text.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")
        text = text.replace('{{ printf "%.2f" $value }}', f"{value:.2f}")
        text = text.replace('{{ printf "%.0f" $value }}', f"{value:.0f}")
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        assert "{{" not in text, f"a template the test does not expand: {text}"
        out[key] = text
    return out


def burn_alert(alert: str, severity: str, burn: float) -> dict:
    objective, budget = BURN_ALERTS[alert]
    labels = {"deployment": "chat", "slo": "standard", "objective": objective, "severity": severity}
    return {"exp_labels": labels, "exp_annotations": annotations(alert, severity, labels, burn * budget)}


@dataclass
class BurnCase:
    """Every objective of `chat` burns as `burns` says; at `at`, each burn alert fires with the
    severities in `fires` (severity -> the long window's burn, the alert's value). Rules are
    evaluated every `step`: the burn alerts have no `for`, so only the evaluation at `at` counts,
    and three days of 1m evaluations would take minutes."""

    name: str
    burns: list[Stretch]
    at: str
    fires: dict[str, float] = field(default_factory=dict)
    step: str = "1m"


QUIET_DAYS = (2880, 0, 4 * RATE)    # two days of four times the traffic, none of it bad
BURN_CASES = [
    BurnCase("a 15x burn for an hour pages and tickets", [(60, 15)], "1h", {"page": 15, "ticket": 15}),
    # page, 1h and 5m > 14.4x (the 6h ratio stays under 6x: five quiet hours before)
    BurnCase("a sudden 15x burn after five quiet hours pages on the 1h and 5m windows", [(300, 0), (60, 15)],
             "6h", {"page": 15, "ticket": 15 / 6}),
    BurnCase("a sudden 14x burn, just under 14.4x, does not page", [(300, 0), (60, 14)], "6h",
             {"ticket": 14 / 6}),
    # page, 6h and 30m > 6x
    BurnCase("a 6.5x burn for six hours pages on the 6h and 30m windows", [(360, 6.5)], "6h",
             {"page": 6.5, "ticket": 6.5}),
    BurnCase("a 5.9x burn for six hours, just under 6x, only tickets", [(360, 5.9)], "6h", {"ticket": 5.9}),
    BurnCase("a 20x burn that stopped 30 minutes ago no longer pages: the short windows are cold",
             [(60, 20), (30, 0)], "90m", {"ticket": 20 * 60 / 90}),
    # ticket, 1d and 2h > 3x (the 3d ratio stays under 1x: two busy quiet days before)
    BurnCase("a 3.5x burn for a day after two busy quiet days tickets on the 1d and 2h windows",
             [QUIET_DAYS, (1440, 3.5)], "3d", {"ticket": 3.5}, step="30m"),
    BurnCase("a 2.9x burn for a day after two busy quiet days, just under 3x, is silent",
             [QUIET_DAYS, (1440, 2.9)], "3d", step="30m"),
    # ticket, 3d and 6h > 1x
    BurnCase("a 1.2x burn for three days tickets on the 3d and 6h windows", [(4320, 1.2)], "3d", {"ticket": 1.2},
             step="30m"),
    BurnCase("a 0.9x burn for three days, just under the budget, is silent", [(4320, 0.9)], "3d", step="30m"),
]


def burn_test(case: BurnCase) -> dict:
    # `code` shares the SLO and serves only 200s: its ratios are 0 and none of its alerts fire
    return {
        "name": case.name,
        "interval": "1m",
        "input_series": traffic("chat", case.burns) + [
            series("enova_gateway_requests_processed_total", {**GATEWAY, "deployment": "code", "code": "200"},
                   counter([(stretch[0], RATE) for stretch in case.burns]))],
        "alert_rule_test": [
            {"eval_time": case.at, "alertname": alert,
             "exp_alerts": [burn_alert(alert, severity, burn) for severity, burn in sorted(case.fires.items())]}
            for alert in BURN_ALERTS],
        "promql_expr_test": [
            {"expr": 'enova:slo_errors_per_request:ratio_rate5m{deployment="code"}', "eval_time": case.at,
             "exp_samples": [{"labels": 'enova:slo_errors_per_request:ratio_rate5m{deployment="code",slo="standard"}',
                              "value": 0}]}],
    }


# ---------------------------------------------------------------------------------------------
# the health alerts

REPLICA = {"job": "enova-replicas", "deployment": "chat", "runtime": "local"}


def up(replica: str, port: int, values: str) -> dict[str, str]:
    return series("up", {**REPLICA, "replica": replica, "instance": f"127.0.0.1:{port}"}, values)


def kv(replica: str, engine: str, values: str) -> dict[str, str]:
    return series("vllm:kv_cache_usage_perc", {**REPLICA, "replica": replica, "engine": engine,
                                               "model_name": "chat", "instance": "127.0.0.1:19300"}, values)


def rejections(reason: str, values: str) -> dict[str, str]:
    return series("enova_gateway_rejections_total", {**GATEWAY, "deployment": "chat", "reason": reason}, values)


def health_alert(alert: str, labels: dict[str, str], value: float) -> dict:
    expected = {**labels, "severity": "ticket"}
    return {"exp_labels": expected, "exp_annotations": annotations(alert, None, expected, value)}


RECONCILER = {"job": "enova-reconciler", "instance": "127.0.0.1:9188"}


def replica_state(replica: str, state: str, values: str) -> dict[str, str]:
    return series("enova_replica_state", {**RECONCILER, "deployment": "chat", "replica": replica, "state": state},
                  values)


def errors_total(reason: str, values: str) -> dict[str, str]:
    return series("enova_reconciler_errors_total", {**RECONCILER, "deployment": "chat", "reason": reason}, values)


def down_labels(replica: str, port: int) -> dict[str, str]:
    return {**REPLICA, "replica": replica, "instance": f"127.0.0.1:{port}"}


HEALTH_TESTS = [
    {"name": "a replica down for a minute tickets; its sibling up does not",
     "input_series": [up("chat-a", 19300, "1 1 0 0 0 0"), up("chat-b", 19301, "1x5")],
     "alert_rule_test": [
         {"eval_time": "2m", "alertname": "EnovaReplicaDown", "exp_alerts": []},      # pending
         {"eval_time": "4m", "alertname": "EnovaReplicaDown",
          "exp_alerts": [health_alert("EnovaReplicaDown", down_labels("chat-a", 19300), 0)]}]},
    {"name": "a replica the reconciler records as starting is not down; once it is not starting, it is",
     # chat-a loads for 5 minutes (its state series goes when it leaves starting) and never answers;
     # chat-b was up, then is down while recorded ready
     "input_series": [up("chat-a", 19300, "0x12"), replica_state("chat-a", "starting", "1x5 stale"),
                      replica_state("chat-a", "ready", "_x6 1x6"),
                      up("chat-b", 19301, "1 0x11"), replica_state("chat-b", "ready", "1x12")],
     "alert_rule_test": [
         {"eval_time": "5m", "alertname": "EnovaReplicaDown",
          "exp_alerts": [health_alert("EnovaReplicaDown", down_labels("chat-b", 19301), 0)]},
         {"eval_time": "9m", "alertname": "EnovaReplicaDown",
          "exp_alerts": [health_alert("EnovaReplicaDown", down_labels("chat-a", 19300), 0),
                         health_alert("EnovaReplicaDown", down_labels("chat-b", 19301), 0)]}]},
    {"name": "a replica down for one scrape does not ticket",
     "input_series": [up("chat-a", 19300, "1 1 0 1 1 1")],
     "alert_rule_test": [{"eval_time": t, "alertname": "EnovaReplicaDown", "exp_alerts": []}
                         for t in ("3m", "5m")]},
    {"name": "a replica that fails to start tickets at once, for fifteen minutes",
     "input_series": [errors_total("StartFailed", "0 0 0 1x30"), errors_total("CrashLoopBackOff", "0x33")],
     "alert_rule_test": [
         {"eval_time": "2m", "alertname": "EnovaReplicaStartFailing", "exp_alerts": []},
         {"eval_time": "5m", "alertname": "EnovaReplicaStartFailing",
          "exp_alerts": [health_alert("EnovaReplicaStartFailing", {"deployment": "chat", "reason": "StartFailed"},
                                      1)]},
         {"eval_time": "20m", "alertname": "EnovaReplicaStartFailing", "exp_alerts": []}]},
    {"name": "failed passes that are not start failures do not ticket",
     "input_series": [errors_total("Retrying", "0+1x10"), errors_total("Stalled", "0+1x10"),
                      errors_total("StartFailed", "0x10")],
     "alert_rule_test": [{"eval_time": t, "alertname": "EnovaReplicaStartFailing", "exp_alerts": []}
                         for t in ("5m", "10m")]},
    {"name": "a KV cache over 90% for five minutes tickets, for its replica",
     "input_series": [kv("chat-a", "0", "0.95x10"), kv("chat-a", "1", "0.3x10"), kv("chat-b", "0", "0.5x10")],
     "alert_rule_test": [
         {"eval_time": "4m", "alertname": "EnovaKVCacheSaturated", "exp_alerts": []},
         {"eval_time": "7m", "alertname": "EnovaKVCacheSaturated",
          "exp_alerts": [health_alert("EnovaKVCacheSaturated", {"deployment": "chat", "replica": "chat-a"}, 0.95)]}]},
    {"name": "a KV cache at 89%, or full for only four minutes, does not ticket",
     "input_series": [kv("chat-a", "0", "0.89x10"), kv("chat-b", "0", "0.95x3 0.5x6")],
     "alert_rule_test": [{"eval_time": t, "alertname": "EnovaKVCacheSaturated", "exp_alerts": []}
                         for t in ("5m", "8m")]},
    {"name": "the gateway rejecting for lack of capacity for ten minutes tickets",
     "input_series": [rejections("queue_full", "0+6x20")],
     "alert_rule_test": [
         {"eval_time": "15m", "alertname": "EnovaGatewayRejecting",
          "exp_alerts": [health_alert("EnovaGatewayRejecting", {"deployment": "chat", "reason": "queue_full"},
                                      0.1)]}]},
    {"name": "client errors, and a three-minute burst of rejections, do not ticket",
     "input_series": [rejections("invalid_request", "0+30x20"), rejections("no_ready_replica", "0+6x3 18x16")],
     "alert_rule_test": [{"eval_time": t, "alertname": "EnovaGatewayRejecting", "exp_alerts": []}
                         for t in ("7m", "8m", "15m")]},
]


def run_promtool_test(rules_file: Path, tests: list[dict], step: str = "1m") -> None:
    path = rules_file.parent / f"test-{abs(hash(tests[0]['name']))}.yml"
    path.write_text(yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": step, "tests": tests},
                                   sort_keys=False, width=1 << 16))
    result = subprocess.run([PROMTOOL, "test", "rules", path.name], cwd=path.parent, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("case", BURN_CASES, ids=[c.name for c in BURN_CASES])
def test_burn_rate_alerts_under_promtool(rules_file, case):
    run_promtool_test(rules_file, [burn_test(case)], case.step)


@pytest.mark.parametrize("test", HEALTH_TESTS, ids=[t["name"] for t in HEALTH_TESTS])
def test_health_alerts_under_promtool(rules_file, test):
    run_promtool_test(rules_file, [{"interval": "1m", **test}])


def test_every_alert_has_a_case_that_fires_it_and_one_where_it_stays_silent():
    fired: dict[tuple[str, str | None], int] = {}
    silent: dict[tuple[str, str | None], int] = {}
    for case in BURN_CASES:
        for alert in BURN_ALERTS:
            for severity in ("page", "ticket"):
                bucket = fired if severity in case.fires else silent
                bucket[(alert, severity)] = bucket.get((alert, severity), 0) + 1
    for test in HEALTH_TESTS:
        for check in test["alert_rule_test"]:
            bucket = fired if check["exp_alerts"] else silent
            bucket[(check["alertname"], None)] = 1
    every = {(r["alert"], r["labels"]["severity"] if g["name"].startswith("enova-slo-") else None)
             for g in rules()["groups"] for r in g["rules"] if "alert" in r}
    assert every <= set(fired) and every <= set(silent)
