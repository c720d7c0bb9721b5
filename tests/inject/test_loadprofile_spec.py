"""The LoadProfile schema as the injector reads it: every arrival process and the requests block load,
with their defaults; the JSON Schema accepts what the loader accepts and refuses what it refuses.
(Bad documents and their exact file:line messages are in tests/unit/spec_cases.)"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from enova.spec import json_schema, load_specs
from enova.spec.models import ArrivalSpec, LengthSpec, LoadProfile, LoadProfileSpec, RequestsSpec, StepSpec

REPO = Path(__file__).resolve().parents[2]

DEPLOYMENT = """\
apiVersion: enova/v1
kind: Deployment
metadata: {name: smollm2}
spec: {model: builtin:smollm2-135m-instruct, slo: chat}
---
apiVersion: enova/v1
kind: SLO
metadata: {name: chat}
spec: {ttft_p95_ms: 500}
"""

FULL = """\
apiVersion: enova/v1
kind: LoadProfile
metadata: {name: chat-steps}
spec:
  target: smollm2
  duration: 60s
  slo: chat
  seed: 1
  concurrency: 16
  max_tokens: 128
  arrival:
    process: steps
    steps: [{duration: 10s, rate: 2}, {duration: 20s, rate: 8}]
  requests:
    api: chat
    prompts: synthetic
    input_tokens: {distribution: normal, mean: 64, std: 16, min: 8, max: 256}
    output_tokens: {distribution: fixed, value: 32}
    temperature: 0.0
    top_p: 1.0
    ignore_eos: true
    stream: true
