"""No rule queries, and no alert points at, a metric that does not exist: every name is one the
gateway's or the reconciler's registry holds, one on a real vLLM CPU engine's /metrics page (captured from enode run,
tests/unit/fixtures), a series the rules record themselves, or Prometheus's own `up`. The
gateway's bucket boundaries copied into the rules are those of a real gateway /metrics page."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from enova.gateway import errors
from enova.gateway.metrics import GatewayMetrics
from enova.monitor import rules as slo
from enova.spec import SLOSpec

ENGINE_PAGE = Path(__file__).parents[1] / "unit" / "fixtures" / "vllm_metrics.txt"
PROMETHEUS_OWN = {"up"}
ALL_OBJECTIVES = SLOSpec(ttft_p95_ms=300, itl_p95_ms=50, e2e_p99_ms=10000, max_error_rate=0.01)
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum", ""), "gauge": ("",)}


def gateway_names() -> set[str]:
    """Every series name the gateway's registry exposes (and a histogram's base name)."""
    metrics = GatewayMetrics(live=lambda: ([("d", "r", 1)], [("d", 1)], [("d", 1)]))
    return {family.name + suffix for family in metrics.registry.collect() for suffix in SUFFIXES[family.type]}


def reconciler_names() -> set[str]:
    """Every series name a reconciler's registry exposes, with a replica recorded."""
    from types import SimpleNamespace

    from enova.reconcile.metrics import ReconcilerMetrics
    metrics = ReconcilerMetrics()
    metrics.watch_replicas(lambda: [SimpleNamespace(deployment="d", id="d-1", state="starting")])
    metrics.seen("d")
    return {family.name + suffix for family in metrics.registry.collect() for suffix in SUFFIXES[family.type]}


def engine_names() -> set[str]:
    names = set()
    for family in text_string_to_metric_families(ENGINE_PAGE.read_text()):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def query_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or label names)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                   # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)                  # matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", expr):
        if not expr[match.end():].lstrip().startswith("("):        # not a function or aggregation
            names.add(match.group())
    return names - {"and", "or", "unless"}


def mentioned_names(text: str) -> set[str]:
    """Metric names an annotation tells the reader to look at."""
    return set(re.findall(r"\b(?:enova_gateway_\w+|vllm:\w+|enova:[\w:]+\w)", text))


def all_rules() -> list[dict]:
    rules = slo.slo_rules({"standard": ALL_OBJECTIVES}, {"chat": "standard"})
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_every_name_a_rule_queries_exists_in_the_gateway_the_engine_or_the_rules():
    rules = all_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    known = gateway_names() | engine_names() | reconciler_names() | recorded | PROMETHEUS_OWN
    queried = set().union(*(query_names(r["expr"]) for r in rules))
    assert queried - known == set()
    # the check sees what it should: names of each source
    assert {"enova_gateway_requests_processed_total", "enova_gateway_rejections_total",
            "enova_gateway_time_to_first_token_seconds_bucket", "vllm:kv_cache_usage_perc",
            "vllm:time_to_first_token_seconds_bucket", "up",
            "enova:slo_errors_per_request:ratio_rate1h", "enova_replica_state",
            "enova_reconciler_errors_total"} <= queried


def test_every_name_an_alert_points_at_exists():
    rules = all_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    known = gateway_names() | engine_names() | recorded
    mentioned = set()
    for rule in rules:
        for text in rule.get("annotations", {}).values():
            mentioned |= mentioned_names(text)
    assert mentioned - known == set()
    assert {"enova_gateway_queue_depth", "vllm:num_preemptions_total", "enova:engine_ttft_seconds:p95_rate5m"} \
        <= mentioned


def test_the_query_name_parser_ignores_functions_labels_and_numbers():
    expr = ('histogram_quantile(0.95, sum by (deployment, le) (rate(a_bucket{job="x",le=~"1|1[.]0"}[5m])))'
            ' > (14.4 * 1e-05) and on (deployment) b:c:d or max(vllm:y)')
    assert query_names(expr) == {"a_bucket", "b:c:d", "vllm:y"}


def test_the_rules_copy_of_the_gateways_buckets_is_what_its_metrics_page_shows():
    metrics = GatewayMetrics()
    metrics.ttft.labels("d").observe(0.1)
    metrics.itl.labels("d").observe(0.1)
    metrics.e2e.labels("d").observe(0.1)
    page = metrics.render().decode()
    for histogram, buckets in slo.GATEWAY_HISTOGRAMS.items():
        les = [sample.labels["le"] for family in text_string_to_metric_families(page) if family.name == histogram
               for sample in family.samples if sample.name == histogram + "_bucket"]
        assert les[-1] == "+Inf"
        assert tuple(float(le) for le in les[:-1]) == buckets, (
            f"{histogram}'s buckets changed in enova.gateway.metrics: update GATEWAY_HISTOGRAMS in "
            "enova.monitor.rules")
        for boundary, le in zip(buckets, les):
            matcher = slo.le_matcher(boundary)
            value = re.fullmatch(r'le=~?"(.*)"', matcher).group(1)
            assert re.fullmatch(value, le) if "~" in matcher else value == le, (matcher, le)


def test_the_rejection_reasons_alerted_on_are_the_gateways_capacity_reasons():
    assert set(slo.CAPACITY_REASONS) <= set(errors.REASONS)
    assert errors.queue_full("d", 1, 1).status == 429 and errors.no_ready_replica("d", 1).status == 503


def test_the_engine_page_carries_the_deployment_as_vllms_model_name():
    # the rules select engines by the target label `deployment`; vLLM's own is model_name
    usage = next(f for f in text_string_to_metric_families(ENGINE_PAGE.read_text())
                 if f.name == slo.KV_CACHE_USAGE)
    assert {s.labels.get("model_name") for s in usage.samples} == {"smollm2-135m-instruct"}
