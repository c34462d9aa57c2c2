"""Load benchmark of the online stack: the REST gateway and Triton, with locust as a library.

:func:`run_benchmark` brings the stack up (or targets a running one on loopback), then, for
every concurrency level (closed loop: each user sends its next request as soon as the last
one is answered) and every :class:`Workload`, warms up, measures for a fixed time and stops:

* ``gateway_recommend``: ``GET /v1/customers/{id}/recommendations?k=K`` for a seeded sample of
  the customers in the feature store, plus ``unknown_fraction`` ids the store does not know
  (the cold-start path);
* ``gateway_similar``: ``GET /v1/articles/{id}/similar?k=K`` for a sample of the articles
  ``similar_items`` serves;
* ``triton_recommend`` / ``triton_similar``: the same models called directly over gRPC
  (``tritonclient.grpc``), ``recommend`` with encoded features fetched from the store
  beforehand (:meth:`shoprec.featurestore.OnlineFeatures.get_customers`).

It reports requests, failures, throughput (req/s) and p50 / p95 / p99 latency (ms, as the
client sees it) per workload and level; at the lowest level also where the time goes, from
the deltas of the gateway's and Triton's Prometheus metrics over the measured window (stage
histograms of :class:`shoprec.gateway.metrics.GatewayMetrics`; Triton's per-model cumulative
``nv_inference_*`` counters), and checks the latency targets (:data:`TARGETS`, PASS/MISS, no
assert). Results go to ``bench.json`` and ``bench.md`` (Markdown tables for the README).

Why the load runs in a child process (``python -m shoprec.bench SPEC RESULT``): importing
locust monkey-patches the standard library with gevent, and gRPC must be switched to gevent
mode (``grpc.experimental.gevent.init_gevent``) before its first channel, else a blocking call
stalls every simulated user. Neither is safe in a process that already started threads and
gRPC channels (the stack's readiness probes, Feast), so the child imports locust first.

The load generator shares the machine with the servers: on a small host its CPU use is part of
the measurement. Each phase records the generator's CPU (% of one core) and the machine's busy
CPU, and the report records cores and load averages.

Example::

    cfg = BenchConfig(name="completejourney", triton_repo=Path("triton_repo"),
                      feature_repo=Path("models/completejourney/feature_repo"),
                      out_dir=Path("models/completejourney/bench"), users=(1, 4), seconds=10)
    result = run_benchmark(cfg, log=print)
    result.phases[0].summary.p50_ms
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from shoprec.errors import ShoprecError

if TYPE_CHECKING:
    from rich.table import Table

# ---- what is measured ----------------------------------------------------------------------


class Workload(StrEnum):
    """One kind of request the benchmark sends."""

    GATEWAY_RECOMMEND = "gateway_recommend"
    GATEWAY_SIMILAR = "gateway_similar"
    TRITON_RECOMMEND = "triton_recommend"
    TRITON_SIMILAR = "triton_similar"


WORKLOAD_LABELS: Final[Mapping[Workload, str]] = {
    Workload.GATEWAY_RECOMMEND: "gateway personalised",
    Workload.GATEWAY_SIMILAR: "gateway similar-items",
    Workload.TRITON_RECOMMEND: "Triton recommend (gRPC)",
    Workload.TRITON_SIMILAR: "Triton similar_items (gRPC)",
}
# Route templates of the gateway (shoprec.gateway.routes): the URL of a request and the
# ``endpoint`` label of its metrics.
GATEWAY_ROUTES: Final[Mapping[Workload, str]] = {
    Workload.GATEWAY_RECOMMEND: "/v1/customers/{customer_id}/recommendations",
    Workload.GATEWAY_SIMILAR: "/v1/articles/{article_id}/similar",
}
# Metric names as registered by shoprec.gateway.metrics.GatewayMetrics (tests pin them).
GATEWAY_REQUEST_SECONDS: Final = "shoprec_gateway_request_duration_seconds"
GATEWAY_STAGE_SECONDS: Final = "shoprec_gateway_stage_duration_seconds"
# Gateway stages (shoprec.gateway.metrics.Stage values) in the order a request calls them.
STAGE_ORDER: Final = (
    "feature_fetch",
    "popular",
    "triton_recommend",
    "triton_similar",
    "article_display",
)
# Triton's per-model cumulative counters (label ``model``); durations in microseconds.
TRITON_REQUESTS: Final = "nv_inference_request_success"
TRITON_EXECUTIONS: Final = "nv_inference_exec_count"
TRITON_DURATIONS_US: Final[Mapping[str, str]] = {
    "request": "nv_inference_request_duration_us",
    "queue": "nv_inference_queue_duration_us",
    "compute_input": "nv_inference_compute_input_duration_us",
    "compute_infer": "nv_inference_compute_infer_duration_us",
    "compute_output": "nv_inference_compute_output_duration_us",
}
BENCH_JSON: Final = "bench.json"
BENCH_MD: Final = "bench.md"
LOADGEN_LOG: Final = "loadgen.log"  # the load generator's stderr (locust and gRPC warnings)
MAX_USERS: Final = 256
MAX_PHASE_SECONDS: Final = 600.0
UNKNOWN_CUSTOMER_PREFIX: Final = "bench-unknown-"
TRITON_FEATURE_SAMPLE: Final = 500  # customers whose encoded features the gRPC users cycle
REQUEST_TIMEOUT_S: Final = 10.0  # per request of the load generator
LOOPBACK_NAMES: Final = frozenset({"localhost"})


@dataclass(frozen=True)
class Target:
    """A latency target of a gateway endpoint: ``stat`` (``p50_ms``...) at most ``limit_ms``."""

    workload: Workload
    stat: str
    limit_ms: float

    @property
    def label(self) -> str:
        return (
            f"{WORKLOAD_LABELS[self.workload]} {self.stat.removesuffix('_ms')} <= "
            f"{self.limit_ms:g} ms"
        )


# The targets of the serving issue, and the reference system's time per request (ms).
TARGETS: Final = (
    Target(Workload.GATEWAY_RECOMMEND, "p50_ms", 15.0),
    Target(Workload.GATEWAY_RECOMMEND, "p99_ms", 50.0),
    Target(Workload.GATEWAY_SIMILAR, "p50_ms", 5.0),
)
REFERENCE_MS: Final[Mapping[Workload, float]] = {
    Workload.GATEWAY_RECOMMEND: 1400.0,
    Workload.GATEWAY_SIMILAR: 300.0,
}


class BenchError(ShoprecError, RuntimeError):
    """The benchmark could not run: target not ready, load generator failed or timed out."""


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What to load, how hard and for how long.

    Attributes:
        name: dataset name (recorded in the output).
        triton_repo: the served Triton model repository (its manifest and the ``similar_items``
            article ids are read; started from when no URLs are given).
        feature_repo: the materialized Feast repo (customer ids, encoded features).
        out_dir: receives ``bench.json``, ``bench.md`` and ``loadgen.log``.
        users: concurrency levels, each 1..:data:`MAX_USERS`.
        seconds: measured seconds per workload and level, > 0 and <= :data:`MAX_PHASE_SECONDS`.
        warmup_s: unmeasured seconds before each measured window (users spawn in the first).
        k: ``k`` of every request.
        sample_size: customers and articles sampled (fewer when the store holds fewer).
        unknown_fraction: share of personalised requests for unknown customers, in [0, 1).
        seed: seeds the samples and the users' request order.
        workloads: which workloads to run, in this order within each level.
        gateway_url / triton_grpc_url / triton_metrics_url: a running stack (all three, on
            loopback: ``http://127.0.0.1:8080``, ``127.0.0.1:8001``,
            ``http://127.0.0.1:8002/metrics``); None (all three): start one on free ports.

    Raises:
        ValueError: a value out of range, some but not all URLs, or a non-loopback URL.
    """

    name: str
    triton_repo: Path
    feature_repo: Path
    out_dir: Path
    users: tuple[int, ...] = (1, 4, 16)
    seconds: float = 20.0
    warmup_s: float = 3.0
    k: int = 12
    sample_size: int = 2000
    unknown_fraction: float = 0.05
    seed: int = 0
    workloads: tuple[Workload, ...] = tuple(Workload)
    gateway_url: str | None = None
    triton_grpc_url: str | None = None
    triton_metrics_url: str | None = None

    def __post_init__(self) -> None:
        if not self.users or any(not 1 <= u <= MAX_USERS for u in self.users):
            raise ValueError(f"users must be 1..{MAX_USERS} each, got {self.users!r}")
        if not 0 < self.seconds <= MAX_PHASE_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_PHASE_SECONDS:g}], got {self.seconds}")
        if not 0 <= self.warmup_s <= MAX_PHASE_SECONDS:
            raise ValueError(f"warmup_s must be in [0, {MAX_PHASE_SECONDS:g}], got {self.warmup_s}")
        if self.k < 1 or self.sample_size < 1:
            raise ValueError(f"k and sample_size must be >= 1, got {self.k}, {self.sample_size}")
        if not 0 <= self.unknown_fraction < 1:
            raise ValueError(f"unknown_fraction must be in [0, 1), got {self.unknown_fraction}")
        if not self.workloads:
            raise ValueError("workloads is empty")
        urls = (self.gateway_url, self.triton_grpc_url, self.triton_metrics_url)
        if any(u is None for u in urls) and any(u is not None for u in urls):
            raise ValueError(
                "give gateway_url, triton_grpc_url and triton_metrics_url together "
                f"or none of them, got {urls}"
            )
        for url in urls:
            if url is not None:
                check_loopback(url)

    @property
    def external(self) -> bool:
        """True when the benchmark targets a running stack."""
        return self.gateway_url is not None


