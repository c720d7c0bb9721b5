"""Policy `rps`: the request-rate rule of dstack and SkyServe, for comparison.

Sources: dstack `src/dstack/_internal/server/services/services/autoscalers.py` (`RPSAutoscaler`:
rps = requests of the last 60 s / 60, desired = ceil(rps / target), clipped to [min, max], from
zero at once; its `scaling.scale_up_delay` defaults to 5m and `scale_down_delay` to 10m) and
SkyServe `sky/serve/autoscalers.py` (`RequestRateAutoscaler`: qps over a 60 s window,
ceil(qps / target_qps_per_replica), from zero at once, a change applied after it has been wanted
for `upscale_delay_seconds` (default 300 s) or `downscale_delay_seconds` (default 1200 s) of
consecutive 20 s decisions, straight to the new count).

Here: rps = arrivals over the last `WINDOW` (60 s) / 60 s (both sources divide by the whole
window, so a fresh start under-reads), wanted = ceil(rps / target.rps). The delays are the spec's
`scale_up_delay` / `scale_down_delay`, with SkyServe's meaning (the change must be wanted for that
long), not dstack's (that long since the last scale event); a scale-down goes straight to the
count wanted now, as both do. Zero follows `scale_to_zero_after` (dstack's count reaches 0 when
min is 0 and no request came for scale_down_delay). The shared rules add: no scale-up while a
replica is starting, no scale-down while requests are queued or held.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..model import Capacity, Sample, ScalerState, window
from .common import Numbers, Proposal, fmt, num

WINDOW = 60.0


def propose(scaling: Mapping[str, Any], slo: Mapping[str, Any] | None, samples: Sequence[Sample],
            capacity: Capacity, state: ScalerState, now: float) -> Proposal:
    previous = state.target
    target = float((scaling.get("target") or {}).get("rps") or 0.0)
    if target <= 0:
        raise ValueError("policy rps needs scaling.target.rps > 0")
    recent = window(samples, now, WINDOW)
    if not recent:
        return Proposal(previous, f"no signals in the last {WINDOW:.0f} s", {}, state)
    arrivals = sum(s.arrivals for s in recent)
    rps = arrivals / WINDOW
    wanted = math.ceil(round(rps / target, 9))
    numbers: Numbers = {"rps": num(rps), "target_rps": num(target), "arrivals": num(arrivals)}
    why = (f"{fmt(round(rps, 2))} requests/s over the last {WINDOW:.0f} s at a target of {fmt(target)} per "
           f"replica wants {wanted}")
    return Proposal(wanted, why, numbers, state, step_down=None)
