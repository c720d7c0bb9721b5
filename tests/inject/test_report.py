"""The HTML report: self-contained, partial runs marked, and drawn by a real browser (chromium)."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from enova.errors import UsageError
from enova.inject.model import RequestResult, RunResult
from enova.inject.report import attainment_series, nice_ticks, per_second, render_report, write_report
from enova.inject.results import summarize

SLO = {"ttft_p95_ms": 100.0, "itl_p95_ms": 40.0, "e2e_p99_ms": 1500.0, "max_error_rate": 0.05}


def run_of_minute(partial: bool = False, slo: dict | None = SLO, error: str = "upstream overloaded") -> RunResult:
    """A 60 s Poisson run at 5/s whose latency grows with time; 3% of requests fail."""
    rng = random.Random(7)
    requests: list[RequestResult] = []
    t = 0.0
    while (t := t + rng.expovariate(5.0)) < 60.0:
        index = len(requests)
        if partial and t > 36.0:
            requests.append(RequestResult(index, t))
            continue
        sent = t + abs(rng.gauss(0.0003, 0.0002))
        if rng.random() < 0.03:
            requests.append(RequestResult(index, t, sent=sent, e2e=0.02, status=503, error=error))
            continue
        load = 1 + 2 * t / 60.0
        ttft = rng.lognormvariate(-3.0, 0.5) * load
        gaps = [rng.lognormvariate(-4.0, 0.3) * load for _ in range(31)]
        requests.append(RequestResult(index, t, sent=sent, ttft=ttft, itl=gaps, e2e=ttft + sum(gaps),
                                      prompt_tokens=64, output_tokens=32, status=200, ok=True))
    return RunResult(profile={"target": "smollm2", "arrival": {"process": "poisson", "rate": 5}},
                     target="http://127.0.0.1:9199", model="smollm2", api="completions", seed=1,
                     started_at=1764583200.0, duration=60.0, requests=requests, slo=slo, partial=partial,
                     versions={"enova": "0.1.0"}, name="chat-poisson")


def test_the_report_fetches_nothing_from_outside_the_file(tmp_path):
    page = write_report(run_of_minute(), tmp_path / "run.html").read_text()

    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page


def test_the_report_has_five_plots_with_labelled_axes():
    page = render_report(run_of_minute(), summarize(run_of_minute()))

    assert page.count("<svg") == 5
    for label in ("send time (s)", "latency (ms)", "TTFT (ms)", "ITL (ms)", "requests per second",
                  "time since start (s)", "requests meeting the SLO (%)", "SLO p95 100", "p99 "):
        assert label in page


def test_a_run_without_slo_has_no_attainment_plot_and_says_so():
    run = run_of_minute(slo=None)
    page = render_report(run, summarize(run))

    assert page.count("<svg") == 4
    assert "No SLO given" in page


def test_a_partial_run_is_marked_in_the_title_and_a_banner():
    run = run_of_minute(partial=True)
    s = summarize(run)
    page = render_report(run, s)

    assert "<title>enova inject: chat-poisson (partial)</title>" in page
    assert f"PARTIAL RUN: stopped before the schedule ended. {s.sent} of {s.scheduled} scheduled" in page


def test_error_text_from_a_server_is_shown_escaped():
    page = render_report(run := run_of_minute(error="<script>alert(1)</script>"), summarize(run))

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page


def test_a_report_that_cannot_be_written_names_its_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot write the report to .*a-file/run.html"):
        write_report(run_of_minute(), blocker / "run.html")


def test_ticks_are_round_numbers_covering_the_range():
    assert nice_ticks(0, 2150) == [0, 500, 1000, 1500, 2000, 2500]
    assert nice_ticks(0, 60, 8) == [0, 10, 20, 30, 40, 50, 60]
    assert nice_ticks(0, 0.9) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_per_second_counts_and_attainment_windows_follow_the_scheduled_times():
    assert per_second([0.1, 0.9, 1.0, 2.5], 3.0).tolist() == [2, 1, 1]

    good = RequestResult(0, 1.0, sent=1.0, ttft=0.05, e2e=0.1, output_tokens=1, ok=True)
    slow = RequestResult(1, 2.0, sent=2.0, ttft=0.5, e2e=0.6, output_tokens=1, ok=True)
    failed = RequestResult(2, 6.0, sent=6.0, status=500, error="x")
    run = RunResult(profile={}, target="t", model="m", api="chat", seed=1, started_at=0.0, duration=15.0,
                    requests=[good, slow, failed])
    assert attainment_series(run, {"ttft_p95_ms": 100.0}, 5.0) == [(0.0, 0.5), (5.0, 0.0), (10.0, None)]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium is not installed (apt-get install -y chromium provides it)")
    return found


def _screenshot(html: Path, png: Path, profile: Path) -> None:
    done = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2000", html.as_uri()],
        capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _share(colors: list[tuple[int, tuple[int, int, int]]], test) -> float:
    total = sum(count for count, _ in colors)
    return sum(count for count, rgb in colors if test(*rgb)) / total


def test_a_real_browser_draws_the_report_with_its_plots(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    html = write_report(run_of_minute(), tmp_path / "run.html")
    png = tmp_path / "run.png"

    _screenshot(html, png, tmp_path / "chromium-profile")

    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 2000)
    colors = image.getcolors(1 << 24)
    assert _share(colors, lambda r, g, b: (r, g, b) != (255, 255, 255)) > 0.08   # an empty report: 0.05
    # The plots' own colours reach the screen (points are half transparent, so by hue, not exact value):
    # orange E2E points, blue TTFT points and histogram bars, green attainment bars.
    assert _share(colors, lambda r, g, b: r > 200 and r - b > 80 and r > g > b) > 0.0005, "no orange: no E2E points"
    assert _share(colors, lambda r, g, b: b > r + 60 and b > g + 20) > 0.01, "no blue: no TTFT/ITL plots"
    assert _share(colors, lambda r, g, b: g > r + 30 and g > b + 10) > 0.005, "no green: no attainment bars"
