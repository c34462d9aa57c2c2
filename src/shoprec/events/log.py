"""The event log's interfaces: the writer the gateway awaits, the reader consumers poll.

Two backends implement both (:mod:`.sqlite`, :mod:`.redis_streams`); :func:`open_event_log`
and :func:`open_log_reader` pick one from a URL:

* ``sqlite:///abs/path/events.db`` (or a plain file path): the embedded default, one file
  under ``models/<name>/``;
* ``redis://[:password@]host:port/db``: Redis Streams on a Redis with AOF (production).

One log, one order: events, customer writes, article writes and erasures are entries of the
same sequence, each with an integer ``offset`` that only grows. A consumer keeps the offset of
the last entry it applied and asks for :meth:`LogReader.read_after` it.

Guarantees (both backends): a write returns only once the entry is durable (SQLite: WAL
fsynced, ``synchronous=FULL``; Redis: as durable as its ``appendfsync`` makes it); an event
whose ``event_id`` is already in the log is not stored again (SQLite: for the log's lifetime;
Redis: within ``dedupe_window_s``); an erasure removes the customer's entries (and those of
their sessions) before it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import urlsplit

from shoprec.errors import ShoprecError
from shoprec.events.records import (
    ArticleFields,
    ArticleState,
    Customer,
    Event,
    LogEntry,
)

SQLITE_SCHEME: Final = "sqlite"
REDIS_SCHEMES: Final = ("redis", "rediss")
DEFAULT_LOG_FILE: Final = "events.db"  # under models/<name>/
DEFAULT_NAMESPACE: Final = "shoprec"
DEFAULT_DEDUPE_WINDOW_S: Final = 86_400
MAX_READ: Final = 10_000  # entries per read_after call


class EventLogError(ShoprecError, RuntimeError):
    """The log cannot be reached, or did not make a write durable (nothing was acknowledged)."""


@dataclass(frozen=True)
class Erased:
    """What :meth:`EventLog.erase_customer` removed.

    Attributes:
        offset: offset of the erasure marker (every earlier entry of the customer is gone).
        events: events removed (the customer's and those of their sessions).
        sessions: distinct session ids of the customer whose events were removed.
        profile: whether a customer record (``PUT``) existed and was removed.
    """

    offset: int
    events: int
    sessions: int
    profile: bool


@dataclass(frozen=True)
class Changed:
    """An article change: the state after it and the state before (None = no row before)."""

    state: ArticleState
    previous: ArticleState | None


class EventLog(Protocol):
    """The gateway's side of the log. Every method returns once its write is durable.

    Raises (every method):
        EventLogError: the log is unreachable or failed the write; nothing of that call is
            acknowledged (a retry with the same ids is safe).
    """

    async def append_events(self, events: Sequence[Event]) -> list[int | None]:
        """Append events in order; per event its offset, or None when its ``event_id`` was
        already in the log (also earlier in the same batch)."""
        ...

    async def put_customer(self, customer: Customer) -> tuple[int, bool]:
        """Create or replace a customer record; (offset, whether it existed before)."""
        ...

    async def get_customer(self, customer_id: str) -> Customer | None:
        """The customer's record, or None when the log holds none."""
        ...

    async def erase_customer(self, customer_id: str) -> Erased:
        """Remove the customer's record, events and the events of their sessions, and append
        an :class:`~shoprec.events.records.Erasure` marker."""
        ...

    async def put_article(self, article_id: str, fields: ArticleFields) -> Changed:
        """Create or replace an article's fields (undeletes; keeps ``hidden``)."""
        ...

    async def set_hidden(self, article_id: str, hidden: bool) -> Changed:
        """Hide or show an article."""
        ...

    async def delete_article(self, article_id: str) -> Changed:
        """Mark an article deleted (a tombstone that keeps its last fields)."""
        ...

    async def catalog_version(self) -> int:
        """Offset of the last article change (0 when none): cheap, called per request."""
        ...

    async def articles_since(self, version: int) -> list[ArticleState]:
        """Current state of every article changed after ``version``."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release connections."""
        ...


class LogReader(Protocol):
    """A consumer's side of the log (synchronous; the updater, ``shoprec ingest events``)."""

    def read_after(self, offset: int, limit: int = 1000) -> list[LogEntry]:
        """Up to ``limit`` (1..:data:`MAX_READ`) entries with an offset above ``offset``, in
        log order.

        Raises:
            ValueError: ``limit`` or ``offset`` out of range.
            EventLogError: the log cannot be read.
        """
        ...

    def head(self) -> int:
        """The highest offset assigned so far (0 for an empty log)."""
        ...

    def customers(self) -> list[Customer]:
        """Every customer record (current state), by customer id."""
        ...

    def articles(self) -> list[ArticleState]:
        """Every article row (current state, tombstones included), by article id."""
        ...

    def close(self) -> None: ...


def check_read(offset: int, limit: int) -> None:
    """Raise ValueError naming the bad value unless ``offset >= 0`` and ``1 <= limit <=
    MAX_READ``."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if not 1 <= limit <= MAX_READ:
        raise ValueError(f"limit must be in 1..{MAX_READ}, got {limit}")


def log_backend(url: str) -> str:
    """``"sqlite"`` or ``"redis"`` for a log URL (a bare path is SQLite).

    Raises:
        ValueError: another scheme.
    """
    scheme = urlsplit(url).scheme
    if scheme in ("", SQLITE_SCHEME):
        return SQLITE_SCHEME
    if scheme in REDIS_SCHEMES:
        return "redis"
    raise ValueError(
        f"event log URL {url!r}: expected sqlite:///path/events.db, a file path, or "
        "redis://[:password@]host:port/db"
    )


def sqlite_path(url: str) -> Path:
    """The file of a SQLite log URL (``sqlite:///abs/path`` or a plain path)."""
    if url.startswith(f"{SQLITE_SCHEME}://"):
        return Path(url.removeprefix(f"{SQLITE_SCHEME}://"))
    return Path(url)


def open_event_log(
    url: str,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    dedupe_window_s: int = DEFAULT_DEDUPE_WINDOW_S,
    password: str | None = None,
) -> EventLog:
    """The writer of the log at ``url``; call inside the event loop that will use it.

    Args:
        url: see the module docstring.
        namespace: Redis key prefix (one log per namespace); ignored by SQLite.
        dedupe_window_s: Redis: how long an ``event_id`` is remembered; ignored by SQLite,
            which remembers every id it holds.
        password: Redis password (overrides one in the URL).

    Raises:
        ValueError: an unknown scheme.
        EventLogError: the SQLite file cannot be opened.
    """
    if log_backend(url) == SQLITE_SCHEME:
        from shoprec.events.sqlite import SqliteEventLog

        return SqliteEventLog(sqlite_path(url))
    from shoprec.events.redis_streams import RedisEventLog

    return RedisEventLog(
        url, namespace=namespace, dedupe_window_s=dedupe_window_s, password=password
    )


def open_log_reader(
    url: str, *, namespace: str = DEFAULT_NAMESPACE, password: str | None = None
) -> LogReader:
    """A reader of the log at ``url`` (see :func:`open_event_log`).

    Raises:
        ValueError: an unknown scheme.
        EventLogError: the SQLite file does not exist or cannot be opened.
    """
    if log_backend(url) == SQLITE_SCHEME:
        from shoprec.events.sqlite import SqliteLogReader

        return SqliteLogReader(sqlite_path(url))
    from shoprec.events.redis_streams import RedisLogReader

    return RedisLogReader(url, namespace=namespace, password=password)
