"""Where the time of a phase goes, from the deltas of the gateway's and Triton's Prometheus
metrics over its measured window.

* Gateway: the request and stage histograms of :class:`shoprec.gateway.metrics.GatewayMetrics`
  (seconds), per request of the loaded route -> :class:`StageTime` (ms per request).
* Triton: its per-model cumulative ``nv_inference_*`` counters (microseconds), per successful
  request -> :class:`ModelTime` (ms).

The metric names are those the servers register (tests pin the gateway's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from shoprec.bench.prometheus import SampleKey, label_values, metric_sum
from shoprec.bench.workloads import Workload, gateway_route

# Metric names as registered by shoprec.gateway.metrics.GatewayMetrics (tests pin them).
GATEWAY_REQUEST_SECONDS: Final = "shoprec_gateway_request_duration_seconds"
GATEWAY_STAGE_SECONDS: Final = "shoprec_gateway_stage_duration_seconds"
# Gateway stages (shoprec.gateway.metrics.Stage values) in the order a request calls them.
STAGE_ORDER: Final = (
    "catalog",
    "feature_fetch",
    "shopper_state",
    "popular",
    "triton_recommend",
    "triton_similar",
    "article_display",
    "event_log",
    "store_write",
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
    route = gateway_route(workload)
    if route is not None and gateway_delta is not None:
        server_ms, _, stages = gateway_stages(gateway_delta, route)
        overhead = client_mean_ms - sum(s.ms_per_request for s in stages)
    return Breakdown(
        workload, users, client_mean_ms, server_ms, stages, overhead, triton_models(triton_delta)
    )
