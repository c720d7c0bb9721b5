"""Engine args are checked with the installed vLLM's own argument table at validate time.

The table is extracted once per module from the real vLLM (a child process that imports it,
about ten seconds) into a temporary cache folder that every test here shares.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from enova.engines import argspec
from enova.engines.argspec import installed_vllm, load_table, validate_engine_args
from enova.errors import SpecError
from enova.spec import load_specs

REPO = Path(__file__).resolve().parents[2]
ENOVA = Path(sys.executable).with_name("enova")

pytestmark = pytest.mark.skipif(installed_vllm() is None, reason="vLLM is not installed")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    assert load_table(folder) is not None
    return folder


def deployment(args: str, gpus: int = 0) -> str:
    return ("apiVersion: enova/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  model: org/model\n"
            f"  resources: {{gpus: {gpus}, cpus: 1}}\n  engine:\n    args:\n{args}")


def issues_of(tmp_path: Path, text: str, cache_dir: Path) -> list[str]:
    (tmp_path / "app.yaml").write_text(text)
    specs = load_specs(tmp_path / "app.yaml")
    with pytest.raises(SpecError) as caught:
        validate_engine_args(specs, cache_dir)
    return [f"{i.line} {i.field}: {i.message}" for i in caught.value.issues]


def test_a_misspelt_engine_arg_is_an_error_at_its_line_naming_the_close_option(tmp_path, cache_dir):
    text = deployment("      max_model_len: 1024\n      max_num_seq: 8\n")
    assert issues_of(tmp_path, text, cache_dir) == [
        "10 spec.engine.args.max_num_seq: unknown vLLM engine argument (did you mean max_num_seqs?)"]


@pytest.mark.parametrize("line, expected", [
    ("max_num_seqs: eight", "spec.engine.args.max_num_seqs: must be an integer (got 'eight')"),
    ("max_num_seqs: 1.5", "spec.engine.args.max_num_seqs: must be an integer (got 1.5)"),
    ("max_num_seqs: [1, 2]", "spec.engine.args.max_num_seqs: takes one value, not a list (got [1, 2])"),
    ("gpu_memory_utilization: high", "spec.engine.args.gpu_memory_utilization: must be a number (got 'high')"),
    ("dtype: bf16", "spec.engine.args.dtype: must be one of: auto, bfloat16, float, float16, float32, half"
                    " (got 'bf16')"),
    ("enforce_eager: 1", "spec.engine.args.enforce_eager: must be true or false (got 1)"),
    ("disable_log_stats: false", "spec.engine.args.disable_log_stats: a switch: only true turns it on;"
                                 " leave it out to keep it off (got False)"),
    ("seed: true", "spec.engine.args.seed: takes a value, not true or false (got True)"),
    ("help: true", "spec.engine.args.help: unknown vLLM engine argument"),
])
def test_a_value_vllm_would_refuse_is_an_error_at_the_value(tmp_path, cache_dir, line, expected):
    assert issues_of(tmp_path, deployment(f"      {line}\n"), cache_dir) == [f"9 {expected}"]


def test_values_vllm_takes_pass(tmp_path, cache_dir):
    (tmp_path / "app.yaml").write_text(deployment(
        "      max_num_seqs: '8'\n      dtype: bfloat16\n      enforce_eager: false\n      max_model_len: 1k\n"
        "      disable_log_stats: true\n      gpu_memory_utilization: 1\n      compilation_config: {mode: 0}\n"
        "      api_key: [a, b]\n"))
    validate_engine_args(load_specs(tmp_path), cache_dir)


@pytest.mark.parametrize("path", ["specs", "examples/cpu-two-replicas.yaml", "examples/multi-model",
                                  "examples/gpu-mistral", "examples/auto"])
def test_the_shipped_specs_pass(path, cache_dir):
    validate_engine_args(load_specs(REPO / path), cache_dir)


def test_the_table_is_cached_by_distribution_and_version_and_not_extracted_again(cache_dir, monkeypatch):
    distribution, version = installed_vllm()
    assert (cache_dir / "vllm-args" / f"{distribution}-{version}.json").is_file()

    def no_child(*args, **kwargs):
        raise AssertionError("extracted again")
    monkeypatch.setattr(subprocess, "run", no_child)
    assert load_table(cache_dir).options["max_num_seqs"]["type"] == "int"


def test_without_vllm_installed_engine_args_are_not_checked_by_vllm(tmp_path, monkeypatch):
    monkeypatch.setattr(argspec, "DISTRIBUTIONS", ("no-such-vllm-distribution",))
    (tmp_path / "app.yaml").write_text(deployment("      max_num_seq: 8\n"))
    validate_engine_args(load_specs(tmp_path), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_deployment_for_the_build_that_is_not_installed_is_not_checked_against_this_one(tmp_path, cache_dir):
    (tmp_path / "app.yaml").write_text(deployment("      max_num_seq: 8\n", gpus=1))
    validate_engine_args(load_specs(tmp_path), cache_dir)  # the CUDA build, absent here, would run it


def test_enova_validate_reports_a_misspelt_engine_arg_with_file_and_line(tmp_path, cache_dir):
    (tmp_path / "app.yaml").write_text(deployment("      max_num_seq: 8\n"))
    env = {**os.environ, "ENOVA_CACHE_DIR": str(cache_dir), "ENOVA_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([str(ENOVA), "validate", "app.yaml"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "app.yaml:9 spec.engine.args.max_num_seq: unknown vLLM engine argument (did you mean max_num_seqs?)" \
        in done.stderr


def test_a_failing_extraction_is_not_retried_on_every_call(tmp_path, monkeypatch):
    """A reconciler re-reads the specs on every timer tick: a broken vLLM import must cost one
    failing child process per retry period, not one per pass."""
    calls = []

    class Failed:
        returncode, stderr = 1, "ImportError: broken vllm"

    def failing_child(*args, **kwargs):
        calls.append(args)
        return Failed()
    monkeypatch.setattr(subprocess, "run", failing_child)
    monkeypatch.setattr(argspec, "_FAILED", {})
    for _ in range(3):
        assert load_table(tmp_path / "cache") is None
    assert len(calls) == 1
    monkeypatch.setattr(argspec, "RETRY_FAILED_AFTER", 0.0)
    assert load_table(tmp_path / "cache") is None
    assert len(calls) == 2
