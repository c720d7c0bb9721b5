"""A LoadProfile reduced to what sizing reads (enova.recommend.model.Workload): the prompt and
output length distributions (mean and p99) and the peak request rate. Pure; called by
enova.advise for `enova recommend --profile NAME`."""

from __future__ import annotations

import math
from typing import Union

from enova.spec.models import ArrivalSpec, LengthSpec, LoadProfileSpec

from .model import Lengths, Workload

Z99 = 2.3263478740408408  # the standard normal's 99th percentile


def lengths(spec: LengthSpec) -> Lengths:
    """Mean and p99 of a length distribution, in tokens, as enova.inject draws it (normal and
    lognormal draws are rounded and kept within [min, max])."""
    low, high = spec.min or 1, spec.max
    if spec.distribution == "fixed":
        assert spec.value is not None
        return Lengths(mean=float(spec.value), p99=spec.value)
    if spec.distribution == "uniform":
        assert spec.min is not None and spec.max is not None
        return Lengths(mean=(spec.min + spec.max) / 2, p99=math.ceil(spec.min + 0.99 * (spec.max - spec.min)))
    assert spec.mean is not None and spec.std is not None
    if spec.distribution == "normal":
        p99 = spec.mean + Z99 * spec.std
    else:  # lognormal whose own mean and std are `mean` and `std`
        sigma2 = math.log(1 + (spec.std / spec.mean) ** 2)
        p99 = math.exp(math.log(spec.mean) - sigma2 / 2 + Z99 * math.sqrt(sigma2))
    p99 = max(low, math.ceil(p99))
    return Lengths(mean=float(spec.mean), p99=min(p99, high) if high else p99)


def peak_rate(arrival: ArrivalSpec) -> Union[float, None]:
    """The highest mean rate the profile asks for, requests/s (None for a trace: it is not read here)."""
    if arrival.process == "steps":
        return max(step.rate for step in arrival.steps or [])
    if arrival.process == "ramp":
        return max(arrival.rate or 0.0, arrival.end_rate or 0.0)
    if arrival.process == "trace":
        return None
    return arrival.rate


def workload(name: str, profile: LoadProfileSpec, *, prompt_lengths: Union[Lengths, None] = None,
             capacity_rps: Union[float, None] = None, capacity_source: str = "") -> Workload:
    """The Workload of LoadProfile `name`. prompt_lengths: measured lengths of a prompt set (a
    builtin or file prompt set has no length distribution in the spec)."""
    requests = profile.requests
    inputs = lengths(requests.input_tokens) if requests.input_tokens is not None else prompt_lengths
    outputs = (lengths(requests.output_tokens) if requests.output_tokens is not None
               else Lengths(mean=float(profile.max_tokens), p99=profile.max_tokens))
    return Workload(name=name, input_tokens=inputs, output_tokens=outputs, rate_rps=peak_rate(profile.arrival),
                    capacity_rps=capacity_rps, capacity_source=capacity_source)
