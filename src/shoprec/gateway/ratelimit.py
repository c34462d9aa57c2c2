"""Per-key rate limits with the ``limits`` library: sliding-window counters, 429 + Retry-After.

Three budgets (:class:`Budget`), each a ``limits`` string from the settings: reads (one per
request), writes of customers and articles (one per request), and events (a batch of n events
costs n). A request with a key counts against that key's name; a request without one against
its client address (behind a proxy, run uvicorn with ``--proxy-headers`` so the address is
the client's).

Storage: ``memory://`` (the default) keeps the counters in each gateway process, so with W
uvicorn workers a client gets up to W times the limit; ``redis://...`` shares them between
processes and hosts. In memory the check is the async API of ``limits``
(``limits.aio.storage.MemoryStorage``, on the event loop, about 5 µs): its synchronous
``MemoryStorage`` starts a ``threading.Timer`` thread for expiry whenever the last one has
ended, i.e. about once per request at low rates, and those thread starts took the gateway's
p50 from 1.45 to 2.11 ms on similar items (``shoprec bench --users 1``, back to back). Only
the synchronous Redis storage of ``limits`` works beside Feast's ``redis<5`` pin (the async one
needs redis-py >= 5.2 or coredis), so a Redis-backed check runs in a worker thread (about
0.16 ms per check, measured). When the storage fails the request is let through and a warning
logged: an outage of the limiter's Redis does not take the API down.

Strategy: ``SlidingWindowCounterRateLimiter`` (two counters per key and budget, O(1) memory,
unlike the moving window, which stores one entry per unit of cost).
"""

from __future__ import annotations

import logging
import math
import time
from enum import StrEnum
from typing import Final

import anyio.to_thread
from fastapi import HTTPException, status
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage as AsyncMemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter as AsyncLimiter
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from shoprec.gateway.settings import Settings

logger = logging.getLogger(__name__)

RATE_LIMITED: Final = "rate limit exceeded"


class Budget(StrEnum):
    """What a request spends."""

    READS = "reads"
    WRITES = "writes"
    EVENTS = "events"


class RateLimits:
    """The gateway's rate limits (see the module docstring).

    Raises:
        limits.errors.ConfigurationError: the storage URI names a storage that cannot be used.
    """

    def __init__(self, settings: Settings) -> None:
        uri = settings.rate_limit_storage
        self._shared = (
            None
            if uri.startswith("memory://")
            else SlidingWindowCounterRateLimiter(storage_from_string(uri))
        )
        self._local: AsyncLimiter | None = None  # made in the event loop, at first use
        self.items: dict[Budget, RateLimitItem] = {
            Budget.READS: parse(settings.rate_limit_reads),
            Budget.WRITES: parse(settings.rate_limit_writes),
            Budget.EVENTS: parse(settings.rate_limit_events),
        }

    async def spend(self, budget: Budget, identity: str, cost: int = 1) -> None:
        """Spend ``cost`` of ``identity``'s ``budget``.

        Raises:
            HTTPException: 429 :data:`RATE_LIMITED` with a ``Retry-After`` header (whole
                seconds, >= 1) when the budget does not cover ``cost``.
        """
        item = self.items[budget]
        if self._shared is None:
            retry_after = await self._spend_local(item, budget, identity, cost)
        else:
            retry_after = await anyio.to_thread.run_sync(
                _spend_shared, self._shared, item, budget, identity, cost
            )
        if retry_after is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                RATE_LIMITED,
                headers={"Retry-After": str(retry_after)},
            )

    async def _spend_local(
        self, item: RateLimitItem, budget: Budget, identity: str, cost: int
    ) -> int | None:
        if self._local is None:
            self._local = AsyncLimiter(AsyncMemoryStorage())
        if await self._local.hit(item, budget.value, identity, cost=cost):
            return None
        stats = await self._local.get_window_stats(item, budget.value, identity)
        return _retry_after(stats.reset_time)


def _spend_shared(
    limiter: SlidingWindowCounterRateLimiter,
    item: RateLimitItem,
    budget: Budget,
    identity: str,
    cost: int,
) -> int | None:
    """None when admitted, else the seconds until the window has room again (blocking)."""
    try:
        if limiter.hit(item, budget.value, identity, cost=cost):
            return None
        stats = limiter.get_window_stats(item, budget.value, identity)
    except Exception:  # the storage failed: let the request through
        logger.warning("rate limit storage failed; request admitted", exc_info=True)
        return None
    return _retry_after(stats.reset_time)


def _retry_after(reset_time: float) -> int:
    """Whole seconds (>= 1) until ``reset_time`` (Unix seconds)."""
    return max(1, math.ceil(reset_time - time.time()))