def check_loopback(url: str) -> str:
    """``url`` unchanged when its host is a loopback address (``127.x``, ``::1``, localhost).

    Accepts ``scheme://host:port/path`` and gRPC's bare ``host:port``.

    Raises:
        ValueError: another host (the benchmark only loads this machine).
    """
    host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    try:
        loopback = host in LOOPBACK_NAMES or ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"benchmark targets must be on loopback, got {url!r}")
    return url


def parse_users(text: str) -> tuple[int, ...]:
    """Concurrency levels from ``"1,4,16"``.

    Raises:
        ValueError: not comma-separated integers in 1..:data:`MAX_USERS`.
    """
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"users must be comma-separated integers, got {text!r}") from None
    if any(not 1 <= u <= MAX_USERS for u in levels):
        raise ValueError(f"users must be 1..{MAX_USERS} each, got {text!r}")
    return levels


# ---- latency statistics -------------------------------------------------------------------


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


# ---- Prometheus metrics -------------------------------------------------------------------

SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted (label, value) pairs


_SAMPLE_LINE: Final = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?$"
)
_LABEL_PAIR: Final = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE: Final = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_prometheus(text: str) -> dict[SampleKey, float]:
    """Samples of a Prometheus text exposition (format 0.0.4), keyed by sample name exactly
    as written (histogram ``_bucket`` / ``_sum`` / ``_count``, counter ``_total`` or not) and
    the sorted label pairs (values unescaped). Comments and blank lines are skipped.

    Raises:
        ValueError: a line that is not a sample (names the line number and the line).
    """
    samples: dict[SampleKey, float] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_LINE.match(line)
        try:
            if match is None:
                raise ValueError
            labels: list[tuple[str, str]] = []
            rest = match["labels"] or ""
            while rest.strip():
                pair = _LABEL_PAIR.match(rest)
                if pair is None:
                    raise ValueError
                value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m[0]], pair[2])
                labels.append((pair[1], value))
                rest = rest[pair.end() :]
            samples[(match["name"], tuple(sorted(labels)))] = float(match["value"])
        except ValueError:
            raise ValueError(f"line {number} is not a Prometheus sample: {raw!r}") from None
    return samples


