"""The write API: customers, articles and events in, durably (routes under ``/v1``).

Every write goes first to the event log (:mod:`shoprec.events`, the source of truth: it is
acknowledged only once durable), then, for articles and erasures, to the online store
(:mod:`shoprec.featurestore.writer`). Both are idempotent, so a client that gets a 503 (or no
answer) repeats the same request.

Routes (all need a ``write`` key, :mod:`.auth`):

* ``PUT /v1/customers/{customer_id}``: create (201) or replace (200) the customer's
  attributes. The log and its durable customer table get them; the customer's encoded
  features in the online store are computed from the log by the feature updater (they need
  the trained preprocessing workflow, which the gateway does not load).
* ``DELETE /v1/customers/{customer_id}``: erasure. The customer's record, events and the
  events of their sessions leave the log (and its files, see the backends), their features
  leave the online store, and the answer lists what remains until the next training.
* ``PUT /v1/articles/{article_id}``: create (201) or replace (200) display fields and
  attributes, in the log and in the online store's ``article_display_fv``.
* ``PATCH /v1/articles/{article_id}`` ``{"hidden": true|false}``: a hidden article is left out
  of every list (personalised, popular fallback, similar items) from the next request on, in
  every gateway worker (:mod:`.catalog`).
* ``DELETE /v1/articles/{article_id}``: gone from the catalog, the lists and the online store.
* ``POST /v1/events``: 1..1000 events; per event ``stored`` (with its offset), ``duplicate``
  (its ``event_id`` is already in the log) or ``rejected`` (by index, with the reason). 202
  once every stored event is durable; 422 when none is valid.

Stable ``detail`` strings: 404 ``"article not found"``, 503 :data:`EVENT_LOG_UNAVAILABLE`,
:data:`STORE_UNAVAILABLE`, :data:`WRITES_DISABLED`; per rejected event
:data:`~.write_models.INVALID_EVENT`, :data:`~.write_models.ARTICLE_NOT_FOUND`,
:data:`~.write_models.FUTURE_TIMESTAMP`; a batch without a valid event
:data:`~.write_models.NO_VALID_EVENT`; 401/403/413/429 as in :mod:`.auth` and
:mod:`.bodylimit`.
"""

# No ``from __future__ import annotations``: FastAPI resolves the endpoints' annotations.
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Protocol, TypeVar, cast

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.responses import JSONResponse

from shoprec import schema
from shoprec.events import (
    ArticleFields,
    ArticleState,
    Customer,
    CustomerAttributes,
    Event,
    EventLog,
    EventLogError,
)
from shoprec.events.records import ID_PATTERN, MAX_ID_LENGTH
from shoprec.featurestore.writer import ArticleRow
from shoprec.gateway.auth import CatalogWriteAccess, EventWriteAccess, get_access
from shoprec.gateway.catalog import EVENT_LOG_UNAVAILABLE, CatalogView
from shoprec.gateway.deps import STORE_UNAVAILABLE, Backends, BackendsDep, bounded
from shoprec.gateway.logs import FailureLog
from shoprec.gateway.metrics import GatewayMetrics, Stage
from shoprec.gateway.models import ErrorDetail
from shoprec.gateway.ratelimit import Budget
from shoprec.gateway.settings import Settings
from shoprec.gateway.write_models import (
    ARTICLE_NOT_FOUND,
    FUTURE_TIMESTAMP,
    INVALID_EVENT,
    ArticlePatch,
    ArticleWritten,
    CustomerErased,
    CustomerWritten,
    EventBatch,
    EventResult,
    EventsAccepted,
    EventsRejected,
    EventStatus,
    FieldError,
    RejectedEvent,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

WRITES_DISABLED: Final = "write API not configured"
# What a trained model and the offline files keep of an erased customer (the answer of an
# erasure); stable, clients may show it.
ERASURE_REMAINS: Final = (
    "canonical tables (data/<name>/canonical) and the labelled dataset: the customer's rows "
    "stay until `shoprec ingest events` folds the erasure in (it matches the marker's hash) "
    "and `shoprec pipeline` rebuilds the dataset",
    "exported feature snapshots (models/<name>/feature_repo/versions/*/data/customers.parquet): a "
    "`shoprec materialize` before that rebuild would bring the customer's features back",
    "trained models: the customer's purchases shaped the Two-Tower and ranker weights, the "
    "item popularity and the workflow's statistics until the next `shoprec train`; no model "
    "has a per-customer parameter (customers enter as features, not as an id embedding)",
    "backups and copies of the log or the online store taken before the erasure",
)

IdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=ID_PATTERN,
        description="Letters, digits and . _ : @ -, 1..128 characters.",
    ),
]


