"""Sizing for vLLM on NVIDIA GPUs: tensor_parallel_size, gpu_memory_utilization, max_model_len,
max_num_seqs and max_num_batched_tokens for one replica, from the memory division estimated in
enova.recommend.gpumem. Pure, no I/O; called through enova.recommend.sizing.recommend.

- gpu_memory_utilization: vLLM's default 0.9 unless fixed.
- tensor_parallel_size: among the valid sizes (enova.recommend.fit.tp_problem) up to the
  target's count that fit one sequence of the shortest acceptable max_model_len, the smallest,
  unless a larger one holds 1.5x as many sequences of the expected length per GPU (capped at
  max_num_seqs): weights split over more GPUs leave each more KV, which can buy more than a
  replica of its own would, but tensor parallelism pays an all-reduce per layer. Exactly the
  count when the target's count is fixed (a spec's resources.gpus).
- max_num_batched_tokens and max_num_seqs start from vLLM 0.32's defaults for the OpenAI API
  server (vllm/engine/arg_utils.py get_batch_defaults): 16384/1024 on GPUs of 160 GiB or more,
  8192/1024 from 70 GiB except the A100 (vLLM PR #17885: larger batches cost the A100
  throughput), 2048/256 below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Union

from enova.recommend import geometry, gpumem, kvcache
from enova.recommend.fit import (
    kv_layout,
    concurrency, fits_one, longest_fit, multiple_of_8, one_sequence_bytes, quantized_variants,
    replicas_figure, round_up, tp_problem, workload_mean, workload_need,
)
from enova.recommend.gpumem import GpuMemoryPlan, gib
from enova.recommend.model import GiB, Figure, GpuTarget, ModelGeometry, Recommendation, Refusal, Workload

BLOCK_SIZE = 16                    # vLLM's default KV block on CUDA
DEFAULT_UTILIZATION = 0.9          # vLLM's default gpu_memory_utilization
MODEST_LEN = 2048                  # the shortest max_model_len worth serving without a workload
MIN_BATCH = 16                     # max_num_seqs tried before refusing (smaller sampler and graphs)
# A larger tensor_parallel_size is chosen only when it holds this many times as many sequences
# per GPU: a GPU added to a replica must buy more than it would serving a replica of its own.
TP_GAIN = 1.5
# The sequence length sized for when no workload says: vllm bench serve's random dataset
# defaults, 1,024-token prompts and 128-token outputs (vllm/benchmarks/datasets/datasets.py).
REFERENCE_LEN = 1024 + 128
MAX_RAISED_BATCHED_TOKENS = 8192   # a p99 prompt raises the prefill budget at most this far
MAX_SUGGESTED_GPUS = 64
# Batches in flight with vLLM's asynchronous scheduling (on by default on GPUs): a sliding-window
# layer keeps window + this many x max_num_batched_tokens tokens (enova.recommend.kvcache).
ASYNC_BATCHES = 2


@dataclass(frozen=True)
class _Ctx:
    g: ModelGeometry
    t: GpuTarget
    w: Union[Workload, None]
    fixed: dict[str, Any]
    kv_cache_dtype: str
    kvb: int
    weights: int
    weights_why: str
    util: float
    eager: bool
    floor_len: int                 # the shortest max_model_len acceptable
    batch_len: float               # the length a typical sequence reaches
    in_flight: int                 # tokens scheduled but not settled (sliding-window KV)
    notes: list[str] = field(default_factory=list)


def recommend_gpu(g: ModelGeometry, t: GpuTarget, w: Union[Workload, None], fixed: dict[str, Any], *,
                  kv_cache_dtype: str, kvb: int) -> Recommendation:
    seqs_default, batched_default, defaults_why = batch_defaults(t)
    batched0, batched_why = _batched_tokens(fixed, w, batched_default, defaults_why)
    c = _context(g, t, w, fixed, kv_cache_dtype, kvb, in_flight=ASYNC_BATCHES * batched0)
    seqs0 = int(fixed.get("max_num_seqs", seqs_default))
    tp, tp_why, first = _choose_tp(c, seqs0, batched0)
    mml, mml_why = _max_model_len(c, first)
    plan = _settle_seqs(c, first, mml, seqs_default, batched0)
    # fewer sequences than the defaults shrink the sampler's and the graphs' share: let
    # max_model_len use what that frees (never less than before)
    longer, longer_why = _max_model_len(c, plan)
    final = _plan(c, tp, plan.max_num_seqs, _final_batched(c, batched0, plan.max_num_seqs, longer))
    if _fits(c, final, longer) and final.max_num_seqs <= _holds_seqs(c, final, longer):
        plan, mml, mml_why = final, longer, longer_why
    seqs_why = _max_num_seqs_why(c, plan, mml, seqs_default, defaults_why)
    return _recommendation(c, plan, mml, (tp_why, mml_why, seqs_why, batched_why))


def batch_defaults(t: GpuTarget) -> tuple[int, int, str]:
    """(max_num_seqs, max_num_batched_tokens, why): vLLM 0.32's API-server defaults by device."""
    memory = t.memory_bytes
    if memory >= 160 * GiB:
        return 1024, 16384, "vLLM's API-server default for GPUs of 160 GiB or more"
    if memory >= 70 * GiB and "a100" not in t.name.lower():
        return 1024, 8192, "vLLM's API-server default for GPUs of 70 GiB or more (not A100)"
    return 256, 2048, "vLLM's API-server default for GPUs under 70 GiB and the A100"


