"""The embedded event log: one SQLite file in WAL mode, one writer thread with group commit.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL`` fsyncs the WAL at every commit, so
a committed entry survives a crash of the process, of the OS and a power loss (on storage
that honours fsync; https://www.sqlite.org/pragma.html#pragma_synchronous). A write is
acknowledged only after its commit returned.

Group commit: one thread owns the writing connection. It takes every operation queued while
the previous commit ran (up to :data:`MAX_GROUP_ROWS` rows), runs each in its own SAVEPOINT
(a failing operation rolls back alone), commits once (one fsync for all of them) and then
resolves each caller's future. An fsync costs about 4 ms on this project's machines, so one
transaction per request caps the log near 200-250 requests/s; grouped, 32 concurrent
single-event writers reached about 9,000 events/s (research notes, ``q1/group_commit.py``).
The same pattern is PostgreSQL's ``commit_delay`` and InnoDB's binlog group commit.

Tables:

* ``log(seq INTEGER PRIMARY KEY AUTOINCREMENT, kind, event_id UNIQUE, customer_id,
  session_id, recorded_at, body)``: every entry; ``seq`` is the offset. ``AUTOINCREMENT``
  never reuses an offset, also after erasures delete the last rows.
* ``customers(customer_id PRIMARY KEY, body, version)`` and ``articles(article_id PRIMARY KEY,
  body, version)``: the current state, ``version`` = offset of the last change.

Erasure deletes with ``secure_delete`` on (freed bytes are zeroed) and then checkpoints the
WAL with ``TRUNCATE``, so the erased rows survive neither in the database file nor in the WAL.

Several processes (uvicorn workers) may each open a writer on the same file: SQLite
serialises their transactions with its file lock (``BEGIN IMMEDIATE`` waits up to
:data:`BUSY_TIMEOUT_S`). Readers in other processes read concurrently (WAL); keep their reads
short, a read transaction held open stops the WAL from being reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from shoprec.events.log import Changed, Erased, EventLogError, check_read
from shoprec.events.records import (
    ArticleFields,
    ArticleState,
    Customer,
    EntryKind,
    Erasure,
    Event,
    LogEntry,
    customer_hash,
    decode_record,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_GROUP_ROWS: Final = 5_000  # rows per group commit (a batch of events counts its events)
BUSY_TIMEOUT_S: Final = 5.0  # wait for another process's write transaction
READ_BUSY_TIMEOUT_S: Final = 1.0  # the gateway's reads run on its event loop
CHECKPOINT_ATTEMPTS: Final = 20  # after an erasure; 50 ms apart

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    event_id TEXT UNIQUE,
    customer_id TEXT,
    session_id TEXT,
    recorded_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_customer ON log(customer_id) WHERE customer_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS log_session ON log(session_id) WHERE session_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS articles (
    article_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS articles_version ON articles(version);
"""
# Not ``ON CONFLICT DO NOTHING``: an upsert that inserts nothing still uses up an
# AUTOINCREMENT value, which would leave a gap in the offsets for every duplicate.
INSERT_EVENT: Final = (
    "INSERT INTO log(kind, event_id, customer_id, session_id, recorded_at, body) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (SELECT 1 FROM log WHERE event_id = ?2)"
)
INSERT_ENTRY: Final = "INSERT INTO log(kind, customer_id, recorded_at, body) VALUES (?, ?, ?, ?)"


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A connection in autocommit mode (explicit transactions), usable from any one thread."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout_s)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _open_writer(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path, BUSY_TIMEOUT_S)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode!r}, expected 'wal'")
        conn.execute("PRAGMA secure_delete=ON")
        conn.executescript(SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise EventLogError(f"event log {path} cannot be opened: {exc}") from exc
    return conn


@dataclass
class _Operation:
    """A function run inside the group transaction, and the caller's future."""

    run: Callable[[sqlite3.Connection], Any]
    rows: int
    future: Future[Any] = field(default_factory=Future)
    checkpoint: bool = False  # truncate the WAL after the commit (erasures)


class GroupCommitWriter:
    """The one thread that writes ``path``; see the module docstring.

    Args:
        path: the database file (created with its folder).
        max_group_rows: most rows one commit takes (an operation is never split).

    Raises:
        EventLogError: the file cannot be opened or is not in WAL mode.
    """

    def __init__(self, path: Path, max_group_rows: int = MAX_GROUP_ROWS) -> None:
        self.path = path
        self.commits = 0  # transactions committed (for tests and benchmarks)
        self._conn = _open_writer(path)
        self._max_rows = max_group_rows
        self._queue: queue.SimpleQueue[_Operation | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="event-log-writer", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(
        self, run: Callable[[sqlite3.Connection], T], rows: int = 1, checkpoint: bool = False
    ) -> Future[T]:
        """Queue ``run`` for the next group; its future holds what it returned once the group
        committed, or :class:`EventLogError`. A future cancelled before its group starts is
        skipped (nothing written).

        Raises:
            EventLogError: the writer is closed.
        """
        if self._closed:
            raise EventLogError(f"event log {self.path} is closed")
        operation = _Operation(run, rows, checkpoint=checkpoint)
        self._queue.put(operation)
        return operation.future

    def close(self) -> None:
        """Write what is queued, stop the thread, close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _next_group(self) -> list[_Operation] | None:
        first = self._queue.get()
        if first is None:
            return None
        group, rows = [first], first.rows
        while rows < self._max_rows:
            try:
                operation = self._queue.get_nowait()
            except queue.Empty:
                break
            if operation is None:
                self._queue.put(None)  # stop after this group
                break
            group.append(operation)
            rows += operation.rows
        return group

    def _run(self) -> None:
        while (group := self._next_group()) is not None:
            live = [op for op in group if op.future.set_running_or_notify_cancel()]
            if live:
                self._commit(live)

    def _commit(self, group: list[_Operation]) -> None:
        conn = self._conn
        results: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in group:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, op.run(conn)))
                    conn.execute("RELEASE op")
                except Exception as exc:  # this operation alone fails
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((False, _log_error(self.path, exc)))
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # nothing of the group is durable
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error = _log_error(self.path, exc)
            results = [(False, error)] * len(group)
        if any(op.checkpoint and ok for op, (ok, _) in zip(group, results, strict=True)):
            self._truncate_wal()  # before the erasure is acknowledged
        for op, (ok, value) in zip(group, results, strict=True):
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)

    def _truncate_wal(self) -> None:
        """Copy the WAL into the database and truncate it to zero bytes, so that the frames
        holding erased rows are gone; retried while readers hold old snapshots."""
        for _ in range(CHECKPOINT_ATTEMPTS):
            try:
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:
                busy = 1
            if not busy:
                return
            time.sleep(0.05)
        logger.warning("event log %s: WAL not truncated after an erasure (readers busy)", self.path)


def _log_error(path: Path, exc: Exception) -> EventLogError:
    if isinstance(exc, EventLogError):
        return exc
    return EventLogError(f"event log {path}: {type(exc).__name__}: {exc}")


def _article(row: tuple[str, int] | None) -> ArticleState | None:
    if row is None:
        return None
    return ArticleState.model_validate_json(row[0]).model_copy(update={"version": row[1]})


def _change_article(
    conn: sqlite3.Connection,
    article_id: str,
    kind: EntryKind,
    change: Callable[[ArticleState], ArticleState],
) -> Changed:
    """Apply ``change`` to the article's row (a fresh state when none), log it, store it."""
    previous = _article(
        conn.execute(
            "SELECT body, version FROM articles WHERE article_id = ?", (article_id,)
        ).fetchone()
    )
    state = change(previous or ArticleState(article_id=article_id))
    body = state.model_dump_json(exclude={"version"})
    cursor = conn.execute(INSERT_ENTRY, (kind.value, None, time.time(), body))
    version = int(cursor.lastrowid or 0)
    conn.execute(
        "INSERT INTO articles(article_id, body, version) VALUES (?, ?, ?) "
        "ON CONFLICT(article_id) DO UPDATE SET body = excluded.body, version = excluded.version",
        (article_id, body, version),
    )
    return Changed(state.model_copy(update={"version": version}), previous)


def _erase(conn: sqlite3.Connection, customer_id: str) -> Erased:
    marker = Erasure(customer_hash=customer_hash(customer_id)).model_dump_json()
    cursor = conn.execute(
        INSERT_ENTRY, (EntryKind.CUSTOMER_ERASED.value, None, time.time(), marker)
    )
    offset = int(cursor.lastrowid or 0)
    sessions = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT session_id FROM log WHERE customer_id = ? AND session_id IS NOT NULL",
            (customer_id,),
        )
    ]
    events = conn.execute(
        "DELETE FROM log WHERE kind = ? AND customer_id = ?", (EntryKind.EVENT.value, customer_id)
    ).rowcount
    for start in range(0, len(sessions), 500):
        chunk = sessions[start : start + 500]
        events += conn.execute(
            f"DELETE FROM log WHERE kind = ? AND session_id IN ({','.join('?' * len(chunk))})",
            (EntryKind.EVENT.value, *chunk),
        ).rowcount
    conn.execute("DELETE FROM log WHERE customer_id = ?", (customer_id,))  # profile entries
    profile = conn.execute("DELETE FROM customers WHERE customer_id = ?", (customer_id,)).rowcount
    return Erased(offset=offset, events=events, sessions=len(sessions), profile=profile > 0)


