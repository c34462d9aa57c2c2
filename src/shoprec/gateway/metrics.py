"""Prometheus metrics of the gateway: per endpoint and per stage of a request.

Every app owns its :class:`GatewayMetrics` with its own ``CollectorRegistry``, so several apps in
one process (tests) do not collide. Endpoints are labelled by their route template
(``/v1/articles/{article_id}``), never the raw path, so label cardinality stays bounded.
"""

from __future__ import annotations

import time
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Seconds; dense around the 15 ms p50 target of a personalised request.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
    2.5,
)  # fmt: skip
UNMATCHED = "unmatched"  # endpoint label of requests that matched no route


class Stage(StrEnum):
    """Upstream calls a request is made of; the ``stage`` label of the stage metrics."""

    FEATURE_FETCH = "feature_fetch"  # FeatureStore.get_customers
    POPULAR = "popular"  # FeatureStore.popular (cold start)
    ARTICLE_DISPLAY = "article_display"  # FeatureStore.get_articles
    TRITON_RECOMMEND = "triton_recommend"
    TRITON_SIMILAR = "triton_similar"
    CATALOG = "catalog"  # version check (and reload) of the write API's article changes
    EVENT_LOG = "event_log"  # a durable write to the event log
    STORE_WRITE = "store_write"  # a write to the online store (article rows, erasures)
    SHOPPER_STATE = "shopper_state"  # a customer's exclusions or a session's views


class GatewayMetrics:
    """The gateway's collectors, registered in a registry of their own.

    * ``shoprec_gateway_requests_total{endpoint, method, status}``
    * ``shoprec_gateway_request_duration_seconds{endpoint}`` (histogram)
    * ``shoprec_gateway_stage_duration_seconds{stage}`` (histogram, failed calls included)
    * ``shoprec_gateway_stage_failures_total{stage, reason}`` (reason ``timeout`` | ``error``)
    * ``shoprec_gateway_known_customer_misses_total``
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shoprec_gateway_requests",
            "HTTP requests answered, by route template, method and status code.",
            ("endpoint", "method", "status"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "shoprec_gateway_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ("endpoint",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        stage_seconds = Histogram(
            "shoprec_gateway_stage_duration_seconds",
            "Time spent in one upstream call of a request, failed calls included.",
            ("stage",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_failures = Counter(
            "shoprec_gateway_stage_failures",
            "Upstream calls that failed, by stage and reason (timeout | error).",
            ("stage", "reason"),
            registry=self.registry,
        )
        self.known_customer_misses = Counter(
            "shoprec_gateway_known_customer_misses",
            "Customers of the materialized snapshot the feature store did not return "
            "(served the popular list): a partial loss of the online store.",
            registry=self.registry,
        )
        # Bound once: no label lookup per request, and every stage shows up before its first use.
        self._stage_seconds = {stage: stage_seconds.labels(stage.value) for stage in Stage}

    def observe_stage(self, stage: Stage, seconds: float, failure: str | None = None) -> None:
        """Record one upstream call of ``stage`` that took ``seconds``.

        ``failure`` is ``None`` for a call that answered, else the reason it failed
        (``"timeout"`` or ``"error"``).
        """
        self._stage_seconds[stage].observe(seconds)
        if failure is not None:
            self.stage_failures.labels(stage.value, failure).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware counting and timing every HTTP request by route template.

    Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task or body buffering per request.
    An exception escaping the app is recorded as status 500 and re-raised.
    """

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The router stores the matched route in the scope; its path is the template.
            endpoint = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - start)
