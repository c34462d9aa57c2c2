"""What the benchmark sends: the workloads, how each reaches the stack, and the ids it draws.

A :class:`Workload` is one kind of request. Each is sent one way, named in exactly one of:

* :data:`GATEWAY_ROUTES`: an HTTP ``GET`` of the gateway route template (also the ``endpoint``
  label of the gateway's metrics); :func:`gateway_paths` fills it from the :class:`Samples`;
* :data:`TRITON_MODELS`: a gRPC ``infer`` of that Triton model, its inputs built by the load
  generator (:mod:`shoprec.bench.loadgen`) from the samples;
* :data:`EVENT_BATCHES`: a ``POST`` of :data:`EVENTS_ROUTE` with that many new purchase events
  (:func:`event_batch`), with the write key (the write side, :mod:`shoprec.bench.writes`).

Adding a workload: a :class:`Workload` member, its :data:`WORKLOAD_LABELS` entry, how it is
sent (one of the mappings above, or a new one the load generator knows), and, when it has
latency targets or a reference time, entries in :mod:`shoprec.bench.targets`.

Everything here is pure (no I/O, no locust), importable by the benchmark process and its load
generator alike.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from shoprec import schema as s


class Workload(StrEnum):
    """One kind of request the benchmark sends."""

    GATEWAY_RECOMMEND = "gateway_recommend"
    GATEWAY_SIMILAR = "gateway_similar"
    TRITON_RECOMMEND = "triton_recommend"
    TRITON_SIMILAR = "triton_similar"
    GATEWAY_EVENTS_1 = "gateway_events_1"
    GATEWAY_EVENTS_100 = "gateway_events_100"


WORKLOAD_LABELS: Final[Mapping[Workload, str]] = {
    Workload.GATEWAY_RECOMMEND: "gateway personalised",
    Workload.GATEWAY_SIMILAR: "gateway similar-items",
    Workload.TRITON_RECOMMEND: "Triton recommend (gRPC)",
    Workload.TRITON_SIMILAR: "Triton similar_items (gRPC)",
    Workload.GATEWAY_EVENTS_1: "POST /v1/events, 1 event",
    Workload.GATEWAY_EVENTS_100: "POST /v1/events, 100 events",
}
# Route templates of the gateway (shoprec.gateway.routes): the URL of a request and the
# ``endpoint`` label of its metrics.
GATEWAY_ROUTES: Final[Mapping[Workload, str]] = {
    Workload.GATEWAY_RECOMMEND: "/v1/customers/{customer_id}/recommendations",
    Workload.GATEWAY_SIMILAR: "/v1/articles/{article_id}/similar",
}
# Triton models called directly over gRPC.
TRITON_MODELS: Final[Mapping[Workload, str]] = {
    Workload.TRITON_RECOMMEND: s.TRITON_RECOMMEND,
    Workload.TRITON_SIMILAR: s.TRITON_SIMILAR_ITEMS,
}
# The write side: events per request of each write workload, all sent to one route.
EVENTS_ROUTE: Final = "/v1/events"
EVENT_BATCHES: Final[Mapping[Workload, int]] = {
    Workload.GATEWAY_EVENTS_1: 1,
    Workload.GATEWAY_EVENTS_100: 100,
}
READ_WORKLOADS: Final = tuple(w for w in Workload if w not in EVENT_BATCHES)
WRITE_WORKLOADS: Final = tuple(EVENT_BATCHES)
UNKNOWN_CUSTOMER_PREFIX: Final = "bench-unknown-"


def gateway_route(workload: Workload) -> str | None:
    """The gateway route template a workload loads (its metrics' ``endpoint`` label), or
    None for a Triton-direct workload."""
    if workload in EVENT_BATCHES:
        return EVENTS_ROUTE
    return GATEWAY_ROUTES.get(workload)


def event_batch(
    samples: Samples, size: int, prefix: str, serial: int, rng: random.Random
) -> dict[str, Any]:
    """The JSON body of one ``POST /v1/events``: ``size`` purchases of sampled articles by
    sampled customers, timestamped now, with the unique ids ``<prefix>-<serial + i>``."""
    now = datetime.now(UTC).isoformat()
    return {
        "events": [
            {
                "event_id": f"{prefix}-{serial + i}",
                "type": "purchase",
                "customer_id": rng.choice(samples.customers),
                "article_id": rng.choice(samples.articles),
                "timestamp": now,
                "quantity": 1,
                "price": 1.0,
            }
            for i in range(size)
        ]
    }


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


def gateway_paths(workload: Workload, samples: Samples, k: int) -> list[str]:
    """The paths (with the ``k`` query) a gateway workload's users pick from: one per sampled
    customer (known, then unknown) or article.

    Raises:
        KeyError: ``workload`` is not sent to the gateway.
    """
    route = GATEWAY_ROUTES[workload]
    if workload is Workload.GATEWAY_RECOMMEND:
        customers = samples.customers + samples.unknown_customers
        return [route.format(customer_id=c) + f"?k={k}" for c in customers]
    if workload is Workload.GATEWAY_SIMILAR:
        return [route.format(article_id=a) + f"?k={k}" for a in samples.articles]
    raise KeyError(f"no request paths for gateway workload {workload.value!r}")
