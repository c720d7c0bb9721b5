"""`enova enode run` options: vLLM args from unknown flags, the deployment name, validation."""

import pytest

from enova.apply.enode import build_specs, name_for, parse_engine_args
from enova.errors import UsageError


def test_both_spellings_of_engine_flags_and_their_value_types():
    assert parse_engine_args(["--max-num-seqs", "8", "--max_model_len=2048", "--enforce-eager",
                              "--gpu-memory-utilization", "0.85", "--dtype", "bfloat16",
                              "--override-generation-config", '{"top_k": 5}']) == {
        "max_num_seqs": 8, "max_model_len": 2048, "enforce_eager": True, "gpu_memory_utilization": 0.85,
        "dtype": "bfloat16", "override_generation_config": {"top_k": 5}}


def test_a_stray_value_is_refused():
    with pytest.raises(UsageError, match="'8'"):
        parse_engine_args(["8"])


@pytest.mark.parametrize("model,name", [
    ("builtin:smollm2-135m-instruct", "smollm2-135m-instruct"),
    ("mistralai/Mistral-7B-Instruct-v0.1", "mistral-7b-instruct-v0-1"),
    ("./models/My_Model/", "my-model"),
])
def test_the_deployment_name_comes_from_the_model(model, name):
    assert name_for(model) == name


def test_options_are_validated_like_spec_files_and_errors_name_the_option():
    with pytest.raises(UsageError) as caught:
        build_specs(model="org/m", name=None, replicas=-1, cpus=1, gpus=0,
                    engine_args={"port": 1, "max_num_seqs": 4}, host="127.0.0.1", port=70000, token_file=None)
    text = str(caught.value)
    assert "--replicas" in text and "--port: " in text and "reserved" in text
    specs = build_specs(model="org/m", name=None, replicas=2, cpus=1, gpus=0, engine_args={"max_num_seqs": 4},
                        host="127.0.0.1", port=9199, token_file=None)
    deployment = specs.deployments["m"].doc.spec
    assert deployment.replicas == 2 and deployment.engine.args == {"max_num_seqs": 4}
    assert specs.default_deployment == "m" and specs.gateway.doc.spec.port == 9199
