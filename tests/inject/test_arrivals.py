"""The arrival processes, judged statistically at fixed seeds: each schedule passes a goodness-of-fit
test against the distribution it claims (Kolmogorov-Smirnov for gaps and time-rescaled processes,
chi-square for the normal process's per-second counts), and fails it against a wrong one, so the
tests have teeth. Constant times are exact; a trace replays its own times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from enova.inject.arrivals import resolve_seed, schedule
from enova.inject.model import Arrival
from enova.spec.models import ArrivalSpec

HERE = Path(".")
FIT = 0.01  # a schedule "fits" when the test's p-value is above this


def arrival(**fields) -> ArrivalSpec:
    return ArrivalSpec.model_validate(fields)


def times(spec: ArrivalSpec, duration: float, seed: int = 1) -> np.ndarray:
    return np.array([a.at for a in schedule(spec, duration, seed, HERE)])


def test_poisson_gaps_are_exponential_with_mean_one_over_rate():
    at = times(arrival(process="poisson", rate=20), 300)
    gaps = np.diff(np.concatenate(([0.0], at)))
    assert stats.kstest(gaps, "expon", args=(0, 1 / 20)).pvalue > FIT
    assert stats.kstest(gaps, "expon", args=(0, 1 / 22)).pvalue < 1e-4  # a 10% faster rate is told apart
    assert abs(at.size - 6000) < 4 * np.sqrt(6000)


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 3.0])
def test_gamma_gaps_have_the_burstiness_as_shape_and_one_over_rate_as_mean(burstiness):
    rate = 10
    gaps = np.diff(np.concatenate(([0.0], times(arrival(process="gamma", rate=rate, burstiness=burstiness), 600))))
    assert stats.kstest(gaps, "gamma", args=(burstiness, 0, 1 / (rate * burstiness))).pvalue > FIT
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.1)
    if burstiness != 1.0:  # not Poisson: the exponential does not fit
        assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue < 1e-4


def test_constant_arrivals_are_exactly_k_over_rate_from_zero():
    at = times(arrival(process="constant", rate=7), 10)
    assert at.tolist() == [k / 7 for k in range(70)]


def test_constant_arrivals_stop_before_a_duration_that_is_not_a_whole_number_of_gaps():
    assert times(arrival(process="constant", rate=4), 1.1).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def _rounded_truncated_normal(mean: float, std: float, top: int) -> np.ndarray:
    """P(count = j) for j in 0..top, the last bin holding everything above: round(N(mean, std)) truncated at 0."""
    edges = np.arange(top + 1) + 0.5
    cdf = stats.norm.cdf(edges, mean, std)
    return np.diff(np.concatenate(([0.0], cdf[:-1], [1.0])))


@pytest.mark.parametrize("mean, std", [(5, 2), (1, 2), (50, 7)])
def test_normal_per_second_counts_fit_the_rounded_normal_truncated_at_zero(mean, std):
    seconds = 3000
    at = times(arrival(process="normal", rate=mean, std=std), seconds)
    counts = np.bincount(at.astype(int), minlength=seconds)
    assert counts.size == seconds
    top = int(mean + 4 * std)
    expected = _rounded_truncated_normal(mean, std, top) * seconds
    observed = np.bincount(np.minimum(counts, top), minlength=top + 1)
    keep = expected >= 5  # chi-square wants >= 5 expected per bin: pool the thin ones into their neighbours
    pooled_observed, pooled_expected = _pool(observed, expected, keep)
    assert stats.chisquare(pooled_observed, pooled_expected).pvalue > FIT
    # and a normal one unit off is told apart
    wrong = _rounded_truncated_normal(mean + 1, std, top) * seconds
    assert stats.chisquare(*_pool(observed, wrong, wrong >= 5)).pvalue < 1e-4


def _pool(observed: np.ndarray, expected: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge each bin whose expectation is too small into the nearest kept bin (the tails into the
    first and last kept), keeping both totals equal."""
    kept = np.flatnonzero(keep)
    target = kept[np.clip(np.searchsorted(kept, np.arange(keep.size)), 0, kept.size - 1)]
    target = np.where(np.arange(keep.size) < kept[0], kept[0], target)
    pooled_o = np.bincount(target, weights=observed, minlength=keep.size)[kept]
    pooled_e = np.bincount(target, weights=expected, minlength=keep.size)[kept]
    return pooled_o, pooled_e * pooled_o.sum() / pooled_e.sum()


def test_normal_arrivals_are_uniform_within_their_second():
    at = times(arrival(process="normal", rate=20, std=3), 500)
    assert stats.kstest(at % 1.0, "uniform").pvalue > FIT


def test_normal_with_zero_std_sends_exactly_the_rate_each_second():
    at = times(arrival(process="normal", rate=6, std=0), 30)
    assert np.bincount(at.astype(int)).tolist() == [6] * 30


def _ramp_cumulative(t: np.ndarray, start: float, end: float, duration: float) -> np.ndarray:
    return start * t + (end - start) * t * t / (2 * duration)


