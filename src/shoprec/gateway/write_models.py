"""Request and response models of the write API (``shoprec.gateway.writes``).

The records themselves (:class:`~shoprec.events.Event`, customer attributes, article fields)
are the event log's models (:mod:`shoprec.events.records`): what the API validates is exactly
what the log stores.

A batch of events is validated element by element: an element that is not a valid
:class:`~shoprec.events.Event` becomes a :class:`RejectedEvent` carrying its errors instead of
failing the whole request, so the valid events of a batch are kept and every invalid one is
reported by its index.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import core_schema

from shoprec.events import Event
from shoprec.gateway.settings import MAX_EVENTS_PER_BATCH

INVALID_EVENT: Final = "invalid event"
ARTICLE_NOT_FOUND: Final = "article not found"  # the same string as the read routes'
FUTURE_TIMESTAMP: Final = "timestamp in the future"
NO_VALID_EVENT: Final = "no valid event in the batch"


class FieldError(BaseModel):
    """One validation error of an event: where (``loc``), what (``msg``), which rule
    (``type``, pydantic's error type)."""

    loc: list[str | int]
    msg: str
    type: str


class RejectedEvent:
    """An element of a batch that is not a valid :class:`Event`; never parsed from input."""

    def __init__(self, event_id: str | None, errors: list[FieldError]) -> None:
        self.event_id = event_id
        self.errors = errors

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)


def _keep_invalid(value: Any, handler: ValidatorFunctionWrapHandler) -> Event | RejectedEvent:
    """An :class:`Event`, or a :class:`RejectedEvent` with the errors (the union's own
    validator, ``handler``, is not used: its errors would name the union's branches)."""
    try:
        return Event.model_validate(value)
    except ValidationError as exc:
        event_id = value.get("event_id") if isinstance(value, dict) else None
        errors = [
            FieldError(loc=list(e["loc"]), msg=e["msg"], type=e["type"])
            for e in exc.errors(include_url=False)
        ]
        return RejectedEvent(event_id if isinstance(event_id, str) else None, errors)


BatchItem = Annotated[Event | SkipJsonSchema[RejectedEvent], WrapValidator(_keep_invalid)]


class EventBatch(BaseModel):
    """``POST /v1/events``: 1..1000 events."""

    model_config = ConfigDict(
        arbitrary_types_allowed=True,
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "event_id": "9f1c2d3e-0001",
                            "type": "purchase",
                            "customer_id": "1111",
                            "article_id": "1106523",
                            "timestamp": "2026-11-29T10:15:00Z",
                            "quantity": 1,
                            "price": 1.99,
                        },
                        {
                            "event_id": "9f1c2d3e-0002",
                            "type": "view",
                            "customer_id": "1111",
                            "article_id": "1106524",
                            "timestamp": "2026-11-29T10:16:00Z",
                            "session_id": "s-42",
                        },
                    ]
                }
            ]
        },
    )

    events: list[BatchItem] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


class EventStatus(StrEnum):
    """What happened to one event of a batch."""

    STORED = "stored"  # durable in the log at ``offset``
    DUPLICATE = "duplicate"  # its event_id was already in the log: acknowledged, not stored
    REJECTED = "rejected"  # invalid: see ``detail`` and ``errors``; nothing stored


class EventResult(BaseModel):
    """The outcome of the event at ``index`` (0-based) of the batch."""

    index: int
    event_id: str | None
    status: EventStatus
    offset: int | None = Field(default=None, description="Log offset of a stored event.")
    detail: str | None = Field(
        default=None,
        description=f"Why it was rejected: {INVALID_EVENT!r} (see errors), "
        f"{ARTICLE_NOT_FOUND!r} or {FUTURE_TIMESTAMP!r}.",
    )
    errors: list[FieldError] | None = None


class EventsAccepted(BaseModel):
    """Answer of ``POST /v1/events`` (202: every stored event is durable)."""

    stored: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class EventsRejected(EventsAccepted):
    """Answer of ``POST /v1/events`` when no event of the batch is valid (422)."""

    detail: str = NO_VALID_EVENT


class CustomerWritten(BaseModel):
    """Answer of ``PUT /v1/customers/{customer_id}`` (201 created, 200 replaced)."""

    customer_id: str
    created: bool
    offset: int = Field(description="Log offset of the write.")


class CustomerErased(BaseModel):
    """Answer of ``DELETE /v1/customers/{customer_id}``: what was removed, and what remains."""

    customer_id: str
    offset: int = Field(description="Log offset of the erasure marker.")
    events_removed: int
    sessions_removed: int
    profile_removed: bool = Field(description="A customer record written by PUT was removed.")
    online_features_removed: bool = Field(description="The online store held features.")
    remains: list[str] = Field(description="Where the customer's data still is, until when.")


class ArticlePatch(BaseModel):
    """``PATCH /v1/articles/{article_id}``: a hidden article is never recommended."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"hidden": True}]})

    hidden: bool


class ArticleWritten(BaseModel):
    """Answer of the article writes: the article's state after the write."""

    article_id: str
    created: bool = Field(description="PUT of an article the catalog did not hold.")
    hidden: bool
    deleted: bool
    version: int = Field(description="Log offset of the write.")
