"""Autoscaling policies: pure decisions. `decide` is the one entry point, called by the
reconciler's autoscaler loop each time it has a fresh sample (about every 2 s).

    decide(scaling, slo, samples, capacity, state, now) -> Decision

- `scaling`: `DeploymentSpec.scaling.model_dump(mode="json")` (durations in seconds); an optional
  `max_num_seqs` key (the engine's) is read by enova-original only.
- `slo`: `SLOSpec.model_dump(mode="json")` or None.
- `samples`: the bounded window of Samples, any order; only those at or before `now` count.
- `capacity`: replicas ready and starting; `state`: the persisted ScalerState (`target` is the
  count now owned by the autoscaler).

It dispatches on `scaling["policy"]` to one module (`slo` enova's own; `kpa` Knative's KPA for
`concurrency`; `rps` dstack's and SkyServe's; `original` the original ENOVA rule), which says how
many replicas it wants and why; `common.settle` then applies the rules all policies share
(bounds, wake from zero, scale to zero, delays, starting replicas, no scale-down while requests
wait) and returns the Decision: a target within [min, max] (0 only by scale to zero), a reason
sentence with the numbers, the same numbers as a dict, and the new state to persist.

Deterministic: the same arguments give the same Decision; no clock is read and nothing is
written. A policy change resets the other policies' memory (panic mode, tick time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..model import Capacity, Decision, Sample, ScalerState
from . import kpa, original, rps, slo as slo_policy
from .common import Proposal, settle

Propose = Callable[[Mapping[str, Any], "Mapping[str, Any] | None", Sequence[Sample], Capacity, ScalerState, float],
                   Proposal]

POLICIES: dict[str, Propose] = {
    "slo": slo_policy.propose,
    "concurrency": kpa.propose,
    "rps": rps.propose,
    "enova-original": original.propose,
}

# memory that belongs to one policy: dropped when the deployment's policy changes
_OWN_KEYS = {"concurrency": (kpa.MAX_PANIC_PODS,), "enova-original": (original.TICK_AT, original.WANTED)}


def decide(scaling: Mapping[str, Any], slo: Mapping[str, Any] | None, samples: Sequence[Sample],
           capacity: Capacity, state: ScalerState, now: float) -> Decision:
    """The replica count wanted now, why, and the state to persist. Raises ValueError for an
    unknown policy or a missing target (the spec layer refuses both first)."""
    policy = scaling.get("policy") or "slo"
    propose = POLICIES.get(policy)
    if propose is None:
        raise ValueError(f"unknown scaling policy {policy!r}; known: {', '.join(sorted(POLICIES))}")
    if state.policy and state.policy != policy:
        foreign = {k for name, keys in _OWN_KEYS.items() if name != policy for k in keys}
        state = state.with_(panic_until=None, shortage_since=None, surplus_since=None,
                            learned={k: v for k, v in state.learned.items() if k not in foreign and k != "surplus_peak"})
    return settle(scaling, policy, propose(scaling, slo, samples, capacity, state, now), samples, capacity, state, now)


__all__ = ["POLICIES", "decide"]