@pytest.mark.parametrize("start, end", [(2, 40), (40, 2), (0, 30), (30, 0), (10, 10)])
def test_ramp_counts_follow_the_linear_rate_and_the_rescaled_process_is_unit_poisson(start, end):
    duration = 120
    at = times(arrival(process="ramp", rate=start, end_rate=end), duration)
    # expected count per 10 s window: the integral of the rate over it
    edges = np.arange(0, duration + 1, 10.0)
    expected = np.diff(_ramp_cumulative(edges, start, end, duration))
    observed = np.histogram(at, edges)[0]
    assert np.all(np.abs(observed - expected) <= 4 * np.sqrt(np.maximum(expected, 1)))
    # time rescaling: Λ(t_i) is a unit-rate Poisson process, its gaps Exp(1)
    rescaled_gaps = np.diff(np.concatenate(([0.0], _ramp_cumulative(at, start, end, duration))))
    assert stats.kstest(rescaled_gaps, "expon").pvalue > FIT


def test_a_ramp_is_not_a_flat_poisson_process_at_its_mean_rate():
    at = times(arrival(process="ramp", rate=2, end_rate=40), 120)
    assert stats.kstest(np.diff(np.concatenate(([0.0], at))), "expon", args=(0, 1 / 21)).pvalue < 1e-4


def test_steps_send_each_step_at_its_rate_and_the_last_rate_holds_until_the_end():
    spec = arrival(process="steps", steps=[{"duration": "60s", "rate": 5}, {"duration": "30s", "rate": 0},
                                           {"duration": "60s", "rate": 20}])
    at = times(spec, 200)  # the last step (20/s) runs on for 50 s past its own 60
    windows = [(0, 60, 5), (60, 90, 0), (90, 200, 20)]
    for begin, end, rate in windows:
        inside = at[(at >= begin) & (at < end)]
        expected = rate * (end - begin)
        assert abs(inside.size - expected) <= 4 * np.sqrt(max(expected, 1)), (begin, end)
        if rate:  # Poisson within: exponential gaps at the step's rate
            gaps = np.diff(np.concatenate(([float(begin)], inside)))
            assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > FIT
    assert at[(at >= 60) & (at < 90)].size == 0


def test_steps_longer_than_the_run_are_cut_at_its_duration():
    at = times(arrival(process="steps", steps=[{"duration": 10, "rate": 10}, {"duration": 10, "rate": 10}]), 5)
    assert at.size > 0 and at.max() < 5


def test_a_trace_replays_its_timestamps_and_token_counts_exactly(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t.csv").write_text(
        "timestamp,input_tokens,output_tokens\n0,10,5\n0.25,11,\n1.5,12,7\n9.75,13,8\n12,14,9\n")
    spec = arrival(process="trace", trace="traces/t.csv")
    assert schedule(spec, 10, None, tmp_path) == [
        Arrival(0, 0.0, 10, 5), Arrival(1, 0.25, 11, None), Arrival(2, 1.5, 12, 7), Arrival(3, 9.75, 13, 8)]
    faster = arrival(process="trace", trace="traces/t.csv", time_scale=2.0, trace_format="enova")
    assert [a.at for a in schedule(faster, 10, None, tmp_path)] == [0.0, 0.125, 0.75, 4.875, 6.0]


PROCESSES = [
    {"process": "poisson", "rate": 30},
    {"process": "gamma", "rate": 30, "burstiness": 0.3},
    {"process": "constant", "rate": 30},
    {"process": "normal", "rate": 30, "std": 5},
    {"process": "ramp", "rate": 0, "end_rate": 60},
    {"process": "steps", "steps": [{"duration": 3, "rate": 60}, {"duration": 3, "rate": 1}]},
]


@pytest.mark.parametrize("fields", PROCESSES, ids=lambda f: f["process"])
def test_a_schedule_is_sorted_numbered_from_zero_and_within_the_duration(fields):
    arrivals = schedule(arrival(**fields), 9.5, 7, HERE)
    assert [a.index for a in arrivals] == list(range(len(arrivals)))
    at = [a.at for a in arrivals]
    assert at == sorted(at) and at[0] >= 0 and at[-1] < 9.5
    assert all(a.input_tokens is None and a.output_tokens is None for a in arrivals)


@pytest.mark.parametrize("fields", PROCESSES, ids=lambda f: f["process"])
def test_the_same_seed_gives_the_same_schedule_and_another_seed_another(fields):
    spec = arrival(**fields)
    assert schedule(spec, 10, 42, HERE) == schedule(spec, 10, 42, HERE)
    if fields["process"] != "constant":
        assert schedule(spec, 10, 42, HERE) != schedule(spec, 10, 43, HERE)


def test_without_a_seed_the_caller_can_resolve_one_first_and_replay_it():
    seed = resolve_seed(None)
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert resolve_seed(5) == 5
    spec = arrival(process="poisson", rate=50)
    assert schedule(spec, 5, seed, HERE) == schedule(spec, 5, seed, HERE)
    assert schedule(spec, 5, None, HERE) != schedule(spec, 5, None, HERE)  # two fresh seeds


def test_a_thousand_requests_a_second_for_a_minute_is_one_vectorised_draw():
    arrivals = schedule(arrival(process="poisson", rate=1000), 60, 1, HERE)
    assert abs(len(arrivals) - 60_000) < 4 * np.sqrt(60_000)
    assert arrivals[-1].at < 60
