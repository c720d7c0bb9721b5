"""Policy `enova-original`: the rule the original ENOVA's escaler shipped, for comparison.

Source: `../shared/reference/ENOVA-ORIGINAL.md` section 3 (escaler `llm_performance_ad`): every
`TICK` (30 s), over the last three one-minute buckets,
- scale up by one when summed pending requests (`vllm:num_requests_waiting` here) >= 50 in each;
- scale down by one, only when replicas > 1, when the KV cache usage per replica <= 10% and the
  running requests per replica <= 0.1 x max_num_seqs in each.

A bucket's value is its last sample (the point a 60 s-step Prometheus query_range returns); a
missing engine metric reads 0 (the original fills gaps with 0). KV usage is the fullest
replica's (what a Sample carries), a stricter reading of the per-replica mean. max_num_seqs is
`scaling["max_num_seqs"]` when the caller puts the engine's value there, else vLLM's default 256.
The original applied no delays; the spec's delays and the shared rules (no scale-up while a
replica starts, none down while requests wait) still apply, and with the default
scale_down_delay the step down waits 300 s more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..model import Capacity, Sample, ScalerState
from .common import Numbers, Proposal, fmt, num

TICK = 30.0
BUCKET = 60.0
BUCKETS = 3
PENDING = 50.0
KV_LOW = 0.10
RUNNING_LOW = 0.1
DEFAULT_MAX_NUM_SEQS = 256
TICK_AT = "original_tick_at"
WANTED = "original_wanted"   # the last tick's answer, repeated until the next tick


def _buckets(samples: Sequence[Sample], now: float) -> list[Sample | None]:
    """The last sample of each of the last BUCKETS one-minute buckets, newest first."""
    out: list[Sample | None] = []
    for k in range(BUCKETS):
        inside = [s for s in samples if now - BUCKET * (k + 1) < s.at <= now - BUCKET * k]
        out.append(max(inside, key=lambda s: s.at) if inside else None)
    return out


def propose(scaling: Mapping[str, Any], slo: Mapping[str, Any] | None, samples: Sequence[Sample],
            capacity: Capacity, state: ScalerState, now: float) -> Proposal:
    previous = state.target
    last_tick = state.learned.get(TICK_AT)
    if last_tick is not None and 0 <= now - last_tick < TICK:
        wanted = int(state.learned.get(WANTED, previous))
        return Proposal(wanted, f"the last 30 s tick wanted {wanted} (next tick in {TICK - (now - last_tick):.0f} s)",
                        {}, state)
    st = state.with_(learned={**state.learned, TICK_AT: float(now)})
    max_num_seqs = int(scaling.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS)
    buckets = _buckets(samples, now)
    if any(b is None for b in buckets):
        return _tick(previous, "needs a sample in each of the last 3 one-minute buckets", {}, st)
    present = [b for b in buckets if b is not None]
    pending = [b.engine_waiting or 0.0 for b in present]
    kv = [b.kv_cache_usage or 0.0 for b in present]
    running = [(b.engine_running or 0.0) / max(b.ready, 1) for b in present]
    numbers: Numbers = {"pending_min": num(min(pending)), "kv_cache_usage_max": num(max(kv)),
                        "running_per_replica_max": num(max(running)), "max_num_seqs": max_num_seqs}
    listed = ", ".join(fmt(round(p, 1)) for p in reversed(pending))
    if all(p >= PENDING for p in pending):
        return _tick(capacity.ready + capacity.starting + 1,
                        f"pending requests {listed} >= {PENDING:.0f} in each of the last 3 minutes", numbers, st)
    if previous > 1 and all(k <= KV_LOW for k in kv) and all(r <= RUNNING_LOW * max_num_seqs for r in running):
        return _tick(previous - 1,
                        f"KV cache <= {KV_LOW:.0%} (at most {max(kv):.0%}) and running <= "
                        f"{fmt(RUNNING_LOW * max_num_seqs)} per replica (at most {fmt(round(max(running), 1))}) in "
                        f"each of the last 3 minutes", numbers, st)
    return _tick(previous, f"pending requests {listed}: no anomaly in the last 3 minutes", numbers, st)


def _tick(wanted: int, why: str, numbers: Numbers, state: ScalerState) -> Proposal:
    return Proposal(wanted, why, numbers, state.with_(learned={**state.learned, WANTED: float(wanted)}))
