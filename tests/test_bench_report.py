"""Tests of shoprec.bench.targets and shoprec.bench.report: target checks, the report's
Markdown tables and the JSON of a result."""

from __future__ import annotations

import json

from shoprec.bench.breakdown import Breakdown, ModelTime, StageTime
from shoprec.bench.report import BenchResult, Section, render_markdown, report_sections, to_json
from shoprec.bench.stats import PhaseResult, summarize
from shoprec.bench.targets import TARGETS, check_targets
from shoprec.bench.workloads import Workload

# ---- targets --------------------------------------------------------------------------------


def _phase(
    workload: Workload, users: int, latencies: list[float], failures: int = 0, seconds: float = 2.0
) -> PhaseResult:
    return PhaseResult(workload, users, summarize(latencies, failures, seconds), 50.0, 80.0)


def test_check_targets_pass_at_the_limit_and_miss_above_or_on_failures() -> None:
    phases = [
        _phase(Workload.GATEWAY_RECOMMEND, 1, [15.0] * 99 + [50.0]),  # p50 15, p99 15
        _phase(Workload.GATEWAY_RECOMMEND, 16, [15.01] * 98 + [60.0] * 2),  # p50 15.01, p99 60
        _phase(Workload.GATEWAY_SIMILAR, 1, [1.0], failures=1),
        _phase(Workload.GATEWAY_SIMILAR, 4, [], failures=3),
        _phase(Workload.TRITON_SIMILAR, 1, [100.0]),  # no target
    ]
    verdicts = [(c.target, c.users, c.measured_ms, c.verdict) for c in check_targets(phases)]
    assert verdicts == [
        ("gateway personalised p50 <= 15 ms", 1, 15.0, "PASS"),
        ("gateway personalised p50 <= 15 ms", 16, 15.01, "MISS"),
        ("gateway personalised p99 <= 50 ms", 1, 15.0, "PASS"),
        ("gateway personalised p99 <= 50 ms", 16, 60.0, "MISS"),
        ("gateway similar-items p50 <= 5 ms", 1, 1.0, "MISS"),
        ("gateway similar-items p50 <= 5 ms", 4, None, "n/a"),
    ]


def test_targets_are_the_issues() -> None:
    assert [(t.workload, t.stat, t.limit_ms) for t in TARGETS] == [
        (Workload.GATEWAY_RECOMMEND, "p50_ms", 15.0),
        (Workload.GATEWAY_RECOMMEND, "p99_ms", 50.0),
        (Workload.GATEWAY_SIMILAR, "p50_ms", 5.0),
    ]


# ---- report ---------------------------------------------------------------------------------


def _tiny_result() -> BenchResult:
    phases = [
        _phase(Workload.GATEWAY_RECOMMEND, 1, [10.0, 12.0, 14.0, 40.0], seconds=2.0),
        _phase(Workload.GATEWAY_SIMILAR, 1, [4.0, 6.0], failures=1, seconds=1.0),
    ]
    breakdowns = [
        Breakdown(
            Workload.GATEWAY_RECOMMEND,
            1,
            client_mean_ms=19.0,
            server_mean_ms=18.0,
            stages=[StageTime("feature_fetch", 1.0, 2.0), StageTime("triton_recommend", 1.0, 12.5)],
            overhead_ms=4.5,
            models=[ModelTime("recommend", 4, 4, 12.0, 0.1, 0.05, 11.5, 0.02)],
        )
    ]
    return BenchResult({"dataset": "toy", "cores": 2}, phases, breakdowns, check_targets(phases))


def test_render_markdown_of_a_section() -> None:
    section = Section("Title", ("name", "ms", "note"), (("a", "1.50", ""), ("b", "-", "x")))
    assert render_markdown([section, Section("empty", ("c",), ())], "## H").splitlines() == [
        "## H",
        "",
        "### Title",
        "",
        "| name | ms | note |",
        "|---|---:|---|",
        "| a | 1.50 |  |",
        "| b | - | x |",
    ]


def test_report_markdown_of_a_tiny_result() -> None:
    assert render_markdown(report_sections(_tiny_result())).splitlines() == [
        "### Setup",
        "",
        "| item | value |",
        "|---|---|",
        "| dataset | toy |",
        "| cores | 2 |",
        "",
        "### Latency and throughput (client side, closed loop)",
        "",
        "| endpoint | users | requests | failures | req/s | p50 ms | p95 ms | p99 ms "
        "| load generator CPU % | machine CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| gateway personalised | 1 | 4 | 0 | 2.0 | 12.00 | 40.00 | 40.00 | 50 | 80 |",
        "| gateway similar-items | 1 | 3 | 1 | 3.0 | 4.00 | 6.00 | 6.00 | 50 | 80 |",
        "",
        "### Gateway stages at 1 user(s), mean ms per request",
        "",
        "| endpoint | part | calls/request | ms |",
        "|---|---|---:|---:|",
        "| gateway personalised | client mean latency |  | 19.00 |",
        "| gateway personalised | stage feature_fetch | 1.00 | 2.00 |",
        "| gateway personalised | stage triton_recommend | 1.00 | 12.50 |",
        "| gateway personalised | HTTP + gateway overhead |  | 4.50 |",
        "| gateway personalised | of which in the gateway app (routing, validation, JSON) |  "
        "| 3.50 |",
        "| gateway personalised | of which HTTP, uvicorn and the client |  | 1.00 |",
        "",
        "### Triton models at 1 user(s), mean ms per request",
        "",
        "| workload | model | requests | batches | queue | compute input | compute infer | "
        "compute output | total in Triton |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        "| gateway personalised | recommend | 4 | 4 | 0.100 | 0.050 | 11.500 | 0.020 | 12.000 |",
        "",
        "### Targets",
        "",
        "| target | users | measured ms | result |",
        "|---|---:|---:|---|",
        "| gateway personalised p50 <= 15 ms | 1 | 12.00 | PASS |",
        "| gateway personalised p99 <= 50 ms | 1 | 40.00 | PASS |",
        "| gateway similar-items p50 <= 5 ms | 1 | 4.00 | MISS |",
        "",
        "### Versus the reference system (mean at 1 user(s))",
        "",
        "| endpoint | reference ms | measured ms | speed-up |",
        "|---|---:|---:|---:|",
        "| gateway personalised | 1400 | 19.00 | 74x |",
        "| gateway similar-items | 300 | 5.00 | 60x |",
    ]


def test_to_json_round_trip() -> None:
    data = json.loads(to_json(_tiny_result()))
    assert data["phases"][1]["workload"] == "gateway_similar"
    assert data["phases"][1]["summary"]["p95_ms"] == 6.0
    assert data["targets"][2] == {
        "target": "gateway similar-items p50 <= 5 ms",
        "users": 1,
        "measured_ms": 4.0,
        "limit_ms": 5.0,
        "passed": False,
    }
