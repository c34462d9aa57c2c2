"""The production event log: a Redis Stream on a Redis with AOF, written by Lua scripts.

Keys (``{ns}`` is a hash tag, so every key of a log lives in one cluster slot):

* ``shoprec:{ns}:log``: the stream; entry id ``<offset>-0``, fields ``kind``, ``customer_id``,
  ``session_id``, ``at`` (Unix seconds) and ``body`` (the record's JSON);
* ``shoprec:{ns}:seq``: the offset counter (``INCR``), shared by every kind of entry;
* ``shoprec:{ns}:event:<event_id>``: idempotency keys, ``SET NX EX dedupe_window_s``;
* ``shoprec:{ns}:customers`` / ``shoprec:{ns}:articles``: hashes id -> current JSON state;
  ``shoprec:{ns}:articles:version``: sorted set id -> version (offset of the last change).

Every write is one Lua script, atomic on the server: Redis 7.0 has no idempotent ``XADD``
(``IDMP`` is 8.6+) and no ``WAITAOF`` (7.2+), so the script checks the idempotency key and
appends in one step.

Durability is Redis's: with ``appendonly yes`` and ``appendfsync always`` the AOF is written
and fsynced before any reply leaves the event loop, so an acknowledged entry survives a crash
of Redis, of the OS and a power loss; with ``appendfsync everysec`` it survives a crash of
Redis (the write reached the page cache before the reply), and an OS crash or power loss
loses up to about the last second (two when the disk is slow). Without AOF a restart loses
everything since the last RDB snapshot. The instance must run ``maxmemory-policy
noeviction``: an LRU policy may evict the stream or the idempotency keys.

Idempotency is bounded: an ``event_id`` is remembered for ``dedupe_window_s`` (default 24 h,
about 150 bytes per id); a replay after that is stored again, so consumers also de-duplicate
by ``event_id`` (``shoprec ingest events`` does).

Erasure: ``XDEL`` only flags stream entries as deleted inside their listpack node, and RDB
files and AOF rewrites (RDB preamble) copy nodes byte for byte. An erasure therefore removes
the entries with ``XDEL`` (readers stop seeing them at once), rewrites the stream into a new
key without them and renames it over the old one (entries appended meanwhile are copied by a
final atomic script), and asks for ``BGREWRITEAOF`` so that the AOF on disk no longer holds
them. Erasures are serialised by a Redis lock. The rewrite costs O(stream length): trim the
stream (``XTRIM MINID``) once its consumers have applied it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import redis
import redis.asyncio as aioredis

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

SCAN_CHUNK: Final = 1_000  # stream entries per XRANGE while erasing and compacting
ERASE_LOCK_S: Final = 600.0  # an erasure holds the lock at most this long
SOCKET_TIMEOUT_S: Final = 5.0
CONNECT_TIMEOUT_S: Final = 2.0

APPEND_EVENTS: Final = """
-- KEYS: stream, seq. ARGV: dedupe prefix, ttl s, at, then (event_id, customer_id,
-- session_id, body) per event. Returns per event its offset, or nil for a duplicate.
local out = {}
local n = 0
for i = 4, #ARGV, 4 do
  n = n + 1
  if redis.call('SET', ARGV[1] .. ARGV[i], '1', 'NX', 'EX', ARGV[2]) then
    local seq = redis.call('INCR', KEYS[2])
    redis.call('XADD', KEYS[1], seq .. '-0', 'kind', 'event', 'customer_id', ARGV[i + 1],
               'session_id', ARGV[i + 2], 'at', ARGV[3], 'body', ARGV[i + 3])
    out[n] = seq
  else
    out[n] = false
  end
end
return out
"""
PUT_CUSTOMER: Final = """
-- KEYS: stream, seq, customers. ARGV: customer_id, body, at. Returns {offset, existed}.
local existed = redis.call('HEXISTS', KEYS[3], ARGV[1])
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[1], seq .. '-0', 'kind', 'customer_put', 'customer_id', ARGV[1],
           'session_id', '', 'at', ARGV[3], 'body', ARGV[2])
return {seq, existed}
"""
MARK_ERASURE: Final = """
-- KEYS: stream, seq, customers. ARGV: customer_id, marker body, at. Returns {offset, profile}.
local profile = redis.call('HDEL', KEYS[3], ARGV[1])
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], seq .. '-0', 'kind', 'customer_erased', 'customer_id', '',
           'session_id', '', 'at', ARGV[3], 'body', ARGV[2])
