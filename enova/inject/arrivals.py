"""The schedule: when each request of a run leaves, from a LoadProfile's `arrival` and a seed.

`schedule(arrival, duration, seed, base_dir)` returns every Arrival with `at` in [0, duration),
sorted, numbered 0..n-1. It is pure given the seed: numpy's PCG64 generator seeded with it, drawn
in a fixed order, so one seed gives one schedule on every host (workers and shards each take
their share of the same schedule). `resolve_seed(None)` picks a fresh seed for the caller to
record. Everything is vectorised: 1,000 requests/s for an hour is a few numpy calls.

The processes (rate r, duration T):

- poisson: exponential gaps of mean 1/r from 0 (the first request at the first gap, not at 0).
- gamma: gamma gaps of shape `burstiness` and mean 1/r, as `vllm bench serve` draws them (1 is
  Poisson, lower is burstier).
- constant: exactly at 0, 1/r, 2/r, ... (k/r, computed per request: no drift).
- normal: for each whole second k, a count c_k = round(N(r, std)) truncated at 0, the c_k requests
  placed uniformly at random within [k, k+1). When T is not whole, the last second's requests
  past T are dropped.
- ramp: Poisson within, its rate linear from `rate` at 0 to `end_rate` at T (a non-homogeneous
  Poisson process, made by time-rescaling a unit-rate one: t = Λ⁻¹(s), Λ(t) = ∫₀ᵗ λ).
- steps: Poisson within each step, at its rate, the steps one after another; the last step's
  rate holds until T (also by time-rescaling, so a rate of 0 is a silent step).
- trace: the trace's own times and token counts (`enova.inject.traces.read_trace`, its path
  relative to `base_dir`), divided by `time_scale`, cut at T.

Called by the injector's runner before any request is sent. Raises UsageError for a trace that
cannot be read (naming its file:line), never anything else for a valid ArrivalSpec.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

from enova.inject.model import Arrival
from enova.inject.traces import read_trace
from enova.spec.models import ArrivalSpec

SEED_BITS = 32


def resolve_seed(seed: int | None) -> int:
    """`seed` itself, or a fresh random one (0 <= seed < 2**32) when it is None, to record with the run."""
    return secrets.randbits(SEED_BITS) if seed is None else seed


def schedule(arrival: ArrivalSpec, duration: float, seed: int | None, base_dir: Path) -> list[Arrival]:
    """Every request of a run of `duration` seconds, sorted by `at`, indices 0..n-1, 0 <= at < duration.

    `seed` None draws from a fresh seed; call `resolve_seed` first to know it. `base_dir` is the
    folder a trace path is relative to (the spec file's). Raises UsageError for a bad trace."""
    if not duration > 0:
        raise ValueError(f"duration must be > 0 (got {duration!r})")
    if arrival.process == "trace":
        assert arrival.trace is not None
        replayed = read_trace(Path(base_dir) / arrival.trace, arrival.trace_format or "auto", arrival.time_scale or 1.0)
        return [a for a in replayed if a.at < duration]  # sorted and numbered from 0: the kept ones keep theirs
    rng = np.random.Generator(np.random.PCG64(resolve_seed(seed)))
    times = _TIMES[arrival.process](rng, arrival, duration)
    times = times[times < duration]
    return [Arrival(index, at) for index, at in enumerate(times.tolist())]


def _poisson(rng: np.random.Generator, arrival: ArrivalSpec, duration: float) -> np.ndarray:
    assert arrival.rate is not None
    return _unit_poisson(rng, arrival.rate * duration) / arrival.rate


def _gamma(rng: np.random.Generator, arrival: ArrivalSpec, duration: float) -> np.ndarray:
    assert arrival.rate is not None and arrival.burstiness is not None
    shape, scale = arrival.burstiness, 1.0 / (arrival.rate * arrival.burstiness)
    return _renewal(lambda n: rng.gamma(shape, scale, n), duration, arrival.rate * duration)


def _constant(rng: np.random.Generator, arrival: ArrivalSpec, duration: float) -> np.ndarray:
    assert arrival.rate is not None
    return np.arange(int(np.ceil(arrival.rate * duration)) + 1) / arrival.rate


def _normal(rng: np.random.Generator, arrival: ArrivalSpec, duration: float) -> np.ndarray:
    assert arrival.rate is not None and arrival.std is not None
    seconds = int(np.ceil(duration))
    counts = np.maximum(np.rint(rng.normal(arrival.rate, arrival.std, seconds)), 0).astype(np.int64)
    starts = np.repeat(np.arange(seconds, dtype=np.float64), counts)
    return np.sort(starts + rng.random(starts.size))


def _ramp(rng: np.random.Generator, arrival: ArrivalSpec, duration: float) -> np.ndarray:
    """Λ(t) = r0 t + (r1 - r0) t² / 2T; its inverse 2s / (r0 + sqrt(r0² + 2 (r1 - r0) s / T)) has no
    cancellation and holds for a flat, rising or falling ramp (r0 or r1 may be 0, not both)."""
    assert arrival.rate is not None and arrival.end_rate is not None
    start, end = arrival.rate, arrival.end_rate
    s = _unit_poisson(rng, (start + end) / 2 * duration)
    return 2 * s / (start + np.sqrt(np.maximum(start * start + 2 * (end - start) * s / duration, 0.0)))


def _steps(rng: np.random.Generator, arrival: ArrivalSpec, duration: float) -> np.ndarray:
    assert arrival.steps is not None
    ends = np.minimum(np.cumsum([step.duration for step in arrival.steps]), duration)
    rates = np.array([step.rate for step in arrival.steps])
    if ends[-1] < duration:  # the last rate holds until the run ends
        ends = np.append(ends, duration)
        rates = np.append(rates, rates[-1])
    knots = np.concatenate(([0.0], ends))
    cumulative = np.concatenate(([0.0], np.cumsum(rates * np.diff(knots))))  # Λ at each knot
    s = _unit_poisson(rng, cumulative[-1])
    # Λ is flat over a silent step: searchsorted finds the step whose Λ range holds s, then the
    # time within it is linear. (np.interp would do it but leaves ties across flat steps to chance.)
    step = np.clip(np.searchsorted(cumulative, s, side="right") - 1, 0, rates.size - 1)
    return knots[step] + (s - cumulative[step]) / rates[step]


def _unit_poisson(rng: np.random.Generator, horizon: float) -> np.ndarray:
    """A unit-rate Poisson process on [0, horizon): cumulated exponential gaps."""
    return _renewal(rng.standard_exponential, horizon, horizon)


def _renewal(draw, horizon: float, expected: float) -> np.ndarray:
    """Cumulated gaps from `draw(n)` until they pass `horizon`, drawn in chunks sized for `expected`
    points; the chunks follow one another in a fixed order, so the result depends on the seed only."""
    chunk = int(expected + 6 * np.sqrt(expected) + 16)
    times = np.cumsum(draw(chunk))
    while times[-1] < horizon:
        times = np.concatenate((times, times[-1] + np.cumsum(draw(chunk))))
    return times[times < horizon]


_TIMES = {"poisson": _poisson, "gamma": _gamma, "constant": _constant, "normal": _normal, "ramp": _ramp,
          "steps": _steps}
