"""Tests of shoprec.bench.stats and the CPU arithmetic of shoprec.bench.machine: nearest-rank
percentiles, the summary of a measured window, busy CPU between two readings."""

from __future__ import annotations

import pytest

from shoprec.bench.machine import busy_percent
from shoprec.bench.stats import percentile, summarize

# ---- latency statistics ---------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == 20.0  # rank ceil(2.0) = 2
    assert percentile([10.0, 20.0, 30.0, 40.0], 51) == 30.0  # rank ceil(2.04) = 3
    assert percentile([7.0], 1) == 7.0


@pytest.mark.parametrize(
    ("values", "p", "message"),
    [
        ([], 50, "no observations"),
        ([1.0], 0, r"\(0, 100\], got 0"),
        ([1.0], 100.5, r"\(0, 100\], got 100.5"),
    ],
)
def test_percentile_rejects(values: list[float], p: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        percentile(values, p)


def test_summarize_counts_failures_in_throughput_not_in_latency() -> None:
    summary = summarize([5.0, 1.0, 3.0, 2.0, 4.0], failures=1, seconds=2.0)
    assert (summary.requests, summary.failures, summary.throughput_rps) == (6, 1, 3.0)
    assert (summary.mean_ms, summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.max_ms) == (
        3.0,
        3.0,
        5.0,
        5.0,
        5.0,
    )


def test_summarize_without_success() -> None:
    summary = summarize([], failures=4, seconds=4.0)
    assert (summary.requests, summary.throughput_rps, summary.p50_ms, summary.mean_ms) == (
        4,
        1.0,
        None,
        None,
    )
    with pytest.raises(ValueError, match="seconds > 0"):
        summarize([1.0], failures=0, seconds=0.0)


# ---- machine CPU over a window ---------------------------------------------------------------


def test_busy_percent_of_two_cpu_readings() -> None:
    assert busy_percent((100.0, 400.0), (130.0, 500.0)) == 30.0  # 30 of 100 jiffies busy
    assert busy_percent((0.0, 0.0), (50.0, 50.0)) == 100.0
    assert busy_percent(None, (1.0, 2.0)) is None  # /proc/stat missing
    assert busy_percent((1.0, 2.0), None) is None
    assert busy_percent((1.0, 2.0), (1.0, 2.0)) is None  # no time passed
