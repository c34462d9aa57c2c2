"""Load benchmark of the online stack: the REST gateway and Triton, with locust as a library.

:func:`run_benchmark` brings the stack up (or targets a running one on loopback), then, for
every concurrency level (closed loop) and every :class:`Workload`, warms up, measures for a
fixed time and stops:

* ``gateway_recommend``: ``GET /v1/customers/{id}/recommendations?k=K`` for a seeded sample of
  the customers in the feature store, plus ``unknown_fraction`` ids the store does not know
  (the cold-start path);
* ``gateway_similar``: ``GET /v1/articles/{id}/similar?k=K`` for a sample of the articles
  ``similar_items`` serves;
* ``triton_recommend`` / ``triton_similar``: the same models called directly over gRPC,
  ``recommend`` with encoded features fetched from the store beforehand.

It reports requests, failures, throughput (req/s) and p50 / p95 / p99 latency (ms, as the
client sees it) per workload and level; at the lowest level also where the time goes, from
the gateway's and Triton's Prometheus metrics, and checks the latency targets (PASS/MISS, no
assert). Results go to ``bench.json`` and ``bench.md`` (Markdown tables for the README).

Modules, by concern:

* :mod:`.workloads`: what is sent (workloads, routes, Triton models, request samples);
* :mod:`.config`: :class:`BenchConfig`, limits, output file names, input checks;
* :mod:`.stats`: percentiles and the summary of a measured window;
* :mod:`.prometheus`: Prometheus text parsing and sample deltas;
* :mod:`.breakdown`: gateway stages and Triton model times from metric deltas;
* :mod:`.targets`: latency targets and reference times, and the check against them;
* :mod:`.report`: the result, its tables (Markdown, rich) and JSON;
* :mod:`.machine`: machine, CPU and dataset facts;
* :mod:`.runner`: :func:`run_benchmark`, the stack under test, the samples;
* :mod:`.loadgen`: the locust child process (not imported here: see its docstring).

Example::

    cfg = BenchConfig(name="completejourney", triton_repo=Path("triton_repo"),
                      feature_repo=Path("models/completejourney/feature_repo"),
                      out_dir=Path("models/completejourney/bench"), users=(1, 4), seconds=10)
    result = run_benchmark(cfg, log=print)
    result.phases[0].summary.p50_ms
"""

from shoprec.bench.breakdown import (
    GATEWAY_REQUEST_SECONDS,
    GATEWAY_STAGE_SECONDS,
    STAGE_ORDER,
    Breakdown,
    ModelTime,
    StageTime,
    breakdown,
    gateway_stages,
    triton_models,
)
from shoprec.bench.config import (
    BENCH_JSON,
    BENCH_MD,
    BenchConfig,
    BenchError,
    check_loopback,
    parse_users,
)
from shoprec.bench.prometheus import metric_delta, metric_sum, parse_prometheus
from shoprec.bench.report import (
    BenchResult,
    Section,
    render_markdown,
    report_sections,
    rich_tables,
    to_json,
)
from shoprec.bench.runner import run_benchmark
from shoprec.bench.stats import LatencySummary, PhaseResult, percentile, summarize
from shoprec.bench.targets import TARGETS, TargetCheck, check_targets
from shoprec.bench.workloads import GATEWAY_ROUTES, Samples, Workload, draw_samples

__all__ = [
    "BENCH_JSON",
    "BENCH_MD",
    "GATEWAY_REQUEST_SECONDS",
    "GATEWAY_ROUTES",
    "GATEWAY_STAGE_SECONDS",
    "STAGE_ORDER",
    "TARGETS",
    "BenchConfig",
    "BenchError",
    "BenchResult",
    "Breakdown",
    "LatencySummary",
    "ModelTime",
    "PhaseResult",
    "Samples",
    "Section",
    "StageTime",
    "TargetCheck",
    "Workload",
    "breakdown",
    "check_loopback",
    "check_targets",
    "draw_samples",
    "gateway_stages",
    "metric_delta",
    "metric_sum",
    "parse_prometheus",
    "parse_users",
    "percentile",
    "render_markdown",
    "report_sections",
    "rich_tables",
    "run_benchmark",
    "summarize",
    "to_json",
    "triton_models",
]
