"""enova.recommend.kvcache: the KV cache as vLLM 0.32 counts it.

The SmolLM2 figure is what the real CPU engine logged on this host. The other expected figures
were produced by calling vLLM 0.32's own get_kv_cache_configs / get_kv_cache_capacity on the
same layer specs (a dev-time cross-check; these tests do not import vLLM), and a few are worked
out by hand in the comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enova.recommend.geometry import parse_config
from enova.recommend.kvcache import (
    default_block_size,
    kv_bytes_per_token_per_layer,
    kv_cache_bytes_per_token,
    kv_cache_tokens,
    kv_pool,
    max_concurrency,
    max_model_len_for,
    min_kv_bytes_for,
)

CONFIGS = Path(__file__).parent / "configs"
GiB = 1024 ** 3


def geometry(name: str):
    return parse_config(json.loads((CONFIGS / f"{name}.json").read_text()), source=name)


@pytest.mark.parametrize("name, tp, per_token", [
    # Mistral-7B: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 131,072
    ("mistral-7b-v0.1", 1, 131_072),
    # SmolLM2-135M: 30 x 3 x 64 x 2 x 2 = 23,040
    ("smollm2-135m-instruct", 1, 23_040),
    # Llama-3-70B on 4 ranks: 80 x (8 / 4) x 128 x 2 x 2 = 81,920 per rank
    ("llama-3-70b", 4, 81_920),
    # ... on 16 ranks the 8 KV heads are replicated: 80 x 1 x 128 x 2 x 2 = 40,960 per rank
    ("llama-3-70b", 16, 40_960),
    # DeepSeek-V2-Lite (MLA): 27 x (512 + 64) x 2 = 31,104, the same on every rank
    ("deepseek-v2-lite", 1, 31_104),
    ("deepseek-v2-lite", 8, 31_104),
    # Gemma-3-1B, counting every layer: 26 x 1 x 256 x 2 x 2 = 26,624
    ("gemma-3-1b-it", 1, 26_624),
])
def test_kv_bytes_per_token_summed_over_layers(name, tp, per_token):
    g = geometry(name)
    assert sum(kv_bytes_per_token_per_layer(g, kv_dtype_bytes=2, tp=tp)) == per_token
    assert kv_cache_bytes_per_token(g, kv_dtype_bytes=2, tp=tp) == per_token


def test_fp8_kv_halves_the_bytes_per_token():
    assert kv_cache_bytes_per_token(geometry("mistral-7b-v0.1"), kv_dtype_bytes=1) == 65_536


def test_sliding_layers_are_amortised_over_a_request_of_max_model_len():
    # Gemma-3-1B at 32,768 tokens: 4 full layers x 1,024 + 22 sliding layers x 1,024 x 512 / 32,768
    # = 4,096 + 352
    assert kv_cache_bytes_per_token(geometry("gemma-3-1b-it"), kv_dtype_bytes=2, max_model_len=32768) == 4_448


def test_smollm2_with_one_gib_of_kv_on_the_cpu_gives_what_the_engine_logged():
    # page 128 x 768 = 98,304 bytes; 30 layers -> 2,949,120 bytes a block; 1 GiB -> 364 blocks
    # x 128 = 46,592 tokens ("CPU KV cache size: 46,592 tokens" in the engine's log)
    g = geometry("smollm2-135m-instruct")
    assert kv_cache_tokens(g, GiB, block_size=128, kv_dtype_bytes=2) == 46_592
    assert max_concurrency(g, GiB, max_model_len=8192, block_size=128, kv_dtype_bytes=2) == 5.6875


@pytest.mark.parametrize("name, available, max_len, block, in_flight, tp, tokens, concurrency", [
    # max_model_len not a multiple of the block: int(364 / 63 x 8,000)
    ("smollm2-135m-instruct", GiB, 8000, 128, 2048, 1, 46_222, 5.777778),
    # Llama-3-8B: page 16 x 2 x 8 x 128 x 2 = 65,536; 32 layers -> 2 MiB a block; 20 GiB -> 10,240
    # blocks = 163,840 tokens; 8,192 tokens = 512 blocks a request -> 20.0
    ("llama-3-8b", 20 * GiB, 8192, 16, 2048, 1, 163_840, 20.0),
    ("llama-3-70b", 30 * GiB, 8192, 16, 8192, 4, 393_216, 48.0),
    ("qwen3-30b-a3b", 12 * GiB, 40960, 16, 2048, 8, 524_288, 12.8),
    ("qwen1.5-moe-a2.7b", 12 * GiB, 32768, 16, 2048, 2, 131_072, 4.0),
    ("deepseek-v2-lite", 6 * GiB, 163840, 16, 2048, 1, 207_120, 1.26416),
    # all layers sliding (one group): a request holds ceil(min(4095 + in_flight, L) / 16) + 1 blocks
    # = 385 of the 5,120, so the logged tokens (13.3 requests x 32,768) exceed the 81,920 slots
    ("mistral-7b-v0.1", 10 * GiB, 32768, 16, 2048, 1, 435_771, 13.298701),
    ("mistral-7b-v0.1", 10 * GiB, 32768, 16, 4096, 1, 327_041, 9.980507),
    ("mistral-7b-v0.1", 10 * GiB, 4096, 128, 2048, 1, 79_437, 19.393939),
    ("phi-3-mini-4k-instruct", 6 * GiB, 4096, 128, 2048, 1, 15_887, 3.878788),
    # hybrid: Gemma-2 21 sliding + 21 full -> 2 groups of 21
    ("gemma-2-9b-it", 10 * GiB, 8192, 16, 2048, 1, 35_617, 4.347826),
    # Gemma-3-4B: 5 full, 29 sliding -> groups of 5: 1 full + 6 sliding (5,5,5,5,5,4), 7 groups;
    # a block holds 5 pages of 128 x 4,096 bytes = 2.5 MiB -> 2 GiB = 819 blocks; a request of
    # 32,768 takes 256 (full) + 6 x (ceil((1,023 + 2,048) / 128) + 1 = 25) = 406 blocks;
    # 819 / 406 = 2.017241 -> int(2.017241 x 32,768) = 66,100 (not divided by the 7 groups)
    ("gemma-3-4b-it", 2 * GiB, 32768, 128, 2048, 1, 66_100, 2.017241),
    ("gemma-3-4b-it", 8 * GiB, 131072, 16, 4096, 1, 339_585, 2.590828),
    ("gemma-3-1b-it", 4 * GiB, 32768, 128, 2048, 1, 702_710, 21.445026),
])
def test_tokens_and_concurrency_match_vllm(name, available, max_len, block, in_flight, tp, tokens, concurrency):
    g = geometry(name)
    kwargs = dict(block_size=block, kv_dtype_bytes=2, tp=tp, in_flight_tokens=in_flight)
    assert kv_cache_tokens(g, available, max_model_len=max_len, **kwargs) == tokens
    assert max_concurrency(g, available, max_model_len=max_len, **kwargs) == pytest.approx(concurrency, abs=1e-6)


@pytest.mark.parametrize("name, block, groups", [
    ("llama-3-8b", 16, ((None, 32),)),
    ("mistral-7b-v0.1", 16, ((4096, 32),)),
    ("gemma-2-9b-it", 16, ((4096, 21), (None, 21))),
    # 22 sliding, 4 full: groups of 4 -> 6 sliding groups by layer i mod 6: 4,4,4,4,3,3
    ("gemma-3-1b-it", 128, ((512, 4), (512, 4), (512, 4), (512, 4), (512, 3), (512, 3), (None, 4))),
])
def test_layers_are_grouped_as_vllms_hybrid_allocator_groups_them(name, block, groups):
    assert kv_pool(geometry(name), block_size=block, kv_dtype_bytes=2).groups == groups


def test_a_gemma3_block_holds_one_page_per_layer_of_the_largest_group():
    # 4 layers x 128 tokens x 1 head x 256 x 2 x 2 bytes
    assert kv_pool(geometry("gemma-3-1b-it"), block_size=128, kv_dtype_bytes=2).bytes_per_block == 4 * 131_072


@pytest.mark.parametrize("name, max_len, block, needed", [
    # SmolLM2: (64 blocks for 8,192 tokens + the null block) x 2,949,120 = 191,692,800
    ("smollm2-135m-instruct", 8192, 128, 191_692_800),
    ("gemma-3-1b-it", 32768, 128, 200_802_304),
    ("mistral-7b-v0.1", 32768, 16, 809_500_672),
    ("deepseek-v2-lite", 163840, 16, 5_096_577_024),
])
def test_min_kv_bytes_is_the_least_memory_vllm_starts_with(name, max_len, block, needed):
    # vLLM 0.32 accepted each `needed` and refused needed - 1 (dev-time cross-check)
    g = geometry(name)
    assert min_kv_bytes_for(g, max_len, block_size=block, kv_dtype_bytes=2) == needed
    assert max_model_len_for(g, needed, block_size=block, kv_dtype_bytes=2, limit=max_len) == max_len
    assert max_model_len_for(g, needed - 1, block_size=block, kv_dtype_bytes=2, limit=max_len) < max_len


@pytest.mark.parametrize("name, available, limit, estimate", [
    # SmolLM2 with 25,000,000 bytes: 25,000,000 - 2,949,120 (null block) holds 7 blocks = 896 tokens
    ("smollm2-135m-instruct", 25_000_000, 8192, 896),
    ("gemma-3-1b-it", 100_000_000, 32768, 8064),
    ("deepseek-v2-lite", GiB, 163840, 34496),
    ("smollm2-135m-instruct", 3_000_000, 8192, 0),
])
def test_max_model_len_for_is_vllms_estimate_in_its_refusal(name, available, limit, estimate):
    g = geometry(name)
    assert max_model_len_for(g, available, block_size=16 if "deepseek" in name else 128,
                             kv_dtype_bytes=2, limit=limit) == estimate


def test_no_memory_gives_no_tokens():
    assert kv_cache_tokens(geometry("llama-3-8b"), 0, block_size=16, kv_dtype_bytes=2) == 0


def test_default_block_sizes_follow_vllms_platforms():
    assert default_block_size(geometry("llama-3-8b"), "cpu")[0] == 128
    assert default_block_size(geometry("deepseek-v2-lite"), "cpu")[0] == 16
    assert default_block_size(geometry("llama-3-8b"), "gpu")[0] == 16
