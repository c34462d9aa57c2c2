"""Per-shopper state the near-real-time updater derives from the event log and every gateway
worker reads: the articles a customer marked ``not_interested``, the articles a customer
bought (when the served policy excludes already-bought articles), and the articles viewed in a
session.

It lives in the online store's own database, next to Feast's tables, and is shared by every
process (no per-worker copy):

* SQLite (the embedded default): ``shopper_state.db`` in the feature repo folder (WAL mode,
  readers never block the writer); session rows older than the TTL are ignored on read and
  pruned by the updater.
* Redis (production): the online store's Redis, keys ``<prefix>:excluded:<customer_id>`` (a
  set), ``<prefix>:bought:<customer_id>`` (a set) and ``<prefix>:session:<session_id>`` (a
  list, most recent view first, at most :data:`SESSION_LENGTH`, expiring
  :data:`SESSION_TTL_S` after the last view).

The state is not versioned with the feature snapshot. ``not_interested`` and the session
views are a function of the log alone, and the updater rewrites them idempotently (set
semantics, views keyed by log offset). The bought set is the union of what ``shoprec
materialize`` loads from the snapshot's transactions (:meth:`SqliteShopperState.load_bought`,
added to, never replaced, so purchases the updater wrote after the snapshot are kept) and what
the updater adds per purchase event; materializing a policy that keeps bought articles clears
it. The gateway reads both sets of a customer in one query / one round trip
(:meth:`ShopperState.excluded`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import quote

import redis
from feast.infra.online_stores.redis import RedisOnlineStore

from shoprec.featurestore.store import OnlineStoreKind, _load_config, _redis_client
from shoprec.featurestore.versions import resolve
from shoprec.serving.article_delta import DELTA_DB

SHOPPER_DB: Final = "shopper_state.db"
SESSION_TTL_S: Final = 1800  # a session's views are forgotten 30 min after its last view
SESSION_LENGTH: Final = 20  # most recent views kept per session
BULK_ROWS: Final = 200_000  # (customer, article) pairs per bulk write of the bought set


class ShopperState(Protocol):
    """Read and write the shopper state (blocking; the gateway calls it from a thread)."""

    def exclude(self, customer_id: str, article_ids: Sequence[str]) -> None:
        """Never recommend these articles to this customer again (``not_interested``)."""
        ...

    def excluded(self, customer_id: str) -> frozenset[str]:
        """The articles never to recommend to the customer: marked ``not_interested`` or in
        the bought set (one SQL query / one Redis round trip for both)."""
        ...

    def add_bought(self, customer_id: str, article_ids: Sequence[str]) -> None:
        """Add articles to the customer's bought set (the updater, per purchase event)."""
        ...

    def load_bought(self, customer_ids: Sequence[str], article_ids: Sequence[str]) -> int:
        """Bulk-add (customer, article) pairs (parallel sequences, sorted by customer for
        speed) to the bought sets (``shoprec materialize``); the pairs given."""
        ...

    def clear_bought(self) -> None:
        """Drop every customer's bought set (a policy that keeps bought articles)."""
        ...

    def add_view(self, session_id: str, offset: int, article_id: str, at: float) -> None:
        """Record a view of ``article_id`` in a session; ``offset`` is the log offset (the
        same view written twice is kept once), ``at`` the log's Unix time."""
        ...

    def session_views(self, session_id: str, limit: int = SESSION_LENGTH) -> list[str]:
        """Distinct articles viewed in the session, most recent first (empty when unknown or
        expired)."""
        ...

    def forget(self, customer_id: str, session_ids: Sequence[str]) -> None:
        """Erasure: drop the customer's exclusions, bought set and these sessions."""
        ...

    def close(self) -> None: ...


