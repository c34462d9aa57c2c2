"""What the event log holds: interaction events, customer and article changes, erasures.

The write API (``shoprec.gateway.writes``) validates requests with these models, the log
backends store them as JSON, and readers (the near-real-time updater, ``shoprec ingest
events``) get them back in log order as :class:`LogEntry` s.

Field names are the canonical column names of :mod:`shoprec.schema` (``customer_id``,
``article_id``, ``age``, ``segment``..., ``name``, the five article attributes,
``description``, ``price``, ``quantity``), so folding the log into the canonical tables is a
rename-free copy.

Identifiers (customer, article, event and session ids) are 1..128 characters of letters,
digits and ``. _ : @ -``, starting with a letter or digit: they travel in URL paths and log
keys unescaped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shoprec import schema as s

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
MAX_ID_LENGTH: Final = 128
MAX_LABEL_LENGTH: Final = 256  # a categorical attribute (segment, product type...)
MAX_NAME_LENGTH: Final = 512
MAX_DESCRIPTION_LENGTH: Final = 10_000
MAX_QUANTITY: Final = 10_000

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)
]
Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_LENGTH)]


class EventType(StrEnum):
    """What a customer did with an article (Google Retail / AWS Personalize event types)."""

    PURCHASE = "purchase"
    VIEW = "view"
    ADD_TO_CART = "add_to_cart"
    NOT_INTERESTED = "not_interested"


class Event(BaseModel):
    """One interaction, as ``POST /v1/events`` takes it and the log stores it.

    ``event_id`` is the client's idempotency key: an event whose id the log already holds is
    acknowledged again and not stored twice. ``timestamp`` is when it happened (ISO 8601 with
    a UTC offset); ``price`` is per item in currency units; ``quantity`` counts items
    (purchases and add-to-cart; the canonical table takes 1 when absent).
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "event_id": "9f1c2d3e-0001",
                    "type": "purchase",
                    "customer_id": "1111",
                    "article_id": "1106523",
                    "timestamp": "2026-11-29T10:15:00Z",
                    "quantity": 2,
                    "price": 1.99,
                    "recommendation_id": "5b0e8c6f3a2d4e1f9c8b7a6d5e4f3a2b",
                    "session_id": "s-42",
                }
            ]
        },
    )

    event_id: Identifier
    type: EventType
    customer_id: Identifier
    article_id: Identifier
    timestamp: AwareDatetime
    quantity: int | None = Field(default=None, ge=1, le=MAX_QUANTITY)
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    recommendation_id: str | None = Field(
        default=None,
        max_length=MAX_ID_LENGTH,
        description="The recommendation_id of the response the article was shown in.",
    )
    session_id: Identifier | None = None


class CustomerAttributes(BaseModel):
    """A customer's attributes (``PUT /v1/customers/{customer_id}``); ``None`` = unknown.

    ``age`` is in years.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{"age": 34, "segment": "ACTIVE", "household": "Regularly"}]
        },
    )

    age: float | None = Field(default=None, ge=0, le=150, allow_inf_nan=False)
    segment: Label | None = None
    household: Label | None = None
    postal_code: Label | None = None


class Customer(CustomerAttributes):
    """A customer with its id, as the log stores it."""

    customer_id: Identifier


class ArticleFields(BaseModel):
    """An article's display name, attributes and description (``PUT /v1/articles/{id}``).

    The same slots as the canonical articles table; ``None`` = no value.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "Organic Whole Milk 1 Gal",
                    "product_type": "Milk",
                    "product_group": "Dairy",
                    "department": "Grocery",
                    "section": "Private label",
                    "variant": "1 GA",
                    "description": "Whole milk from pasture-raised cows.",
                }
            ]
        },
    )

    name: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]
    product_type: Label | None = None
    product_group: Label | None = None
    department: Label | None = None
    section: Label | None = None
    variant: Label | None = None
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_LENGTH)] | None = None

    def display(self) -> dict[str, str | None]:
        """The display fields keyed like the feature store's (``NAME``,
        ``ARTICLE_ATTRIBUTES``, ``DESCRIPTION``)."""
        return {
            name: getattr(self, name) for name in (s.NAME, *s.ARTICLE_ATTRIBUTES, s.DESCRIPTION)
        }


class ArticleState(BaseModel):
    """What the write API changed about one article: the durable catalog row.

    Attributes:
        fields: set by ``PUT``; ``None`` for an article only hidden or deleted through the API,
            whose display fields are those of the serving snapshot.
        hidden: never recommended while True (``PATCH``).
        deleted: gone from the catalog (``DELETE``); the row stays as a tombstone so that
            every reader learns of the deletion.
        version: log offset of the article's last change.
        online_ts: event timestamp (whole seconds since the epoch) of the last feature-store
            write of ``fields``; strictly increasing per article, because Feast's Redis store
            silently skips a row whose timestamp is not newer (at 1 s resolution) than the
            stored one.
    """

    model_config = ConfigDict(frozen=True)

    article_id: Identifier
    fields: ArticleFields | None = None
    hidden: bool = False
    deleted: bool = False
    version: int = 0
    online_ts: int = 0


class Erasure(BaseModel):
    """Marks that a customer was erased at this offset: every earlier entry of theirs is gone.

    ``customer_hash`` is :func:`customer_hash` of the id, not the id: consumers that still
    hold the customer (the updater's state, the canonical tables) hash their ids to find it.
    """

    model_config = ConfigDict(frozen=True)

    customer_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def customer_hash(customer_id: str) -> str:
    """SHA-256 (hex, 64 characters) of the UTF-8 customer id."""
    return hashlib.sha256(customer_id.encode()).hexdigest()


class EntryKind(StrEnum):
    """What a log entry records."""

    EVENT = "event"  # an Event
    CUSTOMER_PUT = "customer_put"  # a Customer created or replaced
    CUSTOMER_ERASED = "customer_erased"  # an Erasure
    ARTICLE_PUT = "article_put"  # an ArticleState after PUT
    ARTICLE_HIDDEN = "article_hidden"  # an ArticleState after PATCH
    ARTICLE_DELETED = "article_deleted"  # an ArticleState after DELETE (tombstone)


Record = Event | Customer | ArticleState | Erasure


@dataclass(frozen=True)
class LogEntry:
    """One entry of the log, as a reader sees it.

    Attributes:
        offset: position in the log, >= 1, strictly increasing in log order and never reused
            (also after erasures remove entries; offsets then have gaps).
        kind: what ``record`` is.
        recorded_at: when the log accepted the entry, Unix seconds (the gateway's clock).
        record: the payload; an :class:`ArticleState` carries ``version == offset``.
    """

    offset: int
    kind: EntryKind
    recorded_at: float
    record: Record


def decode_record(kind: EntryKind | str, body: str | bytes, offset: int) -> Record:
    """The record of a stored entry from its JSON ``body``; an :class:`ArticleState` gets
    ``version = offset``.

    Raises:
        ValueError: unknown ``kind`` or a body that does not validate (pydantic's
            ``ValidationError`` is a ``ValueError``).
    """
    match EntryKind(kind):
        case EntryKind.EVENT:
            return Event.model_validate_json(body)
        case EntryKind.CUSTOMER_PUT:
            return Customer.model_validate_json(body)
        case EntryKind.CUSTOMER_ERASED:
            return Erasure.model_validate_json(body)
        case _:
            state = ArticleState.model_validate_json(body)
            return state.model_copy(update={"version": offset})
