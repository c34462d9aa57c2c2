"""Tests for the pure parts of shoprec.bench: metric parsing and deltas, latency statistics,
the report's Markdown, target checks and input validation. No server runs here; the load
generator itself is exercised by ``shoprec bench`` against a real stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shoprec.bench import (
    GATEWAY_REQUEST_SECONDS,
    GATEWAY_ROUTES,
    GATEWAY_STAGE_SECONDS,
    STAGE_ORDER,
    TARGETS,
    BenchConfig,
    BenchResult,
    Breakdown,
    ModelTime,
    PhaseResult,
    Section,
    StageTime,
    Workload,
    breakdown,
    check_loopback,
    check_targets,
    draw_samples,
    gateway_stages,
    metric_delta,
    metric_sum,
    parse_prometheus,
    parse_users,
    percentile,
    render_markdown,
    report_sections,
    summarize,
    to_json,
    triton_models,
)

RECOMMEND = GATEWAY_ROUTES[Workload.GATEWAY_RECOMMEND]

GATEWAY_BEFORE = f"""\
# HELP {GATEWAY_REQUEST_SECONDS} Time to answer an HTTP request, by route template.
# TYPE {GATEWAY_REQUEST_SECONDS} histogram
{GATEWAY_REQUEST_SECONDS}_bucket{{endpoint="{RECOMMEND}",le="0.015"}} 3.0
{GATEWAY_REQUEST_SECONDS}_count{{endpoint="{RECOMMEND}"}} 10.0
{GATEWAY_REQUEST_SECONDS}_sum{{endpoint="{RECOMMEND}"}} 0.5
{GATEWAY_REQUEST_SECONDS}_count{{endpoint="/metrics"}} 1.0
{GATEWAY_REQUEST_SECONDS}_sum{{endpoint="/metrics"}} 0.001
{GATEWAY_STAGE_SECONDS}_count{{stage="triton_recommend"}} 9.0
{GATEWAY_STAGE_SECONDS}_sum{{stage="triton_recommend"}} 0.09
{GATEWAY_STAGE_SECONDS}_count{{stage="feature_fetch"}} 10.0
{GATEWAY_STAGE_SECONDS}_sum{{stage="feature_fetch"}} 0.02
{GATEWAY_STAGE_SECONDS}_count{{stage="article_display"}} 10.0
{GATEWAY_STAGE_SECONDS}_sum{{stage="article_display"}} 0.03
{GATEWAY_STAGE_SECONDS}_count{{stage="triton_similar"}} 0.0
{GATEWAY_STAGE_SECONDS}_sum{{stage="triton_similar"}} 0.0
"""
# 40 more requests: 38 personalised (triton_recommend), 2 cold start (popular).
GATEWAY_AFTER = f"""\
{GATEWAY_REQUEST_SECONDS}_bucket{{endpoint="{RECOMMEND}",le="0.015"}} 40.0
{GATEWAY_REQUEST_SECONDS}_count{{endpoint="{RECOMMEND}"}} 50.0
{GATEWAY_REQUEST_SECONDS}_sum{{endpoint="{RECOMMEND}"}} 0.9
{GATEWAY_REQUEST_SECONDS}_count{{endpoint="/metrics"}} 2.0
{GATEWAY_REQUEST_SECONDS}_sum{{endpoint="/metrics"}} 0.002
{GATEWAY_STAGE_SECONDS}_count{{stage="triton_recommend"}} 47.0
{GATEWAY_STAGE_SECONDS}_sum{{stage="triton_recommend"}} 0.318
{GATEWAY_STAGE_SECONDS}_count{{stage="feature_fetch"}} 50.0
{GATEWAY_STAGE_SECONDS}_sum{{stage="feature_fetch"}} 0.06
{GATEWAY_STAGE_SECONDS}_count{{stage="popular"}} 2.0
{GATEWAY_STAGE_SECONDS}_sum{{stage="popular"}} 0.0004
{GATEWAY_STAGE_SECONDS}_count{{stage="article_display"}} 50.0
{GATEWAY_STAGE_SECONDS}_sum{{stage="article_display"}} 0.07
{GATEWAY_STAGE_SECONDS}_count{{stage="triton_similar"}} 0.0
{GATEWAY_STAGE_SECONDS}_sum{{stage="triton_similar"}} 0.0
"""

# Triton 2.51 writes counters without "_total" and labels model and version.
TRITON_BEFORE = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="recommend",version="1"} 100
nv_inference_request_success{model="ranking",version="1"} 100
nv_inference_request_success{model="similar_items",version="1"} 7
nv_inference_exec_count{model="recommend",version="1"} 100
nv_inference_exec_count{model="ranking",version="1"} 90
nv_inference_request_duration_us{model="recommend",version="1"} 500000
nv_inference_request_duration_us{model="ranking",version="1"} 200000
nv_inference_queue_duration_us{model="recommend",version="1"} 9000
nv_inference_queue_duration_us{model="ranking",version="1"} 3000
nv_inference_compute_input_duration_us{model="recommend",version="1"} 1000
nv_inference_compute_input_duration_us{model="ranking",version="1"} 500
nv_inference_compute_infer_duration_us{model="recommend",version="1"} 480000
nv_inference_compute_infer_duration_us{model="ranking",version="1"} 190000
nv_inference_compute_output_duration_us{model="recommend",version="1"} 2000
nv_inference_compute_output_duration_us{model="ranking",version="1"} 800
nv_cpu_utilization 0.25
"""
# 40 more requests of recommend (and its step ranking), none of similar_items.
TRITON_AFTER = """\
nv_inference_request_success{model="recommend",version="1"} 140
nv_inference_request_success{model="ranking",version="1"} 140
nv_inference_request_success{model="similar_items",version="1"} 7
nv_inference_exec_count{model="recommend",version="1"} 140
nv_inference_exec_count{model="ranking",version="1"} 120
nv_inference_request_duration_us{model="recommend",version="1"} 780000
nv_inference_request_duration_us{model="ranking",version="1"} 300000
nv_inference_queue_duration_us{model="recommend",version="1"} 11000
nv_inference_queue_duration_us{model="ranking",version="1"} 5000
nv_inference_compute_input_duration_us{model="recommend",version="1"} 3000
nv_inference_compute_input_duration_us{model="ranking",version="1"} 1300
nv_inference_compute_infer_duration_us{model="recommend",version="1"} 750000
nv_inference_compute_infer_duration_us{model="ranking",version="1"} 286000
nv_inference_compute_output_duration_us{model="recommend",version="1"} 4000
nv_inference_compute_output_duration_us{model="ranking",version="1"} 2400
nv_cpu_utilization 0.75
"""


