"""The recommender against the real CPU engine: `engine.args: auto` in a spec is shown by
`enova diff`, served by `enova apply`, and the KV-cache capacity vLLM reports at start
(`vllm:cache_config_info`) matches the recommender's prediction within 5%, for two settings of
the KV space and max_model_len: the one `auto` chooses, then VLLM_CPU_KVCACHE_SPACE=1 with
max_model_len 4096 (a spec change, so the same engine start is rolled, not a second module).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from .conftest import TEST_GATEWAY_PORT, Cli, complete

pytestmark = [pytest.mark.slow, pytest.mark.one_core]

MODEL = "builtin:smollm2-135m-instruct"
NAME = "smollm2"


def write_auto_spec(folder: Path, args: str, env: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gateway.yaml").write_text(
        f"apiVersion: enova/v1\nkind: Gateway\nmetadata: {{name: main}}\nspec: {{port: {TEST_GATEWAY_PORT}}}\n")
    (folder / f"{NAME}.yaml").write_text(f"""\
apiVersion: enova/v1
kind: Deployment
metadata: {{name: {NAME}}}
spec:
  model: {MODEL}
  engine:
    args: {args}
    env: {{{env}}}
    startup_timeout: 4m
  replicas: 1
  resources: {{gpus: 0, cpus: 1}}
""")
    return folder


def engine_facts(cli: Cli, specs: Path) -> dict:
    """What the running replica's vLLM reports: the KV-cache size in tokens (cache_config_info)
    and the max_model_len it serves (/v1/models)."""
    [replica] = [r for r in cli.replicas(NAME, specs) if r["state"] == "ready"]
    base = f"http://127.0.0.1:{replica['port']}"
    metrics = httpx.get(f"{base}/metrics", timeout=10, trust_env=False).text
    info = next(line for line in metrics.splitlines() if line.startswith("vllm:cache_config_info{"))
    labels = dict(re.findall(r'(\w+)="([^"]*)"', info))
    models = httpx.get(f"{base}/v1/models", timeout=10, trust_env=False).json()["data"]
    tokens = labels.get("kv_cache_size_tokens") or int(labels["num_gpu_blocks"]) * int(labels["block_size"])
    return {"kv_tokens": int(tokens), "labels": labels,
            "max_model_len": models[0]["max_model_len"]}


def predicted(cli: Cli, *extra: str) -> dict:
    run = cli("recommend", "--model", MODEL, "--cpus", "1", "-o", "json", *extra, check=0)
    return json.loads(run.out)


def error_of(measured: int, prediction: int) -> float:
    return abs(measured - prediction) / measured


@pytest.fixture(scope="module")
def auto_run(module_cli: Cli, tmp_path_factory) -> dict:
    """Apply `args: auto`, then change it to a fixed KV space and max_model_len; record what
    diff showed and what vLLM reported each time."""
    specs = write_auto_spec(tmp_path_factory.mktemp("specs"), "auto")
    seen: dict = {}
    diff = module_cli("diff", str(specs), "-o", "json")
    seen["diff_code"] = diff.code
    seen["diff"] = json.loads(diff.out)
    seen["diff_text"] = module_cli("diff", str(specs)).out
    module_cli("apply", str(specs), check=0)
    seen["first"] = engine_facts(module_cli, specs)
    seen["answer"] = complete(TEST_GATEWAY_PORT, model=NAME)
    write_auto_spec(specs, "{auto: true, max_model_len: 4096}", env="VLLM_CPU_KVCACHE_SPACE: '1'")
    seen["second_diff"] = module_cli("diff", str(specs)).out
    began = time.monotonic()
    module_cli("apply", str(specs), check=0)
    seen["roll_s"] = time.monotonic() - began
    seen["second"] = engine_facts(module_cli, specs)
    seen["in_sync"] = module_cli("diff", str(specs)).code
    return seen


def test_diff_shows_the_values_auto_chose_and_why(auto_run: dict) -> None:
    assert auto_run["diff_code"] == 1
    [change] = [c for c in auto_run["diff"]["changes"] if c["kind"] == "deployment"]
    chosen = change["auto"]["chosen"]
    for key in ("max_model_len", "max_num_seqs", "kv_cache_memory_bytes"):
        assert key in chosen and chosen[key]["value"] and chosen[key]["reason"], chosen
    assert "engine.args chosen by the recommender (auto)" in auto_run["diff_text"]
    assert "kv_cache_memory_bytes:" in auto_run["diff_text"]


def test_apply_serves_with_the_chosen_values(auto_run: dict) -> None:
    [change] = [c for c in auto_run["diff"]["changes"] if c["kind"] == "deployment"]
    chosen = change["auto"]["chosen"]
    assert auto_run["first"]["max_model_len"] == chosen["max_model_len"]["value"]
    assert auto_run["answer"].strip()


def test_kv_capacity_matches_the_prediction_for_the_chosen_space(auto_run: dict, module_cli: Cli) -> None:
    [change] = [c for c in auto_run["diff"]["changes"] if c["kind"] == "deployment"]
    chosen = change["auto"]["chosen"]
    prediction = predicted(module_cli, "--set", f"kv_cache_memory_bytes={chosen['kv_cache_memory_bytes']['value']}",
                           "--max-model-len", str(chosen["max_model_len"]["value"]))
    measured = auto_run["first"]["kv_tokens"]
    print(f"auto: vLLM reports {measured} KV tokens, predicted {prediction['kv_cache_tokens']}, "
          f"error {error_of(measured, prediction['kv_cache_tokens']):.2%}")
    assert error_of(measured, prediction["kv_cache_tokens"]) <= 0.05


def test_kv_capacity_matches_the_prediction_for_a_one_gib_space(auto_run: dict, module_cli: Cli) -> None:
    assert "engine.args.max_model_len" in auto_run["second_diff"]
    assert auto_run["second"]["max_model_len"] == 4096
    prediction = predicted(module_cli, "--set", f"kv_cache_memory_bytes={1024 ** 3}", "--max-model-len", "4096")
    measured = auto_run["second"]["kv_tokens"]
    print(f"1 GiB: vLLM reports {measured} KV tokens, predicted {prediction['kv_cache_tokens']}, "
          f"error {error_of(measured, prediction['kv_cache_tokens']):.2%}")
    assert error_of(measured, prediction["kv_cache_tokens"]) <= 0.05
    assert auto_run["in_sync"] == 0
