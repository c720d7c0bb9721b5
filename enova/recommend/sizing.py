"""Engine settings for one replica from a model's geometry, the hardware and (optionally) the
workload: a Recommendation with one reason per number, or a Refusal with the arithmetic and the
nearest settings that would fit. Pure, no I/O.

Called by the CLI (`enova recommend`) and the planner (`engine.args: auto`). The geometry comes
from enova.recommend.geometry, KV arithmetic from enova.recommend.kvcache (vLLM's counting),
the GPU's memory division from enova.recommend.gpumem; the rules per device live in
enova.recommend.gpusizing and enova.recommend.cpusizing, the arithmetic both share in
enova.recommend.fit. What holds on both:

- Args the caller fixed (`fixed`: a spec's engine.args, `--max-model-len`) are kept as given and
  the rest is chosen around them; a fixed value that cannot work is a Refusal naming it.
- max_model_len: the model's limit (on the CPU engine at most 2048), or the workload's p99
  prompt + p99 output rounded up to a multiple of 256, lowered when one sequence of it does
  not fit the KV cache (vLLM refuses to start then) but never below 2048 or the workload's
  need: below that, a Refusal.
- max_num_seqs: on a GPU vLLM's default for the device, on the CPU engine 4 per core; capped
  by how many sequences of the expected length (the workload's mean; else on a GPU vllm bench's
  default 1,024 + 128 tokens, on the CPU max_model_len) the KV cache holds; on a GPU rounded
  down to a multiple of 8 (CUDA-graph batch sizes).
- tensor_parallel_size (GPU): the fewest GPUs that fit, unless more hold 1.5x as many
  sequences per GPU (enova.recommend.gpusizing); kv_cache_memory_bytes (CPU): the sequences
  above in whole 128-token blocks, within half of what the host leaves (enova.recommend.cpusizing).
- replicas: ceil(rate / measured capacity per replica) when the workload has both, else None
  with the reason.
"""

from __future__ import annotations

from typing import Any, Union

from enova.recommend.cpusizing import recommend_cpu
from enova.recommend.fit import BadDtype, fixed_len_problem, kv_dtype_bytes
from enova.recommend.gpusizing import recommend_gpu
from enova.recommend.model import GpuTarget, ModelGeometry, Recommendation, Refusal, Target, Workload


def recommend(g: ModelGeometry, target: Target, workload: Union[Workload, None] = None,
              fixed: Union[dict[str, Any], None] = None, *, kv_cache_dtype: str = "auto") -> Recommendation:
    """Engine args for one replica of `g` on `target`, each with its reason. `fixed`: engine args
    the user set (vLLM's snake_case names), kept as given; on the CPU engine
    fixed["kv_cache_memory_bytes"] may also carry VLLM_CPU_KVCACHE_SPACE converted to bytes.
    Raises Refusal (exit 2) when the model cannot be served on the target."""
    fixed = dict(fixed or {})
    kv_cache_dtype = str(fixed.get("kv_cache_dtype", kv_cache_dtype))
    try:
        kvb = kv_dtype_bytes(kv_cache_dtype)
    except BadDtype as exc:
        raise Refusal(g.source, _target_line(target), str(exc)) from None
    problem = fixed_len_problem(g, fixed)
    if problem:
        raise Refusal(g.source, _target_line(target), problem,
                      (f"max_model_len={g.max_position_embeddings:,}",))
    if isinstance(target, GpuTarget):
        return recommend_gpu(g, target, workload, fixed, kv_cache_dtype=kv_cache_dtype, kvb=kvb)
    return recommend_cpu(g, target, workload, fixed, kv_cache_dtype=kv_cache_dtype, kvb=kvb)


def _target_line(target: Target) -> str:
    if isinstance(target, GpuTarget):
        return f"{target.count} x {target.name}"
    return f"a {target.cores}-core host"
