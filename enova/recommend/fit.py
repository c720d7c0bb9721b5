"""What the GPU and CPU sizing rules share: the lengths a workload asks for, whether one sequence
fits a KV budget and the longest that does, which tensor-parallel sizes vLLM accepts, the weight
bytes of quantized variants, and the replica count. Pure, no I/O; used by
enova.recommend.gpusizing and enova.recommend.cpusizing.
"""

from __future__ import annotations

import math
from typing import Union

from enova.recommend import kvcache
from enova.recommend.model import DTYPE_BYTES, Figure, ModelGeometry, Workload

LEN_MULTIPLE = 256   # whole KV blocks on both engines (16 on GPU, 128 on CPU)


class BadDtype(ValueError):
    """An unknown kv_cache_dtype."""


def kv_dtype_bytes(kv_cache_dtype: str) -> int:
    """Bytes per KV element: "auto" is the served half-precision dtype; the fp8 variants 1."""
    name = kv_cache_dtype.lower()
    if name == "auto":
        return 2
    if name.startswith("fp8"):
        return 1
    if name in DTYPE_BYTES and DTYPE_BYTES[name] >= 1:
        return int(DTYPE_BYTES[name])
    raise BadDtype(f"unknown kv_cache_dtype {kv_cache_dtype!r} (auto, fp8, fp8_e4m3, fp8_e5m2, bfloat16)")


def fixed_len_problem(g: ModelGeometry, fixed: dict) -> Union[str, None]:
    """Why a fixed max_model_len cannot be used whatever the memory: vLLM refuses one above the
    model's max_position_embeddings (unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1) or below 1."""
    if "max_model_len" not in fixed:
        return None
    mml = int(fixed["max_model_len"])
    if mml < 1:
        return f"max_model_len={mml} (set by you) must be at least 1"
    if mml > g.max_position_embeddings:
        return (f"max_model_len={mml:,} (set by you) is above the model's limit "
                f"(max_position_embeddings {g.max_position_embeddings:,}): vLLM refuses it")
    return None


def workload_need(w: Union[Workload, None]) -> Union[int, None]:
    """p99 prompt + p99 output rounded up to a multiple of 256; None without both lengths."""
    if w is None or w.input_tokens is None or w.output_tokens is None:
        return None
    return round_up(w.input_tokens.p99 + w.output_tokens.p99, LEN_MULTIPLE)


def workload_mean(w: Union[Workload, None]) -> Union[float, None]:
    """Mean prompt + mean output, the length a typical sequence reaches; None without both."""
    if w is None or w.input_tokens is None or w.output_tokens is None:
        return None
    return w.input_tokens.mean + w.output_tokens.mean