"""

ARRIVALS = {
    "poisson": "{process: poisson, rate: 5}",
    "gamma": "{process: gamma, rate: 5, burstiness: 0.5}",
    "constant": "{process: constant, rate: 5}",
    "normal": "{process: normal, rate: 5, std: 2}",
    "ramp": "{process: ramp, rate: 0, end_rate: 20}",
    "steps": "{process: steps, steps: [{duration: 10s, rate: 2}, {duration: 20s, rate: 0}]}",
    "trace": "{process: trace, trace: ./trace.csv, trace_format: azure, time_scale: 2.0}",
}
REQUESTS = {
    "defaults": "{}",
    "fixed": "{prompts: synthetic, input_tokens: {distribution: fixed, value: 64}}",
    "uniform": "{prompts: synthetic, input_tokens: {distribution: uniform, min: 16, max: 16}}",
    "lognormal": "{prompts: ./sharegpt.json, output_tokens: {distribution: lognormal, mean: 200, std: 80, max: 1024}}",
    "jsonl": "{prompts: prompts/chat.jsonl, api: generate, stream: false}",
}


def profile(arrival: str = ARRIVALS["poisson"], requests: str | None = None, extra: str = "") -> str:
    text = f"apiVersion: enova/v1\nkind: LoadProfile\nmetadata: {{name: p}}\nspec:\n  target: smollm2\n  duration: 60s\n"
    text += f"  arrival: {arrival}\n"
    if requests is not None:
        text += f"  requests: {requests}\n"
    return text + extra


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(json_schema())


def test_the_full_pinned_example_loads_with_every_field(tmp_path):
    (tmp_path / "specs.yaml").write_text(DEPLOYMENT + "---\n" + FULL)
    spec = load_specs(tmp_path / "specs.yaml").load_profiles["chat-steps"].doc.spec
    assert [(s.duration, s.rate) for s in spec.arrival.steps] == [(10.0, 2.0), (20.0, 8.0)]
    assert (spec.concurrency, spec.seed, spec.max_tokens, spec.slo) == (16, 1, 128, "chat")
    r = spec.requests
    assert (r.api, r.prompts, r.temperature, r.top_p, r.ignore_eos, r.stream) == ("chat", "synthetic", 0.0, 1.0, True, True)
    assert r.input_tokens.model_dump() == {"distribution": "normal", "value": None, "mean": 64.0, "std": 16.0,
                                           "min": 8, "max": 256}
    assert r.output_tokens.value == 32


def test_a_profile_without_a_requests_block_gets_the_defaults():
    spec = LoadProfile.model_validate(yaml.safe_load(profile())).spec
    assert spec.concurrency is None and spec.seed is None and spec.slo is None and spec.max_tokens == 128
    r = spec.requests
    assert (r.api, r.prompts, r.input_tokens, r.output_tokens) == ("completions", "builtin", None, None)
    assert (r.temperature, r.top_p, r.ignore_eos, r.stream) == (None, None, False, True)


def test_trace_options_left_out_are_none_and_mean_auto_and_real_time():
    arrival = LoadProfile.model_validate(yaml.safe_load(profile("{process: trace, trace: t.csv}"))).spec.arrival
    assert (arrival.trace_format, arrival.time_scale, arrival.rate) == (None, None, None)


@pytest.mark.parametrize("arrival", ARRIVALS.values(), ids=ARRIVALS.keys())
def test_every_arrival_process_loads_and_the_schema_accepts_it(validator, arrival):
    document = yaml.safe_load(profile(arrival))
    LoadProfile.model_validate(document)
    validator.validate(document)


@pytest.mark.parametrize("requests", REQUESTS.values(), ids=REQUESTS.keys())
def test_every_kind_of_requests_block_loads_and_the_schema_accepts_it(validator, requests):
    document = yaml.safe_load(profile(requests=requests))
    LoadProfile.model_validate(document)
    validator.validate(document)


BAD = {
    "poisson without rate": profile("{process: poisson}"),
    "poisson with rate 0": profile("{process: poisson, rate: 0}"),
    "gamma without burstiness": profile("{process: gamma, rate: 5}"),
    "burstiness outside gamma": profile("{process: poisson, rate: 5, burstiness: 1}"),
    "normal without std": profile("{process: normal, rate: 5}"),
    "std outside normal": profile("{process: constant, rate: 5, std: 1}"),
    "ramp without end_rate": profile("{process: ramp, rate: 5}"),
    "end_rate outside ramp": profile("{process: poisson, rate: 5, end_rate: 9}"),
    "steps without steps": profile("{process: steps}"),
    "steps with a rate": profile("{process: steps, rate: 3, steps: [{duration: 1s, rate: 2}]}"),
    "steps empty": profile("{process: steps, steps: []}"),
    "a step without duration": profile("{process: steps, steps: [{rate: 2}]}"),
    "a step with a negative rate": profile("{process: steps, steps: [{duration: 5s, rate: -1}]}"),
    "trace without file": profile("{process: trace}"),
    "trace with a rate": profile("{process: trace, trace: t.csv, rate: 3}"),
    "time_scale outside trace": profile("{process: poisson, rate: 5, time_scale: 2}"),
    "trace_format outside trace": profile("{process: poisson, rate: 5, trace_format: azure}"),
    "an unknown trace_format": profile("{process: trace, trace: t.csv, trace_format: splitwise}"),
    "an unknown process": profile("{process: bursty, rate: 5}"),
    "concurrency 0": profile(extra="  concurrency: 0\n"),
    "an unknown api": profile(requests="{api: openai}"),
    "a prompt file of an unknown kind": profile(requests="{prompts: prompts.txt}"),
    "synthetic without input_tokens": profile(requests="{prompts: synthetic}"),
    "input_tokens with a prompt set": profile(requests="{input_tokens: {distribution: fixed, value: 8}}"),
    "fixed without value": profile(requests="{output_tokens: {distribution: fixed}}"),
    "fixed with min": profile(requests="{output_tokens: {distribution: fixed, value: 8, min: 2}}"),
    "uniform without max": profile(requests="{output_tokens: {distribution: uniform, min: 2}}"),
    "a normal length without std": profile(requests="{output_tokens: {distribution: normal, mean: 2}}"),
    "lognormal with value": profile(requests="{output_tokens: {distribution: lognormal, mean: 2, std: 1, value: 3}}"),
    "a length of 0": profile(requests="{output_tokens: {distribution: fixed, value: 0}}"),
    "top_p above 1": profile(requests="{top_p: 1.5}"),
    "an unknown requests field": profile(requests="{max_tokens: 5}"),
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_what_the_loader_refuses_the_schema_refuses_too(validator, text):
    document = yaml.safe_load(text)
    with pytest.raises(ValidationError):
        LoadProfile.model_validate(document)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(document)


@pytest.mark.parametrize("text", [
    profile("{process: ramp, rate: 0, end_rate: 0}"),
    profile(requests="{output_tokens: {distribution: uniform, min: 9, max: 3}}"),
    profile("{process: steps, steps: [{duration: 50s, rate: 1}, {duration: 20s, rate: 2}]}"),
    profile("{process: steps, steps: [{duration: 10s, rate: 0}]}"),
], ids=["ramp from 0 to 0", "max below min", "steps past the duration", "silent steps"])
def test_rules_across_values_are_the_loaders_alone(text):
    """Comparisons between two values are beyond what the schema restates; the loader refuses them."""
    with pytest.raises(ValidationError):
        LoadProfile.model_validate(yaml.safe_load(text))


def test_steps_that_fill_the_duration_exactly_are_accepted():
    text = profile("{process: steps, steps: [{duration: 40s, rate: 1}, {duration: 20s, rate: 2}]}")
    assert LoadProfile.model_validate(yaml.safe_load(text)).spec.duration == 60.0


@pytest.mark.parametrize("path", ["specs", "examples/multi-model", "examples/gpu-mistral"])
def test_the_shipped_load_profiles_still_load(path):
    assert load_specs(REPO / path).load_profiles


@pytest.mark.parametrize("model", [ArrivalSpec, StepSpec, LengthSpec, RequestsSpec, LoadProfileSpec],
                         ids=lambda m: m.__name__)
def test_every_field_of_the_load_profile_models_is_in_the_schema(model):
    assert set(json_schema()["$defs"][model.__name__]["properties"]) == set(model.model_fields)