# ---- Prometheus text and deltas ------------------------------------------------------------


def test_parse_prometheus_keeps_names_labels_and_values() -> None:
    text = (
        "# HELP x_total help text\n"
        "# TYPE x_total counter\n"
        'x_total{endpoint="/v1/articles/{article_id}/similar",method="GET"} 3.0\n'
        "\n"
        "plain 2.5e-3 1700000000000\n"
        'escaped{b="say \\"hi\\"",a="back\\\\slash\\nnext"} -1\n'
        'h_bucket{le="+Inf"} +Inf\n'
    )
    assert parse_prometheus(text) == {
        ("x_total", (("endpoint", "/v1/articles/{article_id}/similar"), ("method", "GET"))): 3.0,
        ("plain", ()): 0.0025,
        ("escaped", (("a", "back\\slash\nnext"), ("b", 'say "hi"'))): -1.0,
        ("h_bucket", (("le", "+Inf"),)): float("inf"),
    }


def test_parse_prometheus_keeps_counter_names_as_written() -> None:
    samples = parse_prometheus(TRITON_BEFORE)
    assert (
        samples[("nv_inference_request_success", (("model", "recommend"), ("version", "1")))]
        == 100.0
    )
    assert len(samples) == 16


@pytest.mark.parametrize("line", ["not a sample", 'x{a="unclosed} 1', "x{a=1} 2", "x 1 2 3"])
def test_parse_prometheus_names_a_bad_line(line: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"line 2 is not a Prometheus sample: {line!r}")):
        parse_prometheus(f"ok 1\n{line}\n")


