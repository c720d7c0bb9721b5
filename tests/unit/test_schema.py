"""The JSON Schema accepts the documents the loader accepts, and rejects typos like it does."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from enova.spec import json_schema

DEPLOYMENT = """\
apiVersion: enova/v1
kind: Deployment
metadata: {name: smollm2}
spec:
  model: builtin:smollm2-135m-instruct
  engine: {name: vllm, args: {max_model_len: 2048, max_num_seqs: 16}}
  runtime: local
  replicas: 1
  resources: {gpus: 0, cpus: 1}
"""
SLO = """\
apiVersion: enova/v1
kind: SLO
metadata: {name: chat}
spec: {ttft_p95_ms: 500, itl_p95_ms: 50, e2e_p99_ms: 10000, max_error_rate: 0.01}
"""
LOAD_PROFILE = """\
apiVersion: enova/v1
kind: LoadProfile
metadata: {name: chat-poisson}
spec: {target: smollm2, arrival: {process: poisson, rate: 2}, duration: 60s}
"""


@pytest.fixture(scope="module")
def validator():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_names_its_draft_id_and_title():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://enova.dev/schema/v1.json"
    assert schema["title"]
    json.dumps(schema)  # serialisable as is


@pytest.mark.parametrize("text", [DEPLOYMENT, SLO, LOAD_PROFILE], ids=["Deployment", "SLO", "LoadProfile"])
def test_the_example_documents_are_valid(validator, text):
    validator.validate(yaml.safe_load(text))


@pytest.mark.parametrize(
    "text, old, new",
    [
        (DEPLOYMENT, "replicas: 1", "replicaz: 1"),
        (DEPLOYMENT, "kind: Deployment", "kind: Deploymnet"),
        (DEPLOYMENT, "apiVersion: enova/v1", "apiVersion: enova/v2"),
        (DEPLOYMENT, "max_num_seqs", "max-num-seqs"),
        (DEPLOYMENT, "max_num_seqs", "port"),
        (DEPLOYMENT, "replicas: 1", "replicas: -1"),
        (DEPLOYMENT, "name: smollm2", "name: SmolLM2"),
        (SLO, "{ttft_p95_ms: 500, itl_p95_ms: 50, e2e_p99_ms: 10000, max_error_rate: 0.01}", "{}"),
        (LOAD_PROFILE, "duration: 60s", "duration: 60"),  # valid: a number of seconds
        (LOAD_PROFILE, "duration: 60s", "duration: 60x"),
        (LOAD_PROFILE, "process: poisson, rate: 2", "process: gamma, rate: 2"),
        (LOAD_PROFILE, "process: poisson, rate: 2", "process: trace"),
    ],
)
def test_what_the_loader_rejects_the_schema_rejects_too(validator, text, old, new):
    document = yaml.safe_load(text.replace(old, new))
    if new == "duration: 60":
        validator.validate(document)
    else:
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(document)


def test_every_property_in_the_schema_has_a_description():
    definitions = json_schema()["$defs"]

    def description(prop):  # pydantic leaves out a field's description when its model's says the same
        target = prop.get("$ref", "").removeprefix("#/$defs/")
        return prop.get("description") or definitions.get(target, {}).get("description")

    undescribed = [
        f"{name}.{field}"
        for name, definition in definitions.items()
        for field, prop in definition.get("properties", {}).items()
        if not description(prop)
    ]
    assert undescribed == []
