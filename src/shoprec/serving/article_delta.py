"""The article delta: vectors and encoded attributes of articles put through the write API
after the served model was exported, shared by every online process.

The near-real-time updater encodes an article put through ``PUT /v1/articles/{id}`` with the
served encoders (the ``article_encoder`` Triton model) and writes one :class:`DeltaRow` here;
the Triton ``retrieval``, ``ranking`` and ``similar_items`` steps read the rows of their own
export and merge them at query time (brute-force inner product over the delta, merged by score
with the FAISS / neighbour-table results). Nothing is cached per process beyond a copy that a
reader refreshes when the delta's version moved: one cheap read per request.

Rows are numbered by **slot**: 0, 1, 2, ... in the order articles first entered the delta of an
export; a slot is never reused or renumbered (a changed article keeps its slot, a deleted one
stays, marked ``deleted``), so delta article ``slot`` is served-table row ``A + slot`` for every
step that loaded at least that version (A = the export's served articles). Rows are scoped by
``export_id`` (the ``manifest.json`` of the Triton repository): vectors of another export live
in another embedding space and are never read.

Backends (where the delta lives: next to the online store, like the shopper state):

* SQLite: ``article_delta.db`` in the feature repo folder (WAL: readers never block the
  writer). Location ``/path/to/article_delta.db``.
* Redis: the online store's Redis; location ``redis://[:password@]host:port/db#<prefix>``,
  keys ``<prefix>:delta:<export_id>:rows`` (hash slot -> row), ``...:slots`` (hash article id
  -> slot) and ``...:version`` (a counter).

The Triton steps learn the location from the environment variable :data:`ENV_ARTICLE_DELTA`
(set by ``shoprec serve`` on tritonserver, and by docker-compose); without it they serve the
export alone (no delta).

Shape letters: M = delta articles, D = item-tower dim, Dt = text dim, Fa / Fda = encoded article
sparse / dense widths.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from shoprec.serving.repository import export_id

if TYPE_CHECKING:
    import redis

DELTA_DB: Final = "article_delta.db"
ENV_ARTICLE_DELTA: Final = "SHOPREC_ARTICLE_DELTA"
REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")
LOG_EVERY_S: Final = 30.0  # a failing delta read is logged at most this often per step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeltaRow:
    """One article's served encodings.

    Attributes:
        article_id: the catalog id.
        item: float32 (D,) L2-normalised item-tower embedding.
        text: float32 (Dt,) L2-normalised text embedding.
        sparse: int64 (Fa,) encoded ``schema.ARTICLE_SPARSE`` (column 0 = article vocabulary id,
            the unknown id for an article the model never saw).
        dense: float32 (Fda,) encoded ``schema.ARTICLE_DENSE``.
        deleted: gone from the catalog (kept for its slot, never returned).
    """

    article_id: str
    item: npt.NDArray[np.float32]
    text: npt.NDArray[np.float32]
    sparse: npt.NDArray[np.int64]
    dense: npt.NDArray[np.float32]
    deleted: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "article_id": self.article_id,
                "item": self.item.tolist(),
                "text": self.text.tolist(),
                "sparse": self.sparse.tolist(),
                "dense": self.dense.tolist(),
                "deleted": self.deleted,
            }
        )

    @classmethod
    def from_json(cls, body: str | bytes) -> DeltaRow:
        d = json.loads(body)
        return cls(
            d["article_id"],
            np.asarray(d["item"], dtype=np.float32),
            np.asarray(d["text"], dtype=np.float32),
            np.asarray(d["sparse"], dtype=np.int64),
            np.asarray(d["dense"], dtype=np.float32),
            bool(d["deleted"]),
        )


@dataclass(frozen=True)
class DeltaArticles:
    """Every delta row of one export at one version, in slot order.

    Attributes:
        version: the delta's version when read (0 = empty, never written).
        ids: M article ids; row m has slot m.
        item: float32 (M, D); text: float32 (M, Dt); sparse: int64 (M, Fa); dense: float32
            (M, Fda); live: bool (M,) False for deleted articles.
    """

    version: int
    ids: list[str]
    item: npt.NDArray[np.float32]
    text: npt.NDArray[np.float32]
    sparse: npt.NDArray[np.int64]
    dense: npt.NDArray[np.float32]
    live: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, version: int, rows: Sequence[DeltaRow]) -> DeltaArticles:
        def stack(name: str, dtype: Any) -> npt.NDArray[Any]:
            if not rows:
                return np.zeros((0, 0), dtype=dtype)
            stacked: npt.NDArray[Any] = np.stack([getattr(r, name) for r in rows])
            return stacked.astype(dtype, copy=False)

        return cls(
            version,
            [r.article_id for r in rows],
            stack("item", np.float32),
            stack("text", np.float32),
            stack("sparse", np.int64),
            stack("dense", np.float32),
            np.array([not r.deleted for r in rows], dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.ids)


EMPTY: Final = DeltaArticles.of(0, [])


class ArticleDelta(Protocol):
    """Read and write the delta (blocking). One writer (the updater), many readers."""

    def put(self, export_id: str, rows: Sequence[DeltaRow]) -> None:
        """Insert or replace rows (a replaced article keeps its slot); bumps the version."""
        ...

    def version(self, export_id: str) -> int:
        """The delta's version (0 = never written); one indexed read or one Redis ``GET``."""
        ...

    def load(self, export_id: str) -> DeltaArticles:
        """Every row of the export, in slot order, with the version they were read at."""
        ...

    def close(self) -> None: ...


