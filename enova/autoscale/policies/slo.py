"""enova's own policy, `slo`: add replicas when the deployment's SLO is at risk, before it is
broken for minutes; remove one only when one fewer would still hold it at the observed load.

At risk, over the fast window (`FAST_WINDOW`, 10 s), when any of:
- p95 TTFT (Prometheus-style quantile of the window's histograms) reaches `AT_RISK` (80%) of
  `slo.ttft_p95_ms`, or p95 ITL 80% of `slo.itl_p95_ms`;
- the queue (gateway queued + held + engine waiting) grew over the window, or never emptied;
- KV cache usage (the fullest replica's) reached `KV_FULL` (90%);
- demand per ready replica (in flight + queued + held) exceeds by more than 25% (1/AT_RISK) the
  highest in-flight per replica that held the SLO (`learned`, below; only once it is >= 1).

The step is sized by the shortage, not always +1: per-replica capacity is the larger of `learned`
and what each ready replica holds now (under a queue that is its concurrency limit), and
needed = ceil(demand / capacity) with the demand of the latest sample (a burst that has just
begun is not diluted by the window's mean); the count is at least ready + starting + 1. Replicas starting
already count (the shared rules hold any further scale-up until they are ready).

Learning (`state.learned["in_flight_per_replica"]`): when a stable window (`STABLE_WINDOW`, 60 s,
at least 90% covered) had latency observations all within the SLO's p95 targets and no queue, the
highest in-flight per ready replica among its samples becomes the learned value if it is higher;
when such a window broke the SLO below the learned value, the learned value falls to it.

Surplus: the stable window is calm (no risk signal over it: p95s under 80% of their targets, no
queue, KV below 90%) and its peak demand fits N-1 replicas at `HEADROOM` (80%) of the learned
capacity; with nothing learned, only a window with no demand at all counts. The shared rules
then wait `scale_down_delay` and remove one replica. The stable window is what stops flapping:
load that comes back within a minute keeps its peak in the window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..model import Capacity, Sample, ScalerState, quantile, window
from .common import Numbers, Proposal, fmt, mean, num

FAST_WINDOW = 10.0
STABLE_WINDOW = 60.0
AT_RISK = 0.8
KV_FULL = 0.9
HEADROOM = 0.8
LEARNED = "in_flight_per_replica"


def _p95_ms(samples: Sequence[Sample], kind: str) -> float | None:
    value = quantile([getattr(s, kind) for s in samples], 0.95)
    return None if value is None else value * 1000.0


def _demand(s: Sample) -> float:
    return s.in_flight + s.queued + s.held


def _waiting(s: Sample) -> float:
    return s.queued + s.held + (s.engine_waiting or 0.0)


def _per_replica(s: Sample) -> float | None:
    return s.in_flight / s.ready if s.ready > 0 else None


def _latency(samples: Sequence[Sample], slo: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """(name, p95 in ms, target in ms) for each latency objective the window observed."""
    out = []
    for name, kind, key in (("TTFT", "ttft", "ttft_p95_ms"), ("ITL", "itl", "itl_p95_ms")):
        target = slo.get(key)
        p95 = _p95_ms(samples, kind)
        if target and p95 is not None:
            out.append((name, p95, float(target)))
    return out


def _learn(stable: list[Sample], slo: Mapping[str, Any], learned: float | None, now: float) -> float | None:
    if not stable or now - stable[0].at < 0.9 * STABLE_WINDOW - 2.0:
        return learned   # not a whole stable window of evidence yet
    latencies = _latency(stable, slo)
    levels = [v for v in (_per_replica(s) for s in stable) if v is not None]
    if not latencies or not levels:
        return learned
    level = max(levels)
    held = all(p95 <= target for _, p95, target in latencies) and not any(_waiting(s) > 0 for s in stable)
    if held and level > (learned or 0.0):
        return level
    if not all(p95 <= target for _, p95, target in latencies) and learned is not None and 0 < level < learned:
        return level
    return learned


def propose(scaling: Mapping[str, Any], slo: Mapping[str, Any] | None, samples: Sequence[Sample],
            capacity: Capacity, state: ScalerState, now: float) -> Proposal:
    slo = slo or {}
    previous = state.target
    fast, stable = window(samples, now, FAST_WINDOW), window(samples, now, STABLE_WINDOW)
    fast.sort(key=lambda s: s.at)
    stable.sort(key=lambda s: s.at)
    learned = _learn(stable, slo, state.learned.get(LEARNED), now)
    memory = dict(state.learned)
    if learned is not None:
        memory[LEARNED] = float(learned)
    st = state.with_(learned=memory)
    numbers: Numbers = {"learned_per_replica": num(learned)}
    if not fast:
        return Proposal(previous, f"no signals in the last {FAST_WINDOW:.0f} s", numbers, st)

    ready, starting = capacity.ready, capacity.starting
    demand = mean([_demand(s) for s in fast])
    per_replica = demand / max(ready, 1)
    holding = mean([s.in_flight for s in fast]) / ready if ready > 0 else 0.0
    queue = [_waiting(s) for s in fast]
    kv = max((s.kv_cache_usage for s in fast if s.kv_cache_usage is not None), default=None)
    numbers.update({"demand": num(demand), "demand_per_replica": num(per_replica), "queue": num(queue[-1]),
                    "kv_cache_usage": num(kv)})

    risks: list[str] = []
    for name, p95, target in _latency(fast, slo):
        numbers[f"p95_{name.lower()}_ms"] = num(p95, 1)
        numbers[f"{name.lower()}_target_ms"] = num(target, 1)
        if p95 >= AT_RISK * target:
            verb = "is over" if p95 > target else "approaches"
            risks.append(f"p95 {name} {p95:.0f} ms over the last {FAST_WINDOW:.0f} s {verb} the {target:.0f} ms "
                         f"target ({100 * p95 / target:.0f}%)")
    if len(queue) >= 2 and queue[-1] > queue[0]:
        risks.append(f"the queue grew from {fmt(queue[0])} to {fmt(queue[-1])} in {FAST_WINDOW:.0f} s")
    elif queue and min(queue) > 0:
        risks.append(f"{fmt(queue[-1])} request(s) queued throughout the last {FAST_WINDOW:.0f} s")
    if kv is not None and kv >= KV_FULL:
        risks.append(f"KV cache {100 * kv:.0f}% full")
    if learned is not None and learned >= 1 and per_replica > learned / AT_RISK:
        risks.append(f"in flight {fmt(round(per_replica, 1))} per replica above the {fmt(round(learned, 1))} "
                     f"held while meeting the SLO")

    if risks:
        # size by the latest sample: the fast window's mean would dilute a burst that has just begun
        last = fast[-1]
        now_holding = last.in_flight / last.ready if last.ready > 0 else 0.0
        capacity_per = max(learned or 0.0, holding, now_holding)
        demand = max(demand, _demand(last))
        needed = math.ceil(demand / capacity_per) if capacity_per > 0 else 0
        wanted = max(needed, ready + starting + 1)
        numbers.update({"capacity_per_replica": num(capacity_per), "needed": needed})
        why = "; ".join(risks)
        if needed > ready + starting + 1:
            why += (f"; {fmt(round(demand, 1))} requests at {fmt(round(capacity_per, 1))} per replica need "
                    f"{needed} replicas")
        return Proposal(wanted, why, numbers, st)

    calm = _calm(stable, slo, now)
    if previous <= 1 or calm is not None:
        why = "SLO not at risk" + (f"; {calm}" if calm and previous > 1 else "")
        return Proposal(previous, why, numbers, st)
    peak = max(_demand(s) for s in stable)
    numbers["peak_demand"] = num(peak)
    if peak == 0:
        return Proposal(previous - 1, f"no requests over the last {STABLE_WINDOW:.0f} s", numbers, st)
    if learned is None:
        return Proposal(previous, f"SLO not at risk; peak {fmt(peak)} in flight over {STABLE_WINDOW:.0f} s and no "
                                  f"learned per-replica capacity to size {previous - 1} replica(s)", numbers, st)
    fits = math.ceil(peak / (learned * HEADROOM))
    numbers["fits"] = fits
    if fits < previous:
        return Proposal(max(fits, previous - 1),
                        f"peak {fmt(round(peak, 1))} in flight over the last {STABLE_WINDOW:.0f} s fits "
                        f"{previous - 1} replica(s) at {fmt(round(learned, 1))} per replica held while meeting "
                        f"the SLO, with {100 * (1 - HEADROOM):.0f}% headroom", numbers, st)
    return Proposal(previous, f"SLO not at risk; peak {fmt(round(peak, 1))} in flight over the last "
                              f"{STABLE_WINDOW:.0f} s needs {fits} replica(s) at {fmt(round(learned, 1))} per "
                              f"replica with {100 * (1 - HEADROOM):.0f}% headroom", numbers, st)


def _calm(stable: list[Sample], slo: Mapping[str, Any], now: float) -> str | None:
    """None when the stable window is calm enough to consider one replica fewer; else why not."""
    if not stable or now - stable[0].at < 0.9 * STABLE_WINDOW - 2.0:
        return f"less than {STABLE_WINDOW:.0f} s of signals to judge a scale-down"
    for name, p95, target in _latency(stable, slo):
        if p95 >= AT_RISK * target:
            return f"p95 {name} {p95:.0f} ms over the last {STABLE_WINDOW:.0f} s is {100 * p95 / target:.0f}% of the target"
    if any(_waiting(s) > 0 for s in stable):
        return f"requests queued within the last {STABLE_WINDOW:.0f} s"
    if any(s.kv_cache_usage is not None and s.kv_cache_usage >= KV_FULL for s in stable):
        return f"KV cache near full within the last {STABLE_WINDOW:.0f} s"
    return None
