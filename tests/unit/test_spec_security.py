"""What a spec may not do at validate time: set the variables enova sets or ones that would run
other code in the engine process, or expose the gateway beyond loopback without a token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from enova.engines.vllm import render_launch
from enova.errors import SpecError
from enova.spec import json_schema, load_specs
from enova.spec.models import RESERVED_ENV, GatewaySpec

ENOVA = Path(sys.executable).with_name("enova")


def deployment_with_env(name: str) -> str:
    return ("apiVersion: enova/v1\nkind: Deployment\nmetadata: {name: app}\n"
            f"spec:\n  model: org/model\n  engine:\n    env:\n      {name}: x\n")


@pytest.mark.parametrize("name", [
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ENOVA_DEPLOYMENT", "ENOVA_ANYTHING", "LD_PRELOAD",
    "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PATH",
    "VLLM_CPU_OMP_THREADS_BIND", "HF_HUB_OFFLINE", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
])
def test_an_engine_env_name_that_enova_sets_or_that_could_hijack_the_engine_is_refused(tmp_path, name):
    (tmp_path / "app.yaml").write_text(deployment_with_env(name))
    with pytest.raises(SpecError) as caught:
        load_specs(tmp_path / "app.yaml")
    [issue] = caught.value.issues
    assert (issue.line, issue.field) == (8, f"spec.engine.env.{name}")
    assert issue.message.startswith("reserved; ")


@pytest.mark.parametrize("name", ["OMP_NUM_THREADS", "VLLM_LOGGING_LEVEL", "HF_HOME", "path", "MY_ENOVA_X"])
def test_other_engine_env_names_are_accepted(tmp_path, name):
    (tmp_path / "app.yaml").write_text(deployment_with_env(name))
    assert load_specs(tmp_path / "app.yaml").deployments["app"].doc.spec.engine.env == {name: "x"}


@pytest.mark.parametrize("gpus", [0, 1])
def test_every_variable_render_launch_sets_is_reserved_in_the_spec(gpus):
    config = {"model": "org/m", "runtime": "local", "engine": {"name": "vllm", "args": {}, "env": {}},
              "resources": {"gpus": gpus, "cpus": 1}}
    launch = render_launch(deployment="d", replica_id="d-1", config=config, config_hash="h", model_path="/m",
                           offline=True, host="127.0.0.1", port=1, cpus=[0], gpus=["GPU-1"] * gpus)
    unreserved = [k for k in launch.env if k not in RESERVED_ENV and not k.startswith("ENOVA_")]
    assert unreserved == []


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(json_schema())


def test_the_schema_refuses_reserved_env_names_and_accepts_others(validator):
    def document(name: str) -> dict:
        return {"apiVersion": "enova/v1", "kind": "Deployment", "metadata": {"name": "app"},
                "spec": {"model": "org/model", "engine": {"env": {name: "x"}}}}
    validator.validate(document("OMP_NUM_THREADS"))
    for name in ("LD_PRELOAD", "ENOVA_REPLICA_ID", "WATCHDOG_USEC"):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(document(name))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_a_gateway_on_loopback_needs_no_token(host):
    assert GatewaySpec(host=host).token_file is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "gateway.example.com"])
def test_a_gateway_beyond_loopback_needs_a_token_file(host, validator):
    with pytest.raises(ValueError, match=r"required when host .* is beyond loopback"):
        GatewaySpec(host=host)
    assert GatewaySpec(host=host, token_file="token").token_file == "token"
    document = {"apiVersion": "enova/v1", "kind": "Gateway", "metadata": {"name": "g"}, "spec": {"host": host}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(document)
    validator.validate({**document, "spec": {"host": host, "token_file": "token"}})


def test_enode_run_on_all_interfaces_without_a_token_file_is_refused_naming_the_option(tmp_path):
    done = subprocess.run([str(ENOVA), "--state-dir", str(tmp_path), "enode", "run", "--model", "org/m",
                           "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--token-file: required when host (0.0.0.0) is beyond loopback" in done.stderr
    assert "Traceback" not in done.stderr
