"""Latency statistics of a measured window, and the result of one phase (a workload at one
concurrency level).

Latencies are in milliseconds as the client sees them (request sent to answer read); throughput in
requests per second of the window; CPU in percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from shoprec.bench.workloads import Workload


def percentile(sorted_ms: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile: the smallest observed value with at least ``p``
    percent of the observations at or below it (no interpolation; see e.g. NIST's
    Engineering Statistics Handbook, "percentiles", and HdrHistogram's reporting).

    Args:
        sorted_ms: observations, ascending.
        p: in (0, 100].

    Raises:
        ValueError: no observations, or ``p`` outside (0, 100].
    """
    if not sorted_ms:
        raise ValueError("percentile of no observations")
    if not 0 < p <= 100:
        raise ValueError(f"p must be in (0, 100], got {p}")
    rank = math.ceil(p / 100 * len(sorted_ms))
    return float(sorted_ms[rank - 1])


@dataclass(frozen=True)
class LatencySummary:
    """Requests answered in a measured window and the latency of the successful ones (ms).

    ``throughput_rps`` counts every answered request (failures included) per second of the
    window; latency fields are None when no request succeeded.
    """

    requests: int
    failures: int
    seconds: float
    throughput_rps: float
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def summarize(latencies_ms: Sequence[float], failures: int, seconds: float) -> LatencySummary:
    """:class:`LatencySummary` of the successful requests' latencies and the failure count.

    Raises:
        ValueError: ``seconds <= 0`` or ``failures < 0``.
    """
    if seconds <= 0 or failures < 0:
        raise ValueError(f"need seconds > 0 and failures >= 0, got {seconds}, {failures}")
    ordered = sorted(latencies_ms)
    requests = len(ordered) + failures
    stats: dict[str, float | None] = dict.fromkeys(("mean", "p50", "p95", "p99", "max"))
    if ordered:
        stats = {
            "mean": sum(ordered) / len(ordered),
            "p50": percentile(ordered, 50),
            "p95": percentile(ordered, 95),
            "p99": percentile(ordered, 99),
            "max": ordered[-1],
        }
    return LatencySummary(
        requests=requests,
        failures=failures,
        seconds=seconds,
        throughput_rps=requests / seconds,
        mean_ms=stats["mean"],
        p50_ms=stats["p50"],
        p95_ms=stats["p95"],
        p99_ms=stats["p99"],
        max_ms=stats["max"],
    )


@dataclass(frozen=True)
class PhaseResult:
    """One workload at one concurrency level.

    Attributes:
        loadgen_cpu_pct: CPU of the load generator over the window, % of one core.
        machine_cpu_pct: busy CPU of the whole machine over the window, % of all cores
            (None where ``/proc/stat`` is missing).
        errors: the most frequent failure messages and their counts.
    """

    workload: Workload
    users: int
    summary: LatencySummary
    loadgen_cpu_pct: float
    machine_cpu_pct: float | None
    errors: dict[str, int] = field(default_factory=dict)
