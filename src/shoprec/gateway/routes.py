"""HTTP routes of the gateway.

The routers are built per app by :func:`api_router` because the bounds of ``k`` come from the
app's :class:`~shoprec.gateway.settings.Settings` (``1..max_k``, default ``default_k``).

Stable ``detail`` strings (clients and tests match them):

* 404 ``"article not found"``: the feature store does not know the article, or it was deleted
  through the write API.
* 503 ``"recommendation service unavailable"`` / ``"feature store unavailable"``: that upstream
  failed or did not answer within its timeout; ``/readyz`` joins both with ``"; "`` when both
  are down. ``"event log unavailable"``: the write API's catalog could not be checked.
* 401 / 429: see :mod:`shoprec.gateway.auth` (reads take an optional key).

Lists never hold an article hidden or deleted through the write API (:mod:`.catalog`): the
routes ask the upstream for ``k`` plus the number of such articles and drop them. An article
changed through the write API is shown with its new display fields.
"""

# No ``from __future__ import annotations`` here: FastAPI must resolve the endpoints' annotations
# at runtime, and ``K`` below is local to ``api_router``.
import asyncio
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query, Response, status
from prometheus_client import CONTENT_TYPE_LATEST

from shoprec import schema
from shoprec.gateway.auth import ReadAccess
from shoprec.gateway.catalog import CatalogView
from shoprec.gateway.deps import Backends, BackendsDep, MetricsDep, RankedBatch
from shoprec.gateway.models import (
    Article,
    ArticleList,
    ArticleSummary,
    Department,
    Departments,
    ErrorDetail,
    Item,
    PopularArticles,
    ProductGroupCount,
    Recommendations,
    SessionRecommendations,
    SimilarArticles,
    Source,
    Status,
)
from shoprec.gateway.settings import Settings
from shoprec.gateway.writes import WritesDep

ARTICLE_NOT_FOUND: Final = "article not found"
MAX_SEARCH_LIMIT: Final = 100
MAX_QUERY_CHARS: Final = 200
SESSION_VIEWS: Final = 3  # most recent views of a session whose neighbours are blended

_UNAVAILABLE: Final[dict[int | str, dict[str, Any]]] = {
    code: {"model": ErrorDetail}
    for code in (
        status.HTTP_401_UNAUTHORIZED,
        status.HTTP_429_TOO_MANY_REQUESTS,
        status.HTTP_503_SERVICE_UNAVAILABLE,
    )
}
_NOT_FOUND_OR_UNAVAILABLE: Final[dict[int | str, dict[str, Any]]] = {
    status.HTTP_404_NOT_FOUND: {"model": ErrorDetail},
    **_UNAVAILABLE,
}


def _new_recommendation_id() -> str:
    return uuid.uuid4().hex


def _top(
    ids: Sequence[str], scores: Sequence[float | None], excluded: frozenset[str], k: int
) -> tuple[list[str], list[float | None]]:
    """The first ``k`` of a ranked list without the ``excluded`` ids."""
    kept = [(a, s) for a, s in zip(ids, scores, strict=True) if a not in excluded][:k]
    return [a for a, _ in kept], [s for _, s in kept]


async def _displays(
    backends: Backends, catalog: CatalogView, article_ids: Sequence[str]
) -> list[dict[str, str | None] | None]:
    """Display fields per id: the write API's fields where it put the article (None where it
    deleted it), else the store's (None for an article it does not know)."""
    out: list[dict[str, str | None] | None] = [None] * len(article_ids)
    ask: list[int] = []
    for i, article_id in enumerate(article_ids):
        state = catalog.state(article_id)
        if state is None or (state.fields is None and not state.deleted):
            ask.append(i)
        elif state.fields is not None and not state.deleted:
            out[i] = state.fields.display()
    if ask:
        stored = await backends.articles([article_ids[i] for i in ask])
        for i, display in zip(ask, stored, strict=True):
            out[i] = display
    return out