class SqliteArticleDelta:
    """:class:`ArticleDelta` in a SQLite file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=5000")
        if self._conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS delta_rows (
                export_id TEXT NOT NULL, slot INTEGER NOT NULL, article_id TEXT NOT NULL,
                body TEXT NOT NULL, PRIMARY KEY (export_id, slot),
                UNIQUE (export_id, article_id));
            CREATE TABLE IF NOT EXISTS delta_version (
                export_id TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID;
            """
        )

    def put(self, export_id: str, rows: Sequence[DeltaRow]) -> None:
        if not rows:
            return
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    got = conn.execute(
                        "SELECT slot FROM delta_rows WHERE export_id = ? AND article_id = ?",
                        (export_id, row.article_id),
                    ).fetchone()
                    if got is None:
                        slot = conn.execute(
                            "SELECT COALESCE(MAX(slot) + 1, 0) FROM delta_rows WHERE export_id = ?",
                            (export_id,),
                        ).fetchone()[0]
                    else:
                        slot = got[0]
                    conn.execute(
                        "INSERT OR REPLACE INTO delta_rows VALUES (?, ?, ?, ?)",
                        (export_id, slot, row.article_id, row.to_json()),
                    )
                conn.execute(
                    "INSERT INTO delta_version VALUES (?, 1) ON CONFLICT(export_id) "
                    "DO UPDATE SET version = version + 1",
                    (export_id,),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def version(self, export_id: str) -> int:
        with self._lock:
            got = self._conn.execute(
                "SELECT version FROM delta_version WHERE export_id = ?", (export_id,)
            ).fetchone()
        return 0 if got is None else int(got[0])

    def load(self, export_id: str) -> DeltaArticles:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                got = self._conn.execute(
                    "SELECT version FROM delta_version WHERE export_id = ?", (export_id,)
                ).fetchone()
                bodies = self._conn.execute(
                    "SELECT body FROM delta_rows WHERE export_id = ? ORDER BY slot", (export_id,)
                ).fetchall()
            finally:
                self._conn.execute("COMMIT")
        version = 0 if got is None else int(got[0])
        return DeltaArticles.of(version, [DeltaRow.from_json(b[0]) for b in bodies])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# Atomic upsert: keep the article's slot or take the next one, store the row, bump the version.
_REDIS_PUT: Final = """
local slot = redis.call('HGET', KEYS[2], ARGV[1])
if not slot then
  slot = redis.call('HLEN', KEYS[2])
  redis.call('HSET', KEYS[2], ARGV[1], slot)
end
redis.call('HSET', KEYS[1], slot, ARGV[2])
return slot
"""


class RedisArticleDelta:
    """:class:`ArticleDelta` in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self.prefix = prefix
        self._put = client.register_script(_REDIS_PUT)

    def _keys(self, export_id: str) -> tuple[str, str, str]:
        base = f"{self.prefix}:delta:{export_id}"
        return f"{base}:rows", f"{base}:slots", f"{base}:version"

    def put(self, export_id: str, rows: Sequence[DeltaRow]) -> None:
        if not rows:
            return
        rows_key, slots_key, version_key = self._keys(export_id)
        for row in rows:
            self._put(keys=[rows_key, slots_key], args=[row.article_id, row.to_json()])
        self._client.incr(version_key)

    def version(self, export_id: str) -> int:
        got = self._client.get(self._keys(export_id)[2])
        return 0 if got is None else int(got)

    def load(self, export_id: str) -> DeltaArticles:
        rows_key, _, version_key = self._keys(export_id)
        pipe = self._client.pipeline(transaction=True)
        pipe.get(version_key)
        pipe.hgetall(rows_key)
        version, bodies = pipe.execute()
        ordered = sorted(bodies.items(), key=lambda kv: int(kv[0]))
        return DeltaArticles.of(
            0 if version is None else int(version), [DeltaRow.from_json(b) for _, b in ordered]
        )

    def close(self) -> None:
        self._client.close()


def open_article_delta(location: str) -> SqliteArticleDelta | RedisArticleDelta:
    """The delta at ``location``: a SQLite file path, or ``redis://...#<key prefix>``.

    Raises:
        ValueError: a Redis location without ``#<prefix>``.
    """
    if location.startswith(REDIS_SCHEMES):
        url, _, prefix = location.partition("#")
        if not prefix:
            raise ValueError(f"article delta location {url!r} needs a '#<key prefix>' suffix")
        import redis

        return RedisArticleDelta(redis.Redis.from_url(url), prefix)
    return SqliteArticleDelta(Path(location))


def delta_from_environment() -> SqliteArticleDelta | RedisArticleDelta | None:
    """The delta named by :data:`ENV_ARTICLE_DELTA`, None when unset or empty."""
    location = os.environ.get(ENV_ARTICLE_DELTA, "")
    return open_article_delta(location) if location else None


def delta_view(version_dir: Path) -> DeltaView | None:
    """The view a step loaded from ``version_dir`` reads: the delta named by
    :data:`ENV_ARTICLE_DELTA`, scoped to the step's export; None when the variable is unset."""
    delta = delta_from_environment()
    return None if delta is None else DeltaView(delta, export_id(version_dir))


class DeltaView:
    """A step's copy of the delta of its export, refreshed when the version moved.

    ``current()`` costs one version read per call (SQLite indexed read, or a Redis ``GET``);
    the rows are read again only after a write. A read error keeps the last copy (the export
    alone is still served), is logged at most every :data:`LOG_EVERY_S` seconds (with the
    count of failures since the last line), and is retried on the next call.
    """

    def __init__(self, delta: ArticleDelta | None, export_id: str) -> None:
        self.delta = delta
        self.export_id = export_id
        self._copy = EMPTY
        self.failures = 0  # read errors since the last log line
        self._logged_at = -LOG_EVERY_S

    def current(self) -> DeltaArticles:
        if self.delta is None:
            return self._copy
        try:
            if self.delta.version(self.export_id) != self._copy.version:
                self._copy = self.delta.load(self.export_id)
        except Exception as exc:  # noqa: BLE001 - the delta is an addition: serve without its news
            self.failures += 1
            now = time.monotonic()
            if now - self._logged_at >= LOG_EVERY_S:
                log.warning(
                    "article delta unreadable (%d failures since the last report), serving "
                    "its last copy of %d articles: %s",
                    self.failures,
                    len(self._copy),
                    exc,
                )
                self._logged_at, self.failures = now, 0
            return self._copy
        return self._copy