def _context(g, t, w, fixed, kv_cache_dtype, kvb, in_flight) -> _Ctx:
    weights, weights_why = geometry.weight_bytes(g)
    need = workload_need(w)
    if "max_model_len" in fixed:
        floor_len = int(fixed["max_model_len"])
    else:
        floor_len = min(need or MODEST_LEN, g.max_position_embeddings)
    longest_wanted = int(fixed.get("max_model_len", need or g.max_position_embeddings))
    batch_len = workload_mean(w) or min(REFERENCE_LEN, longest_wanted, g.max_position_embeddings)
    return _Ctx(g=g, t=t, w=w, fixed=fixed, kv_cache_dtype=kv_cache_dtype, kvb=kvb, weights=weights,
                weights_why=weights_why, util=float(fixed.get("gpu_memory_utilization", DEFAULT_UTILIZATION)),
                eager=bool(fixed.get("enforce_eager", False)), floor_len=floor_len, batch_len=batch_len,
                in_flight=in_flight)


def _plan(c: _Ctx, tp: int, seqs: int, batched: int, weights: Union[int, None] = None) -> GpuMemoryPlan:
    return gpumem.plan_memory(c.g, total_bytes=c.t.memory_bytes,
                              weight_bytes=c.weights if weights is None else weights, tp=tp,
                              utilization=c.util, max_num_seqs=seqs, max_num_batched_tokens=batched,
                              enforce_eager=c.eager)


def _fits(c: _Ctx, plan: GpuMemoryPlan, length: Union[int, None] = None, kvb: Union[int, None] = None) -> bool:
    return fits_one(c.g, plan.kv_bytes, length or c.floor_len, block_size=BLOCK_SIZE,
                    kvb=kvb or c.kvb, tp=plan.tp, in_flight=c.in_flight)


def _one(c: _Ctx, plan: GpuMemoryPlan, length: int) -> int:
    return one_sequence_bytes(c.g, length, block_size=BLOCK_SIZE, kvb=c.kvb, tp=plan.tp, in_flight=c.in_flight)


def _longest(c: _Ctx, plan: GpuMemoryPlan, upper: int) -> int:
    return longest_fit(c.g, plan.kv_bytes, upper, block_size=BLOCK_SIZE, kvb=c.kvb, tp=plan.tp, in_flight=c.in_flight)


def _holds(c: _Ctx, plan: GpuMemoryPlan) -> float:
    return concurrency(c.g, plan.kv_bytes, int(c.batch_len), block_size=BLOCK_SIZE, kvb=c.kvb, tp=plan.tp,
                       in_flight=c.in_flight)


# ---------------------------------------------------------------- max_num_batched_tokens

