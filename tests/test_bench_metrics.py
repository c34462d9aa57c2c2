"""Tests of shoprec.bench.prometheus and shoprec.bench.breakdown: Prometheus text parsing,
deltas and sums, the gateway stages and Triton model times of a window, and the metric names
and routes the bench shares with the gateway. No server runs here."""

from __future__ import annotations

import re

import pytest

from shoprec.bench.breakdown import (
    GATEWAY_REQUEST_SECONDS,
    GATEWAY_STAGE_SECONDS,
    STAGE_ORDER,
    breakdown,
    gateway_stages,
    triton_models,
)
from shoprec.bench.prometheus import SampleKey, metric_delta, metric_sum, parse_prometheus
from shoprec.bench.workloads import GATEWAY_ROUTES, Workload

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
    before: dict[SampleKey, float] = {("a", ()): 5.0, ("gone", ()): 1.0}
    after: dict[SampleKey, float] = {("a", ()): 7.5, ("new", (("k", "v"),)): 3.0}
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
    assert (ranking.model, ranking.requests, ranking.executions) == ("ranking", 40, 30)
    assert [
        ranking.request_ms,
        ranking.queue_ms,
        ranking.compute_input_ms,
        ranking.compute_infer_ms,
        ranking.compute_output_ms,
    ] == pytest.approx([2.5, 0.05, 0.02, 2.4, 0.04])
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
