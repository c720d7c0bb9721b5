"""spec.scaling as the pinned schema has it: defaults, durations, the plain data policies receive,
who owns the replica count (plan.desired.replica_count), the record's scale_from_zero, and a JSON
Schema that refuses what the loader refuses."""

from __future__ import annotations

import re

import jsonschema
import pytest
import yaml

from enova.plan.desired import in_place, replica_count
from enova.spec import json_schema
from enova.spec.models import DeploymentSpec, ScalingSpec, SLOSpec

MODEL = "builtin:smollm2-135m-instruct"


def spec(scaling=None, **extra) -> DeploymentSpec:
    data = {"model": MODEL, "slo": "chat", **extra}
    if scaling is not None:
        data["scaling"] = scaling
    return DeploymentSpec.model_validate(data)


def test_the_defaults_are_policy_slo_min_one_and_a_five_minute_scale_down_delay():
    scaling = ScalingSpec.model_validate({"max": 4})
    assert scaling.model_dump(mode="json") == {
        "min": 1, "max": 4, "policy": "slo", "target": None,
        "scale_up_delay": 0.0, "scale_down_delay": 300.0, "scale_to_zero_after": 0.0}


def test_policies_receive_durations_as_float_seconds_and_the_slo_as_plain_data():
    scaling = ScalingSpec.model_validate({"min": 0, "max": 2, "policy": "concurrency", "target": {"concurrency": 8},
                                          "scale_up_delay": "500ms", "scale_down_delay": "1m30s",
                                          "scale_to_zero_after": 600})
    data = scaling.model_dump(mode="json")
    assert (data["scale_up_delay"], data["scale_down_delay"], data["scale_to_zero_after"]) == (0.5, 90.0, 600.0)
    assert data["target"] == {"concurrency": 8.0, "rps": None}
    assert SLOSpec(ttft_p95_ms=500).model_dump(mode="json") == {
        "ttft_p95_ms": 500.0, "itl_p95_ms": None, "e2e_p99_ms": None, "max_error_rate": None}


@pytest.mark.parametrize("delay", [0, 0.0, "0s", "0ms", "0m0s"])
def test_a_delay_may_be_zero(delay):
    assert ScalingSpec.model_validate({"max": 1, "scale_up_delay": delay, "scale_down_delay": delay}).scale_up_delay == 0


@pytest.mark.parametrize("scaling, message", [
    ({"min": 2, "max": 1}, "must be >= min (2)"),
    ({"max": 0}, "greater than or equal to 1"),
    ({"max": 2, "policy": "rps"}, "required with policy 'rps'"),
    ({"max": 2, "policy": "concurrency", "target": {"concurrency": 8, "rps": 2}},
     "target.rps is only used with policy 'rps'"),
    ({"max": 2, "policy": "enova-original", "target": {"rps": 2}}, "enova-original takes no target"),
    ({"max": 2, "policy": "rps", "target": {"rps": 0}}, "greater than 0"),
    ({"min": 0, "max": 2}, "required with min 0"),
    ({"min": 1, "max": 2, "scale_to_zero_after": "5m"}, "only used with min 0"),
    ({"max": 2, "scale_down_delay": -1}, "must be >= 0"),
    ({"max": 2, "policy": "knative"}, "Input should be"),
])
def test_a_scaling_spec_that_cannot_work_is_refused(scaling, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ScalingSpec.model_validate(scaling)


def test_policy_slo_needs_the_deployments_slo_and_the_others_do_not():
    with pytest.raises(ValueError, match="policy 'slo' .* needs the deployment's slo"):
        DeploymentSpec.model_validate({"model": MODEL, "scaling": {"max": 2}})
    DeploymentSpec.model_validate({"model": MODEL, "scaling": {"max": 2, "policy": "rps", "target": {"rps": 4}}})


@pytest.mark.parametrize("scaling, replicas, scaled, expected", [
    (None, 3, 5, (3, "spec")),                      # no scaling: spec.replicas, a target is ignored
    ({"min": 1, "max": 4}, 1, 2, (2, "autoscaler")),  # the autoscaler's count, whatever replicas says
    ({"min": 1, "max": 4}, 1, None, (1, "autoscaler")),  # before it decides: replicas
    ({"min": 2, "max": 4}, 1, None, (2, "autoscaler")),  # clamped to min
    ({"min": 1, "max": 4}, 9, None, (4, "autoscaler")),  # clamped to max
    ({"min": 3, "max": 4}, 1, 2, (3, "autoscaler")),  # min raised above the target
    ({"min": 1, "max": 2}, 1, 4, (2, "autoscaler")),  # max lowered below it
    ({"min": 0, "max": 2, "scale_to_zero_after": "10m"}, 1, 0, (0, "autoscaler")),  # scaled to zero
])
def test_the_replica_count_belongs_to_the_autoscaler_within_min_and_max(scaling, replicas, scaled, expected):
    count, owner, _ = replica_count(spec(scaling, replicas=replicas), scaled)
    assert (count, owner) == expected


def test_the_reason_says_how_the_autoscalers_count_was_clamped():
    assert replica_count(spec({"min": 3, "max": 4}), 2)[2] == "the autoscaler's target 2, raised to min 3"
    assert replica_count(spec({"min": 1, "max": 2}), 4)[2] == "the autoscaler's target 4, lowered to max 2"
    assert replica_count(spec({"min": 1, "max": 4}, replicas=2), None)[2] == \
        "spec.replicas 2 until the autoscaler decides"


def test_the_record_asks_the_gateway_to_hold_requests_only_when_min_is_zero():
    assert in_place(spec({"min": 0, "max": 2, "scale_to_zero_after": "10m"}), False)["serving"]["scale_from_zero"] is True
    assert "scale_from_zero" not in in_place(spec({"min": 1, "max": 2}), False)["serving"]
    assert "scale_from_zero" not in in_place(spec(), False)["serving"]


DEPLOYMENT = """\
apiVersion: enova/v1
kind: Deployment
metadata: {name: smollm2}
spec:
  model: builtin:smollm2-135m-instruct
  slo: chat
  scaling: {min: 1, max: 4, policy: concurrency, target: {concurrency: 8}, scale_down_delay: 5m}
"""


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(json_schema())


def test_the_schema_accepts_a_scaling_block(validator):
    validator.validate(yaml.safe_load(DEPLOYMENT))
    validator.validate(yaml.safe_load(DEPLOYMENT.replace("{min: 1, max: 4, policy: concurrency, target: {concurrency: 8}",
                                                         "{min: 0, max: 4, scale_to_zero_after: 10m")))


@pytest.mark.parametrize("old, new", [
    ("target: {concurrency: 8}", "target: {rps: 8}"),
    ("policy: concurrency, target: {concurrency: 8}", "policy: rps"),
    ("policy: concurrency, target: {concurrency: 8}", "policy: slo, target: {concurrency: 8}"),
    ("policy: concurrency, target: {concurrency: 8}", "target: {concurrency: 8}"),  # slo by default
    ("min: 1", "min: 0"),
    ("min: 1", "min: -1"),
    ("policy: concurrency", "policy: knative"),
    ("scale_down_delay: 5m", "scale_down_delay: 5x"),
    ("scale_down_delay: 5m", "scale_dwn_delay: 5m"),
])
def test_what_the_loader_refuses_in_scaling_the_schema_refuses_too(validator, old, new):
    text = DEPLOYMENT.replace(old, new)
    document = yaml.safe_load(text)
    with pytest.raises(ValueError):
        DeploymentSpec.model_validate(document["spec"])
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(document)
