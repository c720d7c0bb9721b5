"""`enova recommend` as a user runs it (a subprocess): a hub model's config read from the local
Hugging Face cache, a local folder, the builtin model on the CPU engine; refusals with the
arithmetic and exit 2; broken configs naming the field; the Hub offline or out of reach; a
LoadProfile's rate and a measured capacity giving the replica count."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parent / "configs"
_SCRIPT = Path(sys.executable).with_name("enova")
ENOVA = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "enova.cli"]
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.1"
SUMMARY = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "max_num_seqs",
           "max_num_batched_tokens", "weight_bytes", "kv_cache_bytes_per_token", "kv_cache_tokens", "replicas")


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ENOVA, "recommend", *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def hub_cache(root: Path, repo: str, config: str) -> Path:
    """A Hugging Face cache holding only `repo`'s config.json, laid out as huggingface_hub does."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(CONFIGS / config, folder / "snapshots" / commit / "config.json")
    return root


def model_folder(root: Path, config: str, **edits) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = json.loads((CONFIGS / config).read_text())
    for key, value in edits.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    (root / "config.json").write_text(json.dumps(data))
    return root


def test_mistral_7b_fits_one_24_gib_card_from_the_cached_hub_config(tmp_path: Path) -> None:
    cache = hub_cache(tmp_path / "hf", MISTRAL, "mistral-7b-instruct-v0.1.json")
    done = run("--model", MISTRAL, "--gpu-memory", "24GiB", "-o", "json", env={"HF_HUB_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert all(key in out for key in SUMMARY)
    assert out["device"] == "gpu" and out["tensor_parallel_size"] == 1
    assert out["weight_bytes"] == 14_483_464_192  # 7,241,732,096 params x 2 bytes
    # 32 layers x 2 x 8 KV heads x 128 x 2 bytes = 131,072 for a sequence's first 4,096 tokens; every
    # layer slides over 4,096, so over max_model_len 32,768 it averages 131,072 x 4,096 / 32,768
    assert out["max_model_len"] == 32_768 and out["kv_cache_bytes_per_token"] == 16_384
    assert out["kv_cache_tokens"] > 0 and out["max_num_seqs"] >= 1
    assert out["replicas"] is None
    assert all(f["reason"] for f in out["figures"])


def test_text_output_gives_every_number_a_reason_and_pasteable_args(tmp_path: Path) -> None:
    cache = hub_cache(tmp_path / "hf", MISTRAL, "mistral-7b-instruct-v0.1.json")
    done = run("--model", MISTRAL, "--gpu", "A100-80GB", env={"HF_HUB_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    assert "gpu_memory_utilization" in done.stdout and "engine:\n  args:\n" in done.stdout


def test_llama_70b_on_one_24_gb_card_refuses_with_the_arithmetic(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "llama-3-70b", "llama-3-70b.json")
    done = run("--model", str(folder), "--gpu", "L4")
    assert done.returncode == 2
    assert "does not fit" in done.stderr and "GiB" in done.stderr and "needs" in done.stderr
    assert "would fit" in done.stderr
    as_json = run("--model", str(folder), "--gpu", "L4", "-o", "json")
    assert as_json.returncode == 2
    refusal = json.loads(as_json.stdout)
    assert refusal["refused"] is True and refusal["suggestions"] and "GiB" in refusal["arithmetic"]


def test_llama_70b_on_eight_80_gb_cards_fits(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "llama-3-70b", "llama-3-70b.json")
    done = run("--model", str(folder), "--gpu", "H100-80GB", "--gpus", "8", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tensor_parallel_size"] in (2, 4, 8)


def test_a_broken_config_names_the_field(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "broken", "llama-3-8b.json", num_hidden_layers=None)
    done = run("--model", str(folder), "--gpu", "L4")
    assert done.returncode == 2
    assert "num_hidden_layers" in done.stderr and str(folder) in done.stderr
    wrong = model_folder(tmp_path / "wrong", "llama-3-8b.json", hidden_size="big")
    done = run("--model", str(wrong), "--gpu", "L4")
    assert done.returncode == 2 and "hidden_size" in done.stderr


def test_an_unknown_architecture_is_named(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "odd", "llama-3-8b.json", model_type="mamba42", architectures=["Mamba42"])
    done = run("--model", str(folder), "--gpu", "L4")
    assert done.returncode == 2 and "unsupported architecture: mamba42" in done.stderr


def test_an_unknown_gpu_lists_the_catalogue(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m", "llama-3-8b.json")
    done = run("--model", str(folder), "--gpu", "Z9000")
    assert done.returncode == 2 and "H100" in done.stderr


def test_a_hub_model_not_cached_while_offline_says_how_to_get_its_config(tmp_path: Path) -> None:
    done = run("--model", MISTRAL, "--gpu", "L4", env={"HF_HUB_CACHE": str(tmp_path / "empty")})
    assert done.returncode != 0 and "HF_HUB_OFFLINE" in done.stderr


def test_an_unreachable_hub_fails_fast_and_says_so(tmp_path: Path) -> None:
    done = run("--model", MISTRAL, "--gpu", "L4",
               env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert done.returncode == 1 and "could not be reached" in done.stderr
    assert "Retrying" not in done.stderr


def test_the_builtin_model_on_this_host_is_sized_for_the_cpu_engine() -> None:
    done = run("--model", "builtin:smollm2-135m-instruct", "--cpus", "2", "--memory", "24GiB", "-o", "json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["device"] == "cpu" and out["gpu_memory_utilization"] is None
    assert out["args"]["kv_cache_memory_bytes"] > 0
    assert out["kv_cache_bytes_per_token"] == 23_040  # 30 layers x 2 x 3 KV heads x 64 x 2 bytes


PROFILE = """\
apiVersion: enova/v1
kind: Deployment
metadata: {name: chat}
spec: {model: builtin:smollm2-135m-instruct, resources: {gpus: 0, cpus: 1}}
---
apiVersion: enova/v1
kind: LoadProfile
metadata: {name: chat-poisson}
spec:
  target: chat
  arrival: {process: poisson, rate: 12}
  duration: 60s
  requests:
    prompts: synthetic
    input_tokens: {distribution: lognormal, mean: 600, std: 300, max: 3000}
    output_tokens: {distribution: uniform, min: 64, max: 512}
"""


def test_a_profile_and_a_measured_capacity_give_the_replica_count(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "chat.yaml").write_text(PROFILE)
    folder = model_folder(tmp_path / "llama-3-8b", "llama-3-8b.json")
    done = run("--model", str(folder), "--gpu", "L4", "--profile", "chat-poisson", "--specs", str(specs),
               "--capacity", "5", "-o", "json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["replicas"] == 3  # ceil(12 requests/s / 5 per replica)
    # p99 prompt (lognormal 600 +- 300 -> 1,575) + p99 output (uniform 64..512 -> 508), rounded up
    assert 2083 <= out["max_model_len"] <= 4096
    without = json.loads(run("--model", str(folder), "--gpu", "L4", "--profile", "chat-poisson", "--specs",
                             str(specs), "-o", "json").stdout)
    assert without["replicas"] is None
    reason = next(f["reason"] for f in without["figures"] if f["key"] == "replicas")
    assert "capacity" in reason


def test_capacity_without_a_profile_is_a_usage_error(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m", "llama-3-8b.json")
    done = run("--model", str(folder), "--gpu", "L4", "--capacity", "5")
    assert done.returncode == 2 and "--profile" in done.stderr


@pytest.mark.parametrize("option", [["--gpus", "0"], ["--set", "no-equals"]])
def test_bad_options_exit_2(tmp_path: Path, option: list[str]) -> None:
    folder = model_folder(tmp_path / "m", "llama-3-8b.json")
    done = run("--model", str(folder), "--gpu", "L4", *option)
    assert done.returncode == 2, done.stderr
