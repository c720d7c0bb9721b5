"""enova.recommend.gpumem: vLLM's GPU memory division, estimated, against the logs vLLM users
posted (the source of each figure is beside it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enova.recommend import gpumem
from enova.recommend.geometry import parse_config, weight_bytes
from enova.recommend.model import GiB

CONFIGS = Path(__file__).parent / "configs"


def geometry(name: str):
    return parse_config(json.loads((CONFIGS / f"{name}.json").read_text()), source=name)


@pytest.mark.parametrize("max_model_len, logged_activation_gib, logged_kv_gib", [
    # vLLM's V0 profiler, Llama-3.1-8B-Instruct on one RTX 3090, gpu_memory_utilization 0.9,
    # https://github.com/vllm-project/vllm/issues/10517 (V0 profiled max_model_len tokens at once):
    # "total_gpu_memory=23.58GiB ... peak_torch_memory=17.06GiB ... non_torch_memory=0.35GiB
    # kv_cache_size=3.81GiB" at 20000, and "peak_torch_memory=17.98GiB ... kv_cache_size=2.89GiB"
    # at 29000; weights "14.9888 GB". Activations = peak - weights: 2.07 and 2.99 GiB.
    (20000, 17.06 - 14.99, 3.81),
    (29000, 17.98 - 14.99, 2.89),
])
def test_the_activation_estimate_matches_vllms_profile_of_llama_3_8b_on_an_rtx_3090(
        max_model_len, logged_activation_gib, logged_kv_gib):
    g = geometry("llama-3-8b")   # Llama-3.1-8B has the same layers; only the rope scaling differs
    plan = gpumem.plan_memory(g, total_bytes=int(23.58 * GiB), weight_bytes=int(14.99 * GiB), tp=1,
                              utilization=0.9, max_num_seqs=256, max_num_batched_tokens=max_model_len,
                              enforce_eager=True)   # V0's sum had no CUDA-graph term
    # 108 KiB a token: (3 x 4096 + 3 x 14336) x 2 bytes; the logs give 2.07 GiB / 20000 = 111 KB
    assert gpumem.forward_bytes_per_token(g, 1) == 110_592
    assert plan.activation_bytes / GiB == pytest.approx(logged_activation_gib, rel=0.02)
    # 21.22 - 14.99 - 2.06 - 0.35 = 3.82 GiB against 3.81; 2.90 against 2.89
    assert plan.kv_bytes / GiB == pytest.approx(logged_kv_gib, rel=0.02)


def test_cuda_graph_counts_match_the_profile_vllm_logs_for_256_sequences():
    # "Profiling CUDA graph memory: PIECEWISE=51 (largest=512), FULL=35 (largest=256)"
    # (vLLM 0.21, https://github.com/LMCache/LMCache/issues/3430)
    sizes = gpumem.cudagraph_capture_sizes(256, 8192)
    assert (len(sizes), max(sizes)) == (51, 512)
    assert len([s for s in sizes if s <= 256]) == 35
    assert gpumem.cudagraph_count(256, 8192) == 86


def test_fewer_sequences_capture_fewer_and_smaller_graphs():
    assert gpumem.cudagraph_capture_sizes(16, 2048) == [1, 2, 4, 8, 16, 24, 32]
    assert gpumem.cudagraph_count(16, 2048) == 7 + 5
    # max_num_batched_tokens below the ceiling is captured itself
    assert max(gpumem.cudagraph_capture_sizes(256, 384)) == 384


def test_qwen3_8b_on_an_rtx_a5000_is_within_4_percent_of_vllm_0_21s_log():
    # https://github.com/LMCache/LMCache/issues/3430, vLLM 0.21, the LLM class (8192 batched
    # tokens, 256 sequences), gpu_memory_utilization 0.9764 on an RTX A5000 (a 24 GB GA102 card:
    # 23.58 GiB as CUDA reports, as the RTX 3090 above):
    # "Estimated CUDA graph memory: 0.52 GiB total", "Available KV cache memory: 6.37 GiB",
    # "GPU KV cache size: 46,368 tokens".
    g = geometry("qwen3-8b")
    weights, _ = weight_bytes(g)
    plan = gpumem.plan_memory(g, total_bytes=int(23.58 * GiB), weight_bytes=weights, tp=1,
                              utilization=0.9764, max_num_seqs=256, max_num_batched_tokens=8192)
    assert plan.cudagraph_bytes / GiB == pytest.approx(0.52, abs=0.01)
    # 23.02 - 15.26 weights - 0.75 activations - 0.35 non-torch - 0.52 graphs = 6.15 GiB: 3.5% under
    assert plan.kv_bytes / GiB == pytest.approx(6.37, rel=0.04)
    assert plan.kv_bytes / GiB < 6.37   # the estimate errs on the side of starting


def test_tensor_parallelism_divides_weights_and_activations():
    g = geometry("llama-3-70b")
    weights, _ = weight_bytes(g)
    one, four = (gpumem.plan_memory(g, total_bytes=int(79.15 * GiB), weight_bytes=weights, tp=tp,
                                    utilization=0.9, max_num_seqs=256, max_num_batched_tokens=2048)
                 for tp in (1, 4))
    assert four.weight_bytes == -(-weights // 4)
    assert gpumem.forward_bytes_per_token(g, 4) < gpumem.forward_bytes_per_token(g, 1)
    assert one.kv_bytes < 0 < four.kv_bytes


def test_moe_activations_count_the_routed_experts_not_the_dense_width():
    g = geometry("qwen3-30b-a3b")     # 128 experts, 8 per token, expert MLP 768 wide
    m = g.moe
    per_token = gpumem.forward_bytes_per_token(g, 1)
    expected = 2 * (3 * g.hidden_size + m.experts_per_token * (3 * m.expert_intermediate_size + g.hidden_size)
                    + 2 * m.num_experts)
    assert per_token == expected


def test_the_sampler_peak_grows_with_sequences_and_vocabulary():
    g = geometry("gemma-2-9b-it")     # a 256,000-token vocabulary
    # 256 rows x 256,000 logits x 14 bytes = 0.85 GiB: why big-vocabulary models get less KV
    assert gpumem.sampler_bytes(g, 256) == 256 * 256_000 * 14
    assert gpumem.activation_bytes(g, 2048, 256, 1) > gpumem.activation_bytes(g, 2048, 16, 1)
