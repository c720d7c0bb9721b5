"""The rules every policy shares, applied after a policy has said how many replicas it wants.

A policy (slo, kpa, rps, original) returns a `Proposal`: the count it wants now, a sentence with
its numbers, and its own memory. `settle` turns that into the `Decision`, in this order:

1. **Bounds.** A count outside [min, max] (after an edit of min or max) is clamped at once.
2. **Wake.** At zero replicas, any demand (held, queued, in flight or arriving requests) gives
   at least 1 at once, with no delay: a held request must not wait for `scale_up_delay`.
3. **Zero.** With min 0 and `scale_to_zero_after` > 0, a deployment with no arrivals, in-flight,
   queued or held requests for that long goes to 0 (fresh signals needed: no scrape, no zero).
   Otherwise the count never goes below max(min, 1).
4. **Up.** A count above the current target is a shortage. Replicas still starting are capacity
   on the way: while any is starting there is no further scale-up (no second step for the same
   shortage). The shortage must last `scale_up_delay` (`shortage_since`).
5. **Down.** A count below the current target is a surplus. Never while requests are held or
   queued (they would go to the replica being drained). The surplus must last
   `scale_down_delay` (`surplus_since`); then the count falls by at most the policy's
   `step_down` (1 for slo and enova-original), to the count wanted now, or, for a policy with
   `down_to_peak` (Knative's scale-down-delay window), to the highest count wanted during the
   surplus. After a step the delay starts again.

Pure: no clock, no I/O. Called by `policies.decide` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..model import Capacity, Decision, Sample, ScalerState

FRESH_SECONDS = 10.0   # scale to zero only on signals this recent
Numbers = dict[str, "float | int | None"]


@dataclass(frozen=True)
class Proposal:
    """What one policy wants, before the shared rules: an absolute replica count."""

    wanted: int
    why: str                        # a sentence with the numbers that decided `wanted`
    numbers: Numbers
    state: ScalerState              # the policy's memory (panic_until, learned), target unchanged
    step_down: int | None = 1       # most replicas removed by one decision; None: no limit
    down_to_peak: bool = False      # after a surplus, go to the highest count wanted during it


def seen(samples: Sequence[Sample], now: float) -> list[Sample]:
    """The samples at or before `now`, oldest first."""
    return sorted((s for s in samples if s.at <= now), key=lambda s: s.at)


def busy(s: Sample) -> bool:
    return s.arrivals > 0 or s.in_flight > 0 or s.queued > 0 or s.held > 0


def idle_since(samples: Sequence[Sample], prior: float | None, now: float) -> float | None:
    """Since when nothing arrived, ran, queued or waited (None while busy); `prior` is the
    persisted value, so a restart keeps counting from where it was."""
    past = seen(samples, now)
    if not past:
        return prior
    if busy(past[-1]):
        return None
    last_busy = max((s.at for s in past if busy(s)), default=None)
    if last_busy is not None and (prior is None or last_busy > prior):
        return last_busy
    return prior if prior is not None else past[0].at


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def num(value: float | None, digits: int = 3) -> float | None:
    """A number for Decision.numbers: rounded so the reason and the JSON agree and stay short."""
    return None if value is None else round(float(value), digits)


def fmt(value: float) -> str:
    """A count or rate for a sentence: 12, 2.5, 0.25."""
    if value == math.floor(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def bounds(scaling: Mapping[str, Any]) -> tuple[int, int]:
    low = int(scaling.get("min", 1))
    return low, int(scaling.get("max", max(low, 1)))


def seconds(scaling: Mapping[str, Any], key: str) -> float:
    return float(scaling.get(key) or 0.0)


def settle(scaling: Mapping[str, Any], policy: str, proposal: Proposal, samples: Sequence[Sample],
           capacity: Capacity, state: ScalerState, now: float) -> Decision:
    """Apply the shared rules (module docstring) to a policy's proposal."""
    previous = state.target
    low, high = bounds(scaling)
    up_delay, down_delay = seconds(scaling, "scale_up_delay"), seconds(scaling, "scale_down_delay")
    to_zero = seconds(scaling, "scale_to_zero_after")
    past = seen(samples, now)
    latest = past[-1] if past else None
    held = latest.held if latest else 0.0
    queued = latest.queued if latest else 0.0
    idle = idle_since(samples, state.idle_since, now)
    if capacity.starting > 0 or (previous > 0 and capacity.ready == 0):
        idle = now  # a replica on its way is not idleness: the idle time counts from when it serves
    st = proposal.state.with_(idle_since=idle, policy=policy)
    learned = {k: v for k, v in st.learned.items() if k != "surplus_peak"}
    numbers: Numbers = {**proposal.numbers, "wanted": proposal.wanted, "ready": capacity.ready,
                        "starting": capacity.starting, "held": num(held), "queued": num(queued),
                        "min": low, "max": high}
    why = proposal.why

    def done(target: int, reason: str, **changes: Any) -> Decision:
        new = st.with_(target=target, learned=changes.pop("learned", learned), **changes)
        if target > previous:
            new = new.with_(last_up=now, shortage_since=None, surplus_since=None)
        elif target < previous:
            new = new.with_(last_down=now, shortage_since=None, surplus_since=None)
        return Decision(target=target, previous=previous, reason=reason,
                        numbers={**numbers, "previous": previous, "target": target}, state=new)

    # 1. bounds changed under the count
    if previous > high:
        return done(high, f"scaling.max is {high}: {previous} -> {high}")
    if previous < low:
        return done(low, f"scaling.min is {low}: {previous} -> {low}")

    demand = latest is not None and busy(latest)
    # 2. wake from zero at once
    if previous == 0:
        if demand:
            target = min(high, max(1, proposal.wanted))
            waiting = f"{fmt(held)} request(s) held" if held else "requests arriving"
            return done(target, f"{waiting} at zero replicas: {previous} -> {target}")
        return done(0, "at zero replicas and idle: holding 0", shortage_since=None, surplus_since=None)

    # 3. scale to zero after the idle time
    idle_for = None if idle is None else now - idle
    numbers["idle_seconds"] = num(idle_for, 1)
    fresh = latest is not None and now - latest.at <= FRESH_SECONDS
    if low == 0 and to_zero > 0 and idle_for is not None and idle_for >= to_zero and fresh:
        return done(0, f"idle for {idle_for:.0f} s (no arrivals, in flight, queued or held requests), past "
                       f"scale_to_zero_after {to_zero:.0f} s: {previous} -> 0")

    floor = max(low, 1)
    wanted = min(high, max(floor, proposal.wanted))
    if wanted > previous:
        # 4. shortage
        since = state.shortage_since if state.shortage_since is not None else now
        if capacity.starting > 0:
            return done(previous, f"{why}; {capacity.starting} replica(s) starting are capacity on the way: "
                                  f"holding {previous}", shortage_since=since, surplus_since=None)
        if now - since < up_delay:
            return done(previous, f"{why}; shortage for {now - since:.0f} s of scale_up_delay {up_delay:.0f} s: "
                                  f"holding {previous}", shortage_since=since, surplus_since=None)
        return done(wanted, f"{why}: {previous} -> {wanted}")
    if wanted < previous:
        # 5. surplus
        if held > 0 or queued > 0:
            return done(previous, f"{why}; {fmt(held + queued)} request(s) held or queued: no scale-down, "
                                  f"holding {previous}", shortage_since=None, surplus_since=None)
        since = state.surplus_since if state.surplus_since is not None else now
        peak = wanted
        if state.surplus_since is not None:
            peak = max(wanted, int(state.learned.get("surplus_peak", wanted)))
        if now - since < down_delay:
            return done(previous, f"{why}; surplus for {now - since:.0f} s of scale_down_delay "
                                  f"{down_delay:.0f} s: holding {previous}",
                        shortage_since=None, surplus_since=since, learned={**learned, "surplus_peak": float(peak)})
        target = peak if proposal.down_to_peak else wanted
        if proposal.step_down is not None:
            target = max(target, previous - proposal.step_down)
        return done(target, f"{why}: {previous} -> {target}")
    return done(previous, f"{why}: holding {previous}", shortage_since=None, surplus_since=None)