def _batched_tokens(fixed: dict[str, Any], w: Union[Workload, None], default: int,
                    defaults_why: str) -> tuple[int, str]:
    if "max_num_batched_tokens" in fixed:
        return int(fixed["max_num_batched_tokens"]), "set by you"
    p99_in = w.input_tokens.p99 if w is not None and w.input_tokens is not None else None
    if p99_in is not None and p99_in > default:
        raised = min(round_up(p99_in, 256), max(default, MAX_RAISED_BATCHED_TOKENS))
        return raised, (f"{defaults_why} is {default:,}; raised to {raised:,} so the workload's p99 prompt "
                        f"({p99_in:,} tokens) prefills in {math.ceil(p99_in / raised)} step(s) instead of "
                        f"{math.ceil(p99_in / default)}: lower TTFT for long prompts, at the cost of longer "
                        f"steps for the sequences decoding beside them (vLLM's tuning guide trade-off)")
    why = f"{defaults_why}: the chunked-prefill budget per step"
    if p99_in is not None:
        why += f"; the workload's p99 prompt ({p99_in:,} tokens) prefills in one step"
    return default, why


def _final_batched(c: _Ctx, batched: int, seqs: int, mml: int) -> int:
    """vLLM caps the default at max_num_seqs x max_model_len and requires it >= max_num_seqs."""
    if "max_num_batched_tokens" in c.fixed:
        return batched
    return max(min(batched, seqs * mml), seqs)


# ---------------------------------------------------------------- tensor_parallel_size

def _candidates(c: _Ctx) -> tuple[list[int], str]:
    """The tp values to try and the one-line rule that chose them; invalid forced values refuse."""
    if "tensor_parallel_size" in c.fixed:
        forced, source = int(c.fixed["tensor_parallel_size"]), "tensor_parallel_size set by you"
    elif c.t.fixed_count:
        forced, source = c.t.count, f"the spec's resources.gpus ({c.t.count})"
    else:
        valid = [tp for tp in range(1, c.t.count + 1) if tp_problem(c.g, tp) is None]
        return valid, ""
    problem = tp_problem(c.g, forced)
    if problem is not None:
        valid = [tp for tp in range(1, MAX_SUGGESTED_GPUS + 1) if tp_problem(c.g, tp) is None]
        raise Refusal(c.g.source, _target_line(c.t), f"tensor_parallel_size={forced} ({source}): {problem}",
                      (f"a GPU count vLLM accepts for this model: {', '.join(map(str, valid[:8]))}",))
    return [forced], source


def _choose_tp(c: _Ctx, seqs: int, batched: int) -> tuple[int, str, GpuMemoryPlan]:
    candidates, forced = _candidates(c)
    plans = {tp: _plan(c, tp, seqs, batched) for tp in candidates}
    fitting = [tp for tp in candidates if _fits(c, plans[tp])]
    if not fitting and "max_num_seqs" not in c.fixed and seqs > MIN_BATCH:
        # the sampler's and the CUDA graphs' share shrinks with fewer sequences: try before refusing
        plans = {tp: _plan(c, tp, MIN_BATCH, batched) for tp in candidates}
        fitting = [tp for tp in candidates if _fits(c, plans[tp])]
    if not fitting:
        largest = plans[candidates[-1]] if candidates else _plan(c, c.t.count, seqs, batched)
        if "max_model_len" in c.fixed and largest.kv_bytes > 0:
            _refuse_length(c, largest, c.floor_len)
        _refuse(c, largest)
    if forced:
        return fitting[0], forced, plans[fitting[0]]
    per_gpu = {tp: min(seqs, _holds(c, plans[tp])) / tp for tp in fitting}
    best = fitting[0]
    for tp in fitting[1:]:
        if per_gpu[tp] >= TP_GAIN * per_gpu[best]:
            best = tp
    if len(fitting) == 1 and c.t.count == 1:
        why = "one GPU given, and it holds the weights with room for KV"
    else:
        table = ", ".join(f"tp={tp} {per_gpu[tp]:,.1f}" for tp in fitting)
        why = (f"{int(c.batch_len):,}-token sequences held at once per GPU (up to max_num_seqs {seqs}): {table}; "
               f"the smallest tp unless a larger one holds {TP_GAIN:g}x as many per GPU (to pay for its "
               f"all-reduce traffic)")
    return best, why + _valid_note(c, best), plans[best]