def metric_delta(
    before: Mapping[SampleKey, float], after: Mapping[SampleKey, float]
) -> dict[SampleKey, float]:
    """``after - before`` per sample of cumulative metrics; a sample absent before counts
    from 0 (labelled children appear on first use). Samples only in ``before`` are dropped."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def metric_sum(samples: Mapping[SampleKey, float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (sample, pairs), value in samples.items()
        if sample == name and all(dict(pairs).get(k) == v for k, v in labels.items())
    )


def label_values(samples: Mapping[SampleKey, float], name: str, label: str) -> list[str]:
    """Sorted distinct values of ``label`` among the samples called ``name``."""
    return sorted(
        {
            dict(pairs)[label]
            for (sample, pairs) in samples
            if sample == name and label in dict(pairs)
        }
    )


@dataclass(frozen=True)
class StageTime:
    """One gateway stage (upstream call) over a measured window, per gateway request."""

    stage: str
    calls_per_request: float
    ms_per_request: float


@dataclass(frozen=True)
class ModelTime:
    """One Triton model over a measured window; durations are means per successful request
    (ms), ``executions`` counts the batches the model ran."""

    model: str
    requests: int
    executions: int
    request_ms: float
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float


def gateway_stages(
    delta: Mapping[SampleKey, float], endpoint: str
) -> tuple[float, int, list[StageTime]]:
    """Server time and stages of the gateway requests to ``endpoint`` in a window.

    Assumes ``endpoint`` is the only route loaded in the window, so every stage call in it
    belongs to those requests.

    Args:
        delta: :func:`metric_delta` of two gateway ``/metrics`` snapshots.
        endpoint: a route template (:data:`GATEWAY_ROUTES`).

    Returns:
        Mean server time per request (ms, the gateway's middleware timing), the number of
        requests, and every stage called in the window (``calls_per_request``,
        ``ms_per_request`` = stage seconds / requests), in :data:`STAGE_ORDER` (other
        stages after, by name). Zeros and no
        stages when the window holds no request.
    """
    requests = int(round(metric_sum(delta, f"{GATEWAY_REQUEST_SECONDS}_count", endpoint=endpoint)))
    if requests == 0:
        return 0.0, 0, []
    server_ms = (
        metric_sum(delta, f"{GATEWAY_REQUEST_SECONDS}_sum", endpoint=endpoint) * 1e3 / requests
    )
    stages = []
    names = label_values(delta, f"{GATEWAY_STAGE_SECONDS}_count", "stage")
    for stage in sorted(
        names, key=lambda n: (STAGE_ORDER.index(n) if n in STAGE_ORDER else len(STAGE_ORDER), n)
    ):
        calls = metric_sum(delta, f"{GATEWAY_STAGE_SECONDS}_count", stage=stage)
        if calls > 0:
            seconds = metric_sum(delta, f"{GATEWAY_STAGE_SECONDS}_sum", stage=stage)
            stages.append(StageTime(stage, calls / requests, seconds * 1e3 / requests))
    return server_ms, requests, stages


def triton_models(delta: Mapping[SampleKey, float]) -> list[ModelTime]:
    """Per-model means of Triton's cumulative duration counters over a window (us -> ms).

    Args:
        delta: :func:`metric_delta` of two Triton ``/metrics`` snapshots.

    Returns:
        The models with at least one successful request in the window, by name.
    """
    out = []
    for model in label_values(delta, TRITON_REQUESTS, "model"):
        requests = metric_sum(delta, TRITON_REQUESTS, model=model)
        if requests <= 0:
            continue
        ms = {
            key: metric_sum(delta, name, model=model) / requests / 1e3
            for key, name in TRITON_DURATIONS_US.items()
        }
        out.append(
            ModelTime(
                model=model,
                requests=int(round(requests)),
                executions=int(round(metric_sum(delta, TRITON_EXECUTIONS, model=model))),
                request_ms=ms["request"],
                queue_ms=ms["queue"],
                compute_input_ms=ms["compute_input"],
                compute_infer_ms=ms["compute_infer"],
                compute_output_ms=ms["compute_output"],
            )
        )
    return out


@dataclass(frozen=True)
class Breakdown:
    """Where the time of one workload goes, at one concurrency level.

    Attributes:
        client_mean_ms: mean latency the load generator saw.
        server_mean_ms: mean time inside the gateway (its middleware); None for Triton direct.
        stages: gateway stages; empty for Triton direct.
        overhead_ms: "HTTP + gateway overhead" = ``client_mean_ms`` - the stages' ms per
            request (routing, validation, JSON, uvicorn, the client and the loopback hop);
            None for Triton direct.
        models: Triton models that ran in the window.
    """

    workload: Workload
    users: int
    client_mean_ms: float
    server_mean_ms: float | None
    stages: list[StageTime]
    overhead_ms: float | None
    models: list[ModelTime]


def breakdown(
    workload: Workload,
    users: int,
    client_mean_ms: float,
    gateway_delta: Mapping[SampleKey, float] | None,
    triton_delta: Mapping[SampleKey, float],
) -> Breakdown:
    """:class:`Breakdown` of a phase from its metric deltas (``gateway_delta`` None or
    ignored for a Triton-direct workload)."""
    server_ms: float | None = None
    overhead: float | None = None
    stages: list[StageTime] = []
    route = GATEWAY_ROUTES.get(workload)
    if route is not None and gateway_delta is not None:
        server_ms, _, stages = gateway_stages(gateway_delta, route)
        overhead = client_mean_ms - sum(s.ms_per_request for s in stages)
    return Breakdown(
        workload, users, client_mean_ms, server_ms, stages, overhead, triton_models(triton_delta)
    )


# ---- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetCheck:
    """One target at one concurrency level; ``passed`` None when nothing was measured."""

    target: str
    users: int
    measured_ms: float | None
    limit_ms: float
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


def check_targets(
    phases: Sequence[PhaseResult], targets: Sequence[Target] = TARGETS
) -> list[TargetCheck]:
    """Every target at every level its workload ran at: PASS when the statistic is at most
    the limit, MISS when above it or when any request failed (a failing endpoint does not
    pass on its fast errors), n/a when no request succeeded."""
    checks = []
    for target in targets:
        for phase in phases:
            if phase.workload is not target.workload:
                continue
            value = getattr(phase.summary, target.stat)
            passed = (
                None
                if value is None
                else (value <= target.limit_ms and phase.summary.failures == 0)
            )
            checks.append(TargetCheck(target.label, phase.users, value, target.limit_ms, passed))
    return checks


# ---- results -------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class BenchResult:
    """Everything :func:`run_benchmark` measured; ``bench.json`` is its :func:`to_json`."""

    facts: dict[str, Any]
    phases: list[PhaseResult]
    breakdowns: list[Breakdown]
    targets: list[TargetCheck]

    def phase(self, workload: Workload, users: int) -> PhaseResult | None:
        return next((p for p in self.phases if p.workload is workload and p.users == users), None)


def to_json(result: BenchResult) -> str:
    """``result`` as indented JSON (enums as their values, no NaN)."""
    return json.dumps(asdict(result), indent=2, sort_keys=False, allow_nan=False) + "\n"


# ---- report tables (one source for the terminal and Markdown) -------------------------------


@dataclass(frozen=True)
class Section:
    """A titled table of preformatted cells; numeric columns are right-aligned."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _ms(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report_sections(result: BenchResult) -> list[Section]:
    """The report's tables: setup, latency and throughput, stage breakdown, Triton models,
    targets and the speed-up over the reference system."""
    facts = result.facts
    sections = [
        Section(
            "Setup",
            ("item", "value"),
            tuple((key, str(value)) for key, value in facts.items() if not isinstance(value, dict)),
        )
    ]
    sections.append(
        Section(
            "Latency and throughput (client side, closed loop)",
            (
                "endpoint",
                "users",
                "requests",
                "failures",
                "req/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "load generator CPU %",
                "machine CPU %",
            ),
            tuple(
                (
                    WORKLOAD_LABELS[p.workload],
                    str(p.users),
                    str(p.summary.requests),
                    str(p.summary.failures),
                    f"{p.summary.throughput_rps:.1f}",
                    _ms(p.summary.p50_ms),
                    _ms(p.summary.p95_ms),
                    _ms(p.summary.p99_ms),
                    _ms(p.loadgen_cpu_pct, 0),
                    _ms(p.machine_cpu_pct, 0),
                )
                for p in result.phases
            ),
        )
    )
    stage_rows: list[tuple[str, ...]] = []
    for b in result.breakdowns:
        if b.server_mean_ms is None:
            continue
        label = WORKLOAD_LABELS[b.workload]
        stage_rows.append((label, "client mean latency", "", _ms(b.client_mean_ms)))
        stage_rows.extend(
            (label, f"stage {s.stage}", f"{s.calls_per_request:.2f}", _ms(s.ms_per_request))
            for s in b.stages
        )
        stage_rows.append((label, "HTTP + gateway overhead", "", _ms(b.overhead_ms)))
        if b.overhead_ms is not None:
            outside = b.client_mean_ms - b.server_mean_ms
            stage_rows.append(
                (
                    label,
                    "of which in the gateway app (routing, validation, JSON)",
                    "",
                    _ms(b.overhead_ms - outside),
                )
            )
            stage_rows.append((label, "of which HTTP, uvicorn and the client", "", _ms(outside)))
    users = result.breakdowns[0].users if result.breakdowns else 1
    sections.append(
        Section(
            f"Gateway stages at {users} user(s), mean ms per request",
            ("endpoint", "part", "calls/request", "ms"),
            tuple(stage_rows),
        )
    )
    sections.append(
        Section(
            f"Triton models at {users} user(s), mean ms per request",
            (
                "workload",
                "model",
                "requests",
                "batches",
                "queue",
                "compute input",
                "compute infer",
                "compute output",
                "total in Triton",
            ),
            tuple(
                (
                    WORKLOAD_LABELS[b.workload],
                    m.model,
                    str(m.requests),
                    str(m.executions),
                    _ms(m.queue_ms, 3),
                    _ms(m.compute_input_ms, 3),
                    _ms(m.compute_infer_ms, 3),
                    _ms(m.compute_output_ms, 3),
                    _ms(m.request_ms, 3),
                )
                for b in result.breakdowns
                for m in b.models
            ),
        )
    )
    sections.append(
        Section(
            "Targets",
            ("target", "users", "measured ms", "result"),
            tuple((c.target, str(c.users), _ms(c.measured_ms), c.verdict) for c in result.targets),
        )
    )
    speedups = []
    for workload, reference in REFERENCE_MS.items():
        phase = result.phase(workload, users)
        if phase is not None and phase.summary.mean_ms:
            speedups.append(
                (
                    WORKLOAD_LABELS[workload],
                    f"{reference:.0f}",
                    _ms(phase.summary.mean_ms),
                    f"{reference / phase.summary.mean_ms:.0f}x",
                )
            )
    sections.append(
        Section(
            f"Versus the reference system (mean at {users} user(s))",
            ("endpoint", "reference ms", "measured ms", "speed-up"),
            tuple(speedups),
        )
    )
    return sections


def _number(cell: str) -> bool:
    try:
        float(cell.removesuffix("x"))
    except ValueError:
        return False
    return True


def _numeric_columns(section: Section) -> list[bool]:
    """Per column: every cell a number, ``-`` or empty, and at least one a number."""
    return [
        all(_number(row[i]) or row[i] in ("", "-") for row in section.rows)
        and any(_number(row[i]) for row in section.rows)
        for i in range(len(section.columns))
    ]


def render_markdown(sections: Sequence[Section], heading: str = "") -> str:
    """GitHub Markdown: ``heading`` (if any), then per section a ``###`` title and a table
    (numeric columns right-aligned). Sections without rows are left out."""
    lines = [heading, ""] if heading else []
    for section in sections:
        if not section.rows:
            continue
        numeric = _numeric_columns(section)
        lines += [
            f"### {section.title}",
            "",
            "| " + " | ".join(section.columns) + " |",
            "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in section.rows]
        lines.append("")
    return "\n".join(lines)


def rich_tables(sections: Sequence[Section]) -> list[Table]:
    """The sections as rich tables, for the terminal (sections without rows left out)."""
    from rich.table import Table

    tables = []
    for section in sections:
        if not section.rows:
            continue
        table = Table(title=section.title, title_justify="left")
        for column, numeric in zip(section.columns, _numeric_columns(section), strict=True):
            table.add_column(column, justify="right" if numeric else "left")
        for row in section.rows:
            style = {"PASS": "green", "MISS": "bold red"}.get(row[-1])
            table.add_row(*row, style=style)
        tables.append(table)
    return tables


# ---- machine and dataset facts -------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """Cores, CPU model, memory, platform and the time (UTC) of this machine."""
    cpu_model = ""
    with suppress(OSError):
        cpu_model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    memory_gib: float | None = None
    with suppress(ValueError, OSError):
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": cpu_model or platform.processor(),
        "memory GiB": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def load_average() -> str:
    """1, 5 and 15-minute load averages, e.g. ``"0.52 0.61 0.70"``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores from ``/proc/stat``; None where it is missing."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def dataset_facts(config: BenchConfig) -> dict[str, Any]:
    """Dataset name, articles served, customers in the store and the served model tuning."""
    from shoprec.export.triton import MANIFEST_FILE
    from shoprec.featurestore.tables import CUSTOMERS_FILE, ONLINE_DATA_DIR, read_manifest

    store = read_manifest(config.feature_repo / ONLINE_DATA_DIR)
    path = config.triton_repo / MANIFEST_FILE
    if not path.is_file():
        raise BenchError(f"{path} not found: export the Triton repository first")
    triton = json.loads(path.read_text())
    export = triton.get("export_config", {})
    return {
        "dataset": config.name,
        "articles served": triton["dims"]["served_articles"],
        "articles with text (similar_items)": triton.get("text_articles"),
        "customers in store": store["rows"][CUSTOMERS_FILE],
        "serving cutoff": triton.get("serving_cutoff"),
        "k": config.k,
        "Triton max_batch_size / queue delay us": f"{export.get('max_batch_size')} / "
        f"{export.get('max_queue_delay_microseconds')}",
        "model tuning (instances x threads)": ", ".join(
            f"{model} {tune.get('instances')}x{tune.get('intra_op_threads')}"
            for model, tune in export.get("tuning", {}).items()
        ),
    }


# ---- request samples -----------------------------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """The ids the users draw from: customers (with unknown ones mixed in) and articles."""

    customers: list[str]
    unknown_customers: list[str]
    articles: list[str]


def draw_samples(
    customer_ids: Sequence[str],
    article_ids: Sequence[str],
    size: int,
    unknown_fraction: float,
    seed: int,
) -> Samples:
    """A seeded sample of ``size`` customers and articles (all when fewer), plus
    ``unknown_fraction`` of the customer requests as ids outside ``customer_ids``.

    Raises:
        ValueError: no customer or no article ids.
    """
    if not customer_ids or not article_ids:
        raise ValueError(
            f"need customer and article ids, got {len(customer_ids)} and {len(article_ids)}"
        )
    rng = random.Random(seed)
    customers = rng.sample(list(customer_ids), min(size, len(customer_ids)))
    articles = rng.sample(list(article_ids), min(size, len(article_ids)))
    n_unknown = round(len(customers) * unknown_fraction / (1 - unknown_fraction))
    known = set(customer_ids)
    unknown: list[str] = []
    serial = 0
    while len(unknown) < n_unknown:
        candidate = f"{UNKNOWN_CUSTOMER_PREFIX}{serial}"
        serial += 1
        if candidate not in known:
            unknown.append(candidate)
    return Samples(customers, unknown, articles)


def _load_samples(config: BenchConfig) -> Samples:
    import numpy as np
    import polars as pl

    from shoprec import schema as s
    from shoprec.export.triton import VERSION
    from shoprec.featurestore.tables import CUSTOMERS_FILE, ONLINE_DATA_DIR
    from shoprec.serving.runtime import TEXT_ARTICLE_IDS_FILE

    customers_file = config.feature_repo / ONLINE_DATA_DIR / CUSTOMERS_FILE
    articles_file = config.triton_repo / s.TRITON_SIMILAR_ITEMS / VERSION / TEXT_ARTICLE_IDS_FILE
    for path in (customers_file, articles_file):
        if not path.is_file():
            raise BenchError(f"{path} not found: materialize and export first")
    customers = (
        pl.read_parquet(customers_file, columns=[s.CUSTOMER_ID]).get_column(s.CUSTOMER_ID).to_list()
    )
    articles = np.load(articles_file, allow_pickle=False).astype(str).tolist()
    return draw_samples(
        customers, articles, config.sample_size, config.unknown_fraction, config.seed
    )


def _save_features(config: BenchConfig, customers: Sequence[str], path: Path) -> int:
    """Encoded features of up to :data:`TRITON_FEATURE_SAMPLE` sampled customers, read from
    the online store the gateway reads, saved as ``.npz``; returns how many were found."""
    import numpy as np

    from shoprec.featurestore import OnlineFeatures

    found, features = OnlineFeatures(config.feature_repo).get_customers(
        list(customers[:TRITON_FEATURE_SAMPLE])
    )
    if not found.any():
        raise BenchError(f"none of the sampled customers is in {config.feature_repo}'s store")
    np.savez(path, **{name: array[found] for name, array in features.items()})
    return int(found.sum())


# ---- the stack -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    gateway_url: str
    triton_grpc_url: str
    triton_metrics_url: str


@contextmanager
def _target(config: BenchConfig, log: Callable[[str], None]) -> Iterator[Endpoints]:
    """The URLs of the stack under test: the configured one (checked ready), else a
    :class:`~shoprec.serving.stack.ServingStack` started on free loopback ports and stopped
    after."""
    if config.gateway_url and config.triton_grpc_url and config.triton_metrics_url:
        try:
            with urllib.request.urlopen(f"{config.gateway_url}/readyz", timeout=5) as response:
                ready = response.status == 200
        except OSError as exc:
            raise BenchError(f"gateway {config.gateway_url} is not ready: {exc}") from exc
        if not ready:
            raise BenchError(f"gateway {config.gateway_url} is not ready")
        yield Endpoints(config.gateway_url, config.triton_grpc_url, config.triton_metrics_url)
        return
    from shoprec.serving.stack import LOOPBACK, ServingStack, StackConfig
    from shoprec.serving.tritonserver import free_port

    ports: list[int] = []
    while len(ports) < 4:
        port = free_port(LOOPBACK)
        if port not in ports:
            ports.append(port)
    stack_config = StackConfig(
        triton_repo=config.triton_repo,
        feature_repo=config.feature_repo,
        host=LOOPBACK,
        gateway_port=ports[0],
        triton_http_port=ports[1],
        triton_grpc_port=ports[2],
        triton_metrics_port=ports[3],
    )
    t = time.perf_counter()
    log(
        f"starting tritonserver ({config.triton_repo}) and the gateway "
        f"({config.feature_repo}) on loopback ports {ports}"
    )
    with ServingStack(stack_config) as stack:
        log(f"stack ready in {time.perf_counter() - t:.1f} s")
        yield Endpoints(stack.gateway_url, stack.triton.grpc_url, stack.triton.metrics_url)


# ---- orchestration -------------------------------------------------------------------------


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = lambda _: None) -> BenchResult:
    """Load the stack at every level and workload of ``config``; write the report.

    Writes :data:`BENCH_JSON`, :data:`BENCH_MD` and the load generator's log
    :data:`LOADGEN_LOG` to ``config.out_dir`` (created). ``log`` receives progress lines.
    Takes about ``len(users) * len(workloads) * (warmup_s + seconds + ~3 s)`` plus the
    stack's start.

    Raises:
        BenchError: an artifact is missing, the stack does not start or is not ready, or
            the load generator fails or overruns its time.
        ValueError: see :class:`BenchConfig`.
    """
    facts: dict[str, Any] = {**machine_facts(), "load average before": load_average()}
    facts.update(dataset_facts(config))
    facts.update(
        {
            "users": ",".join(map(str, config.users)),
            "seconds per phase": config.seconds,
            "warm-up s": config.warmup_s,
            "unknown customers": f"{config.unknown_fraction:.0%}",
            "target": "running stack"
            if config.external
            else "stack started by the benchmark (1 gateway worker)",
        }
    )
    samples = _load_samples(config)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shoprec-bench-") as tmp:
        features = Path(tmp) / "features.npz"
        if Workload.TRITON_RECOMMEND in config.workloads:
            n = _save_features(config, samples.customers, features)
            log(f"encoded features of {n} customers fetched for the direct Triton calls")
        with _target(config, log) as endpoints:
            spec = {
                "endpoints": asdict(endpoints),
                "users": list(config.users),
                "workloads": [w.value for w in config.workloads],
                "seconds": config.seconds,
                "warmup_s": config.warmup_s,
                "k": config.k,
                "seed": config.seed,
                "breakdown_users": min(config.users),
                "samples": asdict(samples),
                "features": str(features),
            }
            raw = _run_loadgen(spec, Path(tmp), config.out_dir / LOADGEN_LOG, log)
    facts["load average after"] = load_average()
    phases: list[PhaseResult] = []
    breakdowns: list[Breakdown] = []
    for item in raw:
        phase = PhaseResult(
            workload=Workload(item["workload"]),
            users=item["users"],
            summary=LatencySummary(**item["summary"]),
            loadgen_cpu_pct=item["loadgen_cpu_pct"],
            machine_cpu_pct=item["machine_cpu_pct"],
            errors=item["errors"],
        )
        phases.append(phase)
        metrics = item.get("metrics")
        if metrics and phase.summary.mean_ms is not None:
            gateway_delta = metric_delta(
                parse_prometheus(metrics["gateway_before"]),
                parse_prometheus(metrics["gateway_after"]),
            )
            triton_delta = metric_delta(
                parse_prometheus(metrics["triton_before"]),
                parse_prometheus(metrics["triton_after"]),
            )
            breakdowns.append(
                breakdown(
                    phase.workload, phase.users, phase.summary.mean_ms, gateway_delta, triton_delta
                )
            )
    result = BenchResult(facts, phases, breakdowns, check_targets(phases))
    (config.out_dir / BENCH_JSON).write_text(to_json(result))
    heading = (
        f"## Serving benchmark: {config.name} ({facts['date']}, {facts['cores']} cores, "
        f"load average {facts['load average before']} before, "
        f"{facts['load average after']} after)"
    )
    (config.out_dir / BENCH_MD).write_text(render_markdown(report_sections(result), heading))
    return result


def _run_loadgen(
    spec: dict[str, Any], tmp: Path, log_file: Path, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Run the load generator (this module as ``__main__``) on ``spec``; its phase results."""
    spec_path, result_path = tmp / "spec.json", tmp / "result.json"
    spec_path.write_text(json.dumps(spec))
    phases = len(spec["users"]) * len(spec["workloads"])
    limit_s = phases * (spec["warmup_s"] + spec["seconds"] + 30) + 120
    with log_file.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "shoprec.bench", str(spec_path), str(result_path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        overran = threading.Event()

        def stop_overrun() -> None:
            overran.set()
            process.kill()

        watchdog = threading.Timer(limit_s, stop_overrun)
        watchdog.start()
        try:
            for line in process.stdout or ():
                log(line.rstrip())
            process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:  # interrupted (Ctrl-C): stop the child too
                process.kill()
                process.wait()
    if process.returncode != 0 or not result_path.is_file():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
        why = (
            f"overran {limit_s:.0f} s and was killed"
            if overran.is_set()
            else f"was killed by signal {-process.returncode}"
            if process.returncode < 0
            else f"exited with {process.returncode}"
        )
        raise BenchError(f"load generator {why}; {log_file} ends with:\n{tail}")
    phases_out: list[dict[str, Any]] = json.loads(result_path.read_text())["phases"]
    return phases_out


# ---- the load generator (child process) ----------------------------------------------------


class _Recorder:
    """locust ``request`` event listener keeping latencies of a measured window only."""

    def __init__(self) -> None:
        self.recording = False
        self.latencies_ms: list[float] = []
        self.failures = 0
        self.errors: Counter[str] = Counter()

    def __call__(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        exception: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        if not self.recording:
            return
        if exception is None:
            self.latencies_ms.append(response_time)
        else:
            self.failures += 1
            self.errors[f"{type(exception).__name__}: {exception}"[:200]] += 1


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
        text: str = response.read().decode()
    return text


def _loadgen_main(spec_path: Path, result_path: Path) -> None:
    """Child process: run every phase of the spec with locust, write the phase results."""
    import locust  # first: monkey-patches the standard library with gevent
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()  # before any gRPC channel exists

    import gevent
    import numpy as np
    import tritonclient.grpc as grpcclient
    from locust.contrib.fasthttp import FastHttpUser
    from locust.env import Environment

    from shoprec import schema as s
    from shoprec.gateway.triton import RANKED_OUTPUTS, recommend_inputs, similar_inputs

    spec = json.loads(spec_path.read_text())
    endpoints, samples, k = spec["endpoints"], spec["samples"], spec["k"]
    rng = random.Random(spec["seed"])

    customer_paths = [
        GATEWAY_ROUTES[Workload.GATEWAY_RECOMMEND].format(customer_id=c) + f"?k={k}"
        for c in samples["customers"] + samples["unknown_customers"]
    ]
    article_paths = [
        GATEWAY_ROUTES[Workload.GATEWAY_SIMILAR].format(article_id=a) + f"?k={k}"
        for a in samples["articles"]
    ]
    recommend_requests: list[Any] = []
    if Workload.TRITON_RECOMMEND.value in spec["workloads"]:
        with np.load(spec["features"]) as arrays:
            features = {name: arrays[name] for name in arrays.files}
        rows = len(next(iter(features.values())))
        recommend_requests = [
            recommend_inputs({n: a[i : i + 1] for n, a in features.items()}) for i in range(rows)
        ]
    similar_requests = [similar_inputs([a]) for a in samples["articles"]]

    class GatewayUser(FastHttpUser):
        abstract = True
        network_timeout = REQUEST_TIMEOUT_S
        connection_timeout = REQUEST_TIMEOUT_S
        wait_time = locust.constant(0)
        paths: list[str] = []
        label = ""

        @locust.task
        def get(self) -> None:
            self.client.get(self.paths[rng.randrange(len(self.paths))], name=self.label)

    class TritonUser(locust.User):
        abstract = True
        wait_time = locust.constant(0)
        model = ""
        requests: list[Any] = []
        label = ""

        def on_start(self) -> None:
            self.triton = grpcclient.InferenceServerClient(endpoints["triton_grpc_url"])
            self.outputs = [grpcclient.InferRequestedOutput(n) for n in RANKED_OUTPUTS]

        def on_stop(self) -> None:
            self.triton.close()

        @locust.task
        def infer(self) -> None:
            inputs = self.requests[rng.randrange(len(self.requests))]
            error: Exception | None = None
            length = 0
            start = time.perf_counter()
            try:
                answer = self.triton.infer(
                    self.model, inputs, outputs=self.outputs, client_timeout=REQUEST_TIMEOUT_S
                )
                ids = answer.as_numpy(s.T_ARTICLE_IDS)
                if ids is None:
                    raise BenchError(f"{self.model}: no {s.T_ARTICLE_IDS} output")
                length = int(ids.size)
            except Exception as exc:  # any failure of the call is a failed request
                error = exc
            self.environment.events.request.fire(
                request_type="grpc",
                name=self.label,
                response_time=(time.perf_counter() - start) * 1e3,
                response_length=length,
                exception=error,
                context={},
            )

    def user_class(workload: Workload) -> type[locust.User]:
        attrs: dict[str, Any] = {"label": WORKLOAD_LABELS[workload]}
        if workload is Workload.GATEWAY_RECOMMEND:
            return type("GatewayRecommendUser", (GatewayUser,), {**attrs, "paths": customer_paths})
        if workload is Workload.GATEWAY_SIMILAR:
            return type("GatewaySimilarUser", (GatewayUser,), {**attrs, "paths": article_paths})
        if workload is Workload.TRITON_RECOMMEND:
            return type(
                "TritonRecommendUser",
                (TritonUser,),
                {**attrs, "model": s.TRITON_RECOMMEND, "requests": recommend_requests},
            )
        return type(
            "TritonSimilarUser",
            (TritonUser,),
            {**attrs, "model": s.TRITON_SIMILAR_ITEMS, "requests": similar_requests},
        )

    def metrics() -> dict[str, str]:
        return {
            "gateway": _fetch(f"{endpoints['gateway_url']}/metrics"),
            "triton": _fetch(endpoints["triton_metrics_url"]),
        }

    phases = []
    for users in spec["users"]:
        for workload in map(Workload, spec["workloads"]):
            env = Environment(
                user_classes=[user_class(workload)],
                host=endpoints["gateway_url"],
                stop_timeout=REQUEST_TIMEOUT_S,
            )
            recorder = _Recorder()
            env.events.request.add_listener(recorder)
            runner = env.create_local_runner()
            runner.start(users, spawn_rate=users)
            gevent.sleep(spec["warmup_s"])
            with_metrics = users == spec["breakdown_users"]
            before = metrics() if with_metrics else {}
            cpu0, machine0, t0 = time.process_time(), _cpu_times(), time.perf_counter()
            recorder.recording = True
            gevent.sleep(spec["seconds"])
            recorder.recording = False
            elapsed = time.perf_counter() - t0
            cpu1, machine1 = time.process_time(), _cpu_times()
            after = metrics() if with_metrics else {}
            runner.quit()
            summary = summarize(recorder.latencies_ms, recorder.failures, elapsed)
            machine_pct = None
            if machine0 and machine1 and machine1[1] > machine0[1]:
                machine_pct = 100 * (machine1[0] - machine0[0]) / (machine1[1] - machine0[1])
            phases.append(
                {
                    "workload": workload.value,
                    "users": users,
                    "summary": asdict(summary),
                    "loadgen_cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
                    "machine_cpu_pct": machine_pct,
                    "errors": dict(recorder.errors.most_common(5)),
                    "metrics": {
                        f"{source}_{when}": text
                        for when, snap in (("before", before), ("after", after))
                        for source, text in snap.items()
                    }
                    or None,
                }
            )
            print(
                f"{users:>3} users  {WORKLOAD_LABELS[workload]:<28} {summary.requests:>6} req "
                f"{summary.failures:>4} failed {summary.throughput_rps:8.1f} req/s  "
                f"p50 {_ms(summary.p50_ms)} p99 {_ms(summary.p99_ms)} ms",
                flush=True,
            )
            for message, count in recorder.errors.most_common(3):
                print(f"      {count} x {message}", flush=True)
    result_path.write_text(json.dumps({"phases": phases}))
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: gRPC's gevent integration can block it on its poller threads.
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(
            "usage: python -m shoprec.bench SPEC_JSON RESULT_JSON "
            "(run by shoprec.bench.run_benchmark)"
        )
    _loadgen_main(Path(sys.argv[1]), Path(sys.argv[2]))
