"""The event log's two backends through their interfaces: order, offsets, idempotency, group
commit, catalog rows, erasure, reopening; SQLite on a temp file, Redis on a redis-server of
the module's own (AOF, password)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from servers import RedisServer
from shoprec.events import (
    ArticleFields,
    ArticleState,
    Customer,
    EntryKind,
    Erasure,
    Event,
    EventLog,
    EventLogError,
    EventType,
    LogEntry,
    customer_hash,
    log_backend,
    open_event_log,
    open_log_reader,
)
from shoprec.events.sqlite import GroupCommitWriter, SqliteEventLog, SqliteLogReader

WHEN = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def make_event(event_id: str, customer_id: str = "c1", session_id: str | None = None) -> Event:
    return Event(
        event_id=event_id,
        type=EventType.PURCHASE,
        customer_id=customer_id,
        article_id="a1",
        timestamp=WHEN,
        session_id=session_id,
    )


def event_ids(entries: list[LogEntry]) -> list[str]:
    return [e.record.event_id for e in entries if isinstance(e.record, Event)]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A fresh log: (url, namespace)."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'events.db'}", "unused"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url, tmp_path.name


def run(url: str, namespace: str, body: Callable[[EventLog], Any], **options: Any) -> Any:
    """Open the log in a fresh event loop, run ``body`` on it, close it."""

    async def main() -> Any:
        log = open_event_log(url, namespace=namespace, **options)
        try:
            return await body(log)
        finally:
            await log.close()

    return asyncio.run(main())


def read(url: str, namespace: str, after: int = 0, limit: int = 1000) -> list[LogEntry]:
    reader = open_log_reader(url, namespace=namespace)
    try:
        return reader.read_after(after, limit)
    finally:
        reader.close()


def test_appends_are_ordered_idempotent_and_gapless(log_url: tuple[str, str]) -> None:
    url, ns = log_url

    async def body(log: EventLog) -> list[list[int | None]]:
        first = await log.append_events([make_event("e1"), make_event("e2"), make_event("e1")])
        second = await log.append_events([make_event("e2"), make_event("e3")])
        return [first, second]

    assert run(url, ns, body) == [[1, 2, None], [None, 3]]
    entries = read(url, ns)
    assert [(e.offset, e.kind) for e in entries] == [(n, EntryKind.EVENT) for n in (1, 2, 3)]
    assert event_ids(entries) == ["e1", "e2", "e3"]
    assert entries[0].record == make_event("e1")
    assert abs(entries[0].recorded_at - time.time()) < 60
    # Paging with read_after, and the head.
    assert [e.offset for e in read(url, ns, after=1, limit=1)] == [2]
    assert read(url, ns, after=3) == []
    reader = open_log_reader(url, namespace=ns)
    assert reader.head() == 3
    with pytest.raises(ValueError, match="limit must be in 1..10000, got 0"):
        reader.read_after(0, 0)
    with pytest.raises(ValueError, match="offset must be >= 0, got -1"):
        reader.read_after(-1)
    reader.close()


def test_one_order_for_every_kind_of_entry(log_url: tuple[str, str]) -> None:
    url, ns = log_url

    async def body(log: EventLog) -> Any:
        await log.append_events([make_event("e1")])
        put = await log.put_customer(Customer(customer_id="c1", age=30))
        replaced = await log.put_customer(Customer(customer_id="c1", segment="S"))
        article = await log.put_article("n1", ArticleFields(name="New"))
        hidden = await log.set_hidden("a7", True)
        deleted = await log.delete_article("n1")
        return (
            put,
            replaced,
            article,
            hidden,
            deleted,
            await log.catalog_version(),
            (await log.articles_since(4)),
            await log.get_customer("c1"),
        )

    put, replaced, article, hidden, deleted, version, since, customer = run(url, ns, body)
    assert (put, replaced) == ((2, False), (3, True))
    assert article.previous is None and article.state.version == 4
    assert hidden.state == ArticleState(article_id="a7", hidden=True, version=5)
    assert deleted.state.deleted and deleted.state.fields == ArticleFields(name="New")
    assert deleted.previous == article.state
    assert version == 6
    assert sorted((s.article_id, s.version) for s in since) == [("a7", 5), ("n1", 6)]
    assert customer == Customer(customer_id="c1", segment="S")
    entries = read(url, ns)
    assert [e.kind for e in entries] == [
        EntryKind.EVENT, EntryKind.CUSTOMER_PUT, EntryKind.CUSTOMER_PUT, EntryKind.ARTICLE_PUT,
        EntryKind.ARTICLE_HIDDEN, EntryKind.ARTICLE_DELETED,
    ]  # fmt: skip
    assert [e.offset for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[5].record == deleted.state
    reader = open_log_reader(url, namespace=ns)
    assert reader.customers() == [Customer(customer_id="c1", segment="S")]
    assert reader.articles() == [hidden.state, deleted.state]
    reader.close()


def test_erasure_removes_the_customer_and_their_sessions_only(log_url: tuple[str, str]) -> None:
    url, ns = log_url

    async def body(log: EventLog) -> Any:
        await log.put_customer(Customer(customer_id="gone", postal_code="P"))
        await log.append_events(
            [
                make_event("g1", "gone", "s1"),
                make_event("v1", "visitor", "s1"),  # shares the erased customer's session
                make_event("v2", "visitor", "s2"),
                make_event("g2", "gone"),
                make_event("k1", "kept", "s3"),
            ]
        )
        erased = await log.erase_customer("gone")
        after = await log.append_events([make_event("g3", "gone")])  # a new life
        return erased, after, await log.get_customer("gone")

    erased, after, profile = run(url, ns, body)
    assert (erased.offset, erased.events, erased.sessions, erased.profile) == (7, 3, 1, True)
    assert after == [8]
    assert profile is None
    entries = read(url, ns)
    assert [(e.offset, e.kind) for e in entries] == [
        (4, EntryKind.EVENT), (6, EntryKind.EVENT), (7, EntryKind.CUSTOMER_ERASED),
        (8, EntryKind.EVENT),
    ]  # fmt: skip
    assert event_ids(entries) == ["v2", "k1", "g3"]
    assert entries[2].record == Erasure(customer_hash=customer_hash("gone"))


def test_sqlite_offsets_are_never_reused_after_an_erasure(tmp_path: Path) -> None:
    url = str(tmp_path / "events.db")

    async def body(log: EventLog) -> Any:
        await log.append_events([make_event("x1", "z"), make_event("x2", "z")])
        return await log.erase_customer("z")

    assert run(url, "", body).offset == 3
    assert run(url, "", lambda log: log.append_events([make_event("x3")])) == [4]
    # Erased ids may come again (their first copy is gone): stored as new.
    assert run(url, "", lambda log: log.append_events([make_event("x1")])) == [5]


def test_sqlite_log_survives_reopening_and_is_a_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "events.db"
    run(str(path), "", lambda log: log.append_events([make_event("e1")]))
    run(str(path), "", lambda log: log.append_events([make_event("e1"), make_event("e2")]))
    assert event_ids(read(str(path), "")) == ["e1", "e2"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_group_commit_writes_what_queued_meanwhile_in_one_transaction(tmp_path: Path) -> None:
    writer = GroupCommitWriter(tmp_path / "events.db")
    started = time.monotonic()

    def slow(conn: sqlite3.Connection) -> str:
        time.sleep(0.3)  # the writer is busy: the next operations queue up
        return "slow"

    def insert(n: int) -> Callable[[sqlite3.Connection], int]:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO log(kind, recorded_at, body) VALUES ('event', 0, ?)", (str(n),)
            )
            return n

        return run

    def fail(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO log(kind, recorded_at, body) VALUES ('event', 0, 'half')")
        raise ValueError("bad operation")

    first = writer.submit(slow)
    time.sleep(0.05)  # the slow operation's group has started
    futures = [writer.submit(insert(n)) for n in range(200)]
    failing = writer.submit(fail)
    cancelled = writer.submit(insert(999))
    assert cancelled.cancel()
    assert first.result(timeout=10) == "slow"
    assert [f.result(timeout=10) for f in futures] == list(range(200))
    with pytest.raises(EventLogError, match="ValueError: bad operation"):
        failing.result(timeout=10)
    assert writer.commits == 2  # the slow one, then all 200 + the failing one together
    writer.close()
    bodies = [b for (b,) in sqlite3.connect(tmp_path / "events.db").execute("SELECT body FROM log")]
    assert bodies == [str(n) for n in range(200)]  # nothing of the failed or cancelled ones
    assert time.monotonic() - started < 10


def test_closed_writer_refuses_work(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    asyncio.run(log.close())
    with pytest.raises(EventLogError, match="is closed"):
        log.writer.submit(lambda conn: None)


def test_redis_dedupe_window_is_bounded(redis_server: RedisServer, tmp_path: Path) -> None:
    ns = tmp_path.name
    first = run(
        redis_server.url, ns, lambda log: log.append_events([make_event("w")]), dedupe_window_s=1
    )
    time.sleep(1.2)
    again = run(
        redis_server.url, ns, lambda log: log.append_events([make_event("w")]), dedupe_window_s=1
    )
    assert (first, again) == ([1], [2])  # past the window a replay is stored again


def test_unreachable_or_invalid_logs_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(EventLogError, match="not found"):
        SqliteLogReader(tmp_path / "missing.db")
    (tmp_path / "other.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(EventLogError, match="is not an event log"):
        SqliteLogReader(tmp_path / "other.db")
    with pytest.raises(ValueError, match="expected sqlite:///path"):
        log_backend("kafka://broker:9092")
    assert log_backend("models/x/events.db") == "sqlite"
    assert log_backend("redis://:pw@host:6379/0") == "redis"
    with pytest.raises(EventLogError, match="event log shoprec:\\{x\\}:log"):
        run("redis://127.0.0.1:9/0", "x", lambda log: log.append_events([make_event("e")]))