def _valid_note(c: _Ctx, tp: int) -> str:
    skipped = [n for n in range(2, min(c.t.count, tp) + 1) if tp_problem(c.g, n)]
    return "; " + "; ".join(f"not {n}: {tp_problem(c.g, n)}" for n in skipped) if skipped else ""


# ---------------------------------------------------------------- max_model_len

def _max_model_len(c: _Ctx, plan: GpuMemoryPlan) -> tuple[int, str]:
    limit = c.g.max_position_embeddings
    if "max_model_len" in c.fixed:
        mml = int(c.fixed["max_model_len"])
        if not _fits(c, plan, mml):
            _refuse_length(c, plan, mml)
        return mml, "set by you"
    need = workload_need(c.w)
    want = min(need, limit) if need else limit
    if need:
        why = (f"the workload's p99 prompt + p99 output ({c.w.input_tokens.p99:,} + "
               f"{c.w.output_tokens.p99:,}) rounded up to a multiple of 256")
        why += f", capped at the model's limit {limit:,}" if need > limit else "; longer requests are rejected"
    else:
        why = f"the model's limit, max_position_embeddings {limit:,}"
    if _fits(c, plan, want):
        return want, why
    longest = _longest(c, plan, want)
    need_one = _one(c, plan, want)
    return longest, (f"lowered from {want:,} ({why}): one {want:,}-token sequence needs {gib(need_one)} of KV "
                     f"per GPU and the cache has {gib(plan.kv_bytes)}; vLLM refuses to start then")


# ---------------------------------------------------------------- max_num_seqs

def _reference_len(c: _Ctx, mml: int) -> int:
    """The length max_num_seqs is sized for: the workload's mean, else vllm bench's default."""
    mean = workload_mean(c.w)
    return int(math.ceil(mean)) if mean else min(mml, REFERENCE_LEN)


def _holds_seqs(c: _Ctx, plan: GpuMemoryPlan, mml: int) -> float:
    return concurrency(c.g, plan.kv_bytes, _reference_len(c, mml), block_size=BLOCK_SIZE, kvb=c.kvb, tp=plan.tp,
                       in_flight=c.in_flight)


def _seqs_cap(c: _Ctx, plan: GpuMemoryPlan, mml: int, default: int) -> int:
    cap = min(default, int(_holds_seqs(c, plan, mml)))
    if "max_num_batched_tokens" in c.fixed:
        cap = min(cap, int(c.fixed["max_num_batched_tokens"]))
    return multiple_of_8(cap)


def _settle_seqs(c: _Ctx, first: GpuMemoryPlan, mml: int, default: int, batched0: int) -> GpuMemoryPlan:
    """The plan at the largest max_num_seqs (up to the default) whose own KV cache holds that
    many sequences: fewer sequences free sampler and graph memory, which may hold more."""
    def plan_for(seqs: int) -> GpuMemoryPlan:
        return _plan(c, first.tp, seqs, _final_batched(c, batched0, seqs, mml))

    if "max_num_seqs" in c.fixed:
        return plan_for(int(c.fixed["max_num_seqs"]))
    plan = plan_for(_seqs_cap(c, first, mml, default))
    for _ in range(4):
        more = _seqs_cap(c, plan, mml, default)
        trial = plan_for(more)
        if more <= plan.max_num_seqs or _holds_seqs(c, trial, mml) < more:
            break
        plan = trial
    return plan


