"""compare_runs on two runs whose differences are known."""

from __future__ import annotations

import pytest

from enova.inject.compare import compare_runs, render_comparison
from enova.inject.model import RequestResult, RunResult

SLO = {"ttft_p95_ms": 150.0}


def run_with(ttft: float, failures: int, rate: float = 2.0, seed: int | None = 1, slo: dict | None = SLO,
             partial: bool = False) -> RunResult:
    """20 s at `rate`/s; every request has TTFT `ttft` and 8 gaps of 10 ms, except `failures` that fail."""
    count = int(20 * rate)
    requests = []
    for i in range(count):
        at = i / rate
        if i < failures:
            requests.append(RequestResult(i, at, sent=at, e2e=0.01, status=500, error="engine error"))
        else:
            requests.append(RequestResult(i, at, sent=at + 0.0005, ttft=ttft, itl=[0.01] * 8, e2e=ttft + 0.08,
                                          prompt_tokens=16, output_tokens=9, status=200, ok=True))
    return RunResult(profile={"target": "smollm2", "arrival": {"process": "constant", "rate": rate}},
                     target="http://127.0.0.1:9199", model="smollm2", api="completions", seed=seed,
                     started_at=1764583200.0, duration=20.0, requests=requests, slo=slo, partial=partial,
                     name="chat-constant")


def test_lower_latency_and_fewer_failures_are_better():
    c = compare_runs(run_with(ttft=0.200, failures=4), run_with(ttft=0.100, failures=0))

    ttft = c.row("ttft_ms.p95")
    assert (ttft.a, ttft.b) == (pytest.approx(200.0), pytest.approx(100.0))
    assert ttft.diff == pytest.approx(-100.0) and ttft.ratio == pytest.approx(0.5)
    assert ttft.verdict == "better"
    assert c.row("failed").verdict == "better"
    assert c.row("error_rate").verdict == "better"
    assert c.row("attainment").a == pytest.approx(0.0) and c.row("attainment").b == pytest.approx(100.0)
    assert c.row("attainment").verdict == "better" and c.row("goodput").verdict == "better"
    assert c.row("tpot_ms.mean").verdict == "same"


def test_the_same_change_read_the_other_way_is_worse():
    c = compare_runs(run_with(ttft=0.100, failures=0), run_with(ttft=0.200, failures=4))

    assert c.row("ttft_ms.p95").verdict == "worse"
    assert c.row("goodput").verdict == "worse"
    assert c.row("request_throughput").verdict == "worse"
    assert {r.key for r in c.worse} >= {"ttft_ms.p95", "e2e_ms.p99", "failed", "attainment", "goodput"}


def test_descriptive_figures_get_no_verdict_and_a_zero_base_has_no_ratio():
    c = compare_runs(run_with(ttft=0.1, failures=0), run_with(ttft=0.1, failures=2))

    assert c.row("scheduled").verdict == "" and c.row("target_rate").verdict == ""
    assert c.row("failed").ratio is None and c.row("failed").diff == 2


def test_identical_runs_differ_in_nothing_and_carry_no_notes():
    c = compare_runs(run_with(ttft=0.1, failures=1), run_with(ttft=0.1, failures=1))

    assert not c.better and not c.worse
    assert c.notes == ()


def test_notes_say_when_profiles_seeds_targets_and_slos_differ():
    b = run_with(ttft=0.1, failures=0, rate=4.0, seed=2, slo={"ttft_p95_ms": 300.0}, partial=True)
    b.target = "http://10.0.0.2:9199"
    c = compare_runs(run_with(ttft=0.1, failures=0), b)

    text = "\n".join(c.notes)
    assert "the profiles differ: arrival.rate: 2.0 -> 4.0" in text
    assert "the seeds differ: 1 -> 2" in text
    assert "the targets differ: http://127.0.0.1:9199 -> http://10.0.0.2:9199" in text
    assert "each run is judged against its own SLO" in text
    assert "B is partial" in text


def test_one_slo_given_judges_both_runs_and_removes_that_note():
    a = run_with(ttft=0.1, failures=0, slo=None)
    b = run_with(ttft=0.2, failures=0, slo={"ttft_p95_ms": 150.0})
    c = compare_runs(a, b, slo={"ttft_p95_ms": 150.0})

    assert c.row("attainment").a == pytest.approx(100.0) and c.row("attainment").b == pytest.approx(0.0)
    assert not any("SLO" in note for note in c.notes)


def test_the_rendered_comparison_lists_each_figure_with_its_verdict():
    text = render_comparison(compare_runs(run_with(ttft=0.200, failures=4), run_with(ttft=0.100, failures=0)))

    line = next(line for line in text.splitlines() if line.startswith("TTFT p95"))
    assert line.split() == ["TTFT", "p95", "ms", "200.00", "100.00", "-100.00", "0.500", "better"]
    assert "A: chat-constant (2025-12-01 10:00:00 UTC)" in text
    assert "B vs A:" in text and "better" in text
