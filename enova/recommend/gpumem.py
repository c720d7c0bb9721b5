"""vLLM's GPU memory accounting, estimated from a model's geometry: how much of one GPU is left
for the KV cache once weights, the profile run's peak activations, non-torch memory and CUDA
graphs are taken. Pure, no I/O; called by enova.recommend.sizing.

vLLM 0.32 (vllm/v1/worker/gpu_worker.py determine_available_memory, vllm/utils/mem_utils.py
memory_profiling) computes, per GPU:

    requested = ceil(total x gpu_memory_utilization)
    KV        = requested - weights - non_torch - peak_activations - cudagraph_estimate

where `total` is what CUDA reports; the memory snapshot is taken after the CUDA context and
NCCL are set up, so neither is in the sum (they only have to fit in total - requested); the
peak activations are the torch peak of one profile run of max_num_batched_tokens tokens
followed by the sampler on max_num_seqs rows (gpu_model_runner.profile_run,
_dummy_sampler_run); the CUDA-graph estimate comes from capturing two graphs per mode and
extrapolating (profile_cudagraph_memory), counted since VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS
became the default in v0.21. No GPU runs here, so each term is an estimate from the geometry,
with the constants' sources beside them.

Checked against logs (tests/recommend/test_gpumem.py):
- vLLM's V0 profiler (the same sum without CUDA graphs) for Llama-3.1-8B on an RTX 3090
  (https://github.com/vllm-project/vllm/issues/10517): "total_gpu_memory=23.58GiB ...
  peak_torch_memory=17.06GiB ... non_torch_memory=0.35GiB kv_cache_size=3.81GiB" at
  max_model_len 20000 (a 20,000-token profile run): 2.07 GiB of activations, 111 KB a token;
  the estimate below gives 108 KiB a token and 3.82 GiB of KV.
- vLLM 0.21 with every term, Qwen3-8B on an RTX A5000 at gpu_memory_utilization 0.9764, the LLM
  class (8192 batched tokens, 256 sequences) (https://github.com/LMCache/LMCache/issues/3430):
  "Profiling CUDA graph memory: PIECEWISE=51 (largest=512), FULL=35 (largest=256)", "Estimated
  CUDA graph memory: 0.52 GiB total", "Available KV cache memory: 6.37 GiB". The capture sizes
  below give the same 51 + 35 graphs; the estimate gives 0.52 GiB of graphs and 6.15 GiB of KV
  (3.5% under).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from enova.recommend.model import GiB, MiB, ModelGeometry

# Activations are bf16/fp16 on a GPU: vLLM serves float32 checkpoints in half precision too.
ACT_BYTES = 2

# The sampler's peak per logit, in bytes: the float32 copy of the logits (4), the float32
# softmax probabilities (4) and the exponential noise random_sample draws to pick a token (4),
# plus the half-precision logits compute_logits returns (2). Top-k/top-p are applied in place by
# the Triton kernel (vllm/v1/sample/ops/topk_topp_sampler.py apply_top_k_top_p).
SAMPLER_BYTES_PER_LOGIT = 14

# Memory the engine takes outside torch's allocator after the snapshot (cuBLAS and attention
# workspaces, NCCL's buffers at tp > 1), per GPU. vLLM's V0 profiler logged
# "non_torch_memory=0.35GiB" for Llama-3.1-8B on one RTX 3090
# (https://github.com/vllm-project/vllm/issues/10517) and "non_torch_memory takes 0.25GiB" at
# tensor_parallel_size 2 on two RTX 4090s (https://github.com/vllm-project/vllm/issues/13061);
# the 0.21 log above leaves 0.13 GiB for it beside the activation estimate. The largest is kept
# for any tp: since NCCL is set up before vLLM's snapshot, tp adds little after it (the older
# profiler, which counted it, showed 1.79 -> 3.58 GiB from tp=1 to 2,
# https://github.com/vllm-project/vllm/pull/10511).
NON_TORCH_BYTES = int(0.35 * GiB)

# CUDA graphs: private memory per captured graph per decoder layer. Calibrated on the log above:
# 0.52 GiB for 51 + 35 graphs of a 36-layer model, less the first capture's activations at 512
# tokens (44 MiB): (532 - 44) MiB / 86 / 36 = 0.158 MiB.
CUDAGRAPH_BYTES_PER_GRAPH_LAYER = 160 * 1024

# vLLM's default ceiling on a captured batch (vllm/config/vllm.py: 512, 1024 on Blackwell).
CUDAGRAPH_MAX_CAPTURE = 512

# The CUDA context (and NCCL's init) sit outside `requested`: they must fit in the rest of the
# GPU or vLLM refuses at start ("Free memory on device ... is less than desired GPU memory
# utilization"). About 0.5 GiB on recent drivers (vLLM's old profiler counted it in non_torch:
# 1.79 GiB with cuBLAS and graphs, PR #10511); used only to warn about a high utilization.
CUDA_CONTEXT_BYTES = int(0.5 * GiB)


@dataclass(frozen=True)
class GpuMemoryPlan:
    """One GPU's memory as vLLM would divide it, bytes. kv_bytes may be negative: does not fit."""

    tp: int
    total_bytes: int
    utilization: float
    requested_bytes: int
    weight_bytes: int           # this GPU's share
    activation_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    kv_bytes: int
    max_num_seqs: int
    max_num_batched_tokens: int
    cudagraph_graphs: int

    @property
    def overhead_bytes(self) -> int:
        return self.activation_bytes + self.non_torch_bytes + self.cudagraph_bytes


