"""The benchmark run: :func:`run_benchmark` reads what is served, draws the request samples,
brings the stack up (or checks a running one on loopback), runs the load generator
(:mod:`shoprec.bench.loadgen`) as a child process, and turns its raw phases into the
:class:`~shoprec.bench.report.BenchResult` and the ``bench.json`` / ``bench.md`` report.

Durations are in seconds; the load generator's time limit is
``phases * (warmup_s + seconds + 30) + 120`` seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from shoprec.bench.breakdown import Breakdown, breakdown
from shoprec.bench.config import (
    BENCH_JSON,
    BENCH_MD,
    LOADGEN_LOG,
    TRITON_FEATURE_SAMPLE,
    BenchConfig,
    BenchError,
)
from shoprec.bench.machine import dataset_facts, load_average, machine_facts
from shoprec.bench.prometheus import metric_delta, parse_prometheus
from shoprec.bench.report import BenchResult, render_markdown, report_sections, to_json
from shoprec.bench.stats import LatencySummary, PhaseResult
from shoprec.bench.targets import check_targets
from shoprec.bench.workloads import Samples, Workload, draw_samples

# Run as a child process, never imported here (see its docstring).
LOADGEN_MODULE: Final = "shoprec.bench.loadgen"


def _load_samples(config: BenchConfig) -> Samples:
    """:func:`draw_samples` of the feature repo's customers and the articles ``similar_items``
    serves."""
    # Imported here: ``import shoprec.bench`` stays free of numpy, pyarrow and Feast.
    from shoprec.featurestore.tables import ONLINE_DATA_DIR, read_customer_ids
    from shoprec.featurestore.versions import current_dir
    from shoprec.serving.repository import similar_items_article_ids

    customers = read_customer_ids(current_dir(config.feature_repo) / ONLINE_DATA_DIR)
    articles = similar_items_article_ids(config.triton_repo)
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


@dataclass(frozen=True)
class Endpoints:
    """The stack under test: gateway base URL, Triton gRPC ``host:port``, Triton metrics URL."""

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


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = lambda _: None) -> BenchResult:
    """Load the stack at every level and workload of ``config``; write the report.

    Writes :data:`BENCH_JSON`, :data:`BENCH_MD` and the load generator's log
    :data:`LOADGEN_LOG` to ``config.out_dir`` (created). ``log`` receives progress lines.
    Takes about ``len(users) * len(workloads) * (warmup_s + seconds + ~3 s)`` plus the
    stack's start.

    Raises:
        ArtifactError: the feature repo or the Triton repository lacks a file (not
            materialized or not exported).
        ValueError: the store holds no customer or ``similar_items`` no article.
        BenchError: none of the sampled customers is in the store, the running stack is not
            ready, or the load generator fails or overruns its time.
        StackError: the stack started here does not start or is not ready.
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
            raw = run_loadgen(spec, Path(tmp), config.out_dir / LOADGEN_LOG, log)
    facts["load average after"] = load_average()
    phases, breakdowns = phase_results(raw)
    result = BenchResult(facts, phases, breakdowns, check_targets(phases))
    (config.out_dir / BENCH_JSON).write_text(to_json(result))
    heading = (
        f"## Serving benchmark: {config.name} ({facts['date']}, {facts['cores']} cores, "
        f"load average {facts['load average before']} before, "
        f"{facts['load average after']} after)"
    )
    (config.out_dir / BENCH_MD).write_text(render_markdown(report_sections(result), heading))
    return result


def phase_results(raw: list[dict[str, Any]]) -> tuple[list[PhaseResult], list[Breakdown]]:
    """The load generator's raw phases as :class:`PhaseResult` s, and the breakdowns of the
    phases that carry metric snapshots (without Triton's, its models are left out)."""
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
                parse_prometheus(metrics.get("triton_before", "")),
                parse_prometheus(metrics.get("triton_after", "")),
            )
            breakdowns.append(
                breakdown(
                    phase.workload, phase.users, phase.summary.mean_ms, gateway_delta, triton_delta
                )
            )
    return phases, breakdowns


def run_loadgen(
    spec: dict[str, Any], tmp: Path, log_file: Path, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Run the load generator (:data:`LOADGEN_MODULE`) on ``spec``; its phase results.

    Raises:
        BenchError: it failed or overran its time limit (names the end of its log).
    """
    spec_path, result_path = tmp / "spec.json", tmp / "result.json"
    spec_path.write_text(json.dumps(spec))
    phases = len(spec["users"]) * len(spec["workloads"])
    limit_s = phases * (spec["warmup_s"] + spec["seconds"] + 30) + 120
    with log_file.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", LOADGEN_MODULE, str(spec_path), str(result_path)],
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