class SqliteEventLog:
    """:class:`~shoprec.events.log.EventLog` on one SQLite file (see the module docstring).

    Writes go through a :class:`GroupCommitWriter`; the gateway's reads (catalog version,
    changed articles, a customer) use a second connection on the calling thread: single-row
    or indexed reads of a few microseconds, which WAL never blocks behind a writer.

    Raises:
        EventLogError: the file cannot be opened.
    """

    def __init__(self, path: Path, max_group_rows: int = MAX_GROUP_ROWS) -> None:
        self.path = Path(path)
        self.writer = GroupCommitWriter(self.path, max_group_rows)
        self._read = _connect(self.path, READ_BUSY_TIMEOUT_S)

    async def _write(
        self, run: Callable[[sqlite3.Connection], T], rows: int = 1, *, checkpoint: bool = False
    ) -> T:
        return await asyncio.wrap_future(self.writer.submit(run, rows, checkpoint))

    async def append_events(self, events: Sequence[Event]) -> list[int | None]:
        """See :meth:`EventLog.append_events`."""
        kind = EntryKind.EVENT.value
        rows = [(e.event_id, e.customer_id, e.session_id, e.model_dump_json()) for e in events]

        def run(conn: sqlite3.Connection) -> list[int | None]:
            now = time.time()
            offsets: list[int | None] = []
            for event_id, customer_id, session_id, body in rows:
                cursor = conn.execute(
                    INSERT_EVENT, (kind, event_id, customer_id, session_id, now, body)
                )
                offsets.append(int(cursor.lastrowid or 0) if cursor.rowcount == 1 else None)
            return offsets

        return await self._write(run, max(1, len(rows)))

    async def put_customer(self, customer: Customer) -> tuple[int, bool]:
        """See :meth:`EventLog.put_customer`."""
        body = customer.model_dump_json()

        def run(conn: sqlite3.Connection) -> tuple[int, bool]:
            existed = conn.execute(
                "SELECT 1 FROM customers WHERE customer_id = ?", (customer.customer_id,)
            ).fetchone()
            cursor = conn.execute(
                INSERT_ENTRY,
                (EntryKind.CUSTOMER_PUT.value, customer.customer_id, time.time(), body),
            )
            offset = int(cursor.lastrowid or 0)
            conn.execute(
                "INSERT INTO customers(customer_id, body, version) VALUES (?, ?, ?) ON CONFLICT"
                "(customer_id) DO UPDATE SET body = excluded.body, version = excluded.version",
                (customer.customer_id, body, offset),
            )
            return offset, existed is not None

        return await self._write(run)

    async def get_customer(self, customer_id: str) -> Customer | None:
        """See :meth:`EventLog.get_customer`."""
        row = self._read_one("SELECT body FROM customers WHERE customer_id = ?", (customer_id,))
        return None if row is None else Customer.model_validate_json(row[0])

    async def erase_customer(self, customer_id: str) -> Erased:
        """See :meth:`EventLog.erase_customer`; the WAL is truncated after the commit."""
        return await self._write(lambda conn: _erase(conn, customer_id), checkpoint=True)

    async def put_article(self, article_id: str, fields: ArticleFields) -> Changed:
        """See :meth:`EventLog.put_article`."""

        def change(state: ArticleState) -> ArticleState:
            online_ts = max(int(time.time()), state.online_ts + 1)
            return state.model_copy(
                update={"fields": fields, "deleted": False, "online_ts": online_ts}
            )

        return await self._write(
            lambda conn: _change_article(conn, article_id, EntryKind.ARTICLE_PUT, change)
        )

    async def set_hidden(self, article_id: str, hidden: bool) -> Changed:
        """See :meth:`EventLog.set_hidden`."""
        return await self._write(
            lambda conn: _change_article(
                conn,
                article_id,
                EntryKind.ARTICLE_HIDDEN,
                lambda state: state.model_copy(update={"hidden": hidden}),
            )
        )

    async def delete_article(self, article_id: str) -> Changed:
        """See :meth:`EventLog.delete_article`."""
        return await self._write(
            lambda conn: _change_article(
                conn,
                article_id,
                EntryKind.ARTICLE_DELETED,
                lambda state: state.model_copy(update={"deleted": True}),
            )
        )

    async def catalog_version(self) -> int:
        """See :meth:`EventLog.catalog_version` (one indexed read on this thread)."""
        row = self._read_one("SELECT max(version) FROM articles", ())
        return int(row[0]) if row is not None and row[0] is not None else 0

    async def articles_since(self, version: int) -> list[ArticleState]:
        """See :meth:`EventLog.articles_since`."""
        rows = self._read_all(
            "SELECT body, version FROM articles WHERE version > ? ORDER BY version", (version,)
        )
        return [state for row in rows if (state := _article(row)) is not None]

    async def close(self) -> None:
        """Write what is queued and close both connections."""
        await asyncio.to_thread(self.writer.close)
        self._read.close()

    def _read_one(self, sql: str, args: tuple[Any, ...]) -> Any:
        try:
            return self._read.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise EventLogError(f"event log {self.path}: {exc}") from exc

    def _read_all(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            return self._read.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise EventLogError(f"event log {self.path}: {exc}") from exc


class SqliteLogReader:
    """:class:`~shoprec.events.log.LogReader` of a SQLite log (any process, any time).

    Raises:
        EventLogError: the file does not exist or is not an event log.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise EventLogError(f"event log {self.path} not found")
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(self.path, BUSY_TIMEOUT_S)
            conn.execute("SELECT 1 FROM log LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise EventLogError(f"{self.path} is not an event log: {exc}") from exc
        self._conn = conn

    def read_after(self, offset: int, limit: int = 1000) -> list[LogEntry]:
        """See :meth:`LogReader.read_after`."""
        check_read(offset, limit)
        rows = self._conn.execute(
            "SELECT seq, kind, recorded_at, body FROM log WHERE seq > ? ORDER BY seq LIMIT ?",
            (offset, limit),
        ).fetchall()
        return [
            LogEntry(seq, EntryKind(kind), at, decode_record(kind, body, seq))
            for seq, kind, at, body in rows
        ]

    def head(self) -> int:
        """See :meth:`LogReader.head`."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'log'").fetchone()
        return 0 if row is None else int(row[0])

    def customers(self) -> list[Customer]:
        """See :meth:`LogReader.customers`."""
        rows = self._conn.execute("SELECT body FROM customers ORDER BY customer_id").fetchall()
        return [Customer.model_validate_json(body) for (body,) in rows]

    def articles(self) -> list[ArticleState]:
        """See :meth:`LogReader.articles`."""
        rows = self._conn.execute(
            "SELECT body, version FROM articles ORDER BY article_id"
        ).fetchall()
        return [state for row in rows if (state := _article(row)) is not None]

    def close(self) -> None:
        self._conn.close()