def _max_num_seqs_why(c: _Ctx, plan: GpuMemoryPlan, mml: int, default: int, defaults_why: str) -> str:
    ref = _reference_len(c, mml)
    holds = _holds_seqs(c, plan, mml)
    what = (f"sequences of the workload's mean length ({ref:,} tokens)" if workload_mean(c.w) else
            f"{ref:,}-token sequences (no workload named: vllm bench's default 1,024 + 128)")
    seqs = plan.max_num_seqs
    if "max_num_seqs" in c.fixed:
        if seqs > holds:
            c.notes.append(f"max_num_seqs={seqs} (set by you) is more than the {holds:.0f} {what} the KV "
                           "cache holds: vLLM will preempt and recompute sequences under full load")
        return "set by you"
    if seqs >= default:
        return f"{defaults_why} ({default}); the KV cache holds {holds:,.0f} {what}"
    return (f"the KV cache holds {holds:,.1f} {what}, under {defaults_why} ({default})"
            + ("; rounded down to a multiple of 8 (CUDA-graph batch sizes)" if seqs >= 8 else ""))


# ---------------------------------------------------------------- the recommendation

def _recommendation(c: _Ctx, plan: GpuMemoryPlan, mml: int, whys: tuple[str, str, str, str]) -> Recommendation:
    tp_why, mml_why, seqs_why, batched_why = whys
    kv_tokens = kvcache.kv_cache_tokens(c.g, max(plan.kv_bytes, 0), block_size=BLOCK_SIZE, kv_dtype_bytes=c.kvb,
                                        tp=plan.tp, max_model_len=mml,
                                        in_flight_tokens=ASYNC_BATCHES * plan.max_num_batched_tokens)
    figures = (*_memory_figures(c, plan, mml),
               Figure("gpu_memory_utilization", c.util, _util_why(c, plan)),
               Figure("tensor_parallel_size", plan.tp, tp_why),
               Figure("max_model_len", mml, mml_why, "tokens"),
               Figure("max_num_seqs", plan.max_num_seqs, seqs_why),
               Figure("max_num_batched_tokens", plan.max_num_batched_tokens, batched_why, "tokens"),
               Figure("available_kv_cache_bytes", plan.kv_bytes, _available_why(c, plan), "bytes"),
               Figure("kv_cache_tokens", kv_tokens,
                      f"what vLLM logs as 'GPU KV cache size': the available memory in blocks of "
                      f"{BLOCK_SIZE} tokens (from the estimate above)", "tokens"),
               replicas_figure(c.w, _hosts_note(c, plan.tp)))
    args = {"tensor_parallel_size": plan.tp, "gpu_memory_utilization": c.util, "max_model_len": mml,
            "max_num_seqs": plan.max_num_seqs, "max_num_batched_tokens": plan.max_num_batched_tokens}
    if c.kv_cache_dtype != "auto":
        args["kv_cache_dtype"] = c.kv_cache_dtype
    args.update(c.fixed)
    return Recommendation(device="gpu", model=c.g.source, target=_target_line(c.t), args=args,
                          figures=figures, user_set=tuple(sorted(c.fixed)), notes=tuple(c.notes + _notes(c)))


def _memory_figures(c: _Ctx, plan: GpuMemoryPlan, mml: int) -> tuple[Figure, ...]:
    g, tp = c.g, plan.tp
    per_token = kvcache.kv_cache_bytes_per_token(g, kv_dtype_bytes=c.kvb, tp=1, max_model_len=mml)
    per_gpu = kvcache.kv_cache_bytes_per_token(g, kv_dtype_bytes=c.kvb, tp=tp, max_model_len=mml)
    sizes = gpumem.cudagraph_capture_sizes(plan.max_num_seqs, plan.max_num_batched_tokens)
    forward = plan.max_num_batched_tokens * gpumem.forward_bytes_per_token(g, tp)
    sampler = gpumem.sampler_bytes(g, plan.max_num_seqs)
    graphs = ("none: enforce_eager" if c.eager else
              f"{plan.cudagraph_graphs} graphs (batch sizes up to {max(sizes)}, piecewise and full decode) "
              f"x {g.num_layers} layers x {gpumem.CUDAGRAPH_BYTES_PER_GRAPH_LAYER // 1024} KiB, plus the "
              f"first capture's activations")
    return (
        Figure("weight_bytes", c.weights, f"{c.weights_why}; {gib(plan.weight_bytes)} per GPU at tp={tp}", "bytes"),
        Figure("kv_cache_bytes_per_token", per_token,
               kv_layout(g, c.kvb, mml, per_token) + (f"; {per_gpu:,} bytes per GPU at tp={tp}" if tp > 1 else ""),
               "bytes"),
        Figure("activation_bytes", plan.activation_bytes,
               f"estimate of vLLM's profile-run peak per GPU: the larger of a forward pass over "
               f"{plan.max_num_batched_tokens:,} tokens ({gib(forward)}) and the sampler over "
               f"{plan.max_num_seqs} rows x {g.vocab_size:,} logits x {gpumem.SAMPLER_BYTES_PER_LOGIT} bytes "
               f"({gib(sampler)}) with the hidden states", "bytes"),
        Figure("cudagraph_bytes", plan.cudagraph_bytes,
               f"estimate of vLLM's CUDA-graph memory profile (counted by default since v0.21): {graphs}", "bytes"),
        Figure("non_torch_bytes", plan.non_torch_bytes,
               "estimate of memory outside torch after vLLM's snapshot (cuBLAS, attention and NCCL buffers): "
               "the largest of three vLLM logs", "bytes"),
    )


