"""The gateway's FastAPI application factory.

Run it with uvicorn's factory mode over a feature-store factory, e.g.::

    def make_app() -> FastAPI:
        return create_app(
            store_factory=lambda s: OnlineFeatures(s.feature_repo, redis_url=s.redis_url)
        )

    uvicorn --factory mymodule:make_app --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shoprec import __version__
from shoprec.gateway.deps import Backends, FeatureStore, Recommender
from shoprec.gateway.metrics import GatewayMetrics, MetricsMiddleware
from shoprec.gateway.routes import api_router
from shoprec.gateway.server import ConcurrencyLimit
from shoprec.gateway.settings import Settings
from shoprec.gateway.triton import TritonRecommender

StoreFactory = Callable[[Settings], FeatureStore]
RecommenderFactory = Callable[[Settings], Recommender]


def create_app(
    settings: Settings | None = None,
    *,
    store_factory: StoreFactory,
    recommender_factory: RecommenderFactory = TritonRecommender.from_settings,
) -> FastAPI:
    """A gateway app; nothing is connected until its lifespan starts.

    Args:
        settings: configuration; read from the ``SHOPREC_*`` environment when omitted.
        store_factory: builds the :class:`~shoprec.gateway.deps.FeatureStore` at startup.
        recommender_factory: builds the :class:`~shoprec.gateway.deps.Recommender` at startup,
            inside the serving event loop (the gRPC channel binds to it); it is closed on
            shutdown. Defaults to :meth:`TritonRecommender.from_settings`.

    Raises:
        pydantic.ValidationError: ``settings`` omitted and the environment holds invalid
            values.
    """
    settings = settings or Settings()
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recommender = recommender_factory(settings)
        try:
            store = store_factory(settings)
            app.state.backends = backends = Backends(store, recommender, settings, metrics)
            follower = asyncio.create_task(backends.follow_store_versions(settings.store_refresh_s))
            try:
                yield
            finally:
                follower.cancel()
        finally:
            await recommender.close()

    app = FastAPI(
        title="shoprec gateway",
        summary="Personalised and similar-item recommendations over Feast and Triton.",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.include_router(api_router(settings))
    app.add_middleware(ConcurrencyLimit, limit=settings.max_concurrent_requests)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 503s too
    return app
