"""Writes from the write API into the Feast online store: article display rows in, entities out.

Feast 0.49 writes rows with ``FeatureStore.write_to_online_store`` (synchronous for SQLite and
Redis: its ``_async`` variant raises ``NotImplementedError`` for both) and has no API to
delete one entity, so :meth:`OnlineWriter.delete` removes an entity's rows the way each store
keys them:

* SQLite: ``DELETE FROM <project>_<view> WHERE entity_key = ?`` per feature view of the
  entity, with ``PRAGMA secure_delete=ON`` so that the freed bytes are zeroed, then a
  ``wal_checkpoint(TRUNCATE)`` (the store runs in WAL mode) so no old page stays in the WAL;
* Redis: ``DEL`` of the entity's hash (``feast.infra.online_stores.helpers._redis_key``),
  which holds every view of that entity in the project.

Entity keys are serialized with the store's ``entity_key_serialization_version``
(:data:`shoprec.featurestore.store.ENTITY_KEY_VERSION`).

Versions: a feature repo holds one Feast repo per materialization
(:mod:`shoprec.featurestore.versions`); the writer writes into the version being served and
follows ``CURRENT`` when a new materialization is published (a new version starts from the
exported snapshot: rows written into an older version stay there, which is why the gateway
reads article changes from the event log, not from the store).

Timestamps: Feast's Redis store silently skips a row whose event timestamp (whole seconds) is
not newer than the stored one, its SQLite store overwrites unconditionally. Callers pass a
timestamp that grows per article (``ArticleState.online_ts`` of the event log), so both stores
keep the latest write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import redis
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto

from shoprec import schema as s
from shoprec.featurestore.store import (
    ENTITY_KEY_VERSION,
    OnlineStoreError,
    OnlineStoreKind,
    _load_config,
    _redis_client,
    entity_key,
)
from shoprec.featurestore.tables import DISPLAY_FIELDS, ENCODED_DTYPES
from shoprec.featurestore.versions import current_version, resolve

# join key -> the feature views keyed by it (feature_repo/definitions.py).
ENTITY_VIEWS: Final[Mapping[str, tuple[str, ...]]] = {
    s.CUSTOMER_ID: (s.CUSTOMER_FEATURE_VIEW,),
    s.ARTICLE_ID: (s.ARTICLE_FEATURE_VIEW,),
}


@dataclass(frozen=True)
class ArticleRow:
    """One article's display row: ``fields`` keyed by :data:`DISPLAY_FIELDS` (str or None),
    ``event_ts`` whole seconds since the epoch (UTC), strictly growing per article."""

    article_id: str
    fields: Mapping[str, str | None]
    event_ts: int


class OnlineWriter:
    """Writes and deletes rows of a materialized feature repo's online store.

    Blocking (SQLite: about 4 ms per write on this project's machines, fsync-bound; Redis
    about 0.7 ms): the gateway calls it from a worker thread.

    Args:
        repo_path: a feature repo written by ``shoprec materialize`` (versioned, or one Feast
            repo folder).
        redis_url: overrides the Redis address of a Redis repo (as ``OnlineFeatures``).

    Raises:
        ArtifactError: the repo is not materialized.
        ValueError: ``redis_url`` given for a SQLite repo.
    """

    def __init__(self, repo_path: Path, *, redis_url: str | None = None) -> None:
        self.repo_path = Path(repo_path)
        self._redis_url = redis_url
        self._version: str | None = None
        self._open(*resolve(self.repo_path))

    def _open(self, folder: Path, version: str | None) -> None:
        self.folder = folder
        self._version = version
        self._config = _load_config(folder, self._redis_url)
        self.kind = OnlineStoreKind(self._config.online_store.type)
        self.project: str = self._config.project
        self._store = FeatureStore(repo_path=str(folder), config=self._config)

    def _follow(self) -> None:
        """Switch to the served version when ``CURRENT`` moved (one small file read)."""
        if current_version(self.repo_path) != self._version:
            self._open(*resolve(self.repo_path))

    def put_articles(self, rows: Sequence[ArticleRow]) -> None:
        """Write display rows of ``article_display_fv``.

        Raises:
            OnlineStoreError: the store cannot be written.
        """
        if not rows:
            return
        self._follow()
        inputs: dict[str, list[object]] = {
            s.ARTICLE_ID: [row.article_id for row in rows],
            s.EVENT_TIMESTAMP: [datetime.fromtimestamp(row.event_ts, UTC) for row in rows],
        }
        for name in DISPLAY_FIELDS:
            inputs[name] = [row.fields.get(name) for row in rows]
        try:
            self._store.write_to_online_store(s.ARTICLE_FEATURE_VIEW, inputs=inputs)
        except (redis.RedisError, sqlite3.Error) as exc:
            raise OnlineStoreError(f"online store of {self.repo_path}: {exc}") from exc

    def put_customers(
        self,
        ids: Sequence[str],
        features: Mapping[str, npt.NDArray[Any]],
        event_ts: Sequence[int],
    ) -> None:
        """Write encoded rows of ``customer_encoded_fv`` (the near-real-time updater).

        Args:
            ids: B customer ids.
            features: keyed by ``schema.ENCODED_CUSTOMER_FEATURES``: ``customer_sparse`` int64
                (B, Fc), ``customer_dense`` float32 (B, Fdc), ``hist_ids`` int64 (B, N),
                ``hist_counts`` float32 (B, N) (``featurestore.tables.encoded_columns``).
            event_ts: B event timestamps, whole seconds since the epoch (UTC), strictly
                growing per customer (Feast's Redis store skips a row that is not newer).

        Raises:
            OnlineStoreError: the store cannot be written.
        """
        if not ids:
            return
        self._follow()
        inputs: dict[str, list[object]] = {
            s.CUSTOMER_ID: list(ids),
            s.EVENT_TIMESTAMP: [datetime.fromtimestamp(ts, UTC) for ts in event_ts],
        }
        for name, dtype in ENCODED_DTYPES.items():
            inputs[name] = np.asarray(features[name], dtype=dtype).tolist()
        try:
            self._store.write_to_online_store(s.CUSTOMER_FEATURE_VIEW, inputs=inputs)
        except (redis.RedisError, sqlite3.Error) as exc:
            raise OnlineStoreError(f"online store of {self.repo_path}: {exc}") from exc

    @property
    def version(self) -> str | None:
        """The version written into (after following ``CURRENT``)."""
        self._follow()
        return self._version

    def delete(self, join_key: str, ids: Sequence[str]) -> int:
        """Remove every row of these entities (``join_key`` ``customer_id`` or ``article_id``)
        from the project's online store; the number of entities that had rows.

        Raises:
            KeyError: an unknown ``join_key``.
            OnlineStoreError: the store cannot be written.
        """
        views = ENTITY_VIEWS[join_key]
        keys = [entity_key(join_key, value) for value in ids]
        if not keys:
            return 0
        self._follow()
        try:
            if self.kind is OnlineStoreKind.REDIS:
                return self._delete_redis(keys)
            return self._delete_sqlite(views, keys)
        except (redis.RedisError, sqlite3.Error) as exc:
            raise OnlineStoreError(f"online store of {self.repo_path}: {exc}") from exc

    def _delete_redis(self, keys: Sequence[EntityKeyProto]) -> int:
        client = _redis_client(self._config.online_store.connection_string)
        try:
            hashes = [_redis_key(self.project, k, ENTITY_KEY_VERSION) for k in keys]
            return int(client.delete(*hashes))
        finally:
            client.close()

    def _delete_sqlite(self, views: Sequence[str], keys: Sequence[EntityKeyProto]) -> int:
        serialized = [
            serialize_entity_key(k, entity_key_serialization_version=ENTITY_KEY_VERSION)
            for k in keys
        ]
        path = Path(self._config.online_store.path)
        conn = sqlite3.connect(self.folder / path, isolation_level=None)
        try:
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("BEGIN IMMEDIATE")
            found: set[bytes] = set()
            for view in views:
                table = f"{self.project}_{view}"
                for key in serialized:
                    if conn.execute(f"DELETE FROM {table} WHERE entity_key = ?", (key,)).rowcount:
                        found.add(key)
            conn.execute("COMMIT")
            # The store runs in WAL mode: the deleted rows' old pages stay in the WAL until a
            # checkpoint; copy it back and truncate it so no erased byte stays on disk.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return len(found)
        finally:
            conn.close()
