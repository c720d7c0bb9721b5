"""enova.recommend.sizing: the rules, one behaviour per test (the full recommendations for real
models are in test_goldens.py)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from enova.recommend import gpus, kvcache
from enova.recommend.fit import tp_problem
from enova.recommend.geometry import parse_config
from enova.recommend.model import GiB, MiB, CpuTarget, Lengths, MoE, Refusal, Workload
from enova.recommend.render import refusal_json, to_json
from enova.recommend.sizing import recommend

CONFIGS = Path(__file__).parent / "configs"
GPU_ORDER = ["weight_bytes", "kv_cache_bytes_per_token", "activation_bytes", "cudagraph_bytes", "non_torch_bytes",
             "gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "max_num_seqs",
             "max_num_batched_tokens", "available_kv_cache_bytes", "kv_cache_tokens", "replicas"]
CPU_ORDER = ["weight_bytes", "kv_cache_bytes_per_token", "engine_overhead_bytes", "max_model_len", "max_num_seqs",
             "max_num_batched_tokens", "kv_cache_memory_bytes", "kv_cache_tokens", "replicas"]


def geometry(name: str):
    return parse_config(json.loads((CONFIGS / f"{name}.json").read_text()), source=name)


def host(available_gib: float = 20, cores: int = 2) -> CpuTarget:
    return CpuTarget(total_bytes=24 * GiB, available_bytes=int(available_gib * GiB), cores=cores)


def chat(rate=None, capacity=None) -> Workload:
    return Workload(name="chat", input_tokens=Lengths(mean=600, p99=3000), output_tokens=Lengths(mean=200, p99=700),
                    rate_rps=rate, capacity_rps=capacity, capacity_source="bench run 3" if capacity else "")


# ---------------------------------------------------------------- shape of every recommendation

def test_gpu_figures_come_in_the_order_a_reader_checks_them_each_with_a_reason():
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"))
    assert [f.key for f in rec.figures] == GPU_ORDER
    assert all(f.reason for f in rec.figures)
    for key in ("activation_bytes", "cudagraph_bytes", "non_torch_bytes", "available_kv_cache_bytes"):
        assert rec.figure(key).reason.startswith("estimate"), key
    assert list(rec.args) == ["tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "max_num_seqs",
                              "max_num_batched_tokens"]


def test_cpu_figures_come_in_order_and_the_args_are_the_cpu_engines():
    rec = recommend(geometry("smollm2-135m-instruct"), host())
    assert [f.key for f in rec.figures] == CPU_ORDER
    assert all(f.reason for f in rec.figures)
    assert list(rec.args) == ["kv_cache_memory_bytes", "max_model_len", "max_num_seqs", "max_num_batched_tokens"]
    assert rec.device == "cpu"


def test_the_figures_agree_with_the_args():
    rec = recommend(geometry("mistral-7b-v0.1"), gpus.gpu_target("A10G"))
    for key in ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "max_num_seqs",
                "max_num_batched_tokens"):
        assert rec.value(key) == rec.args[key]


# ---------------------------------------------------------------- fixed args

def test_fixed_args_are_kept_as_given_and_the_rest_is_chosen_around_them():
    fixed = {"max_model_len": 4096, "gpu_memory_utilization": 0.95, "enable_prefix_caching": True}
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"), fixed=fixed)
    assert rec.args["max_model_len"] == 4096 and rec.args["gpu_memory_utilization"] == 0.95
    assert rec.args["enable_prefix_caching"] is True          # passed through untouched
    assert rec.user_set == ("enable_prefix_caching", "gpu_memory_utilization", "max_model_len")
    assert rec.figure("max_model_len").reason == "set by you"
    default = recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"))
    assert rec.value("available_kv_cache_bytes") > default.value("available_kv_cache_bytes")


def test_a_fixed_max_model_len_that_cannot_fit_is_refused_by_name():
    # Qwen3-8B on one L4: 15.26 GiB of weights leave about 3.7 GiB of KV; 40,960 tokens x 144 KiB
    # = 5.6 GiB for one sequence
    with pytest.raises(Refusal) as caught:
        recommend(geometry("qwen3-8b"), gpus.gpu_target("L4"), fixed={"max_model_len": 40960})
    refusal = caught.value
    assert "max_model_len=40,960 (set by you)" in refusal.arithmetic
    assert refusal.exit_code == 2
    longest = [s for s in refusal.suggestions if s.startswith("max_model_len=")]
    assert longest and int(longest[0].split("=")[1].replace(",", "")) < 40960


def test_a_fixed_max_model_len_above_the_models_limit_is_refused():
    with pytest.raises(Refusal, match="above the model's limit"):
        recommend(geometry("llama-3-8b"), gpus.gpu_target("H100"), fixed={"max_model_len": 16384})


def test_a_fixed_max_num_seqs_beyond_what_the_cache_holds_is_kept_with_a_note():
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"), fixed={"max_num_seqs": 512})
    assert rec.args["max_num_seqs"] == 512
    assert any("preempt" in note for note in rec.notes)


# ---------------------------------------------------------------- refusals

def test_llama_3_70b_on_one_24gb_card_refuses_with_the_arithmetic_and_a_gpu_count():
    with pytest.raises(Refusal) as caught:
        recommend(geometry("llama-3-70b"), gpus.gpu_target("L4"))
    refusal = caught.value
    # 70,553,706,496 params x 2 bytes = 131.42 GiB of weights; 22.03 GiB x 0.9 = 19.83 GiB
    assert "needs 131.42 GiB of weights per GPU at tp=1" in refusal.arithmetic
    assert "has 22.03 GiB x 0.9 = 19.83 GiB" in refusal.arithmetic
    assert refusal.suggestions[0] == "8 x L4-24GB (tensor_parallel_size=8)"
    # AWQ int4 is 37.0 GiB: 18.5 GiB on each of two 24 GB cards, with 0.5 GiB left for KV
    assert "AWQ int4 weights (37.03 GiB) on 2 x L4-24GB (tensor_parallel_size=2)" in refusal.suggestions
    data = refusal_json(refusal)
    assert data["refused"] and data["exit_code"] == 2 and data["suggestions"] == list(refusal.suggestions)


def test_a_quantized_variant_that_fits_the_same_gpu_is_suggested():
    # Qwen1.5-MoE-A2.7B: 26.7 GiB of bf16 weights; fp8 13.9 GiB fits one L4
    with pytest.raises(Refusal) as caught:
        recommend(geometry("qwen1.5-moe-a2.7b"), gpus.gpu_target("L4"))
    assert "fp8 weights (13.91 GiB) on one L4-24GB" in caught.value.suggestions


def test_a_spec_gpu_count_vllm_cannot_shard_over_is_refused_naming_it():
    with pytest.raises(Refusal) as caught:
        recommend(geometry("llama-3-70b"), gpus.gpu_target("H100", count=3, fixed=True))
    assert "tensor_parallel_size=3 (the spec's resources.gpus (3)): 64 attention heads do not divide by 3" \
        in caught.value.arithmetic


def test_a_spec_gpu_count_too_small_suggests_resources_gpus():
    with pytest.raises(Refusal) as caught:
        recommend(geometry("llama-3-70b"), gpus.gpu_target("A100-80GB", count=1, fixed=True))
    assert "resources.gpus: 2" in caught.value.suggestions


def test_an_unknown_kv_cache_dtype_is_refused():
    with pytest.raises(Refusal, match="unknown kv_cache_dtype"):
        recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"), kv_cache_dtype="int3")


# ---------------------------------------------------------------- tensor parallelism

def test_a_spec_gpu_count_is_used_exactly():
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("A100-80GB", count=2, fixed=True))
    assert rec.args["tensor_parallel_size"] == 2
    assert "resources.gpus" in rec.figure("tensor_parallel_size").reason


def test_up_to_n_gpus_takes_the_fewest_unless_more_hold_far_more_per_gpu():
    # Llama-3-8B on H100s: tp=2 holds 433 sequences per GPU against 382 at tp=1, not 1.5x
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("H100", count=8))
    assert rec.args["tensor_parallel_size"] == 1
    assert "the 8 GPUs host 8 replicas" in rec.figure("replicas").reason
    # Llama-3-70B on A100s: tp=2 leaves 4.5 GiB of KV per GPU, tp=4 36 GiB
    rec = recommend(geometry("llama-3-70b"), gpus.gpu_target("A100-80GB", count=8))
    assert rec.args["tensor_parallel_size"] == 4


def test_tp_must_divide_heads_and_the_mlp_and_may_replicate_kv_heads():
    g = geometry("llama-3-8b")          # 32 heads, 8 KV heads, MLP 14336
    assert tp_problem(g, 4) is None and tp_problem(g, 16) is None    # 16 % 8 == 0: KV heads replicated
    assert "attention heads" in tp_problem(g, 3)
    g6 = dataclasses.replace(g, num_attention_heads=48, num_kv_heads=8)
    assert "KV heads" in tp_problem(g6, 6)


def test_moe_tp_must_divide_every_experts_intermediate_size():
    g = dataclasses.replace(geometry("qwen3-30b-a3b"), num_attention_heads=48, num_kv_heads=6,
                            moe=MoE(num_experts=128, experts_per_token=8, expert_intermediate_size=1000))
    assert "experts' intermediate size 1000" in tp_problem(g, 6)   # 1000 % 6 != 0
    assert tp_problem(g, 2) is None


# ---------------------------------------------------------------- lengths and batches

def test_a_workload_sets_max_model_len_from_its_p99_lengths_rounded_to_256():
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"), chat())
    assert rec.args["max_model_len"] == 3840          # 3000 + 700 = 3700 -> 3840
    assert "p99 prompt + p99 output (3,000 + 700)" in rec.figure("max_model_len").reason


def test_without_a_workload_max_model_len_is_the_models_limit_when_it_fits():
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"))
    assert rec.args["max_model_len"] == 8192


def test_max_model_len_is_lowered_when_one_full_sequence_does_not_fit():
    # Gemma-2-9B on one L4: 17.2 GiB of weights leave ~2 GiB of KV at 336 KiB a token
    g = geometry("gemma-2-9b-it")
    rec = recommend(g, gpus.gpu_target("L4"))
    mml = rec.args["max_model_len"]
    assert 2048 <= mml < 8192 and mml % 256 == 0
    assert rec.figure("max_model_len").reason.startswith("lowered from 8,192")
    kv = rec.value("available_kv_cache_bytes")
    one = kvcache.min_kv_bytes_for(g, mml, block_size=16, kv_dtype_bytes=2, in_flight_tokens=2 * 2048)
    assert one <= kv


def test_max_num_seqs_is_capped_by_the_workloads_mean_length_in_multiples_of_8():
    g = geometry("llama-3-8b")
    rec = recommend(g, gpus.gpu_target("L4"), chat())
    kv = rec.value("available_kv_cache_bytes")
    holds = kvcache.max_concurrency(g, kv, max_model_len=800, block_size=16, kv_dtype_bytes=2, in_flight_tokens=4096)
    assert rec.args["max_num_seqs"] == int(holds) - int(holds) % 8 < 256
    assert "mean length (800 tokens)" in rec.figure("max_num_seqs").reason


def test_a_large_gpu_keeps_vllms_defaults_when_the_cache_holds_more():
    rec = recommend(geometry("smollm2-135m-instruct"), gpus.gpu_target("H100"))
    assert (rec.args["max_num_seqs"], rec.args["max_num_batched_tokens"]) == (1024, 8192)


def test_the_a100_gets_vllms_smaller_defaults():
    rec = recommend(geometry("smollm2-135m-instruct"), gpus.gpu_target("A100-80GB"))
    assert (rec.args["max_num_seqs"], rec.args["max_num_batched_tokens"]) == (256, 2048)


def test_a_long_p99_prompt_raises_the_prefill_budget():
    long_prompts = Workload(input_tokens=Lengths(mean=3000, p99=5000), output_tokens=Lengths(mean=100, p99=300))
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("A100-80GB"), long_prompts)
    assert rec.args["max_num_batched_tokens"] == 5120
    assert "p99 prompt (5,000 tokens)" in rec.figure("max_num_batched_tokens").reason


def test_an_fp8_kv_cache_holds_about_twice_the_tokens_and_is_passed_on():
    g, t = geometry("llama-3-8b"), gpus.gpu_target("L4")
    auto, fp8 = recommend(g, t), recommend(g, t, kv_cache_dtype="fp8")
    assert fp8.args["kv_cache_dtype"] == "fp8"
    assert fp8.value("kv_cache_tokens") / auto.value("kv_cache_tokens") == pytest.approx(2, rel=0.05)


def test_a_gpu_without_bf16_notes_the_float16_fallback():
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("V100-32GB"))
    assert any("float16" in note for note in rec.notes)


def test_enforce_eager_drops_the_cuda_graph_estimate():
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"), fixed={"enforce_eager": True})
    assert rec.value("cudagraph_bytes") == 0


# ---------------------------------------------------------------- replicas

def test_replicas_is_rate_over_measured_capacity_rounded_up():
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"), chat(rate=10, capacity=3))
    assert rec.value("replicas") == 4
    assert "bench run 3" in rec.figure("replicas").reason


@pytest.mark.parametrize("workload, why", [
    (None, "no request rate"),
    (Workload(rate_rps=5), "no measured capacity"),
])
def test_replicas_is_not_given_without_a_rate_and_a_capacity(workload, why):
    rec = recommend(geometry("llama-3-8b"), gpus.gpu_target("L4"), workload)
    assert rec.value("replicas") is None
    assert why in rec.figure("replicas").reason


# ---------------------------------------------------------------- the CPU engine

def test_cpu_kv_tokens_for_a_given_kv_cache_memory_are_vllms_blocks_of_128():
    # SmolLM2: 30 layers x 2 x 3 KV heads x 64 x 2 bytes = 23,040 bytes a token; a block of 128
    # is 2,949,120 bytes; 1 GiB holds 364 blocks = 46,592 tokens (CPU-ENGINE.md, logged by vLLM)
    rec = recommend(geometry("smollm2-135m-instruct"), host(), fixed={"kv_cache_memory_bytes": GiB})
    assert rec.value("kv_cache_tokens") == 46_592
    assert rec.args["kv_cache_memory_bytes"] == GiB and rec.figure("kv_cache_memory_bytes").reason == "set by you"


def test_cpu_kv_cache_is_whole_blocks_for_four_sequences_per_core():
    rec = recommend(geometry("smollm2-135m-instruct"), host(cores=4))
    assert rec.args["max_num_seqs"] == 16
    # 16 sequences x 16 blocks of 128 tokens (max_model_len 2048) + vLLM's null block
    assert rec.args["kv_cache_memory_bytes"] == (16 * 16 + 1) * 2_949_120
    assert rec.value("kv_cache_tokens") == (16 * 16 + 1) * 128


def test_cpu_kv_cache_is_capped_at_half_of_what_the_host_leaves():
    g = geometry("llama-3-8b")    # 14.96 GiB of weights, 128 KiB a token
    rec = recommend(g, CpuTarget(total_bytes=32 * GiB, available_bytes=20 * GiB, cores=8))
    free = 20 * GiB - rec.value("weight_bytes") - rec.value("engine_overhead_bytes")
    assert rec.args["kv_cache_memory_bytes"] <= free / 2
    assert rec.args["kv_cache_memory_bytes"] % (128 * 131_072) == 0
    assert rec.args["max_num_seqs"] < 32       # fewer than 4 x 8 cores: the cache holds fewer


def test_a_host_without_room_for_weights_engine_and_one_sequence_refuses():
    with pytest.raises(Refusal) as caught:
        recommend(geometry("llama-3-8b"), CpuTarget(total_bytes=16 * GiB, available_bytes=12 * GiB, cores=4))
    assert "needs 14.96 GiB of weights" in caught.value.arithmetic
    assert "the host has 12.00 GiB available" in caught.value.arithmetic


def test_a_cpu_kv_cache_larger_than_the_host_has_is_refused_by_name():
    with pytest.raises(Refusal, match=r"kv_cache_memory_bytes=8,589,934,592 \(set by you"):
        recommend(geometry("smollm2-135m-instruct"), host(available_gib=4),
                  fixed={"kv_cache_memory_bytes": 8 * GiB})


def test_a_cpu_kv_cache_too_small_for_one_sequence_is_refused_with_a_length_that_fits():
    with pytest.raises(Refusal) as caught:
        recommend(geometry("smollm2-135m-instruct"), host(), fixed={"kv_cache_memory_bytes": 16 * MiB})
    # 16 MiB = 5 blocks: one null block + 4 x 128 tokens
    assert caught.value.suggestions[0] == "max_model_len=512"


def test_cpu_max_model_len_follows_the_workload():
    rec = recommend(geometry("smollm2-135m-instruct"), host(), chat())
    assert rec.args["max_model_len"] == 3840


def test_to_json_carries_the_summary_on_both_devices():
    cpu = to_json(recommend(geometry("smollm2-135m-instruct"), host()))
    gpu = to_json(recommend(geometry("llama-3-8b"), gpus.gpu_target("L4")))
    assert cpu["tensor_parallel_size"] == 1 and cpu["gpu_memory_utilization"] is None
    assert gpu["gpu_memory_utilization"] == 0.9
    for data in (cpu, gpu):
        for key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "weight_bytes",
                    "kv_cache_bytes_per_token", "kv_cache_tokens", "replicas", "args", "figures", "device",
                    "model", "target"):
            assert key in data
        assert all(set(f) == {"key", "value", "unit", "reason"} for f in data["figures"])
    assert math.isclose(json.loads(json.dumps(gpu))["gpu_memory_utilization"], 0.9)
