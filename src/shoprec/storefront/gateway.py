"""The storefront's client of the gateway's public REST API (httpx), and nothing else.

Every call is bounded by ``StorefrontSettings.timeout_s``. A gateway that is down, slow, or
answers 5xx raises :class:`GatewayUnavailableError`; the pages then render the last popular
list this process saw (:attr:`GatewayClient.last_popular`) with a message. A 404 raises
:class:`NotFoundError`. The write key travels only in the ``X-API-Key`` header of
``POST /v1/events``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import httpx

KEY_HEADER: Final = "X-API-Key"


class GatewayUnavailableError(Exception):
    """The gateway did not answer in time, could not be reached, or answered 5xx."""


class NotFoundError(Exception):
    """The gateway answered 404 (unknown article, or a route it does not have)."""


class EventsRejectedError(Exception):
    """The gateway refused events (no write key, 4xx); the message says why."""


@dataclass(frozen=True)
class ArticleList:
    """A list of articles as a page shows it.

    Attributes:
        source: where it came from: ``personalised``, ``popular``, ``session``, ``similar``
            (the gateway's word where it gives one).
        items: the gateway's items (``article_id``, ``name``, attributes, maybe ``score``).
        recommendation_id: the answer's id, sent back with events on its articles.
    """

    source: str
    items: list[dict[str, Any]]
    recommendation_id: str | None = None


@dataclass
class CachedPopular:
    """The last popular list the gateway gave, and when (epoch seconds)."""

    articles: ArticleList
    at: float = field(default_factory=time.time)


class GatewayClient:
    """Async calls to the gateway (see the module docstring).

    Args:
        base_url: the gateway, e.g. ``http://127.0.0.1:8080``.
        timeout_s: bound of each call, seconds.
        write_key / read_key: API keys (None: not sent).
        transport: an httpx transport (tests); None: the network.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        write_key: str | None = None,
        read_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {KEY_HEADER: read_key} if read_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, headers=headers, transport=transport
        )
        self._write_key = write_key
        self.last_popular: CachedPopular | None = None

    @property
    def can_write(self) -> bool:
        """Whether a write key is configured (events can be posted)."""
        return self._write_key is not None

    async def close(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, **params: Any) -> dict[str, Any]:
        try:
            response = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise GatewayUnavailableError(type(exc).__name__) from exc
        if response.status_code == httpx.codes.NOT_FOUND:
            raise NotFoundError(path)
        if response.status_code >= 500 or response.status_code == 429:
            raise GatewayUnavailableError(f"HTTP {response.status_code}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def recommendations(self, customer_id: str, k: int) -> ArticleList:
        """``GET /v1/customers/{id}/recommendations`` (source ``personalised`` or
        ``popular``)."""
        body = await self._get(f"/v1/customers/{_segment(customer_id)}/recommendations", k=k)
        return ArticleList(body["source"], body["items"], body["recommendation_id"])

    async def session_recommendations(self, session_id: str, k: int) -> ArticleList:
        """``GET /v1/sessions/{id}/recommendations`` (source ``session`` or ``popular``).

        Raises:
            NotFoundError: the gateway has no session route, or does not know the session.
        """
        body = await self._get(f"/v1/sessions/{_segment(session_id)}/recommendations", k=k)
        return ArticleList(body.get("source", "session"), body["items"], body["recommendation_id"])

    async def popular(self, k: int) -> ArticleList:
        """``GET /v1/popular``; remembered as :attr:`last_popular` for the fallback page."""
        body = await self._get("/v1/popular", k=k)
        articles = ArticleList("popular", body["items"], body["recommendation_id"])
        self.last_popular = CachedPopular(articles)
        return articles

    async def article(self, article_id: str) -> dict[str, Any]:
        """``GET /v1/articles/{id}``: display fields."""
        return await self._get(f"/v1/articles/{_segment(article_id)}")

    async def similar(self, article_id: str, k: int) -> ArticleList:
        """``GET /v1/articles/{id}/similar`` (source ``similar``)."""
        body = await self._get(f"/v1/articles/{_segment(article_id)}/similar", k=k)
        return ArticleList("similar", body["items"], body["recommendation_id"])

    async def search(
        self,
        q: str | None = None,
        department: str | None = None,
        product_group: str | None = None,
        limit: int = 24,
    ) -> tuple[list[dict[str, Any]], int]:
        """``GET /v1/articles``: (items, total matches)."""
        params = {"q": q, "department": department, "product_group": product_group}
        body = await self._get(
            "/v1/articles", limit=limit, **{k: v for k, v in params.items() if v}
        )
        return body["items"], int(body["total"])

    async def departments(self) -> list[dict[str, Any]]:
        """``GET /v1/catalog/departments``."""
        body = await self._get("/v1/catalog/departments")
        departments: list[dict[str, Any]] = body["departments"]
        return departments

    async def post_events(self, events: list[dict[str, Any]]) -> int:
        """``POST /v1/events`` with the write key; the number of events stored (duplicates
        of events already stored count as stored).

        Raises:
            EventsRejectedError: no write key, or the gateway refused the batch (4xx).
            GatewayUnavailableError: the gateway is down, slow, or answered 5xx.
        """
        if self._write_key is None:
            raise EventsRejectedError("no write key configured for the storefront")
        try:
            response = await self._http.post(
                "/v1/events", json={"events": events}, headers={KEY_HEADER: self._write_key}
            )
        except httpx.HTTPError as exc:
            raise GatewayUnavailableError(type(exc).__name__) from exc
        if response.status_code >= 500:
            raise GatewayUnavailableError(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            detail = response.json().get("detail", f"HTTP {response.status_code}")
            raise EventsRejectedError(str(detail))
        body = response.json()
        return int(body["stored"]) + int(body["duplicates"])


def event(
    kind: str,
    customer_id: str,
    article_id: str,
    session_id: str | None = None,
    recommendation_id: str | None = None,
    quantity: int | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """One event for ``POST /v1/events`` with a fresh ``event_id``, stamped ``timestamp``
    (timezone-aware; None: now, UTC)."""
    body: dict[str, Any] = {
        "event_id": f"sf-{uuid.uuid4().hex}",
        "type": kind,
        "customer_id": customer_id,
        "article_id": article_id,
        "timestamp": (timestamp or datetime.now(UTC)).isoformat(),
    }
    optional = {
        "session_id": session_id,
        "recommendation_id": recommendation_id,
        "quantity": quantity,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _segment(value: str) -> str:
    """``value`` as one URL path segment (percent-encoded)."""
    return quote(value, safe="")