async def _items(
    backends: Backends,
    catalog: CatalogView,
    article_ids: Sequence[str],
    scores: Sequence[float | None],
) -> list[Item]:
    """Ranked ids joined with their display fields (null fields for an article the store
    does not know), in the given order."""
    if not article_ids:
        return []
    displays = await _displays(backends, catalog, article_ids)
    return [
        Item.model_validate({**(display or {}), schema.ARTICLE_ID: article_id, "score": score})
        for article_id, score, display in zip(article_ids, scores, displays, strict=True)
    ]


async def _known_article(
    backends: Backends, catalog: CatalogView, article_id: str
) -> dict[str, str | None]:
    """The article's display fields; 404 when the catalog does not know it (the caller
    refreshed ``catalog``)."""
    (display,) = await _displays(backends, catalog, [article_id])
    if display is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, ARTICLE_NOT_FOUND)
    return display


def api_router(settings: Settings) -> APIRouter:
    """All routes of the gateway: ``/v1/customers``, ``/v1/articles``, ``/v1/catalog``,
    ``/v1/popular`` and operations."""
    K = Annotated[
        int,
        Query(
            ge=1,
            le=settings.max_k,
            description=f"Number of articles to return, 1..{settings.max_k}.",
        ),
    ]

    customers = APIRouter(prefix="/v1/customers", tags=["recommendations"])

    @customers.get(
        "/{customer_id}/recommendations",
        response_model=Recommendations,
        responses=_UNAVAILABLE,
    )
    async def recommend(
        customer_id: str,
        backends: BackendsDep,
        writes: WritesDep,
        caller: ReadAccess,
        k: K = settings.default_k,
    ) -> Recommendations:
        """Top-k articles for a customer, best first.

        A customer the feature store knows gets the Triton ``recommend`` ensemble's ranking
        (``source: "personalised"``, scores from the ranker). An unknown customer, or one for
        whom the ensemble returns nothing (e.g. every candidate excluded), gets the recent
        popularity list (``source: "popular"``, ``score: null``; the order is the rank).
        Articles hidden or deleted through the write API, those the customer marked
        ``not_interested`` and, when the served policy excludes already-bought articles, every
        article the customer bought (the shopper state's bought set, by article id) are never
        listed. When that leaves fewer than ``k`` of the ensemble's list (it returns at most its
        exported K), the rest is the popular list without them (``score: null``). Purchases,
        customer writes and events reach the features within about a second (the
        near-real-time updater).
        """
        hidden, (found, features), shopper_excluded = await asyncio.gather(
            writes.catalog.excluded(),
            backends.customers([customer_id]),
            backends.excluded(customer_id),
        )
        excluded = hidden | shopper_excluded
        scores: list[float | None] = []
        article_ids: list[str] = []
        if bool(found[0]):
            ranked = await backends.recommend(features, k + len(excluded))
            article_ids, scores = _top(ranked.ids[0], ranked.scores[0], excluded, k)
            source = Source.PERSONALISED
        if not article_ids:
            popular = await backends.popular(k + len(excluded))
            article_ids, scores = _top(popular, [None] * len(popular), excluded, k)
            source = Source.POPULAR
        elif len(article_ids) < min(k, len(ranked.ids[0])):
            # The ensemble returns at most its exported K: what the exclusions removed beyond
            # that headroom is replaced by popular articles, so they never shorten the list.
            want = min(k, len(ranked.ids[0]))
            taken = excluded | frozenset(article_ids)
            popular = await backends.popular(want + len(taken))
            more, none = _top(popular, [None] * len(popular), taken, want - len(article_ids))
            article_ids, scores = article_ids + more, scores + none
        items = await _items(backends, writes.catalog, article_ids, scores)
        return Recommendations(
            customer_id=customer_id,
            source=source,
            recommendation_id=_new_recommendation_id(),
            items=items,
        )

    sessions = APIRouter(prefix="/v1/sessions", tags=["recommendations"])

    @sessions.get(
        "/{session_id}/recommendations",
        response_model=SessionRecommendations,
        responses=_UNAVAILABLE,
    )
    async def recommend_session(
        session_id: str,
        backends: BackendsDep,
        writes: WritesDep,
        caller: ReadAccess,
        k: K = settings.default_k,
    ) -> SessionRecommendations:
        """Top-k articles for an anonymous session, best first, from the articles viewed in it
        (``view`` events with this ``session_id``, kept for 30 minutes after the last view).

        ``source: "session"``: the similar items of the :data:`SESSION_VIEWS` most recent
        views, each neighbour scored by the sum over views of its similarity times the view's
        recency weight 1 / (1 + i) (i = 0 for the latest view), then the popular list
        (``score: null``) after them; articles viewed in the session are left out.
        ``source: "popular"`` when the session is unknown, expired or its views have no
        neighbours. Articles hidden or deleted through the write API are never listed.
        """
        hidden, views = await asyncio.gather(
            writes.catalog.excluded(), backends.session_views(session_id)
        )
        excluded = hidden | frozenset(views)
        scores: dict[str, float] = {}
        if views:
            recent = views[:SESSION_VIEWS]
            answers = await asyncio.gather(
                *(backends.similar([a], k + len(excluded)) for a in recent),
                return_exceptions=True,
            )
            for i, answer in enumerate(answers):
                if isinstance(answer, HTTPException) and answer.status_code == 503:
                    if writes.catalog.state(recent[i]) is None:
                        raise answer  # Triton down, not an article it does not know
                    continue  # put through the write API: the model has no neighbours yet
                if isinstance(answer, BaseException):
                    raise answer
                for article_id, score in zip(answer.ids[0], answer.scores[0], strict=True):
                    if article_id not in excluded:
                        weight = 1.0 / (1.0 + i)
                        scores[article_id] = scores.get(article_id, 0.0) + weight * score
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        article_ids: list[str] = [a for a, _ in ranked]
        item_scores: list[float | None] = [sc for _, sc in ranked]
        source = Source.SESSION if article_ids else Source.POPULAR
        if len(article_ids) < k:
            taken = excluded | frozenset(article_ids)
            popular = await backends.popular(k + len(taken))
            more, none = _top(popular, [None] * len(popular), taken, k - len(article_ids))
            article_ids += more
            item_scores += none
        items = await _items(backends, writes.catalog, article_ids, item_scores)
        return SessionRecommendations(
            session_id=session_id,
            source=source,
            recommendation_id=_new_recommendation_id(),
            items=items,
        )

    articles = APIRouter(prefix="/v1/articles", tags=["articles"])

    @articles.get(
        "/{article_id}/similar",
        response_model=SimilarArticles,
        responses=_NOT_FOUND_OR_UNAVAILABLE,
    )
    async def similar(
        article_id: str,
        backends: BackendsDep,
        writes: WritesDep,
        caller: ReadAccess,
        k: K = settings.default_k,
    ) -> SimilarArticles:
        """Top-k articles most similar to an article (Triton ``similar_items``), best first;
        never an article hidden or deleted through the write API. An article put through the
        write API that the served model does not know has similar items once the updater has
        encoded it into the article delta (an empty list until then)."""
        excluded = await writes.catalog.excluded()
        await _known_article(backends, writes.catalog, article_id)
        try:
            ranked = await backends.similar([article_id], k + len(excluded))
        except HTTPException:
            put = writes.catalog.state(article_id)
            if put is None or put.fields is None:
                raise
            # Put through the write API and not yet in the article delta (Triton fails the
            # call for an id it does not know), so it has no neighbours to show yet.
            ranked = RankedBatch([[]], [[]])
        article_ids, scores = _top(ranked.ids[0], ranked.scores[0], excluded, k)
        items = await _items(backends, writes.catalog, article_ids, scores)
        return SimilarArticles(
            article_id=article_id, recommendation_id=_new_recommendation_id(), items=items
        )

    @articles.get("", response_model=ArticleList, responses=_UNAVAILABLE)
    async def search(
        backends: BackendsDep,
        writes: WritesDep,
        caller: ReadAccess,
        q: Annotated[
            str | None,
            Query(
                max_length=MAX_QUERY_CHARS,
                description="Words the article name must contain (case-insensitive word "
                "prefixes); empty: no text filter.",
            ),
        ] = None,
        department: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS)] = None,
        product_group: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)] = 24,
    ) -> ArticleList:
        """Served articles whose name contains every word of ``q`` and that are in
        ``department`` / ``product_group`` (each filter optional), shorter names first
        (:mod:`shoprec.gateway.browse`); never an article hidden or deleted through the write
        API. Articles put through the write API are not searched (only the served snapshot)."""
        excluded = await writes.catalog.excluded()
        index = await backends.article_index()
        ids, total = index.search(q, department, product_group, limit, excluded)
        displays = await _displays(backends, writes.catalog, ids)
        return ArticleList(
            total=total,
            items=[
                ArticleSummary.model_validate({**(d or {}), schema.ARTICLE_ID: a})
                for a, d in zip(ids, displays, strict=True)
            ],
        )

    @articles.get("/{article_id}", response_model=Article, responses=_NOT_FOUND_OR_UNAVAILABLE)
    async def article(
        article_id: str, backends: BackendsDep, writes: WritesDep, caller: ReadAccess
    ) -> Article:
        """An article's display fields (a hidden article is still shown here)."""
        await writes.catalog.refresh()
        display = await _known_article(backends, writes.catalog, article_id)
        return Article.model_validate({**display, schema.ARTICLE_ID: article_id})

    catalog = APIRouter(tags=["catalog"])

    @catalog.get("/v1/catalog/departments", response_model=Departments, responses=_UNAVAILABLE)
    async def departments(backends: BackendsDep, caller: ReadAccess) -> Departments:
        """Departments of the served articles with their product groups and article counts
        (name order), for a storefront's navigation."""
        index = await backends.article_index()
        return Departments(
            departments=[
                Department(
                    department=d.department,
                    n_articles=d.n_articles,
                    product_groups=[
                        ProductGroupCount(product_group=g, n_articles=n)
                        for g, n in d.product_groups
                    ],
                )
                for d in index.departments()
            ]
        )

    @catalog.get("/v1/popular", response_model=PopularArticles, responses=_UNAVAILABLE)
    async def popular(
        backends: BackendsDep, writes: WritesDep, caller: ReadAccess, k: K = settings.default_k
    ) -> PopularArticles:
        """The recent popularity list (what an unknown customer gets), most sold first;
        never an article hidden or deleted through the write API."""
        excluded = await writes.catalog.excluded()
        ranked = await backends.popular(k + len(excluded))
        article_ids, scores = _top(ranked, [None] * len(ranked), excluded, k)
        items = await _items(backends, writes.catalog, article_ids, scores)
        return PopularArticles(recommendation_id=_new_recommendation_id(), items=items)

    operations = APIRouter(tags=["operations"])

    @operations.get("/healthz", response_model=Status)
    async def healthz() -> Status:
        """The process is up (liveness); checks no dependency."""
        return Status()

    @operations.get("/readyz", response_model=Status, responses=_UNAVAILABLE)
    async def readyz(backends: BackendsDep) -> Status:
        """Triton's models are ready and the feature store answers (readiness); 503 naming
        the dependencies that are down otherwise."""
        down = await backends.unavailable()
        if down:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "; ".join(down))
        return Status()

    # Prometheus text, not JSON: there is no response model to declare.
    @operations.get(
        "/metrics",
        response_class=Response,
        responses={status.HTTP_200_OK: {"content": {"text/plain": {}}}},
    )
    async def metrics(gateway_metrics: MetricsDep, caller: ReadAccess) -> Response:
        """Prometheus metrics of this process (:class:`~shoprec.gateway.metrics.GatewayMetrics`)."""
        return Response(gateway_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    router = APIRouter()
    for sub_router in (customers, sessions, articles, catalog, operations):
        router.include_router(sub_router)
    return router