def test_metric_delta_counts_new_samples_from_zero_and_drops_vanished_ones() -> None:
    before = {("a", ()): 5.0, ("gone", ()): 1.0}
    after = {("a", ()): 7.5, ("new", (("k", "v"),)): 3.0}
    assert metric_delta(before, after) == {("a", ()): 2.5, ("new", (("k", "v"),)): 3.0}


def test_metric_sum_matches_a_subset_of_labels() -> None:
    delta = metric_delta(parse_prometheus(TRITON_BEFORE), parse_prometheus(TRITON_AFTER))
    assert metric_sum(delta, "nv_inference_request_success") == 80.0
    assert metric_sum(delta, "nv_inference_request_success", model="ranking") == 40.0
    assert metric_sum(delta, "nv_inference_request_success", model="nope") == 0.0


def test_gateway_stages_from_deltas() -> None:
    delta = metric_delta(parse_prometheus(GATEWAY_BEFORE), parse_prometheus(GATEWAY_AFTER))
    server_ms, requests, stages = gateway_stages(delta, RECOMMEND)
    assert requests == 40
    assert server_ms == pytest.approx(400 / 40)  # 0.4 s over 40 requests
    # request order; triton_similar had no call and is left out
    assert [s.stage for s in stages] == [
        "feature_fetch",
        "popular",
        "triton_recommend",
        "article_display",
    ]
    by_stage = {s.stage: s for s in stages}
    assert by_stage["triton_recommend"].calls_per_request == pytest.approx(38 / 40)
    assert by_stage["triton_recommend"].ms_per_request == pytest.approx(228 / 40)
    assert by_stage["feature_fetch"].ms_per_request == pytest.approx(1.0)
    assert by_stage["popular"].calls_per_request == pytest.approx(0.05)
    assert by_stage["popular"].ms_per_request == pytest.approx(0.01)
    assert by_stage["article_display"].ms_per_request == pytest.approx(1.0)


def test_gateway_stages_of_an_empty_window() -> None:
    samples = parse_prometheus(GATEWAY_BEFORE)
    assert gateway_stages(metric_delta(samples, samples), RECOMMEND) == (0.0, 0, [])


def test_triton_models_means_per_request_in_ms() -> None:
    delta = metric_delta(parse_prometheus(TRITON_BEFORE), parse_prometheus(TRITON_AFTER))
    models = triton_models(delta)
    assert [m.model for m in models] == ["ranking", "recommend"]  # similar_items: no request
    ranking, recommend = models
    assert ranking == ModelTime(
        model="ranking",
        requests=40,
        executions=30,
        request_ms=pytest.approx(2.5),
        queue_ms=pytest.approx(0.05),
        compute_input_ms=pytest.approx(0.02),
        compute_infer_ms=pytest.approx(2.4),
        compute_output_ms=pytest.approx(0.04),
    )
    assert recommend.request_ms == pytest.approx(7.0)
    assert recommend.compute_infer_ms == pytest.approx(6.75)


def test_breakdown_overhead_is_client_latency_minus_stages() -> None:
    gateway = metric_delta(parse_prometheus(GATEWAY_BEFORE), parse_prometheus(GATEWAY_AFTER))
    triton = metric_delta(parse_prometheus(TRITON_BEFORE), parse_prometheus(TRITON_AFTER))
    b = breakdown(Workload.GATEWAY_RECOMMEND, 1, 12.0, gateway, triton)
    # stages: 1.0 + 0.01 + 5.7 + 1.0 ms
    assert b.overhead_ms == pytest.approx(12.0 - 7.71)
    assert b.server_mean_ms == pytest.approx(10.0)
    direct = breakdown(Workload.TRITON_RECOMMEND, 1, 7.5, None, triton)
    assert (direct.server_mean_ms, direct.overhead_ms, direct.stages) == (None, None, [])
    assert [m.model for m in direct.models] == ["ranking", "recommend"]


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


