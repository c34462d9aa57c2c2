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
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from shoprec import __version__
from shoprec.events import EventLog
from shoprec.gateway.auth import AccessControl, ReadAccess
from shoprec.gateway.bodylimit import BodySizeLimit
from shoprec.gateway.deps import Backends, FeatureStore, Recommender
from shoprec.gateway.keys import HEADER
from shoprec.gateway.metrics import GatewayMetrics, MetricsMiddleware
from shoprec.gateway.routes import api_router
from shoprec.gateway.server import ConcurrencyLimit
from shoprec.gateway.settings import Settings
from shoprec.gateway.triton import TritonRecommender
from shoprec.gateway.writes import StoreWriter, Writes, write_router

StoreFactory = Callable[[Settings], FeatureStore]
RecommenderFactory = Callable[[Settings], Recommender]
EventLogFactory = Callable[[Settings], EventLog]
StoreWriterFactory = Callable[[Settings], StoreWriter]


def docs_router(app: FastAPI, require_read_key: bool) -> APIRouter:
    """``/openapi.json`` and ``/docs`` (Swagger UI) behind the read key when one is required."""
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi(caller: ReadAccess) -> JSONResponse:
        return JSONResponse(openapi_schema(app, require_read_key))

    @router.get("/docs")
    async def docs(caller: ReadAccess) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    return router


def openapi_schema(app: FastAPI, require_read_key: bool) -> dict[str, Any]:
    """The app's OpenAPI document; when reads need no key, each read (GET) operation lists
    anonymous access (``{}``) beside the API key, so clients and schema-driven testers know a
    key is optional there (a key that is sent must still be valid: 401 otherwise)."""
    if app.openapi_schema is None:
        schema = app.openapi()
        if not require_read_key:
            for operations in schema.get("paths", {}).values():
                read = operations.get("get")
                if read is not None and read.get("security") and {} not in read["security"]:
                    read["security"] = [{}, *read["security"]]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(
    settings: Settings | None = None,
    *,
    store_factory: StoreFactory,
    recommender_factory: RecommenderFactory = TritonRecommender.from_settings,
    event_log_factory: EventLogFactory | None = None,
    store_writer_factory: StoreWriterFactory | None = None,
) -> FastAPI:
    """A gateway app; nothing is connected until its lifespan starts.

    Args:
        settings: configuration; read from the ``SHOPREC_*`` environment when omitted.
        store_factory: builds the :class:`~shoprec.gateway.deps.FeatureStore` at startup.
        recommender_factory: builds the :class:`~shoprec.gateway.deps.Recommender` at startup,
            inside the serving event loop (the gRPC channel binds to it); it is closed on
            shutdown. Defaults to :meth:`TritonRecommender.from_settings`.
        event_log_factory / store_writer_factory: build the write API's event log (inside the
            serving event loop; closed on shutdown) and online-store writer at startup. Without
            them the write routes answer 503 ``"write API not configured"``.

    Raises:
        pydantic.ValidationError: ``settings`` omitted and the environment holds invalid
            values.
        KeysFileError: the API keys file is missing or invalid.
    """
    settings = settings or Settings()
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recommender = recommender_factory(settings)
        log: EventLog | None = None
        try:
            store = store_factory(settings)
            app.state.backends = backends = Backends(store, recommender, settings, metrics)
            log = event_log_factory(settings) if event_log_factory else None
            writer = store_writer_factory(settings) if store_writer_factory else None
            app.state.writes = Writes(log, writer, settings, metrics)
            follower = asyncio.create_task(backends.follow_store_versions(settings.store_refresh_s))
            try:
                yield
            finally:
                follower.cancel()
        finally:
            if log is not None:
                await log.close()
            await recommender.close()

    app = FastAPI(
        title="shoprec gateway",
        summary="Personalised and similar-item recommendations over Feast and Triton; "
        "customers, articles and events in.",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.metrics = metrics
    app.state.access = AccessControl(settings)
    app.include_router(api_router(settings))
    app.include_router(write_router())
    app.include_router(docs_router(app, settings.require_read_key))
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ConcurrencyLimit, limit=settings.max_concurrent_requests)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # counts the 503s and 413s too
    if settings.cors_origins:  # reads only: write keys never go to a browser
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET"],
            allow_headers=[HEADER],
            max_age=600,
        )
    return app
