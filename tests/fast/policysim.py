"""A fake world for the policy tests: a fake clock that ticks every 2 s, replicas that take
`start_seconds` to become ready, and a load given as requests at the deployment (concurrency)
and arrivals per second, turned into the Samples the signals module would scrape.

A replica holds `MAX_CONCURRENCY` requests; the rest queue at the gateway (held when there is no
replica). TTFT grows with the requests per replica, so the `slo` policy sees a real risk.
Scale-down removes a replica at once (its drain is the reconciler's business, not a policy's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from enova.autoscale.model import Capacity, Decision, Histogram, Sample, ScalerState
from enova.autoscale.policies import decide

TICK = 2.0
MAX_CONCURRENCY = 8
SLO = {"ttft_p95_ms": 500.0, "itl_p95_ms": 100.0, "e2e_p99_ms": None, "max_error_rate": None}


def scaling(policy: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"min": 1, "max": 6, "policy": policy, "target": None, "scale_up_delay": 0.0,
                            "scale_down_delay": 60.0, "scale_to_zero_after": 0.0}
    if policy == "concurrency":
        base["target"] = {"concurrency": 8.0, "rps": None}
    if policy == "rps":
        base["target"] = {"rps": 2.0, "concurrency": None}
    base.update(changes)
    return base


def hist(ms: float, n: float) -> Histogram:
    """n observations just under `ms` milliseconds (p95 about 0.98 x ms)."""
    if n <= 0:
        return Histogram()
    upper = ms / 1000.0
    return Histogram(((upper / 2, 0.0), (upper, n), (float("inf"), n)), n, n * upper * 0.75)


@dataclass
class Sim:
    scaling: dict[str, Any]
    target: int = 1
    start_seconds: float = 0.0
    now: float = 1000.0
    slo: dict[str, Any] | None = field(default_factory=lambda: dict(SLO))
    state: ScalerState = None  # type: ignore[assignment]
    samples: list[Sample] = field(default_factory=list)
    ready: int = -1                                     # -1: the state's target, all ready
    starts: list[float] = field(default_factory=list)   # when each starting replica becomes ready
    decisions: list[Decision] = field(default_factory=list)
    seen_capacity: list[Capacity] = field(default_factory=list)   # what each decision was given

    def __post_init__(self) -> None:
        if self.state is None:
            self.state = ScalerState(target=self.target, policy=self.scaling["policy"])
        if self.ready < 0:
            self.ready = self.state.target

    @property
    def capacity(self) -> Capacity:
        return Capacity(ready=self.ready, starting=len(self.starts), start_seconds=self.start_seconds or None)

    def sample(self, concurrency: float, rps: float, waiting: float | None = None) -> Sample:
        ready = self.ready
        if ready == 0:
            in_flight, queued, held = 0.0, 0.0, concurrency
        else:
            in_flight = min(concurrency, MAX_CONCURRENCY * ready)
            queued, held = concurrency - in_flight, 0.0
        per = in_flight / ready if ready else 0.0
        served = rps * TICK if ready else 0.0
        ttft = 80 + 45 * per + (200 * queued / ready if ready else 0)
        return Sample(at=self.now, interval=TICK, ready=ready, in_flight=in_flight, queued=queued, held=held,
                      arrivals=rps * TICK, completed=served, engine_running=in_flight,
                      engine_waiting=queued if waiting is None else waiting,
                      kv_cache_usage=min(1.0, 0.8 * per / MAX_CONCURRENCY) if ready else None,
                      ttft=hist(ttft, served), itl=hist(20 + 2 * per, served * 10))

    def step(self, concurrency: float = 0.0, rps: float | None = None, waiting: float | None = None) -> Decision:
        """One 2 s tick at this load (rps defaults to concurrency / 2: a 2 s request)."""
        self.now += TICK
        self.ready += sum(1 for t in self.starts if t <= self.now)
        self.starts = [t for t in self.starts if t > self.now]
        self.samples.append(self.sample(concurrency, concurrency / 2 if rps is None else rps, waiting))
        self.samples = [s for s in self.samples if s.at > self.now - 300]
        self.seen_capacity.append(self.capacity)
        d = decide(self.scaling, self.slo, self.samples, self.capacity, self.state, self.now)
        self.act(d)
        return d

    def act(self, d: Decision) -> None:
        self.decisions.append(d)
        self.state = d.state
        have = self.ready + len(self.starts)
        if d.target > have:
            self.starts += [self.now + self.start_seconds] * (d.target - have)
            if self.start_seconds == 0:
                self.ready += len(self.starts)
                self.starts = []
        while d.target < self.ready + len(self.starts):
            if self.starts:
                self.starts.pop()
            else:
                self.ready -= 1

    def run(self, seconds: float, concurrency: float = 0.0, rps: float | None = None,
            waiting: float | None = None) -> list[Decision]:
        out = []
        for _ in range(int(seconds / TICK)):
            out.append(self.step(concurrency, rps, waiting))
        return out

    def events(self) -> list[tuple[float, int, int]]:
        """(time, previous, target) of every decision that changed the count."""
        return [(d.state.last_up if d.target > d.previous else d.state.last_down, d.previous, d.target)
                for d in self.decisions if d.changed]

    def restarted(self) -> "Sim":
        """The same world, with the state read back from its JSON file as a restarted reconciler would."""
        state = ScalerState.from_dict(json.loads(json.dumps(self.state.to_dict())))
        return Sim(self.scaling, start_seconds=self.start_seconds, now=self.now, slo=self.slo, state=state,
                   samples=list(self.samples), ready=self.ready, starts=list(self.starts))
