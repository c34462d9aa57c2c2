"""Tests of shoprec.bench.config and shoprec.bench.workloads: what a user passes (levels,
loopback URLs, the config's ranges) and what the benchmark sends (samples, request paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoprec import schema as s
from shoprec.bench.config import BenchConfig, check_loopback, parse_users
from shoprec.bench.workloads import (
    EVENT_BATCHES,
    GATEWAY_ROUTES,
    TRITON_MODELS,
    WORKLOAD_LABELS,
    Samples,
    Workload,
    draw_samples,
    gateway_paths,
)

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


# ---- what is sent ----------------------------------------------------------------------------


def test_every_workload_has_a_label_and_exactly_one_way_to_be_sent() -> None:
    assert set(WORKLOAD_LABELS) == set(Workload)
    for workload in Workload:
        ways = (GATEWAY_ROUTES, TRITON_MODELS, EVENT_BATCHES)
        assert sum(workload in way for way in ways) == 1, workload
    assert TRITON_MODELS == {
        Workload.TRITON_RECOMMEND: s.TRITON_RECOMMEND,
        Workload.TRITON_SIMILAR: s.TRITON_SIMILAR_ITEMS,
    }


def test_gateway_paths_fill_the_route_with_every_sampled_id() -> None:
    samples = Samples(["c1", "c2"], ["bench-unknown-0"], ["a1"])
    assert gateway_paths(Workload.GATEWAY_RECOMMEND, samples, 12) == [
        "/v1/customers/c1/recommendations?k=12",
        "/v1/customers/c2/recommendations?k=12",
        "/v1/customers/bench-unknown-0/recommendations?k=12",
    ]
    assert gateway_paths(Workload.GATEWAY_SIMILAR, samples, 5) == ["/v1/articles/a1/similar?k=5"]
    with pytest.raises(KeyError, match="triton_recommend"):
        gateway_paths(Workload.TRITON_RECOMMEND, samples, 12)
