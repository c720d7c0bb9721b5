"""summarize() on hand-made runs whose figures are known by arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enova.inject.model import RequestResult, RunResult
from enova.inject.results import render_summary, summarize


def ok_request(index: int, sent: float, ttft: float, gaps: list[float], output_tokens: int,
               prompt_tokens: int = 10, scheduled: float | None = None) -> RequestResult:
    return RequestResult(
        index=index, scheduled=sent if scheduled is None else scheduled, sent=sent, ttft=ttft, itl=gaps,
        e2e=ttft + sum(gaps), prompt_tokens=prompt_tokens, output_tokens=output_tokens, status=200, ok=True,
    )


def run_of(requests: list[RequestResult], duration: float = 10.0, slo: dict | None = None,
           partial: bool = False) -> RunResult:
    return RunResult(profile={"target": "t"}, target="http://127.0.0.1:9199", model="m", api="completions",
                     seed=1, started_at=0.0, duration=duration, requests=requests, slo=slo, partial=partial,
                     name="case")


def test_percentiles_use_linear_interpolation_like_vllm_bench_serve():
    ttfts = [0.010, 0.020, 0.030, 0.040, 0.100]
    run = run_of([ok_request(i, float(i), t, [0.005], 2) for i, t in enumerate(ttfts)])

    s = summarize(run)

    assert s.ttft_ms.p50 == pytest.approx(30.0)
    assert s.ttft_ms.p90 == pytest.approx(76.0)        # 40 + 0.6 * (100 - 40)
    assert s.ttft_ms.p99 == pytest.approx(97.6)
    assert s.ttft_ms.mean == pytest.approx(40.0)
    assert s.ttft_ms.p95 == pytest.approx(float(np.percentile(np.array(ttfts) * 1000, 95)))


def test_tpot_is_e2e_minus_ttft_over_output_tokens_minus_one_and_itl_pools_every_gap():
    a = ok_request(0, 0.0, 0.100, [0.010, 0.030], output_tokens=3)     # TPOT (0.14-0.1)/2 = 20 ms
    b = ok_request(1, 1.0, 0.200, [0.040] * 4, output_tokens=9)        # 4 events bundle 8 tokens: TPOT 0.16/8 = 20 ms
    single = ok_request(2, 2.0, 0.050, [], output_tokens=1)            # no TPOT
    s = summarize(run_of([a, b, single]))

    assert s.tpot_ms.count == 2
    assert s.tpot_ms.mean == pytest.approx(20.0)
    assert s.itl_ms.count == 6
    assert s.itl_ms.mean == pytest.approx((10 + 30 + 40 * 4) / 6)
    assert s.e2e_ms.p50 == pytest.approx(140.0)


def test_counts_rates_and_token_throughput_over_the_span_from_first_send_to_last_finish():
    requests = [ok_request(i, i * 1.0, 0.5, [0.25, 0.25], 3, prompt_tokens=7) for i in range(8)]  # 8 ok, e2e 1 s
    requests.append(RequestResult(8, scheduled=8.0, sent=8.0, e2e=0.5, status=503, error="overloaded"))
    requests.append(RequestResult(9, scheduled=9.0))                   # never sent
    s = summarize(run_of(requests, duration=10.0))

    assert (s.scheduled, s.sent, s.ok, s.failed, s.not_sent) == (10, 9, 8, 1, 1)
    assert s.target_rate == pytest.approx(1.0)
    assert s.achieved_rate == pytest.approx(0.9)
    assert s.completed_rate == pytest.approx(0.8)
    assert s.span == pytest.approx(8.5)                                 # 0 -> 8.0 + 0.5
    assert s.request_throughput == pytest.approx(8 / 8.5)
    assert s.output_tokens == 24 and s.input_tokens == 56
    assert s.output_throughput == pytest.approx(24 / 8.5)
    assert s.error_rate == pytest.approx(1 / 9)
    assert s.errors == {"overloaded": 1}


def test_lateness_is_actual_minus_scheduled_send_in_ms():
    lates = [0.0001, 0.0002, 0.0003, 0.0004, 0.0100]
    requests = [ok_request(i, i + late, 0.1, [0.01], 2, scheduled=float(i)) for i, late in enumerate(lates)]
    s = summarize(run_of(requests))

    assert s.lateness_ms.p50 == pytest.approx(0.3)
    assert s.lateness_ms.p99 == pytest.approx(float(np.percentile(np.array(lates) * 1000, 99)))


SLO = {"ttft_p95_ms": 200.0, "itl_p95_ms": 50.0, "e2e_p99_ms": 1000.0, "max_error_rate": 0.1}


def slo_run() -> RunResult:
    return run_of([
        ok_request(0, 0.0, 0.100, [0.020] * 9, 10),                 # good
        ok_request(1, 1.0, 0.150, [0.030] * 9, 10),                 # good
        ok_request(2, 2.0, 0.300, [0.020] * 9, 10),                 # TTFT over 200 ms
        ok_request(3, 3.0, 0.100, [0.080] * 9, 10),                 # TPOT 80 ms over 50
        RequestResult(4, scheduled=4.0, sent=4.0, ttft=0.05, e2e=0.06, status=500, error="engine died"),
    ], duration=5.0, slo=SLO)


def test_attainment_and_goodput_count_a_failed_request_against_the_slo():
    s = summarize(slo_run())

    assert s.good == 2
    assert s.attainment == pytest.approx(2 / 5)                  # the failed request is in the denominator
    assert s.goodput == pytest.approx(2 / 5.0)                   # good requests per second of the schedule
    assert s.error_rate == pytest.approx(1 / 5)


def test_run_objectives_are_judged_on_percentiles_with_the_measured_value():
    s = summarize(slo_run())
    by_name = {o.name: o for o in s.objectives}

    assert by_name["ttft_p95_ms"].measured == pytest.approx(float(np.percentile([100, 150, 300, 100], 95)))
    assert not by_name["ttft_p95_ms"].met
    assert by_name["itl_p95_ms"].measured == pytest.approx(80.0) and not by_name["itl_p95_ms"].met
    assert by_name["e2e_p99_ms"].met
    assert by_name["max_error_rate"].measured == pytest.approx(0.2) and not by_name["max_error_rate"].met
    assert s.slo_met is False


def test_an_slo_given_to_summarize_replaces_the_runs_own():
    s = summarize(slo_run(), slo={"e2e_p99_ms": 5000.0})

    assert [o.name for o in s.objectives] == ["e2e_p99_ms"]
    assert s.good == 4 and s.slo_met is True


def test_a_run_without_slo_has_no_attainment():
    run = slo_run()
    run.slo = None
    s = summarize(run)

    assert s.good is None and s.attainment is None and s.goodput is None and s.slo_met is None


def test_requests_left_unsent_count_against_attainment_only_in_a_complete_run():
    requests = [ok_request(0, 0.0, 0.1, [0.01], 2), RequestResult(1, scheduled=1.0)]

    complete = summarize(run_of(requests, slo={"ttft_p95_ms": 500.0}))
    partial = summarize(run_of(requests, slo={"ttft_p95_ms": 500.0}, partial=True))

    assert complete.attainment == pytest.approx(0.5)
    assert partial.attainment == pytest.approx(1.0)


def test_a_run_where_every_request_failed_misses_its_latency_objectives():
    requests = [RequestResult(i, scheduled=float(i), sent=float(i), status=None, error="connection refused")
                for i in range(3)]
    s = summarize(run_of(requests, slo={"ttft_p95_ms": 500.0}))

    assert s.ttft_ms.p95 is None
    assert s.objectives[0].measured is None and not s.objectives[0].met
    assert s.attainment == 0.0 and s.errors == {"connection refused": 3}


def test_the_summary_table_shows_counts_percentiles_and_verdicts_as_plain_text():
    text = render_summary(summarize(slo_run()))

    assert "5 scheduled, 5 sent, 4 ok, 1 failed" in text
    assert "TTFT" in text and "TPOT" in text and "ITL" in text and "E2E" in text
    assert "SLO: MISSED; attainment 40.0%" in text
    assert "MISS TTFT p95" in text and "ok   E2E p99" in text
    assert "\x1b[" not in text


def test_the_summary_table_prints_error_text_as_written():
    run = run_of([RequestResult(0, scheduled=0.0, sent=0.0, status=400, error="bad [bold]field[/bold]")])
    assert "bad [bold]field[/bold]" in render_summary(summarize(run))


def test_a_partial_run_is_marked_in_the_summary():
    run = slo_run()
    run.partial = True
    assert "PARTIAL" in render_summary(summarize(run))


def test_the_summary_is_json_and_survives_a_result_file_round_trip():
    run = slo_run()
    again = RunResult.from_dict(json.loads(json.dumps(run.to_dict())))
    data = json.loads(json.dumps(summarize(again).to_dict()))

    assert data == json.loads(json.dumps(summarize(run).to_dict()))
    assert data["slo_met"] is False and data["objectives"][0]["name"] == "ttft_p95_ms"