def _util_why(c: _Ctx, plan: GpuMemoryPlan) -> str:
    if "gpu_memory_utilization" in c.fixed:
        return "set by you"
    left = plan.total_bytes - plan.requested_bytes
    return (f"vLLM's default: vLLM sizes everything within {c.util:g} x {gib(plan.total_bytes)} = "
            f"{gib(plan.requested_bytes)}; the other {gib(left)} hold the CUDA context (~"
            f"{gib(gpumem.CUDA_CONTEXT_BYTES)}) and NCCL, which vLLM does not count, and absorb what "
            "its profile misses")


def _available_why(c: _Ctx, plan: GpuMemoryPlan) -> str:
    return (f"estimate of vLLM's 'Available KV cache memory' per GPU: {gib(plan.requested_bytes)} - "
            f"{gib(plan.weight_bytes)} weights - {gib(plan.activation_bytes)} activations - "
            f"{gib(plan.non_torch_bytes)} non-torch - {gib(plan.cudagraph_bytes)} CUDA graphs")


def _hosts_note(c: _Ctx, tp: int) -> str:
    if c.t.fixed_count or c.t.count <= tp:
        return ""
    n = c.t.count // tp
    return f"the {c.t.count} GPUs host {n} replica{'s' if n != 1 else ''} at tensor_parallel_size={tp}"


def _notes(c: _Ctx) -> list[str]:
    notes = []
    if c.g.dtype == "bfloat16" and not c.t.bf16:
        notes.append(f"{c.t.name} has no bfloat16: vLLM falls back to float16 for this bfloat16 model")
    spare = c.t.memory_bytes * (1 - c.util)
    if spare < gpumem.CUDA_CONTEXT_BYTES:
        notes.append(f"gpu_memory_utilization {c.util:g} leaves {gib(spare)} for the CUDA context "
                     f"(~{gib(gpumem.CUDA_CONTEXT_BYTES)}): vLLM may refuse to start")
    return notes


def _target_line(t: GpuTarget) -> str:
    each = f"{t.memory_bytes / GiB:.2f} GiB each as CUDA reports"
    how = "a replica uses exactly" if t.fixed_count else "up to"
    return f"{t.count} x {t.name} ({each}; {how} {t.count} per replica)"


# ---------------------------------------------------------------- refusals

def _refuse(c: _Ctx, plan: GpuMemoryPlan) -> None:
    one = _one(c, plan, c.floor_len)
    need = plan.weight_bytes + plan.overhead_bytes + one
    arithmetic = (f"needs {gib(plan.weight_bytes)} of weights per GPU at tp={plan.tp} (+ "
                  f"{gib(plan.activation_bytes)} activations, {gib(plan.cudagraph_bytes)} CUDA graphs, "
                  f"{gib(plan.non_torch_bytes)} non-torch, {gib(one)} KV for one {c.floor_len:,}-token "
                  f"sequence) = {gib(need)}, has {gib(plan.total_bytes)} x {c.util:g} = {gib(plan.requested_bytes)}")
    raise Refusal(c.g.source, _target_line(c.t), arithmetic, _suggestions(c, plan),
                  _refusal_figures(c, plan))