def plan_memory(g: ModelGeometry, *, total_bytes: int, weight_bytes: int, tp: int,
                utilization: float, max_num_seqs: int, max_num_batched_tokens: int,
                enforce_eager: bool = False) -> GpuMemoryPlan:
    """Divide one of `tp` GPUs of `total_bytes` (as CUDA reports) the way vLLM does at start.
    `weight_bytes` is the whole model's; each GPU holds 1/tp of it."""
    requested = math.ceil(total_bytes * utilization)
    weights = math.ceil(weight_bytes / tp)
    activation = activation_bytes(g, max_num_batched_tokens, max_num_seqs, tp)
    non_torch = non_torch_bytes(tp)
    graphs = 0 if enforce_eager else cudagraph_count(max_num_seqs, max_num_batched_tokens)
    cudagraph = 0 if enforce_eager else cudagraph_bytes(g, max_num_seqs, max_num_batched_tokens, tp)
    kv = requested - weights - activation - non_torch - cudagraph
    return GpuMemoryPlan(tp=tp, total_bytes=total_bytes, utilization=utilization,
                         requested_bytes=requested, weight_bytes=weights, activation_bytes=activation,
                         non_torch_bytes=non_torch, cudagraph_bytes=cudagraph, kv_bytes=kv,
                         max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                         cudagraph_graphs=graphs)


def non_torch_bytes(tp: int) -> int:
    del tp   # the same at any tensor-parallel size (see NON_TORCH_BYTES)
    return NON_TORCH_BYTES


def activation_bytes(g: ModelGeometry, num_tokens: int, num_seqs: int, tp: int) -> int:
    """The torch peak of vLLM's profile run: the larger of the forward pass over `num_tokens`
    tokens and, after it, the sampler over `num_seqs` rows of the full vocabulary (the logits
    are gathered to every tensor-parallel rank) with the hidden states still held."""
    forward = num_tokens * forward_bytes_per_token(g, tp)
    sampler = num_tokens * g.hidden_size * ACT_BYTES + sampler_bytes(g, num_seqs)
    return max(forward, sampler)


def sampler_bytes(g: ModelGeometry, num_seqs: int) -> int:
    return num_seqs * g.vocab_size * SAMPLER_BYTES_PER_LOGIT


def forward_bytes_per_token(g: ModelGeometry, tp: int) -> int:
    """Live half-precision elements per token at the forward pass's widest point: the residual,
    the normed hidden state and the block's output, plus the wider of the attention block (qkv
    and its output) and the MLP block (gate_up and the activated half), each sharded over tp."""
    residual = 3 * g.hidden_size
    return ACT_BYTES * (residual + max(_attention_elems(g, tp), _mlp_elems(g, tp)))


def _attention_elems(g: ModelGeometry, tp: int) -> int:
    if g.mla is not None:
        m = g.mla
        q = g.num_attention_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
        latent = m.kv_lora_rank + m.qk_rope_head_dim
        expanded = g.num_attention_heads * (m.qk_nope_head_dim + m.v_head_dim)
        return (q + expanded) // tp + latent + g.num_attention_heads * m.v_head_dim // tp
    qkv = (g.num_attention_heads + 2 * g.num_kv_heads) * g.head_dim
    out = g.num_attention_heads * g.head_dim
    return (qkv + out) // tp


def _mlp_elems(g: ModelGeometry, tp: int) -> int:
    dense = 3 * g.intermediate_size // tp          # gate_up (2I) + act(gate) * up (I)
    if g.moe is None:
        return dense
    m = g.moe
    # fused_moe's intermediate caches: [tokens, topk, 2I], [tokens*topk, I], [tokens, topk, hidden]
    routed = m.experts_per_token * (3 * m.expert_intermediate_size // tp + g.hidden_size)
    shared = 3 * m.shared_intermediate_size // tp
    router = 2 * m.num_experts                      # float32 router logits
    moe = routed + shared + router
    return max(moe, dense) if m.dense_layers else moe


def cudagraph_capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """The batch sizes vLLM 0.32 captures by default (vllm/config/vllm.py
    _set_cudagraph_sizes): 1, 2, 4, then steps of 8 below 256 and of 16 from 256, up to
    min(2 x max_num_seqs, 512, max_num_batched_tokens), plus max_num_seqs itself."""
    largest = min(max_num_seqs * 2, CUDAGRAPH_MAX_CAPTURE, max_num_batched_tokens)
    sizes = [s for s in (1, 2, 4) if s <= largest]
    sizes += list(range(8, min(largest + 1, 256), 8))
    sizes += list(range(256, largest + 1, 16))
    if max_num_batched_tokens <= largest:
        sizes.append(max_num_batched_tokens)
    if max_num_seqs <= largest:
        sizes.append(max_num_seqs)
    return sorted(set(sizes))


def cudagraph_count(max_num_seqs: int, max_num_batched_tokens: int) -> int:
    """FULL_AND_PIECEWISE (the default mode): every capture size as a piecewise graph, and the
    sizes up to max_num_seqs again as full decode graphs."""
    sizes = cudagraph_capture_sizes(max_num_seqs, max_num_batched_tokens)
    return len(sizes) + len([s for s in sizes if s <= max_num_seqs])


def cudagraph_bytes(g: ModelGeometry, max_num_seqs: int, max_num_batched_tokens: int, tp: int) -> int:
    """Per-graph private memory (scaled by layers) plus the first capture's activations."""
    sizes = cudagraph_capture_sizes(max_num_seqs, max_num_batched_tokens)
    graphs = cudagraph_count(max_num_seqs, max_num_batched_tokens)
    first = max(sizes) * forward_bytes_per_token(g, tp)
    return graphs * g.num_layers * CUDAGRAPH_BYTES_PER_GRAPH_LAYER + first


def gib(n: float) -> str:
    """'13.49 GiB' for messages."""
    return f"{n / GiB:.2f} GiB"


def mib(n: float) -> str:
    return f"{n / MiB:.0f} MiB"