class StoreWriter(Protocol):
    """The online-store writes the write API makes (:class:`OnlineWriter`). Blocking; called
    from worker threads; any exception means the store is unavailable (503)."""

    def put_articles(self, rows: Sequence[ArticleRow]) -> None: ...

    def delete(self, join_key: str, ids: Sequence[str]) -> int: ...


class Writes:
    """What the write routes use: the log, the store writer, the catalog view; bounded calls.

    ``log`` and ``store`` are None when the app was built without a write API (every write
    route answers 503 :data:`WRITES_DISABLED`).
    """

    def __init__(
        self,
        log: EventLog | None,
        store: StoreWriter | None,
        settings: Settings,
        metrics: GatewayMetrics,
    ) -> None:
        self._log = log
        self._store = store
        self.catalog = CatalogView(log, metrics, settings.store_timeout_s)
        self.settings = settings
        self._metrics = metrics
        self._failures = FailureLog(logger, settings.log_interval_s)

    @property
    def log(self) -> EventLog:
        if self._log is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, WRITES_DISABLED)
        return self._log

    @property
    def store(self) -> StoreWriter:
        if self._store is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, WRITES_DISABLED)
        return self._store

    async def logged(self, call: Awaitable[T], timeout_s: float | None = None) -> T:
        """Await a log write; 503 :data:`EVENT_LOG_UNAVAILABLE` on failure or timeout."""
        return await bounded(
            call,
            stage=Stage.EVENT_LOG,
            timeout_s=timeout_s or self.settings.write_timeout_s,
            errors=(EventLogError,),
            detail=EVENT_LOG_UNAVAILABLE,
            metrics=self._metrics,
            failures=self._failures,
        )

    async def stored(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store write in a worker thread; 503 :data:`STORE_UNAVAILABLE` on
        failure or timeout."""
        call = anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        return await bounded(
            call,
            stage=Stage.STORE_WRITE,
            timeout_s=self.settings.write_timeout_s,
            errors=(Exception,),
            detail=STORE_UNAVAILABLE,
            metrics=self._metrics,
            failures=self._failures,
        )

    async def article(self, backends: Backends, article_id: str) -> ArticleState | None:
        """The article as the catalog holds it now: its changed row, a row built from the
        serving snapshot, or None when it is unknown or deleted."""
        await self.catalog.refresh()
        state = self.catalog.state(article_id)
        if state is not None:
            return None if state.deleted else state
        (display,) = await backends.articles([article_id])
        return None if display is None else ArticleState(article_id=article_id)

    async def known_articles(self, backends: Backends, ids: set[str]) -> set[str]:
        """The ids of ``ids`` the catalog holds (not deleted)."""
        await self.catalog.refresh()
        known: set[str] = set()
        ask: list[str] = []
        for article_id in ids:
            state = self.catalog.state(article_id)
            if state is None:
                ask.append(article_id)
            elif not state.deleted:
                known.add(article_id)
        if ask:
            displays = await backends.articles(ask)
            known.update(a for a, d in zip(ask, displays, strict=True) if d is not None)
        return known


def get_writes(request: Request) -> Writes:
    """The app's :class:`Writes`, built in its lifespan."""
    return cast(Writes, request.app.state.writes)


WritesDep = Annotated[Writes, Depends(get_writes)]

_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    code: {"model": ErrorDetail}
    for code in (
        status.HTTP_401_UNAUTHORIZED,
        status.HTTP_403_FORBIDDEN,
        status.HTTP_413_CONTENT_TOO_LARGE,
        status.HTTP_429_TOO_MANY_REQUESTS,
        status.HTTP_503_SERVICE_UNAVAILABLE,
    )
}
_WITH_404: Final[dict[int | str, dict[str, Any]]] = {
    **_ERRORS,
    status.HTTP_404_NOT_FOUND: {"model": ErrorDetail},
}


