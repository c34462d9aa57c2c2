"""The write API's article changes as every gateway worker sees them, current per request.

Articles put, hidden or deleted through the API live in the event log's durable catalog
(:meth:`shoprec.events.EventLog.articles_since`). Each worker keeps a copy of the changed rows
and, before every read that lists or shows articles, asks the log for its catalog version
(one indexed SQLite read on the event loop, or one Redis ``ZREVRANGE``); only when the version
moved does it load the rows changed since. A change acknowledged to one worker is therefore
seen by every worker from its next request on, with no staleness window, and a worker holds
no more than the changed rows (the serving snapshot stays in the feature store).

``shoprec bench`` reports the cost as the ``catalog`` stage (ms per request).

If the log cannot be read the request fails with 503 :data:`EVENT_LOG_UNAVAILABLE` rather
than risk recommending an article hidden meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from fastapi import HTTPException, status

from shoprec.events import ArticleState, EventLog, EventLogError
from shoprec.gateway.metrics import GatewayMetrics, Stage

logger = logging.getLogger(__name__)

EVENT_LOG_UNAVAILABLE: Final = "event log unavailable"


class CatalogView:
    """Article changes of the write API (see the module docstring).

    Args:
        log: the event log; None when the app has no write API (nothing is ever changed).
        metrics: records each check as stage ``catalog``.
        timeout_s: bound of one check, seconds.
    """

    def __init__(self, log: EventLog | None, metrics: GatewayMetrics, timeout_s: float) -> None:
        self._log = log
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._version = 0
        self._states: dict[str, ArticleState] = {}
        self._excluded: frozenset[str] = frozenset()
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Load the changes made since the last refresh, by any worker.

        Raises:
            HTTPException: 503 :data:`EVENT_LOG_UNAVAILABLE` when the log does not answer
                within the timeout.
        """
        if self._log is None:
            return
        start = time.perf_counter()
        failure: str | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                version = await self._log.catalog_version()
                if version > self._version:
                    async with self._lock:
                        if version > self._version:
                            changed = await self._log.articles_since(self._version)
                            self._apply(changed)
                            self._version = max([version, *(s.version for s in changed)])
        except (TimeoutError, EventLogError):
            failure = "error"
            logger.warning("catalog check failed", exc_info=True)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, EVENT_LOG_UNAVAILABLE
            ) from None
        finally:
            self._metrics.observe_stage(Stage.CATALOG, time.perf_counter() - start, failure)

    def note(self, state: ArticleState) -> None:
        """Apply a change this worker just made (it is visible here before the next refresh)."""
        self._apply([state])

    def _apply(self, states: list[ArticleState]) -> None:
        changed = False
        for state in states:
            current = self._states.get(state.article_id)
            if current is not None and current.version > state.version:
                continue  # an older copy of a row already seen newer
            self._states[state.article_id] = state
            changed = True
        if changed:
            self._excluded = frozenset(
                article_id for article_id, s in self._states.items() if s.hidden or s.deleted
            )

    async def excluded(self) -> frozenset[str]:
        """Refreshed ids of the articles that must not be listed (hidden or deleted)."""
        await self.refresh()
        return self._excluded

    def state(self, article_id: str) -> ArticleState | None:
        """The article's changed row as of the last refresh, or None if the API never changed
        it."""
        return self._states.get(article_id)