class SqliteShopperState:
    """:class:`ShopperState` in a SQLite file (see the module docstring)."""

    def __init__(self, path: Path, ttl_s: int = SESSION_TTL_S) -> None:
        self.path = path
        self.ttl_s = ttl_s
        # One connection shared by the gateway's worker threads, used under a lock.
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS excluded (
                customer_id TEXT NOT NULL, article_id TEXT NOT NULL,
                PRIMARY KEY (customer_id, article_id)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS bought (
                customer_id TEXT NOT NULL, article_id TEXT NOT NULL,
                PRIMARY KEY (customer_id, article_id)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS session_views (
                session_id TEXT NOT NULL, log_offset INTEGER NOT NULL,
                article_id TEXT NOT NULL, at REAL NOT NULL,
                PRIMARY KEY (session_id, log_offset)) WITHOUT ROWID;
            """
        )

    def exclude(self, customer_id: str, article_ids: Sequence[str]) -> None:
        with self._lock:
            self._conn.executemany(
                "INSERT OR IGNORE INTO excluded VALUES (?, ?)",
                [(customer_id, a) for a in article_ids],
            )

    def excluded(self, customer_id: str) -> frozenset[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT article_id FROM excluded WHERE customer_id = ?1 "
                "UNION SELECT article_id FROM bought WHERE customer_id = ?1",
                (customer_id,),
            ).fetchall()
        return frozenset(r[0] for r in rows)

    def add_bought(self, customer_id: str, article_ids: Sequence[str]) -> None:
        with self._lock:
            self._conn.executemany(
                "INSERT OR IGNORE INTO bought VALUES (?, ?)",
                [(customer_id, a) for a in article_ids],
            )

    def load_bought(self, customer_ids: Sequence[str], article_ids: Sequence[str]) -> int:
        if len(customer_ids) != len(article_ids):
            raise ValueError(f"{len(customer_ids)} customer ids but {len(article_ids)} article ids")
        with self._lock:
            # One transaction per batch: autocommit per row would sync the WAL per row.
            for start in range(0, len(customer_ids), BULK_ROWS):
                stop = start + BULK_ROWS
                self._conn.execute("BEGIN")
                try:
                    self._conn.executemany(
                        "INSERT OR IGNORE INTO bought VALUES (?, ?)",
                        zip(customer_ids[start:stop], article_ids[start:stop], strict=True),
                    )
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
        return len(customer_ids)

    def clear_bought(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM bought")

    def add_view(self, session_id: str, offset: int, article_id: str, at: float) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO session_views VALUES (?, ?, ?, ?)",
                (session_id, offset, article_id, at),
            )

    def session_views(self, session_id: str, limit: int = SESSION_LENGTH) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT article_id, MAX(log_offset) AS o, MAX(at) FROM session_views "
                "WHERE session_id = ? GROUP BY article_id ORDER BY o DESC",
                (session_id,),
            ).fetchall()
        if not rows or max(r[2] for r in rows) < time.time() - self.ttl_s:
            return []
        return [r[0] for r in rows[:limit]]

    def prune(self, now: float | None = None) -> int:
        """Delete the views of sessions idle for longer than the TTL; rows deleted."""
        cutoff = (now or time.time()) - self.ttl_s
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM session_views WHERE session_id IN (SELECT session_id FROM "
                "session_views GROUP BY session_id HAVING MAX(at) < ?)",
                (cutoff,),
            )
        return int(cur.rowcount)

    def forget(self, customer_id: str, session_ids: Sequence[str]) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM excluded WHERE customer_id = ?", (customer_id,))
            self._conn.execute("DELETE FROM bought WHERE customer_id = ?", (customer_id,))
            self._conn.executemany(
                "DELETE FROM session_views WHERE session_id = ?", [(s,) for s in session_ids]
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class RedisShopperState:
    """:class:`ShopperState` in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int = SESSION_TTL_S) -> None:
        self._client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _excluded_key(self, customer_id: str) -> str:
        return f"{self.prefix}:excluded:{customer_id}"

    def _bought_key(self, customer_id: str) -> str:
        return f"{self.prefix}:bought:{customer_id}"

    def _session_key(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    def exclude(self, customer_id: str, article_ids: Sequence[str]) -> None:
        if article_ids:
            self._client.sadd(self._excluded_key(customer_id), *article_ids)

    def excluded(self, customer_id: str) -> frozenset[str]:
        # SUNION of a missing key is the empty set: one round trip for both sets.
        members = self._client.sunion(
            [self._excluded_key(customer_id), self._bought_key(customer_id)]
        )
        return frozenset(m.decode() for m in members)

    def add_bought(self, customer_id: str, article_ids: Sequence[str]) -> None:
        if article_ids:
            self._client.sadd(self._bought_key(customer_id), *article_ids)

    def load_bought(self, customer_ids: Sequence[str], article_ids: Sequence[str]) -> int:
        if len(customer_ids) != len(article_ids):
            raise ValueError(f"{len(customer_ids)} customer ids but {len(article_ids)} article ids")
        for start in range(0, len(customer_ids), BULK_ROWS):
            stop = min(start + BULK_ROWS, len(customer_ids))
            pipe = self._client.pipeline(transaction=False)
            for customer_id, articles in _runs(customer_ids, article_ids, start, stop):
                pipe.sadd(self._bought_key(customer_id), *articles)
            pipe.execute()
        return len(customer_ids)

    def clear_bought(self) -> None:
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=f"{self.prefix}:bought:*", count=10_000):
            batch.append(key)
            if len(batch) == 10_000:
                self._client.unlink(*batch)
                batch = []
        if batch:
            self._client.unlink(*batch)

    def add_view(self, session_id: str, offset: int, article_id: str, at: float) -> None:
        # Members "<offset>:<article>" in a sorted set scored by offset: a view written twice
        # (updater restart) is one member.
        key = self._session_key(session_id)
        pipe = self._client.pipeline()
        pipe.zadd(key, {f"{offset}:{article_id}": offset})
        pipe.zremrangebyrank(key, 0, -(4 * SESSION_LENGTH) - 1)
        pipe.expire(key, self.ttl_s)
        pipe.execute()

    def session_views(self, session_id: str, limit: int = SESSION_LENGTH) -> list[str]:
        members = self._client.zrevrange(self._session_key(session_id), 0, -1)
        out: list[str] = []
        for member in members:
            article_id = member.decode().split(":", 1)[1]
            if article_id not in out:
                out.append(article_id)
            if len(out) == limit:
                break
        return out

    def forget(self, customer_id: str, session_ids: Sequence[str]) -> None:
        keys = [
            self._excluded_key(customer_id),
            self._bought_key(customer_id),
            *map(self._session_key, session_ids),
        ]
        self._client.delete(*keys)

    def close(self) -> None:
        self._client.close()


def _runs(
    customer_ids: Sequence[str], article_ids: Sequence[str], start: int, stop: int
) -> Iterator[tuple[str, list[str]]]:
    """(customer, articles) of each run of equal consecutive customer ids in [start, stop)."""
    i = start
    while i < stop:
        j = i + 1
        while j < stop and customer_ids[j] == customer_ids[i]:
            j += 1
        yield customer_ids[i], list(article_ids[i:j])
        i = j


def shopper_state_at(
    repo_path: Path,
    kind: OnlineStoreKind | str,
    *,
    connection_string: str | None = None,
    base_project: str | None = None,
    ttl_s: int = SESSION_TTL_S,
) -> SqliteShopperState | RedisShopperState:
    """The shopper state of a feature repo given its store kind (``shoprec materialize``,
    before the new version is published): ``repo_path / shopper_state.db`` for SQLite; for
    Redis the store's Redis (``connection_string``, Feast's ``host:port[,key=value...]``) with
    the key prefix ``shoprec:<base_project>``.

    Raises:
        ValueError: Redis without ``connection_string`` or ``base_project``.
    """
    if OnlineStoreKind(kind) is OnlineStoreKind.REDIS:
        if not connection_string or not base_project:
            raise ValueError("a Redis shopper state needs connection_string and base_project")
        client = _redis_client(connection_string)
        return RedisShopperState(client, f"shoprec:{base_project}", ttl_s)
    return SqliteShopperState(Path(repo_path) / SHOPPER_DB, ttl_s)


def open_shopper_state(
    repo_path: Path, *, redis_url: str | None = None, ttl_s: int = SESSION_TTL_S
) -> SqliteShopperState | RedisShopperState:
    """The shopper state of a materialized feature repo: SQLite next to a SQLite store, the
    store's Redis for a Redis store (key prefix = the repo's Feast project without its version).

    Raises:
        ArtifactError: the repo is not materialized.
    """
    folder, version = resolve(Path(repo_path))
    config = _load_config(folder, redis_url)
    if OnlineStoreKind(config.online_store.type) is OnlineStoreKind.REDIS:
        project = str(config.project)
        base = project.removesuffix(f"_{version}") if version else project
        client = _redis_client(config.online_store.connection_string)
        return RedisShopperState(client, f"shoprec:{base}", ttl_s)
    return SqliteShopperState(Path(repo_path) / SHOPPER_DB, ttl_s)


def article_delta_location(repo_path: Path, *, redis_url: str | None = None) -> str:
    """Where the article delta of a materialized feature repo lives
    (:func:`shoprec.serving.article_delta.open_article_delta` opens it): ``article_delta.db``
    in the repo folder next to a SQLite store; the store's Redis for a Redis store, as
    ``redis://[:password@]host:port/db#shoprec:<project>`` (the shopper state's key prefix).
    The Redis form carries the store's password: pass it through the environment, never log it.

    Raises:
        ArtifactError: the repo is not materialized.
    """
    folder, version = resolve(Path(repo_path))
    config = _load_config(folder, redis_url)
    if OnlineStoreKind(config.online_store.type) is not OnlineStoreKind.REDIS:
        return str(Path(repo_path).resolve() / DELTA_DB)
    project = str(config.project)
    base = project.removesuffix(f"_{version}") if version else project
    nodes, params = RedisOnlineStore._parse_connection_string(config.online_store.connection_string)
    scheme = "rediss" if str(params.get("ssl", "")).lower() in ("true", "1") else "redis"
    password = params.get("password")
    auth = f":{quote(str(password), safe='')}@" if password else ""
    host, port = nodes[0]["host"], nodes[0]["port"]
    return f"{scheme}://{auth}{host}:{port}/{params.get('db', 0)}#shoprec:{base}"