def round_up(n: float, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def multiple_of_8(n: int) -> int:
    """Rounded down to a multiple of 8 (vLLM captures CUDA graphs for batches in steps of 8)."""
    return n - n % 8 if n >= 8 else max(n, 1)


def one_sequence_bytes(g: ModelGeometry, length: int, *, block_size: int, kvb: int, tp: int = 1,
                       in_flight: int = kvcache.DEFAULT_IN_FLIGHT_TOKENS) -> int:
    """KV bytes vLLM requires to start with max_model_len = length (its check_enough_kv_cache_memory)."""
    return kvcache.min_kv_bytes_for(g, length, block_size=block_size, kv_dtype_bytes=kvb, tp=tp,
                                    in_flight_tokens=in_flight)


def fits_one(g: ModelGeometry, kv_bytes: int, length: int, *, block_size: int, kvb: int, tp: int = 1,
             in_flight: int = kvcache.DEFAULT_IN_FLIGHT_TOKENS) -> bool:
    return kv_bytes >= one_sequence_bytes(g, length, block_size=block_size, kvb=kvb, tp=tp, in_flight=in_flight)


def longest_fit(g: ModelGeometry, kv_bytes: int, upper: int, *, block_size: int, kvb: int, tp: int = 1,
                in_flight: int = kvcache.DEFAULT_IN_FLIGHT_TOKENS) -> int:
    """The longest max_model_len <= upper that kv_bytes lets vLLM start with (its own binary
    search), rounded down to a multiple of 256 when at least 256; 0 when not one token fits."""
    if kv_bytes <= 0:
        return 0
    longest = kvcache.max_model_len_for(g, kv_bytes, block_size=block_size, kv_dtype_bytes=kvb, tp=tp,
                                        in_flight_tokens=in_flight, limit=upper)
    return longest - longest % LEN_MULTIPLE if longest >= LEN_MULTIPLE else longest


def concurrency(g: ModelGeometry, kv_bytes: int, length: int, *, block_size: int, kvb: int, tp: int = 1,
                in_flight: int = kvcache.DEFAULT_IN_FLIGHT_TOKENS) -> float:
    """How many sequences of `length` tokens the KV cache holds at once (vLLM's max concurrency)."""
    if kv_bytes <= 0:
        return 0.0
    return kvcache.max_concurrency(g, kv_bytes, max_model_len=max(int(length), 1), block_size=block_size,
                                   kv_dtype_bytes=kvb, tp=tp, in_flight_tokens=in_flight)


def page_bytes(g: ModelGeometry, *, block_size: int, kvb: int, tp: int = 1) -> int:
    """Bytes of one block of vLLM's shared KV pool (a page for each layer of the largest group)."""
    return kvcache.kv_pool(g, block_size=block_size, kv_dtype_bytes=kvb, tp=tp).bytes_per_block


def tp_problem(g: ModelGeometry, tp: int) -> Union[str, None]:
    """Why vLLM cannot shard `g` over `tp` GPUs, or None when it can: attention heads divide by
    tp; KV heads divide by tp or tp by them (they are replicated); the MLP's and the experts'
    intermediate sizes divide by tp (vLLM shards every expert's MLP, not whole experts, unless
    expert parallelism is on), in whole quantization groups."""
    if g.num_attention_heads % tp:
        return f"{g.num_attention_heads} attention heads do not divide by {tp}"
    kv = g.num_kv_heads
    if g.mla is None and kv % tp and tp % kv:
        return f"{kv} KV heads neither divide by {tp} nor divide it"
    if g.intermediate_size % tp:
        return f"the MLP's intermediate size {g.intermediate_size} does not divide by {tp}"
    if g.moe is not None and g.moe.expert_intermediate_size % tp:
        return f"the experts' intermediate size {g.moe.expert_intermediate_size} does not divide by {tp}"
    group = g.quantization.group_size if g.quantization else None
    shard = (g.moe.expert_intermediate_size if g.moe else g.intermediate_size) // tp
    if group and group > 0 and shard % group:
        return f"the {shard}-wide MLP shard at tp={tp} is not whole {group}-wide quantization groups"
    return None


def quantized_variants(g: ModelGeometry) -> dict[str, int]:
    """Weight bytes of the usual quantized checkpoints of an unquantized model: fp8 (1 byte per
    weight) and AWQ int4 (half a byte, plus a half-precision scale and a 4-bit zero per group of
    128 weights); both keep embeddings and lm_head in half precision."""
    if g.quantization is not None:
        return {}
    embed = g.vocab_size * g.hidden_size * (1 if g.tie_word_embeddings else 2)
    body = max(g.params - embed, 0)
    return {"fp8": body + 2 * embed, "AWQ int4": int(body * (0.5 + 2.5 / 128)) + 2 * embed}


def replicas_figure(w: Union[Workload, None], extra: str = "") -> Figure:
    """ceil(rate / capacity per replica) when the workload has both; None with the reason."""
    tail = f"; {extra}" if extra else ""
    if w is None or w.rate_rps is None:
        return Figure("replicas", None, "not given: no request rate to size for" + tail)
    if not w.capacity_rps:
        source = f" ({w.capacity_source})" if w.capacity_source else ""
        return Figure("replicas", None, f"not given: {w.rate_rps:g} req/s asked but no measured "
                                        f"capacity per replica{source}" + tail)
    n = math.ceil(w.rate_rps / w.capacity_rps)
    where = w.capacity_source or "a measured run"
    return Figure("replicas", n, f"ceil({w.rate_rps:g} req/s / {w.capacity_rps:g} req/s per replica "
                                 f"from {where}){tail}")


def kv_layout(g: ModelGeometry, kvb: float, max_model_len: int, per_token: int) -> str:
    """The reason of kv_cache_bytes_per_token: the layout a human multiplies out, and for
    sliding-window layers how `per_token` (the cost averaged over a max_model_len sequence) follows."""
    if g.mla is not None:
        full = g.num_layers * (g.mla.kv_lora_rank + g.mla.qk_rope_head_dim) * kvb
        text = (f"{g.num_layers} layers x one latent of {g.mla.kv_lora_rank} + {g.mla.qk_rope_head_dim} "
                f"rotary dims x {kvb:g} bytes (MLA)")
    else:
        full = g.num_layers * 2 * g.num_kv_heads * g.head_dim * kvb
        text = f"{g.num_layers} layers x 2 (K, V) x {g.num_kv_heads} KV heads x {g.head_dim} dims x {kvb:g} bytes"
    windows = [w for w in g.layer_windows if w and w < max_model_len]
    if not windows:
        return text
    return (f"{text} = {int(full):,} bytes for each of a sequence's first tokens; {len(windows)} of the "
            f"{g.num_layers} layers keep only the last {max(windows):,} tokens (sliding window), so over "
            f"max_model_len {max_model_len:,} a sequence averages {per_token:,} bytes per token")