def _article_written(state: ArticleState, created: bool) -> ArticleWritten:
    return ArticleWritten(
        article_id=state.article_id,
        created=created,
        hidden=state.hidden,
        deleted=state.deleted,
        version=state.version,
    )


def write_router() -> APIRouter:
    """The write routes (see the module docstring)."""
    customers = APIRouter(prefix="/v1/customers", tags=["customers"])

    @customers.put(
        "/{customer_id}",
        response_model=CustomerWritten,
        status_code=status.HTTP_200_OK,
        responses={status.HTTP_201_CREATED: {"model": CustomerWritten}, **_ERRORS},
    )
    async def put_customer(
        customer_id: IdPath,
        attributes: CustomerAttributes,
        caller: CatalogWriteAccess,
        writes: WritesDep,
        backends: BackendsDep,
        response: Response,
    ) -> CustomerWritten:
        """Create (201) or replace (200) a customer's attributes (absent ones become null).

        The attributes are durable in the event log when this answers; the customer's
        features in the online store follow from the log (feature updater).
        """
        customer = Customer(customer_id=customer_id, **attributes.model_dump())
        offset, existed = await writes.logged(writes.log.put_customer(customer))
        if not existed:
            found, _ = await backends.customers([customer_id])
            existed = bool(found[0])
        response.status_code = status.HTTP_200_OK if existed else status.HTTP_201_CREATED
        return CustomerWritten(customer_id=customer_id, created=not existed, offset=offset)

    @customers.delete("/{customer_id}", response_model=CustomerErased, responses=_ERRORS)
    async def erase_customer(
        customer_id: IdPath, caller: CatalogWriteAccess, writes: WritesDep
    ) -> CustomerErased:
        """Erase a customer: their record, events and the events of their sessions from the
        log, their features from the online store. Idempotent (a repeat removes nothing more
        and answers 200). ``remains`` says what keeps the customer's data until when."""
        erased = await writes.logged(
            writes.log.erase_customer(customer_id), writes.settings.erasure_timeout_s
        )
        online = await writes.stored(writes.store.delete, schema.CUSTOMER_ID, [customer_id])
        return CustomerErased(
            customer_id=customer_id,
            offset=erased.offset,
            events_removed=erased.events,
            sessions_removed=erased.sessions,
            profile_removed=erased.profile,
            online_features_removed=online > 0,
            remains=list(ERASURE_REMAINS),
        )

    articles = APIRouter(prefix="/v1/articles", tags=["articles"])

    @articles.put(
        "/{article_id}",
        response_model=ArticleWritten,
        status_code=status.HTTP_200_OK,
        responses={status.HTTP_201_CREATED: {"model": ArticleWritten}, **_ERRORS},
    )
    async def put_article(
        article_id: IdPath,
        fields: ArticleFields,
        caller: CatalogWriteAccess,
        writes: WritesDep,
        backends: BackendsDep,
        response: Response,
    ) -> ArticleWritten:
        """Create (201) or replace (200) an article's display fields and attributes (absent
        ones become null); keeps ``hidden``, undoes a deletion. Listed by similar items and
        retrieval once the index updater has embedded it; shown by ``GET`` at once."""
        existed = await writes.article(backends, article_id) is not None
        changed = await writes.logged(writes.log.put_article(article_id, fields))
        writes.catalog.note(changed.state)
        row = ArticleRow(article_id, fields.display(), changed.state.online_ts)
        await writes.stored(writes.store.put_articles, [row])
        response.status_code = status.HTTP_200_OK if existed else status.HTTP_201_CREATED
        return _article_written(changed.state, created=not existed)

    @articles.patch("/{article_id}", response_model=ArticleWritten, responses=_WITH_404)
    async def patch_article(
        article_id: IdPath,
        patch: ArticlePatch,
        caller: CatalogWriteAccess,
        writes: WritesDep,
        backends: BackendsDep,
    ) -> ArticleWritten:
        """Hide (never recommended, from the next request on, by every worker) or show an
        article."""
        if await writes.article(backends, article_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, ARTICLE_NOT_FOUND)
        changed = await writes.logged(writes.log.set_hidden(article_id, patch.hidden))
        writes.catalog.note(changed.state)
        return _article_written(changed.state, created=False)

    @articles.delete("/{article_id}", response_model=ArticleWritten, responses=_WITH_404)
    async def delete_article(
        article_id: IdPath, caller: CatalogWriteAccess, writes: WritesDep, backends: BackendsDep
    ) -> ArticleWritten:
        """Remove an article from the catalog, every list and the online store."""
        if await writes.article(backends, article_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, ARTICLE_NOT_FOUND)
        changed = await writes.logged(writes.log.delete_article(article_id))
        writes.catalog.note(changed.state)
        await writes.stored(writes.store.delete, schema.ARTICLE_ID, [article_id])
        return _article_written(changed.state, created=False)

    events = APIRouter(prefix="/v1", tags=["events"])

    @events.post(
        "/events",
        response_model=EventsAccepted,
        status_code=status.HTTP_202_ACCEPTED,
        responses={status.HTTP_422_UNPROCESSABLE_CONTENT: {"model": EventsRejected}, **_ERRORS},
    )
    async def post_events(
        request: Request,
        batch: EventBatch,
        caller: EventWriteAccess,
        writes: WritesDep,
        backends: BackendsDep,
    ) -> Any:
        """Record 1..1000 interactions. Answers 202 once every stored event is durable.

        Per event (``results``, by index): ``stored`` with its log offset; ``duplicate`` when
        its ``event_id`` is already in the log (acknowledged, not stored again: resending a
        batch is safe); ``rejected`` with ``detail`` ``"invalid event"`` (and ``errors``),
        ``"article not found"`` or ``"timestamp in the future"``. Valid events are kept even
        when others are rejected; a batch with no valid event is 422. The ``events`` rate
        limit counts every event of the batch.
        """
        items = batch.events
        await get_access(request).limits.spend(Budget.EVENTS, caller.identity, len(items))
        results: list[EventResult | None] = [None] * len(items)
        candidates: list[tuple[int, Event]] = []
        latest = datetime.now(UTC) + timedelta(seconds=writes.settings.max_clock_skew_s)
        for index, item in enumerate(items):
            if isinstance(item, RejectedEvent):
                results[index] = _rejected(index, item.event_id, INVALID_EVENT, item.errors)
            elif item.timestamp > latest:
                results[index] = _rejected(index, item.event_id, FUTURE_TIMESTAMP)
            else:
                candidates.append((index, item))
        known = await writes.known_articles(backends, {e.article_id for _, e in candidates})
        valid: list[tuple[int, Event]] = []
        for index, event in candidates:
            if event.article_id in known:
                valid.append((index, event))
            else:
                results[index] = _rejected(index, event.event_id, ARTICLE_NOT_FOUND)
        if valid:
            offsets = await writes.logged(writes.log.append_events([e for _, e in valid]))
            for (index, event), offset in zip(valid, offsets, strict=True):
                results[index] = EventResult(
                    index=index,
                    event_id=event.event_id,
                    status=EventStatus.STORED if offset is not None else EventStatus.DUPLICATE,
                    offset=offset,
                )
        done = [r for r in results if r is not None]
        counts = {s: sum(r.status is s for r in done) for s in EventStatus}
        answer = EventsAccepted(
            stored=counts[EventStatus.STORED],
            duplicates=counts[EventStatus.DUPLICATE],
            rejected=counts[EventStatus.REJECTED],
            results=done,
        )
        if not valid:
            rejected = EventsRejected(**answer.model_dump())
            return JSONResponse(
                rejected.model_dump(mode="json"), status.HTTP_422_UNPROCESSABLE_CONTENT
            )
        return answer

    router = APIRouter()
    for sub_router in (customers, articles, events):
        router.include_router(sub_router)
    return router


def _rejected(
    index: int, event_id: str | None, detail: str, errors: list[FieldError] | None = None
) -> EventResult:
    return EventResult(
        index=index, event_id=event_id, status=EventStatus.REJECTED, detail=detail, errors=errors
    )