def _refuse_length(c: _Ctx, plan: GpuMemoryPlan, mml: int) -> None:
    need = _one(c, plan, mml)
    longest = _longest(c, plan, mml)
    arithmetic = (f"max_model_len={mml:,} (set by you): one sequence needs {gib(need)} of KV per GPU at "
                  f"tp={plan.tp}, the cache has {gib(plan.kv_bytes)} ({gib(plan.requested_bytes)} less "
                  f"{gib(plan.weight_bytes)} weights and {gib(plan.overhead_bytes)} overheads)")
    suggestions = [f"max_model_len={longest:,}"] if longest else []
    suggestions += _suggestions(c, plan, length=mml)
    raise Refusal(c.g.source, _target_line(c.t), arithmetic, tuple(suggestions), _refusal_figures(c, plan))


def _suggestions(c: _Ctx, plan: GpuMemoryPlan, length: Union[int, None] = None) -> tuple[str, ...]:
    length = length or c.floor_len
    out = []
    gpus = _gpus_that_fit(c, length)
    if gpus:
        out.append(f"resources.gpus: {gpus}" if c.t.fixed_count else
                   f"{gpus} x {c.t.name} (tensor_parallel_size={gpus})")
    if plan.kv_bytes > 0 and "max_model_len" not in c.fixed:
        longest = _longest(c, plan, length)
        if longest:
            out.append(f"max_model_len={longest:,} at tensor_parallel_size={plan.tp}")
    if plan.kv_bytes > 0 and c.kvb > 1 and _fits(c, plan, length, kvb=1):
        out.append("kv_cache_dtype=fp8 (half the KV bytes per token)")
    out += _quantized_suggestions(c, length)
    return tuple(out)


def _gpus_that_fit(c: _Ctx, length: int) -> Union[int, None]:
    start = c.t.count + 1 if not c.t.fixed_count else 1
    for n in range(start, MAX_SUGGESTED_GPUS + 1):
        if n != c.t.count and tp_problem(c.g, n) is None:
            plan = _plan(c, n, MIN_BATCH, 2048)
            if _fits(c, plan, length):
                return n
    return None


def _quantized_suggestions(c: _Ctx, length: int) -> list[str]:
    out = []
    counts = [c.t.count] if c.t.fixed_count else range(1, MAX_SUGGESTED_GPUS + 1)
    for name, weights in quantized_variants(c.g).items():
        for tp in counts:
            if tp_problem(c.g, tp) is None and _fits(c, _plan(c, tp, MIN_BATCH, 2048, weights=weights), length):
                note = "" if name != "fp8" or c.t.fp8 else " (weight-only through Marlin: no fp8 units on this GPU)"
                where = f"{tp} x {c.t.name} (tensor_parallel_size={tp})" if tp > 1 else f"one {c.t.name}"
                out.append(f"{name} weights ({gib(weights)}) on {where}{note}")
                break
    return out


def _refusal_figures(c: _Ctx, plan: GpuMemoryPlan) -> tuple[Figure, ...]:
    return (Figure("weight_bytes", c.weights, c.weights_why, "bytes"),
            Figure("activation_bytes", plan.activation_bytes, "estimate (see recommend)", "bytes"),
            Figure("cudagraph_bytes", plan.cudagraph_bytes, "estimate (see recommend)", "bytes"),
            Figure("non_torch_bytes", plan.non_torch_bytes, "estimate (see recommend)", "bytes"),
            Figure("gpu_memory_utilization", c.util, "vLLM's default" if "gpu_memory_utilization" not in c.fixed
                   else "set by you"),
            Figure("tensor_parallel_size", plan.tp, "the largest tried"),
            Figure("available_kv_cache_bytes", plan.kv_bytes, "estimate; negative: the weights alone do not fit",
                   "bytes"))