return {seq, profile}
"""
CHANGE_ARTICLE: Final = """
-- KEYS: stream, seq, articles, versions. ARGV: op (put | hide | delete), article_id, now s,
-- argument (fields JSON | '1'/'0' | ''), at. Returns {state JSON, previous JSON or nil}.
local prev = redis.call('HGET', KEYS[3], ARGV[2])
local state
if prev then
  state = cjson.decode(prev)
else
  state = {article_id = ARGV[2], fields = cjson.null, hidden = false, deleted = false,
           online_ts = 0, version = 0}
end
local kind
if ARGV[1] == 'put' then
  state.fields = cjson.decode(ARGV[4])
  state.deleted = false
  state.online_ts = math.max(tonumber(ARGV[3]), state.online_ts + 1)
  kind = 'article_put'
elseif ARGV[1] == 'hide' then
  state.hidden = (ARGV[4] == '1')
  kind = 'article_hidden'
else
  state.deleted = true
  kind = 'article_deleted'
end
local seq = redis.call('INCR', KEYS[2])
state.version = seq
local body = cjson.encode(state)
redis.call('HSET', KEYS[3], ARGV[2], body)
redis.call('ZADD', KEYS[4], seq, ARGV[2])
redis.call('XADD', KEYS[1], seq .. '-0', 'kind', kind, 'customer_id', '', 'session_id', '',
           'at', ARGV[5], 'body', body)
