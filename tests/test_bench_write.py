"""The write side of the benchmark: request bodies, acknowledged events/s, targets, the report,
option checks, and one short real run on both log backends over the toy feature store."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servers import ToyStore, build_toy_store
from shoprec.bench.stats import PhaseResult, summarize
from shoprec.bench.workloads import (
    EVENTS_ROUTE,
    Samples,
    Workload,
    event_batch,
    gateway_route,
)
from shoprec.bench.writes import (
    BENCH_WRITE_JSON,
    BENCH_WRITE_MD,
    WriteBenchConfig,
    WritePhase,
    check_write_targets,
    parse_backends,
    run_write_benchmark,
)
from shoprec.cli import app
from shoprec.events import Event


def phase(workload: Workload, users: int, latencies: list[float], failures: int = 0) -> PhaseResult:
    return PhaseResult(workload, users, summarize(latencies, failures, 2.0), 10.0, 50.0)


def test_event_batches_are_valid_events_with_unique_ids() -> None:
    samples = Samples(["c1", "c2"], [], ["a1", "a2", "a3"])
    body = event_batch(samples, 100, "p", 200, random.Random(0))
    events = [Event.model_validate(e) for e in body["events"]]
    assert [e.event_id for e in events] == [f"p-{n}" for n in range(200, 300)]
    assert {e.customer_id for e in events} <= {"c1", "c2"}
    assert {e.article_id for e in events} <= {"a1", "a2", "a3"}
    assert gateway_route(Workload.GATEWAY_EVENTS_100) == EVENTS_ROUTE == "/v1/events"
    assert gateway_route(Workload.TRITON_RECOMMEND) is None


def test_acknowledged_events_per_second_and_targets() -> None:
    fast = WritePhase("sqlite", 100, phase(Workload.GATEWAY_EVENTS_100, 16, [10.0] * 50))
    assert fast.events_per_s == 2500.0  # 50 requests x 100 events / 2 s
    slow = WritePhase("sqlite", 100, phase(Workload.GATEWAY_EVENTS_100, 1, [40.0] * 30, 10))
    assert slow.events_per_s == 1500.0  # 30 of 40 requests acknowledged
    single = WritePhase("redis", 1, phase(Workload.GATEWAY_EVENTS_1, 1, [3.0] * 9 + [9.0]))
    targets = check_write_targets([fast, slow, single])
    assert [(t.backend, t.users, t.measured, t.verdict) for t in targets] == [
        ("sqlite", 16, 2500.0, "PASS"),
        ("sqlite", 1, 1500.0, "MISS"),
        ("redis", 1, 3.0, "PASS"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-backends", "kafka"], "log backends must be some of ('sqlite', 'redis')"),
        (["--appendfsync", "no"], "appendfsync must be one of ('always', 'everysec')"),
        (["--users", "0"], "users must be 1..256 each"),
    ],
)
def test_write_bench_rejects_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench", "--write", *args])
    assert result.exit_code == 2
    assert message in " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    with pytest.raises(ValueError, match="got ''"):
        parse_backends("")


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ToyStore:
    return build_toy_store(tmp_path_factory.mktemp("bench_write"))


def test_a_short_write_benchmark_on_both_backends(toy: ToyStore, tmp_path: Path) -> None:
    config = WriteBenchConfig(
        name="toy",
        feature_repo=toy.repo,
        out_dir=tmp_path / "out",
        users=(2,),
        seconds=0.5,
        warmup_s=0.2,
    )
    result = run_write_benchmark(config)
    rows = [(p.backend.split(" ")[0], p.batch, p.phase.users) for p in result.phases]
    assert rows == [("SQLite", 1, 2), ("SQLite", 100, 2), ("Redis", 1, 2), ("Redis", 100, 2)]
    for p in result.phases:
        assert p.phase.summary.failures == 0, p.phase.errors
        assert p.phase.summary.requests > 0 and p.events_per_s > 0
    stages = {
        (backend.split(" ")[0], s.stage) for backend, b in result.breakdowns for s in b.stages
    }
    assert {("SQLite", "event_log"), ("Redis", "event_log")} <= stages
    markdown = (config.out_dir / BENCH_WRITE_MD).read_text()
    assert "| Redis (AOF, appendfsync always) | 100 | 2 |" in markdown
    assert (config.out_dir / BENCH_WRITE_JSON).is_file()
