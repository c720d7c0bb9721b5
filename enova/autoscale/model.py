"""The autoscaler's data: samples of the signals, the capacity it sees, its persisted state and
its decisions. Plain data with no I/O, so policies are pure and tested with fake time.

Produced by `signals` (samples), the reconciler (capacity, persisted state) and `policies`
(decisions). Times are wall-clock seconds (the reconciler's injected clock).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Histogram:
    """Observations of one histogram in a sample's interval: cumulative bucket counts by upper
    bound (the last bound is +inf), as deltas of Prometheus counters."""

    buckets: tuple[tuple[float, float], ...] = ()
    count: float = 0.0
    sum: float = 0.0

    def __add__(self, other: "Histogram") -> "Histogram":
        if not self.buckets:
            return other
        if not other.buckets:
            return self
        mine, theirs = dict(self.buckets), dict(other.buckets)
        bounds = sorted(set(mine) | set(theirs))
        return Histogram(tuple((b, mine.get(b, 0.0) + theirs.get(b, 0.0)) for b in bounds),
                         self.count + other.count, self.sum + other.sum)


def quantile(histograms: Iterable[Histogram], q: float) -> float | None:
    """The q-quantile (0..1) of the observations of several intervals, with Prometheus's
    histogram_quantile interpolation (linear within a bucket; the highest finite bound when it
    falls in +inf). None when nothing was observed."""
    total = Histogram()
    for h in histograms:
        total = total + h
    if not total.buckets or total.count <= 0:
        return None
    rank = q * total.buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in total.buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Sample:
    """What one scrape saw for one deployment, over `interval` seconds ending at `at`."""

    at: float
    interval: float
    ready: int = 0                  # replicas serving (ready records the gateway routes to)
    in_flight: float = 0.0          # requests at replicas (gateway), summed
    queued: float = 0.0             # requests waiting in the gateway's queue
    held: float = 0.0               # requests held while scaling from zero
    arrivals: float = 0.0           # requests received in the interval (gateway counter delta)
    completed: float = 0.0          # requests answered in the interval
    engine_running: float | None = None   # vllm:num_requests_running, summed (None: not scraped)
    engine_waiting: float | None = None   # vllm:num_requests_waiting, summed
    kv_cache_usage: float | None = None   # vllm:kv_cache_usage_perc, the highest replica's (0..1)
    ttft: Histogram = Histogram()   # seconds
    itl: Histogram = Histogram()
    e2e: Histogram = Histogram()

    @property
    def rps(self) -> float:
        return self.arrivals / self.interval if self.interval > 0 else 0.0


def window(samples: Sequence[Sample], now: float, seconds: float) -> list[Sample]:
    """The samples of the last `seconds` before `now`."""
    return [s for s in samples if now - seconds < s.at <= now]


@dataclass(frozen=True)
class Capacity:
    ready: int       # replicas serving now
    starting: int    # replicas started and not yet ready: capacity on the way
    start_seconds: float | None = None  # how long a replica took to become ready, last measured


@dataclass(frozen=True)
class ScalerState:
    """What the autoscaler remembers per deployment, persisted in the state directory, so a
    restarted reconciler makes no scale event it would not have made anyway."""

    target: int
    last_up: float | None = None          # when the target last went up
    last_down: float | None = None
    shortage_since: float | None = None   # when a shortage was first seen (scale_up_delay)
    surplus_since: float | None = None    # when a surplus was first seen (scale_down_delay)
    idle_since: float | None = None       # when the deployment was last seen busy (scale to zero)
    panic_until: float | None = None      # Knative's panic mode
    learned: dict[str, float] = field(default_factory=dict)  # e.g. in-flight per replica held while meeting the SLO
    policy: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScalerState":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> "ScalerState":
        return replace(self, **changes)


@dataclass(frozen=True)
class Decision:
    """A policy's answer: the replica count wanted now, why (in words, with the numbers that
    decided it), and the state to persist. `changed` when target differs from the previous one."""

    target: int
    previous: int
    reason: str
    numbers: dict[str, float | int | None]
    state: ScalerState

    @property
    def changed(self) -> bool:
        return self.target != self.previous