return {body, prev or false}
"""
FINISH_COMPACTION: Final = """
-- KEYS: stream, copy. ARGV: id of the last entry copied. Copies the entries appended since,
-- then replaces the stream by the copy (or deletes it when nothing is left).
local tail = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
for _, entry in ipairs(tail) do
  redis.call('XADD', KEYS[2], entry[1], unpack(entry[2]))
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
return #tail
"""


class RedisKeys:
    """The key names of the log of ``namespace`` (see the module docstring)."""

    def __init__(self, namespace: str) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError(f"namespace must be non-empty without braces, got {namespace!r}")
        base = f"shoprec:{{{namespace}}}"
        self.stream = f"{base}:log"
        self.seq = f"{base}:seq"
        self.dedupe = f"{base}:event:"
        self.customers = f"{base}:customers"
        self.articles = f"{base}:articles"
        self.versions = f"{base}:articles:version"
        self.compaction = f"{base}:log:compaction"
        self.erase_lock = f"{base}:erase-lock"

    def all(self) -> list[str]:
        """Every fixed key (not the idempotency keys): for cleanup in tests."""
        return [
            self.stream, self.seq, self.customers, self.articles, self.versions, self.compaction,
        ]  # fmt: skip


def _offset(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> LogEntry:
    offset = _offset(entry_id)
    kind = EntryKind(fields[b"kind"].decode())
    return LogEntry(
        offset, kind, float(fields[b"at"]), decode_record(kind, fields[b"body"], offset)
    )


def _client_options(password: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
    if password is not None:
        options["password"] = password  # a password in the URL takes precedence
    return options


class RedisEventLog:
    """:class:`~shoprec.events.log.EventLog` on a Redis Stream (see the module docstring).

    Args:
        url: ``redis://[:password@]host:port/db``.
        namespace: key prefix (hash tag) of this log.
        dedupe_window_s: how long an ``event_id`` is remembered, >= 1.
        password: used when the URL holds none (e.g. read from a secrets file).

    Create it inside the event loop that uses it (the connection pool binds to it);
    connections open lazily.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        dedupe_window_s: int,
        password: str | None = None,
    ) -> None:
        if dedupe_window_s < 1:
            raise ValueError(f"dedupe_window_s must be >= 1, got {dedupe_window_s}")
        self.keys = RedisKeys(namespace)
        self._ttl = dedupe_window_s
        self._redis = aioredis.Redis.from_url(url, **_client_options(password))
        self._append = self._redis.register_script(APPEND_EVENTS)
        self._put_customer = self._redis.register_script(PUT_CUSTOMER)
        self._mark_erasure = self._redis.register_script(MARK_ERASURE)
        self._change_article = self._redis.register_script(CHANGE_ARTICLE)
        self._finish_compaction = self._redis.register_script(FINISH_COMPACTION)

    async def append_events(self, events: Sequence[Event]) -> list[int | None]:
        """See :meth:`EventLog.append_events` (one script call for the whole batch)."""
        args: list[str | int | float] = [self.keys.dedupe, self._ttl, time.time()]
        for e in events:
            args += [e.event_id, e.customer_id, e.session_id or "", e.model_dump_json()]
        answer = await self._call(self._append(keys=[self.keys.stream, self.keys.seq], args=args))
        return [None if offset is None else int(offset) for offset in answer]

    async def put_customer(self, customer: Customer) -> tuple[int, bool]:
        """See :meth:`EventLog.put_customer`."""
        offset, existed = await self._call(
            self._put_customer(
                keys=[self.keys.stream, self.keys.seq, self.keys.customers],
                args=[customer.customer_id, customer.model_dump_json(), time.time()],
            )
        )
        return int(offset), bool(existed)

    async def get_customer(self, customer_id: str) -> Customer | None:
        """See :meth:`EventLog.get_customer`."""
        body = await self._call(self._redis.hget(self.keys.customers, customer_id))
        return None if body is None else Customer.model_validate_json(body)

    async def erase_customer(self, customer_id: str) -> Erased:
        """See :meth:`EventLog.erase_customer` and the module docstring. Runs to the end even
        when the awaiting request is cancelled."""
        return await asyncio.shield(self._erase(customer_id))

    async def _erase(self, customer_id: str) -> Erased:
        keys = self.keys
        marker = Erasure(customer_hash=customer_hash(customer_id)).model_dump_json()
        try:
            async with self._redis.lock(
                keys.erase_lock, timeout=ERASE_LOCK_S, blocking_timeout=ERASE_LOCK_S
            ):
                offset, profile = await self._mark_erasure(
                    keys=[keys.stream, keys.seq, keys.customers],
                    args=[customer_id, marker, time.time()],
                )
                customer = customer_id.encode()
                own = await self._scan(offset, lambda f: f.get(b"customer_id") == customer)
                sessions = {
                    f[b"session_id"] for _, f in own if f.get(b"session_id")
                }  # only events carry one
                shared = await self._scan(
                    offset,
                    lambda f: f.get(b"kind") == b"event" and f.get(b"session_id") in sessions,
                )
                doomed = {entry_id: f for entry_id, f in [*own, *shared]}
                event_ids = [
                    Event.model_validate_json(f[b"body"]).event_id
                    for f in doomed.values()
                    if f[b"kind"] == b"event"
                ]
                ids = list(doomed)
                for start in range(0, len(ids), SCAN_CHUNK):
                    await self._redis.xdel(keys.stream, *ids[start : start + SCAN_CHUNK])
                for start in range(0, len(event_ids), SCAN_CHUNK):
                    chunk = event_ids[start : start + SCAN_CHUNK]
                    await self._redis.delete(*(keys.dedupe + e for e in chunk))
                if ids:
                    await self._compact()
        except redis.RedisError as exc:
            raise EventLogError(f"event log {keys.stream}: erasure failed: {exc}") from exc
        await self._rewrite_aof()
        return Erased(int(offset), len(event_ids), len(sessions), bool(profile))

    async def _scan(
        self, before: int, keep: Callable[[dict[bytes, bytes]], bool]
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries with an offset below ``before`` whose fields satisfy ``keep``."""
        found: list[tuple[bytes, dict[bytes, bytes]]] = []
        start = "-"
        while True:
            chunk = await self._redis.xrange(
                self.keys.stream, min=start, max=f"({before}-0", count=SCAN_CHUNK
            )
            found += [(entry_id, fields) for entry_id, fields in chunk if keep(fields)]
            if len(chunk) < SCAN_CHUNK:
                return found
            start = f"({chunk[-1][0].decode()}"

    async def _compact(self) -> None:
        """Rewrite the stream without its deleted entries (see the module docstring)."""
        stream, copy = self.keys.stream, self.keys.compaction
        await self._redis.delete(copy)
        last = "0-0"
        while True:
            chunk = await self._redis.xrange(stream, min=f"({last}", max="+", count=SCAN_CHUNK)
            if not chunk:
                break
            pipe = self._redis.pipeline(transaction=False)
            for entry_id, fields in chunk:
                pipe.xadd(copy, fields, id=entry_id)
            await pipe.execute()
            last = chunk[-1][0].decode()
            if len(chunk) < SCAN_CHUNK:
                break
        await self._finish_compaction(keys=[stream, copy], args=[last])

    async def _rewrite_aof(self) -> None:
        """Ask Redis to rewrite its AOF (scheduled if one is running); best effort."""
        try:
            await self._redis.bgrewriteaof()
        except redis.RedisError as exc:
            logger.warning("BGREWRITEAOF after an erasure failed: %s", exc)

    async def put_article(self, article_id: str, fields: ArticleFields) -> Changed:
        """See :meth:`EventLog.put_article`."""
        return await self._article("put", article_id, fields.model_dump_json())

    async def set_hidden(self, article_id: str, hidden: bool) -> Changed:
        """See :meth:`EventLog.set_hidden`."""
        return await self._article("hide", article_id, "1" if hidden else "0")

    async def delete_article(self, article_id: str) -> Changed:
        """See :meth:`EventLog.delete_article`."""
        return await self._article("delete", article_id, "")

    async def _article(self, op: str, article_id: str, argument: str) -> Changed:
        keys = self.keys
        now = time.time()
        body, previous = await self._call(
            self._change_article(
                keys=[keys.stream, keys.seq, keys.articles, keys.versions],
                args=[op, article_id, int(now), argument, now],
            )
        )
        return Changed(
            ArticleState.model_validate_json(body),
            None if previous is None else ArticleState.model_validate_json(previous),
        )

    async def catalog_version(self) -> int:
        """See :meth:`EventLog.catalog_version` (one ``ZREVRANGE``)."""
        top = await self._call(self._redis.zrevrange(self.keys.versions, 0, 0, withscores=True))
        return int(top[0][1]) if top else 0

    async def articles_since(self, version: int) -> list[ArticleState]:
        """See :meth:`EventLog.articles_since`."""
        ids = await self._call(self._redis.zrangebyscore(self.keys.versions, f"({version}", "+inf"))
        states: list[ArticleState] = []
        for start in range(0, len(ids), SCAN_CHUNK):
            chunk = ids[start : start + SCAN_CHUNK]
            bodies = await self._call(self._redis.hmget(self.keys.articles, chunk))
            states += [ArticleState.model_validate_json(b) for b in bodies if b is not None]
        return states

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.close()
        await self._redis.connection_pool.disconnect()

    async def _call(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except redis.RedisError as exc:
            raise EventLogError(f"event log {self.keys.stream}: {exc}") from exc


class RedisLogReader:
    """:class:`~shoprec.events.log.LogReader` of a Redis log (synchronous client).

    Raises (every method):
        EventLogError: Redis is unreachable.
    """

    def __init__(self, url: str, *, namespace: str, password: str | None = None) -> None:
        self.keys = RedisKeys(namespace)
        self._redis = redis.Redis.from_url(url, **_client_options(password))

    def read_after(self, offset: int, limit: int = 1000) -> list[LogEntry]:
        """See :meth:`LogReader.read_after` (``XRANGE (offset-0 + COUNT limit``)."""
        check_read(offset, limit)
        chunk = self._call(
            lambda: self._redis.xrange(self.keys.stream, min=f"({offset}-0", count=limit)
        )
        return [_entry(entry_id, fields) for entry_id, fields in chunk]

    def head(self) -> int:
        """See :meth:`LogReader.head`."""
        value = self._call(lambda: self._redis.get(self.keys.seq))
        return 0 if value is None else int(value)

    def customers(self) -> list[Customer]:
        """See :meth:`LogReader.customers`."""
        rows = self._call(lambda: self._redis.hgetall(self.keys.customers))
        return [Customer.model_validate_json(rows[k]) for k in sorted(rows)]

    def articles(self) -> list[ArticleState]:
        """See :meth:`LogReader.articles`."""
        rows = self._call(lambda: self._redis.hgetall(self.keys.articles))
        return [ArticleState.model_validate_json(rows[k]) for k in sorted(rows)]

    def close(self) -> None:
        self._redis.close()

    def _call(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except redis.RedisError as exc:
            raise EventLogError(f"event log {self.keys.stream}: {exc}") from exc
