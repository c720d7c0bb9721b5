"""The rules file generated from SLO documents: which groups, rules and thresholds it holds, how a
latency target maps to a histogram boundary, and that its text is deterministic."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from enova.monitor.rules import (
    GATEWAY_HISTOGRAMS,
    WINDOWS,
    dump_rules,
    latency_threshold,
    le_matcher,
    render_rules,
    slo_rules,
)
from enova.spec import SLOSpec, load_specs

TTFT = GATEWAY_HISTOGRAMS["enova_gateway_time_to_first_token_seconds"]
FULL = SLOSpec(ttft_p95_ms=300, itl_p95_ms=50, e2e_p99_ms=10000, max_error_rate=0.01)


def groups(rules: dict) -> dict[str, list[dict]]:
    return {g["name"]: g["rules"] for g in rules["groups"]}


def alerts(rules: list[dict], name: str) -> dict[str, dict]:
    """The alerting rules called `name`, by severity."""
    return {r["labels"]["severity"]: r for r in rules if r.get("alert") == name}


@pytest.mark.parametrize("target_ms, seconds, fit", [
    (250, 0.25, "exact"),
    (300, 0.25, "below"),       # no 300 ms boundary: the nearest one below
    (1000, 1, "exact"),
    (45000, 30, "below"),       # above the largest boundary
    (5, 0.01, "above"),         # below the smallest: the smallest, and say it is lenient
])
def test_a_latency_target_is_measured_at_the_nearest_boundary_at_or_below_it(target_ms, seconds, fit):
    threshold = latency_threshold(target_ms, TTFT)
    assert (threshold.seconds, threshold.fit) == (seconds, fit)


def test_a_target_a_float_rounding_away_from_a_boundary_is_exact():
    assert latency_threshold(25.000000000001, TTFT).fit == "exact"
    assert latency_threshold(24.999999999999, TTFT).fit == "exact"


def test_whole_second_boundaries_match_both_spellings_of_le():
    assert le_matcher(0.25) == 'le="0.25"'
    assert le_matcher(10) == 'le=~"10|10[.]0"'


def test_every_objective_gets_a_ratio_per_window_and_a_page_and_a_ticket_alert():
    rules = groups(slo_rules({"standard": FULL}, {"chat": "standard"}))["enova-slo-chat"]
    records = [r["record"] for r in rules if "record" in r]
    for sli in ("slo_slow_ttft_per_request", "slo_slow_itl_per_token", "slo_slow_e2e_per_request",
                "slo_errors_per_request"):
        assert [r for r in records if f":{sli}:" in r] == [f"enova:{sli}:ratio_rate{w}" for w in WINDOWS]
    for name in ("EnovaTTFTBudgetBurn", "EnovaITLBudgetBurn", "EnovaE2ELatencyBudgetBurn",
                 "EnovaErrorRateBudgetBurn"):
        assert set(alerts(rules, name)) == {"page", "ticket"}
    assert all(r["labels"] == {"deployment": "chat", "slo": "standard"} for r in rules if "record" in r)


def test_burn_rate_thresholds_are_the_workbooks_over_the_objectives_budget():
    rules = groups(slo_rules({"standard": FULL}, {"chat": "standard"}))["enova-slo-chat"]
    errors = alerts(rules, "EnovaErrorRateBudgetBurn")
    page = errors["page"]["expr"]
    assert 'enova:slo_errors_per_request:ratio_rate1h{deployment="chat"} > (14.4 * 0.01)' in page
    assert 'enova:slo_errors_per_request:ratio_rate5m{deployment="chat"} > (14.4 * 0.01)' in page
    assert 'enova:slo_errors_per_request:ratio_rate6h{deployment="chat"} > (6 * 0.01)' in page
    assert 'enova:slo_errors_per_request:ratio_rate30m{deployment="chat"} > (6 * 0.01)' in page
    ticket = errors["ticket"]["expr"]
    assert 'ratio_rate1d{deployment="chat"} > (3 * 0.01)' in ticket
    assert 'ratio_rate2h{deployment="chat"} > (3 * 0.01)' in ticket
    assert 'ratio_rate3d{deployment="chat"} > (1 * 0.01)' in ticket
    assert 'ratio_rate6h{deployment="chat"} > (1 * 0.01)' in ticket
    # p95 leaves 5% of events to be slow, p99 1%
    assert "(14.4 * 0.05)" in alerts(rules, "EnovaTTFTBudgetBurn")["page"]["expr"]
    assert "(14.4 * 0.05)" in alerts(rules, "EnovaITLBudgetBurn")["page"]["expr"]
    assert "(14.4 * 0.01)" in alerts(rules, "EnovaE2ELatencyBudgetBurn")["page"]["expr"]


def test_latency_ratios_read_the_chosen_bucket_of_the_gateways_histogram():
    rules = groups(slo_rules({"standard": FULL}, {"chat": "standard"}))["enova-slo-chat"]
    expr = {r["record"]: r["expr"] for r in rules if "record" in r}
    assert ('enova_gateway_time_to_first_token_seconds_bucket{job="enova-gateway",deployment="chat",le="0.25"}[1h]'
            in expr["enova:slo_slow_ttft_per_request:ratio_rate1h"])
    assert 'le="0.05"' in expr["enova:slo_slow_itl_per_token:ratio_rate1h"]
    assert 'le=~"10|10[.]0"' in expr["enova:slo_slow_e2e_per_request:ratio_rate1h"]


def test_an_alert_says_when_its_bucket_is_not_the_target():
    rules = groups(slo_rules({"s": SLOSpec(ttft_p95_ms=300, itl_p95_ms=0.5, e2e_p99_ms=10000)},
                             {"chat": "s"}))["enova-slo-chat"]
    ttft = alerts(rules, "EnovaTTFTBudgetBurn")["page"]["annotations"]["description"]
    assert "has no 300 ms bucket boundary, so events above 250 ms, the nearest boundary below the target" in ttft
    itl = alerts(rules, "EnovaITLBudgetBurn")["page"]["annotations"]["description"]
    assert "no bucket boundary at or below 0.5 ms, so events above 1 ms, its smallest boundary" in itl
    e2e = alerts(rules, "EnovaE2ELatencyBudgetBurn")["page"]["annotations"]["description"]
    assert "10 s is a bucket boundary of enova_gateway_e2e_latency_seconds" in e2e


def test_descriptions_give_the_thresholds_and_the_budget():
    rules = groups(slo_rules({"standard": FULL}, {"chat": "standard"}))["enova-slo-chat"]
    page = alerts(rules, "EnovaTTFTBudgetBurn")["page"]["annotations"]
    assert page["summary"].startswith("chat: the TTFT budget of SLO standard is burning fast")
    assert "over 1h and 5m more than 72% (14.4x" in page["description"]
    assert "over 6h and 30m more than 30% (6x" in page["description"]
    assert "against the 5% a p95 objective of 300 ms allows" in page["description"]
    ticket = alerts(rules, "EnovaErrorRateBudgetBurn")["ticket"]["annotations"]["description"]
    assert "over 1d and 2h more than 3% (3x" in ticket and "over 3d and 6h more than 1% (1x" in ticket
    assert "max_error_rate 1%" in ticket


def test_a_budget_too_large_for_a_burn_factor_says_that_pair_cannot_fire():
    rules = groups(slo_rules({"loose": SLOSpec(max_error_rate=0.1)}, {"chat": "loose"}))["enova-slo-chat"]
    description = alerts(rules, "EnovaErrorRateBudgetBurn")["page"]["annotations"]["description"]
    assert "more than 144% (14.4x: a 30-day budget spent in 2.1 days, out of reach at this budget)" in description
    assert "more than 60% (6x: a 30-day budget spent in 5 days)" in description


def test_only_the_objectives_an_slo_sets_get_rules():
    rules = groups(slo_rules({"errors": SLOSpec(max_error_rate=0.02)}, {"chat": "errors"}))["enova-slo-chat"]
    assert {r.get("alert") for r in rules} == {None, "EnovaErrorRateBudgetBurn"}
    assert len([r for r in rules if "record" in r]) == len(WINDOWS)


def test_deployments_without_an_slo_get_only_the_health_and_sli_groups():
    rules = slo_rules({"standard": FULL}, {"batch": None, "chat": "standard"})
    assert [g["name"] for g in rules["groups"]] == ["enova-health", "enova-sli", "enova-slo-chat"]
    assert [g["name"] for g in slo_rules({}, {})["groups"]] == ["enova-health", "enova-sli"]


def test_health_alerts_are_tickets_with_the_coordinated_jobs():
    health = {r["alert"]: r for r in groups(slo_rules({}, {}))["enova-health"]}
    assert set(health) == {"EnovaReplicaDown", "EnovaReplicaStartFailing", "EnovaKVCacheSaturated",
                           "EnovaGatewayRejecting"}
    assert health["EnovaReplicaDown"]["expr"] == ('up{job="enova-replicas"} == 0\nunless on (deployment, replica)\n'
                                                  'enova_replica_state{job="enova-reconciler",state="starting"} == 1')
    assert 'enova_reconciler_errors_total{job="enova-reconciler",reason=~"StartFailed|CrashLoopBackOff"}' in \
        health["EnovaReplicaStartFailing"]["expr"]
    assert health["EnovaReplicaDown"]["for"] == "1m"
    assert health["EnovaKVCacheSaturated"]["for"] == "5m"
    assert 'enova_gateway_rejections_total{job="enova-gateway"' in health["EnovaGatewayRejecting"]["expr"]
    for rule in health.values():
        assert rule["labels"]["severity"] == "ticket"
        assert set(rule["annotations"]) == {"summary", "description"}
        assert "{{ $labels.deployment }}" in rule["annotations"]["summary"]


def test_a_deployment_naming_an_unknown_slo_is_an_error():
    with pytest.raises(ValueError, match="deployment chat: spec.slo names 'gone'"):
        slo_rules({"standard": FULL}, {"chat": "gone"})


def test_the_text_is_the_same_whatever_order_the_documents_come_in():
    a = dump_rules(slo_rules({"s": FULL, "t": SLOSpec(max_error_rate=0.05)}, {"b": "t", "a": "s", "c": None}))
    b = dump_rules(slo_rules({"t": SLOSpec(max_error_rate=0.05), "s": FULL}, {"c": None, "a": "s", "b": "t"}))
    assert a == b
    assert [g["name"] for g in yaml.safe_load(a)["groups"]][2:] == ["enova-slo-a", "enova-slo-b"]


def test_expressions_are_literal_blocks_and_the_file_says_who_wrote_it():
    text = dump_rules(slo_rules({"standard": FULL}, {"chat": "standard"}))
    assert text.startswith("# Written by enova")
    assert "    expr: |-\n      (\n" in text


def test_render_rules_reads_the_slo_and_deployment_documents(tmp_path):
    (tmp_path / "specs.yaml").write_text(textwrap.dedent("""\
        apiVersion: enova/v1
        kind: SLO
        metadata: {name: interactive}
        spec: {ttft_p95_ms: 500, max_error_rate: 0.001}
        ---
        apiVersion: enova/v1
        kind: Deployment
        metadata: {name: chat}
        spec: {model: "builtin:smollm2-135m-instruct", slo: interactive}
        ---
        apiVersion: enova/v1
        kind: Deployment
        metadata: {name: batch}
        spec: {model: "builtin:smollm2-135m-instruct"}
        """))
    rules = yaml.safe_load(render_rules(load_specs(tmp_path)))
    slo = groups(rules)["enova-slo-chat"]
    assert "enova-slo-batch" not in groups(rules)
    assert {r["labels"]["objective"] for r in slo if "alert" in r} == {"ttft_p95", "error_rate"}
    assert "(14.4 * 0.001)" in alerts(slo, "EnovaErrorRateBudgetBurn")["page"]["expr"]
    assert 'le="0.5"' in next(r["expr"] for r in slo if r.get("record", "").endswith("ttft_per_request:ratio_rate5m"))