# ---- names shared with the gateway ----------------------------------------------------------


def test_metric_names_and_routes_match_the_gateway() -> None:
    from fastapi import FastAPI

    from shoprec.gateway.metrics import GatewayMetrics, Stage
    from shoprec.gateway.routes import api_router
    from shoprec.gateway.settings import Settings

    exposition = GatewayMetrics().exposition().decode()
    assert f"# TYPE {GATEWAY_REQUEST_SECONDS} histogram" in exposition
    assert f'{GATEWAY_STAGE_SECONDS}_count{{stage="feature_fetch"}}' in exposition
    assert sorted(STAGE_ORDER) == sorted(stage.value for stage in Stage)
    app = FastAPI()
    app.include_router(api_router(Settings()))
    assert set(GATEWAY_ROUTES.values()) <= set(app.openapi()["paths"])


# ---- inputs ---------------------------------------------------------------------------------


def test_parse_users() -> None:
    assert parse_users("1,4,16") == (1, 4, 16)
    with pytest.raises(ValueError, match="comma-separated integers, got '1,x'"):
        parse_users("1,x")
    with pytest.raises(ValueError, match=r"1\.\.256 each, got '0,4'"):
        parse_users("0,4")


def test_check_loopback() -> None:
    for url in (
        "http://127.0.0.1:8080",
        "127.0.0.1:8001",
        "http://localhost:8002/metrics",
        "http://[::1]:8080",
        "127.0.0.2:1",
    ):
        assert check_loopback(url) == url
    for url in ("http://10.0.0.1:8080", "example.com:8001", "http://0.0.0.0:80"):
        with pytest.raises(ValueError, match="must be on loopback"):
            check_loopback(url)


def _config(**overrides: Any) -> BenchConfig:
    return BenchConfig(
        name="x", triton_repo=Path("t"), feature_repo=Path("f"), out_dir=Path("o"), **overrides
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"users": ()}, "users must be"),
        ({"users": (1, 257)}, "users must be"),
        ({"seconds": 0}, "seconds must be"),
        ({"seconds": 601}, "seconds must be"),
        ({"unknown_fraction": 1.0}, "unknown_fraction"),
        ({"gateway_url": "http://127.0.0.1:8080"}, "together or none"),
        (
            {
                "gateway_url": "http://10.1.1.1:8080",
                "triton_grpc_url": "127.0.0.1:8001",
                "triton_metrics_url": "http://127.0.0.1:8002/metrics",
            },
            "loopback",
        ),
    ],
)
def test_bench_config_rejects(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_bench_config_external_stack() -> None:
    assert not _config().external
    assert _config(
        gateway_url="http://127.0.0.1:8080",
        triton_grpc_url="127.0.0.1:8001",
        triton_metrics_url="http://127.0.0.1:8002/metrics",
    ).external


def test_draw_samples_is_seeded_and_mixes_unknown_customers() -> None:
    customers = [f"c{i}" for i in range(100)] + ["bench-unknown-0"]
    articles = [f"a{i}" for i in range(10)]
    first = draw_samples(customers, articles, size=19, unknown_fraction=0.05, seed=3)
    assert first == draw_samples(customers, articles, size=19, unknown_fraction=0.05, seed=3)
    assert first != draw_samples(customers, articles, size=19, unknown_fraction=0.05, seed=4)
    assert len(first.customers) == 19 and len(set(first.customers)) == 19
    assert sorted(first.articles) == sorted(articles)  # fewer than size: all of them
    assert first.unknown_customers == ["bench-unknown-1"]  # 1 of 20 requests; skips a known id
    with pytest.raises(ValueError, match="need customer and article ids, got 0 and 10"):
        draw_samples([], articles, size=5, unknown_fraction=0.0, seed=0)


def test_importing_bench_does_not_patch_the_standard_library() -> None:
    """locust monkey-patches with gevent at import; only the load-generator child may."""
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, shoprec.bench; "
            "print(sorted(m for m in ('locust', 'gevent', 'grpc') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"
