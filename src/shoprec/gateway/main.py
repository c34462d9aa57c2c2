"""The production gateway app: Feast online store + Triton, configured from ``SHOPREC_*``.

``python -m shoprec.gateway`` serves it (what ``shoprec gateway`` runs).
"""

from __future__ import annotations

import sys

from fastapi import FastAPI

from shoprec.events import EventLog, open_event_log
from shoprec.featurestore import OnlineFeatures
from shoprec.featurestore.writer import OnlineWriter
from shoprec.gateway.app import create_app
from shoprec.gateway.server import server_command
from shoprec.gateway.settings import Settings


def feast_store(settings: Settings) -> OnlineFeatures:
    """The Feast reader over ``settings.feature_repo`` (Redis address and article display
    source from the settings)."""
    return OnlineFeatures(
        settings.feature_repo,
        redis_url=settings.redis_url,
        article_display=settings.article_display,
    )


def feast_writer(settings: Settings) -> OnlineWriter:
    """The online-store writer of ``settings.feature_repo`` (the write API's)."""
    return OnlineWriter(settings.feature_repo, redis_url=settings.redis_url)


def event_log(settings: Settings) -> EventLog:
    """The event log of ``settings.event_log_url()`` (Redis password from its file)."""
    return open_event_log(
        settings.event_log_url(),
        namespace=settings.event_log_namespace,
        dedupe_window_s=settings.event_dedupe_window_s,
        password=settings.event_log_password(),
    )


def uvicorn_command(host: str, port: int, workers: int = 1) -> list[str]:
    """The command line of a gateway server process (``make_app`` under uvicorn with the
    limits of :mod:`shoprec.gateway.server`), as ``shoprec gateway`` and ``shoprec serve`` run
    it; settings travel in its environment (:meth:`Settings.environment`)."""
    return server_command(sys.executable, host, port, workers)


def make_app() -> FastAPI:
    """Gateway over Feast and Triton with the write API; settings read from the environment
    at call time."""
    return create_app(
        store_factory=feast_store, event_log_factory=event_log, store_writer_factory=feast_writer
    )
