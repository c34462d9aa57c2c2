"""What the routes depend on: the upstream interfaces, and bounded, measured calls to them.

The feature store and the recommender are :class:`typing.Protocol` s; the real implementations
(the Feast reader in ``shoprec.featurestore``, :class:`shoprec.gateway.triton.TritonRecommender`)
are handed to :func:`shoprec.gateway.app.create_app` as factories, tests hand fakes.

Every upstream call goes through :class:`Backends`, which bounds it by the configured timeout,
records its stage latency, and turns an unavailable or slow upstream into a 503 whose ``detail``
is one of the stable strings below. Failures are logged at most once per kind per
``Settings.log_interval_s`` (:class:`shoprec.gateway.logs.FailureLog`) and all counted in
``shoprec_gateway_stage_failures_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Final, NamedTuple, Protocol, TypeVar, TypeVarTuple, cast

import anyio.to_thread
import numpy as np
import numpy.typing as npt
from fastapi import Depends, HTTPException, Request, status

from shoprec.errors import ShoprecError
from shoprec.gateway.browse import ArticleIndex
from shoprec.gateway.logs import FailureLog, describe
from shoprec.gateway.metrics import GatewayMetrics, Stage
from shoprec.gateway.settings import Settings

logger = logging.getLogger(__name__)

RECOMMENDER_UNAVAILABLE: Final = "recommendation service unavailable"
STORE_UNAVAILABLE: Final = "feature store unavailable"

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class UpstreamUnavailableError(ShoprecError):
    """The recommender (Triton) could not answer: unreachable, timed out, or failed the call."""


class RankedBatch(NamedTuple):
    """Ranked article lists of a batch of B queries, best first, padding already dropped.

    ``ids[b]`` and ``scores[b]`` have the same length, at most the requested k (fewer where the
    model returned padding). Scores are finite; higher is better.
    """

    ids: list[list[str]]
    scores: list[list[float]]


class FeatureStore(Protocol):
    """Online feature reader (Feast). Synchronous: the gateway calls it from worker threads.

    Any exception it raises is treated as the store being unavailable (503).
    """

    def get_customers(
        self, ids: Sequence[str]
    ) -> tuple[npt.NDArray[np.bool_], dict[str, npt.NDArray[Any]]]:
        """Encoded features of B customers.

        Returns:
            ``found``: bool (B,), False for a customer the store does not know, and the features
            keyed by :data:`shoprec.schema.ENCODED_CUSTOMER_FEATURES`, stacked over B with the
            dtypes and shapes of the ``recommend`` inputs (INT64 (B, Fc), FP32 (B, Fdc),
            INT64 (B, N), FP32 (B, N)). Rows of unknown customers hold any value.
        """
        ...

    def get_articles(self, ids: Sequence[str]) -> list[dict[str, str | None] | None]:
        """Display fields (``NAME``, ``ARTICLE_ATTRIBUTES``, ``DESCRIPTION``) of each article.

        Returns one entry per id, in order; ``None`` for an article the store does not know.
        A store may also set an attribute ``articles_in_memory = True``: its ``get_articles``
        is then a dictionary lookup, called on the event loop without a worker thread.
        """
        ...

    def all_articles(self) -> Mapping[str, Mapping[str, str | None]]:
        """Display fields of every served article by id (browse and search). Returns the same
        object until the store switches versions (the gateway caches its index by identity)."""
        ...

    def popular(self, k: int) -> list[str]:
        """The k most popular article ids of the recent popularity window, most popular first."""
        ...

    def ping(self) -> None:
        """Return when the store answers and holds the version it serves; raise any exception
        when it does not (unreachable, empty, or another materialization's store)."""
        ...

    def known_customers(self, ids: Sequence[str]) -> npt.NDArray[np.bool_]:
        """bool (B,): which ids are customers of the materialized snapshot, whether or not the
        store returned their features (a known customer the store misses is data loss)."""
        ...

    def excluded(self, customer_id: str) -> frozenset[str]:
        """Articles never to list for the customer: marked ``not_interested`` or in the bought
        set (the shopper state, one read for both)."""
        ...

    def session_views(self, session_id: str) -> list[str]:
        """Distinct articles viewed in a session, most recent first (empty when unknown)."""
        ...

    def refresh(self) -> bool:
        """Switch to a newer materialized version if there is one; True when it switched.
        Blocking (called from a worker thread); raises when the new version cannot be read,
        the current one staying in use."""
        ...


class Recommender(Protocol):
    """The model server (Triton), called from the event loop."""

    async def recommend(self, features: Mapping[str, npt.NDArray[Any]], k: int) -> RankedBatch:
        """Top-k articles of B customers from their :meth:`FeatureStore.get_customers` features.

        Raises:
            UpstreamUnavailableError: the server is unreachable, timed out or failed the call.
        """
        ...

    async def similar(self, article_ids: Sequence[str], k: int) -> RankedBatch:
        """Top-k articles most similar to each of B articles.

        Raises:
            UpstreamUnavailableError: the server is unreachable, timed out or failed the call.
        """
        ...

    async def ready(self) -> bool:
        """True when the server is live and every model the gateway calls is ready.

        Returns False, never raises, when the server is unreachable.
        """
        ...

    async def close(self) -> None:
        """Release connections; called once on shutdown."""
        ...


class Backends:
    """The upstreams of one app, called with bounded timeouts and stage metrics.

    Each method raises ``HTTPException(503)`` with :data:`STORE_UNAVAILABLE` or
    :data:`RECOMMENDER_UNAVAILABLE` when its upstream fails or does not answer within
    ``Settings.store_timeout_s`` / ``Settings.triton_timeout_s``. A store call that times out
    is abandoned: its worker thread finishes on its own while the request answers 503.

    Timeouts use ``asyncio.timeout``, not anyio's ``fail_after``: ``grpc.aio`` re-raises a
    cancelled call as a ``CancelledError`` of its own, which anyio's cancel scopes do not
    recognise as theirs and let escape (the request dies without an answer), while
    ``asyncio.timeout`` turns it into ``TimeoutError``. ``tests/test_gateway.py`` pins this
    with a stuck gRPC server.
    """

    def __init__(
        self,
        store: FeatureStore,
        recommender: Recommender,
        settings: Settings,
        metrics: GatewayMetrics,
    ) -> None:
        self._store = store
        self._articles_inline = getattr(store, "articles_in_memory", False) is True
        self._shopper_inline = getattr(store, "shopper_inline", False) is True
        self._recommender = recommender
        self._store_timeout_s = settings.store_timeout_s
        self._index_timeout_s = max(settings.store_timeout_s, settings.write_timeout_s)
        self._triton_timeout_s = settings.triton_timeout_s
        self._metrics = metrics
        self._failures = FailureLog(logger, settings.log_interval_s)
        self._index: tuple[int, ArticleIndex] | None = None  # (id of its source, index)
        self._index_lock = asyncio.Lock()  # one build at a time; the others wait and reuse it

    def _guarded(
        self,
        stage: Stage,
        call: Awaitable[T],
        timeout_s: float,
        errors: tuple[type[Exception], ...],
        detail: str,
    ) -> Awaitable[T]:
        """:func:`bounded` with this app's metrics and failure log."""
        return bounded(
            call,
            stage=stage,
            timeout_s=timeout_s,
            errors=errors,
            detail=detail,
            metrics=self._metrics,
            failures=self._failures,
        )

    async def customers(
        self, customer_ids: Sequence[str]
    ) -> tuple[npt.NDArray[np.bool_], dict[str, npt.NDArray[Any]]]:
        """:meth:`FeatureStore.get_customers`, stage ``feature_fetch``.

        A customer of the snapshot that the store does not return (a partial loss of the
        store) is counted in ``shoprec_gateway_known_customer_misses_total`` and logged
        (rate-limited); the route then serves it the popular list.
        """
        found, features = await self._from_store(
            Stage.FEATURE_FETCH, self._store.get_customers, customer_ids
        )
        missing = [c for c, ok in zip(customer_ids, found, strict=True) if not ok]
        if missing:
            known = int(np.count_nonzero(self._store.known_customers(missing)))
            if known:
                self._metrics.known_customer_misses.inc(known)
                self._failures.failure(
                    "known customer missing",
                    f"the feature store has no features for {known} customer(s) of the "
                    "materialized snapshot; serving them the popular list",
                )
        return found, features

    async def follow_store_versions(self, interval_s: float) -> None:
        """Every ``interval_s`` seconds, switch the store to a newer materialized version
        (:meth:`FeatureStore.refresh`, in a worker thread); runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                if await anyio.to_thread.run_sync(self._store.refresh, abandon_on_cancel=True):
                    logger.warning("feature store: switched to a new materialized version")
            except Exception as exc:
                self._failures.failure("feature store refresh", describe(exc))

    async def articles(self, article_ids: Sequence[str]) -> list[dict[str, str | None] | None]:
        """:meth:`FeatureStore.get_articles`, stage ``article_display``; on the event loop (no
        worker thread) when the store holds the articles in memory (``shoprec bench``, in-memory
        store: 0.37 ms per personalised request through a worker thread, 0.06 ms inline)."""
        if self._articles_inline:

            async def lookup() -> list[dict[str, str | None] | None]:
                return self._store.get_articles(article_ids)

            return await self._guarded(
                Stage.ARTICLE_DISPLAY,
                lookup(),
                self._store_timeout_s,
                (Exception,),
                STORE_UNAVAILABLE,
            )
        return await self._from_store(Stage.ARTICLE_DISPLAY, self._store.get_articles, article_ids)

    async def excluded(self, customer_id: str) -> frozenset[str]:
        """:meth:`FeatureStore.excluded`, stage ``shopper_state``; on the event loop when the
        state is a local SQLite file (``shopper_inline``), else in a worker thread."""
        if self._shopper_inline:

            async def lookup() -> frozenset[str]:
                return self._store.excluded(customer_id)

            return await self._guarded(
                Stage.SHOPPER_STATE, lookup(), self._store_timeout_s, (Exception,),
                STORE_UNAVAILABLE,
            )  # fmt: skip
        return await self._from_store(Stage.SHOPPER_STATE, self._store.excluded, customer_id)

    async def session_views(self, session_id: str) -> list[str]:
        """:meth:`FeatureStore.session_views`, stage ``shopper_state`` (as :meth:`excluded`)."""
        if self._shopper_inline:

            async def lookup() -> list[str]:
                return self._store.session_views(session_id)

            return await self._guarded(
                Stage.SHOPPER_STATE, lookup(), self._store_timeout_s, (Exception,),
                STORE_UNAVAILABLE,
            )  # fmt: skip
        return await self._from_store(Stage.SHOPPER_STATE, self._store.session_views, session_id)

    async def popular(self, k: int) -> list[str]:
        """:meth:`FeatureStore.popular`, stage ``popular``."""
        return await self._from_store(Stage.POPULAR, self._store.popular, k)

    async def article_index(self) -> ArticleIndex:
        """The :class:`~shoprec.gateway.browse.ArticleIndex` of the served articles, stage
        ``article_display``; rebuilt (in a worker thread) when the store's
        :meth:`FeatureStore.all_articles` returns another object (a new version). The first
        build reads the whole articles table: it is bounded by the write timeout
        (``Settings.write_timeout_s``), not the per-request store timeout: about 1.8 s for the
        92,331 articles of Complete Journey, measured in process on this project's busy 2-core
        machine (table 0.9 s, index 0.9 s; then a one-word search 0.2 ms, the 39,023
        articles of a department 11 ms)."""

        def build() -> ArticleIndex:
            articles = self._store.all_articles()
            cached = self._index
            if cached is not None and cached[0] == id(articles):
                return cached[1]
            index = ArticleIndex(articles)
            self._index = (id(articles), index)
            return index

        async with self._index_lock:
            return await self._from_store(
                Stage.ARTICLE_DISPLAY, build, timeout_s=self._index_timeout_s
            )

    async def recommend(self, features: Mapping[str, npt.NDArray[Any]], k: int) -> RankedBatch:
        """:meth:`Recommender.recommend`, stage ``triton_recommend``."""
        return await self._from_recommender(
            Stage.TRITON_RECOMMEND, self._recommender.recommend(features, k)
        )

    async def similar(self, article_ids: Sequence[str], k: int) -> RankedBatch:
        """:meth:`Recommender.similar`, stage ``triton_similar``."""
        return await self._from_recommender(
            Stage.TRITON_SIMILAR, self._recommender.similar(article_ids, k)
        )

    async def unavailable(self) -> list[str]:
        """Details of the upstreams that are down, both checked concurrently; empty when ready.

        The recommender is down when :meth:`Recommender.ready` is False or takes longer than
        the Triton timeout; the store when :meth:`FeatureStore.ping` raises or takes longer than
        the store timeout.
        """

        async def store_answers() -> bool:
            await anyio.to_thread.run_sync(self._store.ping, abandon_on_cancel=True)
            return True

        checks = (
            (RECOMMENDER_UNAVAILABLE, self._recommender.ready(), self._triton_timeout_s),
            (STORE_UNAVAILABLE, store_answers(), self._store_timeout_s),
        )
        answers = await asyncio.gather(
            *(self._within(detail, call, timeout_s) for detail, call, timeout_s in checks)
        )
        return [detail for (detail, _, _), ok in zip(checks, answers, strict=True) if not ok]

    async def _within(self, detail: str, call: Awaitable[bool], timeout_s: float) -> bool:
        """What ``call`` answers within ``timeout_s``; False when it raises or takes longer."""
        try:
            async with asyncio.timeout(timeout_s):
                return await call
        except Exception as exc:
            self._failures.failure(f"readiness: {detail}", describe(exc))
            return False

    async def _from_store(
        self, stage: Stage, fn: Callable[[*Ts], T], *args: *Ts, timeout_s: float | None = None
    ) -> T:
        call = anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        return await self._guarded(
            stage, call, timeout_s or self._store_timeout_s, (Exception,), STORE_UNAVAILABLE
        )

    async def _from_recommender(self, stage: Stage, call: Awaitable[T]) -> T:
        errors = (UpstreamUnavailableError,)
        return await self._guarded(
            stage, call, self._triton_timeout_s, errors, RECOMMENDER_UNAVAILABLE
        )


async def bounded(
    call: Awaitable[T],
    *,
    stage: Stage,
    timeout_s: float,
    errors: tuple[type[Exception], ...],
    detail: str,
    metrics: GatewayMetrics,
    failures: FailureLog,
) -> T:
    """Await an upstream ``call`` for at most ``timeout_s`` seconds, timed in ``stage``'s
    metrics; a timeout or one of ``errors`` is logged (rate-limited, no traceback) and
    raised as ``HTTPException(503, detail)``.

    Shared by the read path (:class:`Backends`) and the write path
    (:class:`shoprec.gateway.writes.Writes`).
    """
    start = time.perf_counter()
    failure: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            return await call
    except TimeoutError:
        failure = "timeout"
        failures.failure(f"{stage.value} timeout", f"no answer within {timeout_s:.3f} s")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail) from None
    except errors as exc:
        failure = "error"
        failures.failure(f"{stage.value} error", describe(exc))
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail) from None
    finally:
        metrics.observe_stage(stage, time.perf_counter() - start, failure)


def get_backends(request: Request) -> Backends:
    """The app's :class:`Backends`, built in its lifespan."""
    return cast(Backends, request.app.state.backends)


def get_metrics(request: Request) -> GatewayMetrics:
    """The app's :class:`GatewayMetrics`."""
    return cast(GatewayMetrics, request.app.state.metrics)


BackendsDep = Annotated[Backends, Depends(get_backends)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]
