"""Policy `concurrency`: Knative's Pod Autoscaler (KPA), followed as written, for comparison.

Sources: knative/serving `pkg/autoscaler/scaling/autoscaler.go` (`Scale`),
`pkg/reconciler/autoscaling/resources` `ResolveMetricTarget`, and the documentation page
"Additional autoscaling configuration for Knative Pod Autoscaler" (knative.dev/docs/serving/
autoscaling/kpa-specific). Defaults of `config-autoscaler` used here:
container-concurrency-target-percentage 70% (`TARGET_UTILIZATION`), stable-window 60 s,
panic-window-percentage 10% (a 6 s panic window), panic-threshold-percentage 200%,
max-scale-up-rate 1000, max-scale-down-rate 2.

Per tick, as `Scale` does:
- observed stable / panic concurrency = the mean, over the stable / panic window, of the requests
  at the deployment (in flight + queued + held: what Knative's queue-proxy and activator count);
- target value TV = max(0.01, target.concurrency * 0.7); ready = max(1, ready replicas);
- desired stable = ceil(stable / TV), desired panic = ceil(panic / TV), each kept within
  [floor(ready / max-scale-down-rate), ceil(max-scale-up-rate * ready)];
- panic when desired panic / ready >= 2: `panic_until` = now + stable window (Knative's panicTime
  + StableWindow, extended while over the threshold); leaving panic resets the panic maximum;
- in panic the count is max(desired stable, desired panic) and never falls below the highest
  count of this panic (`learned["kpa_max_panic_pods"]`): no scale-down while panicking;
- scale-down-delay (the spec's `scale_down_delay`) is Knative's max over a time window: the
  shared rules go to the highest count wanted during the surplus (`down_to_peak`), with no
  one-step limit (max-scale-down-rate already bounds a step to half).

Where enova differs, by the shared rules: a scale-up waits while a replica is starting (Knative
keeps adding pods if the activator's queue grows meanwhile); scale-up can be delayed by
`scale_up_delay` (Knative has no such delay; 0 s by default here too); scale to zero follows
`scale_to_zero_after` instead of Knative's stable window + scale-to-zero-grace-period (30 s);
activation-scale and target-burst-capacity (request routing through the activator) do not apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..model import Capacity, Sample, ScalerState, window
from .common import Numbers, Proposal, fmt, mean, num

TARGET_UTILIZATION = 0.7
STABLE_WINDOW = 60.0
PANIC_WINDOW_PERCENTAGE = 10.0
PANIC_THRESHOLD = 2.0
MAX_SCALE_UP_RATE = 1000.0
MAX_SCALE_DOWN_RATE = 2.0
TARGET_MIN = 0.01
MAX_PANIC_PODS = "kpa_max_panic_pods"


def _concurrency(samples: Sequence[Sample]) -> float:
    return mean([s.in_flight + s.queued + s.held for s in samples])


def propose(scaling: Mapping[str, Any], slo: Mapping[str, Any] | None, samples: Sequence[Sample],
            capacity: Capacity, state: ScalerState, now: float) -> Proposal:
    previous = state.target
    target = float((scaling.get("target") or {}).get("concurrency") or 0.0)
    if target <= 0:
        raise ValueError("policy concurrency needs scaling.target.concurrency > 0")
    tv = max(TARGET_MIN, target * TARGET_UTILIZATION)
    panic_window = STABLE_WINDOW * PANIC_WINDOW_PERCENTAGE / 100.0
    stable, panic = window(samples, now, STABLE_WINDOW), window(samples, now, panic_window)
    if not stable:
        return Proposal(previous, f"no signals in the last {STABLE_WINDOW:.0f} s", {}, state)
    observed_stable = _concurrency(stable)
    observed_panic = _concurrency(panic) if panic else observed_stable
    ready = max(1.0, float(capacity.ready))
    max_up = math.ceil(MAX_SCALE_UP_RATE * ready)
    max_down = math.floor(ready / MAX_SCALE_DOWN_RATE)
    dspc, dppc = math.ceil(observed_stable / tv), math.ceil(observed_panic / tv)
    desired_stable = min(max(dspc, max_down), max_up)
    desired_panic = min(max(dppc, max_down), max_up)
    over = dppc / ready >= PANIC_THRESHOLD

    panic_until = state.panic_until
    max_panic = int(state.learned.get(MAX_PANIC_PODS, 0))
    if over:
        panic_until = now + STABLE_WINDOW
    elif panic_until is not None and panic_until < now:
        panic_until, max_panic = None, 0
    desired = desired_stable
    mode = "stable"
    if panic_until is not None:
        mode = "panic"
        desired = max(desired, desired_panic)
        max_panic = max(max_panic, desired)
        desired = max_panic
    memory = {k: v for k, v in state.learned.items() if k != MAX_PANIC_PODS}
    if max_panic:
        memory[MAX_PANIC_PODS] = float(max_panic)
    numbers: Numbers = {"stable_concurrency": num(observed_stable), "panic_concurrency": num(observed_panic),
                        "target_value": num(tv), "desired_stable": desired_stable, "desired_panic": desired_panic,
                        "panic": int(panic_until is not None)}
    why = (f"concurrency {fmt(round(observed_stable, 1))} over {STABLE_WINDOW:.0f} s and "
           f"{fmt(round(observed_panic, 1))} over {panic_window:.0f} s at a target of {fmt(round(tv, 2))} per "
           f"replica ({fmt(target)} x {TARGET_UTILIZATION:.0%}) wants {desired} ({mode} mode")
    if over:
        why += f", panic: {dppc} is >= {PANIC_THRESHOLD:.0%} of {fmt(ready)} ready"
    elif panic_until is not None:
        why += f", no scale-down until {panic_until - now:.0f} s without a burst"
    why += ")"
    return Proposal(desired, why, numbers, state.with_(panic_until=panic_until, learned=memory),
                    step_down=None, down_to_peak=True)
