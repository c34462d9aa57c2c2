"""Materialize the serving snapshot into a Feast online store, and read it back at request time.

Shape letters: B = requested customers, Fc / Fdc = customer sparse / dense widths,
N = history length.

Layout of a dataset's feature repo, ``models/<name>/feature_repo/`` (:func:`repo_dir`)::

    feature_store.yaml   project, registry, online store (SQLite or Redis)
    definitions.py       verbatim copy of the project's feature_repo/definitions.py
    data/                exported Parquet tables + manifest (shoprec.featurestore.tables),
                         registry.db and, for SQLite, online_store.db

The declarations use source paths relative to the repo (see ``feature_repo/definitions.py``),
so the copy is byte-identical for every dataset and ``feast`` CLI commands (``feast plan``,
``feast ui``) work inside the directory too.

Feast pitfalls handled here (feast 0.49):

* The Redis online store skips a row whose event timestamp is not newer than the stored one,
  so re-materializing the same cutoff after retraining (new vocabularies, same data) would
  silently keep the old encoded features. Every materialization therefore writes a new Feast
  project, one per version of the feature repo (:mod:`shoprec.featurestore.versions`), and
  readers switch to it once it is complete; old versions are torn down later
  (:func:`prune_versions`).
* Nothing in Feast tells an empty store (Redis restarted without persistence) from one whose
  customers are all new. After the last row of a version, :func:`write_sentinel` stores a
  small record (version, manifest digest, row counts) in the store itself; readers check it
  (:meth:`OnlineFeatures.ping`, and every read that misses a customer), so an empty or
  foreign store is an error (503), never a popular list served as if it were fresh.
* Feast returns list features as protobuf repeated fields; :class:`OnlineFeatures` reads them
  straight from the response proto into preallocated arrays instead of going through
  ``to_dict()`` (Python lists of Python floats).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import re
import shutil
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis
import yaml
from feast import Entity, FeatureService, FeatureStore, FeatureView, FileSource, ValueType
from feast.data_source import DataSource
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig, load_repo_config
from feast.utils import _coerce_datetime, _convert_arrow_to_proto, to_naive_utc

from shoprec import schema as s

if TYPE_CHECKING:
    from shoprec.featurestore.shopper import ShopperState
from shoprec.errors import ArtifactError, ShoprecError
from shoprec.featurestore.tables import (
    ARTICLES_FILE,
    CUSTOMERS_FILE,
    DISPLAY_FIELDS,
    ENCODED_DTYPES,
    MANIFEST_FILE,
    ONLINE_DATA_DIR,
    POPULAR_FILE,
    ArticleDisplay,
    read_manifest,
)
from shoprec.featurestore.versions import (
    CURRENT_FILE,
    FEATURE_STORE_YAML,
    current_version,
    list_versions,
    resolve,
    version_dir,
)
from shoprec.featurestore.wire import float_list_values, int64_list_values

FEATURE_REPO_DIR: Final = "feature_repo"  # under models/<name>/
DEFINITIONS_FILE: Final = "definitions.py"
REGISTRY_FILE: Final = "registry.db"
SQLITE_FILE: Final = "online_store.db"
DEFAULT_REDIS_URL: Final = "127.0.0.1:6379"
ENTITY_KEY_VERSION: Final = 3  # Feast warns that <= 2 is deprecated
REDIS_CONNECT_TIMEOUT_S: Final = 2  # added to a Redis URL that sets no socket_connect_timeout
SENTINEL_KEY: Final = "shoprec:materialized:{project}"  # Redis key of a version's sentinel
SENTINEL_TABLE: Final = "shoprec_materialized"  # SQLite table of it (project, value)
KEEP_VERSIONS: Final = 2  # the served version and the one before (readers still switching)
BULK_BATCH_ROWS: Final = 20_000  # exported rows converted and written per SQLite executemany
# Where the project's declarations are looked for, in order: the source checkout this module
# lives in (editable install), then ./feature_repo (the Docker image: WORKDIR /app holds
# feature_repo/ while the package is installed into site-packages).
DEFINITIONS_CANDIDATES: Final = (
    Path(__file__).resolve().parents[3] / FEATURE_REPO_DIR / DEFINITIONS_FILE,
    Path(FEATURE_REPO_DIR) / DEFINITIONS_FILE,
)
# Every exported row is stamped with the serving cutoff; materialize [EPOCH, cutoff + 1 s)
# because Feast's end date is exclusive.
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Value proto field holding each numpy dtype's list (Array(Int64) / Array(Float32)).
_LIST_FIELD: Final = {np.dtype(np.int64): "int64_list_val", np.dtype(np.float32): "float_list_val"}
# Column-at-a-time serializers of the list features bulk_write_sqlite writes itself.
_WIRE_ENCODERS: Final[dict[ValueType, Callable[[npt.NDArray[Any]], list[bytes]]]] = {
    ValueType.INT64_LIST: int64_list_values,
    ValueType.FLOAT_LIST: float_list_values,
}


class OnlineStoreKind(StrEnum):
    """Where materialized features live."""

    SQLITE = "sqlite"  # a file under the feature repo: development, tests, single host
    REDIS = "redis"  # production


class OnlineStoreError(ShoprecError, ConnectionError):
    """The online store cannot be reached or holds no materialized features."""


def redact(connection_string: str) -> str:
    """A Redis connection string with its password replaced by ``***`` (for messages)."""
    return re.sub(r"(password=)[^,]*", r"\1***", connection_string)


@dataclass(frozen=True)
class MaterializeReport:
    """What :func:`materialize` did.

    Attributes:
        repo_path: the dataset's feature repo (give it to :class:`OnlineFeatures`).
        project: the Feast project of the version written.
        rows: rows materialized per feature view (every exported row).
        n_popular: articles in the cold-start list.
        seconds: wall time per step (``export``, ``apply``, ``materialize``, ``bought``),
            seconds.
        exclude_purchased: the served policy (bought sets written when True, cleared else).
        n_bought: (customer, article) pairs added to the shopper state's bought sets.
    """

    repo_path: Path
    project: str
    online_store: OnlineStoreKind
    serving_cutoff: datetime
    rows: dict[str, int]
    n_popular: int
    seconds: dict[str, float]
    version: str | None = None  # the feature repo version written (featurestore.versions)
    exclude_purchased: bool = False
    n_bought: int = 0


def repo_dir(models_dir: Path) -> Path:
    """The feature repo of the dataset whose models live in ``models_dir``."""
    return models_dir / FEATURE_REPO_DIR


def default_project(models_dir: Path) -> str:
    """Feast project for ``models/<name>``: ``shoprec_<name>`` with non-word characters as ``_``.

    Feast project names allow letters, digits and underscores only.
    """
    return "shoprec_" + re.sub(r"\W", "_", models_dir.resolve().name)


def redis_connection_string(redis_url: str) -> str:
    """Feast's Redis ``connection_string`` (``host:port[,key=value...]``) for ``redis_url``,
    with a connect timeout of ``REDIS_CONNECT_TIMEOUT_S`` unless the URL sets one, so that an
    unreachable host fails within seconds instead of the OS's TCP timeout."""
    if "socket_connect_timeout=" in redis_url:
        return redis_url
    return f"{redis_url},socket_connect_timeout={REDIS_CONNECT_TIMEOUT_S}"


def feature_store_config(
    project: str, online_store: OnlineStoreKind, redis_url: str = DEFAULT_REDIS_URL
) -> dict[str, Any]:
    """The ``feature_store.yaml`` content (paths relative to the repo directory)."""
    if online_store is OnlineStoreKind.SQLITE:
        store: dict[str, Any] = {"type": "sqlite", "path": f"{ONLINE_DATA_DIR}/{SQLITE_FILE}"}
    else:
        store = {"type": "redis", "connection_string": redis_connection_string(redis_url)}
    return {
        "project": project,
        "provider": "local",
        "registry": {"registry_type": "file", "path": f"{ONLINE_DATA_DIR}/{REGISTRY_FILE}"},
        "online_store": store,
        "entity_key_serialization_version": ENTITY_KEY_VERSION,
    }


def default_definitions() -> Path:
    """The first of :data:`DEFINITIONS_CANDIDATES` that exists (else the first, so that
    :func:`load_definitions` names it in its error)."""
    return next((p for p in DEFINITIONS_CANDIDATES if p.is_file()), DEFINITIONS_CANDIDATES[0])


def load_definitions(path: Path) -> list[Any]:
    """The Feast objects (entities, data sources, feature views, feature services) declared in
    the Python file ``path``, in declaration order.

    The file is imported under a unique module name, so loading two repos in one process
    never returns a cached module of the other.

    Raises:
        ArtifactError: ``path`` does not exist.
    """
    if not path.is_file():
        raise ArtifactError(f"Feast declarations not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_shoprec_feast_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise ArtifactError(f"cannot import Feast declarations from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kinds = (Entity, DataSource, FeatureView, FeatureService)
    return [obj for obj in vars(module).values() if isinstance(obj, kinds)]


def _redis_client(connection_string: str) -> redis.Redis:
    """A Redis client for a Feast connection string (``host:port[,key=value...]``)."""
    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    return redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params)


def _ping_redis(connection_string: str) -> None:
    """PING the Redis server of a Feast connection string.

    Raises:
        OnlineStoreError: connection refused, timed out or rejected.
    """
    client = _redis_client(connection_string)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise OnlineStoreError(
            f"Redis at {redact(connection_string)} is unreachable: {exc}"
        ) from exc
    finally:
        client.close()


def entity_key(join_key: str, value: str) -> EntityKeyProto:
    """Feast's key of one string entity."""
    return EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val=value)])


def _redis_key_prefix(join_key: str) -> bytes:
    """Start of the Redis key of every entity with this one join key: Feast's own
    serialization of an empty string value, minus the value's type and length."""
    key = entity_key(join_key, "")
    return serialize_entity_key(key, entity_key_serialization_version=ENTITY_KEY_VERSION)[:-8]


def _delete_redis_rows(connection_string: str, project: str, join_keys: Sequence[str]) -> int:
    """Delete the Redis keys of ``project``'s entities with these join keys; returns how many.

    A key is ``prefix | value type (4 B) | value length (4 B) | value | project``; keys of
    other projects (even one whose name ends with ``project``) are left alone.
    """
    client = _redis_client(connection_string)
    suffix = project.encode()
    deleted = 0
    try:
        for join_key in join_keys:
            prefix = _redis_key_prefix(join_key)
            pattern = re.sub(rb"([*?\[\]\\])", rb"\\\1", prefix) + b"*" + suffix
            keys = [
                k
                for k in client.scan_iter(match=pattern, count=10_000)
                if len(k) == len(prefix) + 8 + _u32(k, len(prefix) + 4) + len(suffix)
            ]
            for start in range(0, len(keys), 10_000):
                deleted += client.delete(*keys[start : start + 10_000])
        client.delete(SENTINEL_KEY.format(project=project))
    except redis.RedisError as exc:
        raise OnlineStoreError(
            f"Redis at {redact(connection_string)} is unreachable: {exc}"
        ) from exc
    finally:
        client.close()
    return deleted


def _u32(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def teardown(repo_path: Path) -> None:
    """Remove a feature repo's materialized rows, sentinel and registry (the exported tables
    stay); for a versioned repo, every version's, and the ``CURRENT`` pointer.

    Replaces ``FeatureStore.teardown``, which in feast 0.49 leaves every Redis row in place
    when keys are serialized with ``entity_key_serialization_version: 3`` (it scans for the
    version-2 key prefix). SQLite: the database file is deleted.

    Raises:
        ArtifactError: ``repo_path`` holds no ``feature_store.yaml`` or declarations.
        OnlineStoreError: Redis is unreachable.
    """
    versions = list_versions(repo_path)
    if versions or current_version(repo_path) is not None:
        (repo_path / CURRENT_FILE).unlink(missing_ok=True)
        for version in versions:
            folder = version_dir(repo_path, version)
            if (folder / FEATURE_STORE_YAML).is_file():
                teardown(folder)
        return
    config = _load_config(repo_path, None)
    join_keys = [
        obj.join_key
        for obj in load_definitions(repo_path / DEFINITIONS_FILE)
        if isinstance(obj, Entity)
    ]
    if config.online_store.type == OnlineStoreKind.REDIS:
        _delete_redis_rows(config.online_store.connection_string, config.project, join_keys)
    else:
        (repo_path / ONLINE_DATA_DIR / SQLITE_FILE).unlink(missing_ok=True)
    (repo_path / ONLINE_DATA_DIR / REGISTRY_FILE).unlink(missing_ok=True)


def check_online_store(
    online_store: OnlineStoreKind | str, redis_url: str, project: str
) -> dict[str, Any]:
    """Validate a store choice and return its ``feature_store.yaml`` content; pings Redis.

    Raises:
        ValueError: unknown ``online_store`` or a ``project`` that is not letters, digits, ``_``.
        OnlineStoreError: Redis is unreachable.
    """
    kind = OnlineStoreKind(online_store)
    if re.fullmatch(r"[A-Za-z0-9]\w*", project) is None:
        raise ValueError(f"Feast project must be letters, digits and '_', got {project!r}")
    config = feature_store_config(project, kind, redis_url)
    if kind is OnlineStoreKind.REDIS:
        _ping_redis(config["online_store"]["connection_string"])
    return config


def apply_and_materialize(
    repo: Path, config: dict[str, Any], definitions: Path, objects: list[Any]
) -> dict[str, float]:
    """``feast apply`` the declarations and materialize the tables exported in ``repo/data``.

    Writes ``feature_store.yaml`` (``config``, from :func:`check_online_store`) and a copy of
    ``definitions`` into ``repo``, applies ``objects`` (the Feast objects of ``definitions``)
    and materializes every exported row (event time = the serving cutoff of the manifest):
    Feast's ``materialize`` for Redis, :func:`bulk_write_sqlite` for SQLite.
    ``repo`` must be a new version folder with a project of its own
    (:mod:`~shoprec.featurestore.versions`): rows of an older materialization of the same
    project would be kept where their timestamp is not older (see the module docstring).
    A SQLite online store is switched to WAL journaling afterwards (readers are not blocked
    by a writer; the mode is stored in the file).

    Returns:
        Seconds per step: ``apply``, ``materialize``.

    Raises:
        ArtifactError: the manifest is missing (the tables were not exported).
        OnlineStoreError: Redis is unreachable.
    """
    manifest = read_manifest(repo / ONLINE_DATA_DIR)
    cutoff = datetime.fromisoformat(manifest["serving_cutoff"])
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    shutil.copyfile(definitions, repo / DEFINITIONS_FILE)
    (repo / FEATURE_STORE_YAML).write_text(yaml.safe_dump(config, sort_keys=False))
    store = FeatureStore(repo_path=str(repo))
    store.apply(objects)
    seconds["apply"] = time.perf_counter() - t

    t = time.perf_counter()
    if config["online_store"]["type"] == OnlineStoreKind.SQLITE:
        bulk_write_sqlite(store, repo)
        with contextlib.closing(sqlite3.connect(repo / ONLINE_DATA_DIR / SQLITE_FILE)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    else:
        store.materialize(start_date=_EPOCH, end_date=cutoff + timedelta(seconds=1))
    seconds["materialize"] = time.perf_counter() - t
    return seconds


def bulk_write_sqlite(store: FeatureStore, repo: Path, batch_rows: int = BULK_BATCH_ROWS) -> int:
    """Write every exported row of each feature view of ``store`` (an applied SQLite repo)
    into its online table; returns the rows written (entities x features).

    The rows are those Feast's ``materialize`` writes: the same entity-key serialization,
    values, event times and upsert, read from the exported Parquet ``batch_rows`` at a time and
    written with one ``executemany`` per batch in a single transaction. A feature view keyed
    by one string join key whose features are all fixed-width numeric lists without nulls (the
    encoded customer features) has its values serialized a column at a time
    (:mod:`~shoprec.featurestore.wire`, byte for byte what Feast writes); any other view goes
    through Feast's own converter (``feast.utils._convert_arrow_to_proto``). Feast 0.49's
    materialize instead reads the whole table through its offline store (a pandas sort and
    de-duplication) and issues one statement per entity and feature: 647 s for the 1.37 M
    customers of an H&M-size catalog; its converter alone builds a Python object per value.
    Exported tables hold one row per entity, so no de-duplication is needed.
    """
    config = store.config
    version = config.entity_key_serialization_version
    written = 0
    with contextlib.closing(sqlite3.connect(repo / ONLINE_DATA_DIR / SQLITE_FILE)) as db, db:
        for view in store.list_feature_views():
            join_keys = {col.name: col.dtype.to_value_type() for col in view.entity_columns}
            source = view.batch_source
            if not isinstance(source, FileSource):
                raise ArtifactError(f"feature view {view.name}: source {source.name} is not a file")
            sql = (
                f"INSERT INTO {config.project}_{view.name} "
                "(entity_key, feature_name, value, event_ts, created_ts) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
                "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
            )
            parquet = pq.ParquetFile(repo / source.path)
            for batch in parquet.iter_batches(batch_size=batch_rows):
                rows = _numeric_list_rows(batch, view, join_keys, version)
                if rows is None:
                    rows = [
                        (
                            serialize_entity_key(key, entity_key_serialization_version=version),
                            name,
                            value.SerializeToString(),
                            to_naive_utc(event_ts),
                            None if created is None else to_naive_utc(created),
                        )
                        for key, values, event_ts, created in _convert_arrow_to_proto(
                            batch, view, join_keys
                        )
                        for name, value in values.items()
                    ]
                db.executemany(sql, rows)
                written += len(rows)
    return written


def _numeric_list_rows(
    batch: pa.RecordBatch, view: FeatureView, join_keys: dict[str, ValueType], version: int
) -> list[tuple[bytes, str, bytes, datetime, datetime | None]] | None:
    """The online-table rows of ``batch`` (entity key, feature name, serialized value, event
    time, created time), per entity then per feature in the view's order as Feast's converter
    gives them, or ``None`` when the view is not one string join key, fixed-width
    ``Array(Int64)`` / ``Array(Float32)`` features without nulls and no created-timestamp
    column (the caller then uses Feast's converter)."""
    if len(join_keys) != 1 or view.batch_source.created_timestamp_column:
        return None
    ((join_key, key_type),) = join_keys.items()
    ids = batch.column(join_key)
    if key_type is not ValueType.STRING or not pa.types.is_string(ids.type) or ids.null_count:
        return None
    values: list[list[bytes]] = []
    for feature in view.features:
        encode = _WIRE_ENCODERS.get(feature.dtype.to_value_type())
        column = batch.column(feature.name)
        if encode is None or not pa.types.is_list(column.type) or column.null_count:
            return None
        flat = column.flatten()
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if flat.null_count or (len(lengths) and (lengths != lengths[0]).any()):
            return None
        width = int(lengths[0]) if len(lengths) else 0
        values.append(encode(flat.to_numpy(zero_copy_only=False).reshape(len(column), width)))
    keys = [
        serialize_entity_key(entity_key(join_key, key), entity_key_serialization_version=version)
        for key in ids.to_pylist()
    ]
    # Event times as Feast's converter gives them (naive UTC datetimes), once per distinct value
    stamps = batch.column(view.batch_source.timestamp_field).to_numpy(zero_copy_only=False)
    distinct, position = np.unique(stamps, return_inverse=True)
    naive = [to_naive_utc(_coerce_datetime(t)) for t in pd.to_datetime(distinct)]
    event_ts = [naive[i] for i in position.reshape(-1).tolist()]
    names = [feature.name for feature in view.features]
    return [
        (key, name, column[row], event_ts[row], None)
        for row, key in enumerate(keys)
        for name, column in zip(names, values, strict=True)
    ]


def manifest_digest(data_dir: Path) -> str:
    """SHA-256 (hex) of the manifest in ``data_dir``: names the export a store was loaded
    from."""
    return hashlib.sha256((data_dir / MANIFEST_FILE).read_bytes()).hexdigest()


def write_sentinel(repo: Path, rows: dict[str, int]) -> dict[str, Any]:
    """Record in the online store that ``repo``'s project is completely materialized; call it
    after the last row. Returns the record: ``project``, ``manifest_sha256``, ``rows``.

    Redis: key :data:`SENTINEL_KEY`; SQLite: table :data:`SENTINEL_TABLE` of the repo's
    database (fsynced with it).

    Raises:
        OnlineStoreError: the store cannot be written.
    """
    config = _load_config(repo, None)
    record = {
        "project": config.project,
        "manifest_sha256": manifest_digest(repo / ONLINE_DATA_DIR),
        "rows": rows,
    }
    value = json.dumps(record, sort_keys=True)
    if config.online_store.type == OnlineStoreKind.REDIS:
        conn = config.online_store.connection_string
        client = _redis_client(conn)
        try:
            client.set(SENTINEL_KEY.format(project=config.project), value)
        except redis.RedisError as exc:
            raise OnlineStoreError(f"Redis at {redact(conn)} is unreachable: {exc}") from exc
        finally:
            client.close()
    else:
        with contextlib.closing(sqlite3.connect(repo / ONLINE_DATA_DIR / SQLITE_FILE)) as db, db:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {SENTINEL_TABLE} "
                "(project TEXT PRIMARY KEY, value TEXT)"
            )
            db.execute(
                f"INSERT OR REPLACE INTO {SENTINEL_TABLE} VALUES (?, ?)", (record["project"], value)
            )
    return record


def prune_versions(repo: Path, keep: int = KEEP_VERSIONS) -> list[str]:
    """Tear down and delete the versions of ``repo`` older than the newest ``keep`` (never the
    current one, nor a version newer than it); returns the deleted names.

    Raises:
        OnlineStoreError: Redis is unreachable (the versions are left in place).
    """
    current = current_version(repo)
    versions = list_versions(repo)
    if current in versions:
        versions = versions[: versions.index(current) + 1]  # newer ones may be in the making
    deleted = []
    for version in versions[:-keep] if keep > 0 else versions:
        if version == current:
            continue
        folder = version_dir(repo, version)
        if (folder / FEATURE_STORE_YAML).is_file():
            teardown(folder)
        shutil.rmtree(folder)
        deleted.append(version)
    return deleted


def _found(result: Any, B: int) -> npt.NDArray[np.bool_]:
    """bool (B,): which rows of one feature's response vector exist in the store.

    Not the field status: for an absent entity Feast's SQLite store says NOT_FOUND but its
    Redis store says PRESENT with an empty value. Both give a zero event timestamp, and every
    materialized row carries the serving cutoff.
    """
    return np.fromiter((ts.seconds > 0 for ts in result.event_timestamps), dtype=bool, count=B)


def _load_config(repo: Path, redis_url: str | None) -> RepoConfig:
    path = repo / FEATURE_STORE_YAML
    if not path.is_file():
        raise ArtifactError(f"{path} not found (run the feature store materialization first)")
    config = load_repo_config(repo, path)
    if redis_url is not None:
        if config.online_store.type != OnlineStoreKind.REDIS:
            raise ValueError(
                f"{path} configures a {config.online_store.type} online store; "
                f"redis_url={redis_url!r} applies to Redis only"
            )
        config.online_store.connection_string = redis_connection_string(redis_url)
    return config


def id_hashes(ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    """uint64 (B,): the first 8 bytes of each id's BLAKE2b digest, little-endian. A sorted
    array of them is a set of B ids in 8 bytes each (two ids collide with probability about
    B^2 / 2^65)."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


class _Version:
    """The reader of one materialized version (one Feast repo folder); immutable once built."""

    def __init__(
        self,
        folder: Path,
        name: str | None,
        redis_url: str | None,
        article_display: ArticleDisplay,
    ) -> None:
        self.folder = folder
        self.name = name
        data_dir = folder / ONLINE_DATA_DIR
        manifest = read_manifest(data_dir)
        self.digest = manifest_digest(data_dir)
        self.serving_cutoff = datetime.fromisoformat(manifest["serving_cutoff"])
        self.widths: dict[str, int] = {n: int(manifest["widths"][n]) for n in ENCODED_DTYPES}
        self.config = _load_config(folder, redis_url)
        if not (data_dir / REGISTRY_FILE).is_file():
            raise ArtifactError(f"{data_dir / REGISTRY_FILE} not found (run materialize first)")
        self.online_store = OnlineStoreKind(self.config.online_store.type)
        self.store = FeatureStore(repo_path=str(folder), config=self.config)
        self.recommend = self._feature_refs(s.RECOMMEND_FEATURE_SERVICE)
        self.display = self._feature_refs(s.ARTICLE_FEATURE_SERVICE)
        self.popular: list[str] = (
            pq.read_table(data_dir / POPULAR_FILE, columns=[s.ARTICLE_ID]).column(0).to_pylist()
        )
        customers = data_dir / CUSTOMERS_FILE
        ids = pq.read_table(customers, columns=[s.CUSTOMER_ID]).column(0).to_pylist()
        self.customer_hashes = np.sort(id_hashes(ids))
        self.articles: dict[str, tuple[str | None, ...]] | None = None
        if article_display is ArticleDisplay.MEMORY:
            table = pq.read_table(
                data_dir / ARTICLES_FILE, columns=[s.ARTICLE_ID, *DISPLAY_FIELDS]
            ).to_pydict()
            columns = [table[name] for name in DISPLAY_FIELDS]
            self.articles = {
                article_id: tuple(column[i] for column in columns)
                for i, article_id in enumerate(table[s.ARTICLE_ID])
            }
        self._catalogue: dict[str, dict[str, str | None]] | None = None
        self._redis: redis.Redis | None = None
        if self.online_store is OnlineStoreKind.REDIS:
            self._redis = _redis_client(self.config.online_store.connection_string)

    def catalogue(self) -> dict[str, dict[str, str | None]]:
        """Display fields of every article of this version (its exported articles table),
        read once and kept (the same dict on every call)."""
        if self._catalogue is None:
            table = pq.read_table(
                self.folder / ONLINE_DATA_DIR / ARTICLES_FILE,
                columns=[s.ARTICLE_ID, *DISPLAY_FIELDS],
            ).to_pydict()
            self._catalogue = {
                article_id: {name: table[name][i] for name in DISPLAY_FIELDS}
                for i, article_id in enumerate(table[s.ARTICLE_ID])
            }
        return self._catalogue

    def _feature_refs(self, service: str) -> list[str]:
        """``view:feature`` references of a feature service, resolved once.

        Passing the ``FeatureService`` object to ``get_online_features`` makes Feast 0.49 fetch
        and deserialize it from the registry on every call (about half of a one-customer
        SQLite read); services are versioned and never edited, so resolving at start is safe.
        """
        projections = self.store.get_feature_service(service).feature_view_projections
        return [f"{p.name_to_use()}:{f.name}" for p in projections for f in p.features]

    def where(self) -> str:
        """The store, for messages: ``Redis online store of <folder> (<host:port,...>)``."""
        if self.online_store is OnlineStoreKind.REDIS:
            conn = redact(self.config.online_store.connection_string)
            return f"Redis online store of {self.folder} ({conn})"
        return f"SQLite online store of {self.folder}"

    def read(self, features: list[str], key: str, ids: Sequence[str]) -> Any:
        """One ``get_online_features`` call; the response proto, entity key first."""
        bad = [i for i in ids if not isinstance(i, str)]
        if bad:
            raise ValueError(f"{key} values must be str, got {bad[0]!r}")
        try:
            return self.store.get_online_features(
                features=features, entity_rows={key: list(ids)}
            ).proto
        except redis.RedisError as exc:
            raise OnlineStoreError(f"{self.where()} is unreachable: {exc}") from exc
        except sqlite3.OperationalError as exc:
            raise OnlineStoreError(
                f"{self.where()} cannot be read (not materialized?): {exc}"
            ) from exc

    def sentinel(self) -> dict[str, Any] | None:
        """The store's sentinel record of this version's project, None when absent.

        Raises:
            OnlineStoreError: the store cannot be read.
        """
        project = self.config.project
        try:
            if self._redis is not None:
                raw = self._redis.get(SENTINEL_KEY.format(project=project))
            else:
                path = self.folder / ONLINE_DATA_DIR / SQLITE_FILE
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                    row = db.execute(
                        f"SELECT value FROM {SENTINEL_TABLE} WHERE project = ?", (project,)
                    ).fetchone()
                raw = None if row is None else row[0]
        except redis.RedisError as exc:
            raise OnlineStoreError(f"{self.where()} is unreachable: {exc}") from exc
        except sqlite3.Error:
            return None  # no database or no sentinel table: nothing was materialized there
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(raw)
        return record

    def check_complete(self) -> None:
        """Raise unless the store holds this version's sentinel with this export's digest.

        Raises:
            OnlineStoreError: the sentinel is missing (an empty store, e.g. Redis restarted
                without persistence, or one being torn down) or names another export.
        """
        record = self.sentinel()
        if record is None:
            raise OnlineStoreError(
                f"{self.where()} holds no materialized version {self.config.project} "
                "(empty store: materialize again)"
            )
        if record.get("manifest_sha256") != self.digest:
            raise OnlineStoreError(
                f"{self.where()}: project {self.config.project} was materialized from another "
                "export than the one this gateway reads (foreign store)"
            )

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


class OnlineFeatures:
    """Read materialized features for serving: one Feast call per request.

    Reads the version of the feature repo that ``CURRENT`` names
    (:mod:`~shoprec.featurestore.versions`) and moves to a newer one on :meth:`refresh`; the
    switch is one reference assignment, so a read uses one version from start to end.

    Args:
        repo_path: a feature repo written by ``shoprec materialize`` (or one unversioned Feast
            repo folder).
        redis_url: overrides the Redis URL of a Redis repo (e.g. the host name a container
            sees); ``ValueError`` for a SQLite repo.
        article_display: ``MEMORY`` (default) loads the article feature view's source table
            (``articles.parquet``, what materialize wrote to the store) once per version, and
            :meth:`get_articles` answers from it without a store round trip; ``STORE`` reads
            the online store on every call. Both return the same values
            (``tests/test_feature_store.py``).

    Raises:
        ArtifactError: the repo, its manifest or its registry is missing (not materialized).

    Example::

        online = OnlineFeatures(Path("models/completejourney/feature_repo"))
        online.ping()
        found, feats = online.get_customers(["c1", "nobody"])
        feats["hist_ids"].shape     # (2, N) int64; row 1 is zeros, found == [True, False]
    """

    def __init__(
        self,
        repo_path: Path,
        *,
        redis_url: str | None = None,
        article_display: ArticleDisplay | str = ArticleDisplay.MEMORY,
    ) -> None:
        self.repo_path = Path(repo_path)
        self.article_display = ArticleDisplay(article_display)
        self._redis_url = redis_url
        self._version = self._load()
        self._shopper: ShopperState | None = None
        self._shopper_lock = threading.Lock()

    def _shopper_state(self) -> ShopperState:
        # Opened on first use: the updater creates the SQLite file, and a process that never
        # asks (materialize, tests) opens nothing.
        if self._shopper is None:
            with self._shopper_lock:
                if self._shopper is None:
                    from shoprec.featurestore.shopper import open_shopper_state

                    self._shopper = open_shopper_state(self.repo_path, redis_url=self._redis_url)
        return self._shopper

    @property
    def shopper_inline(self) -> bool:
        """Whether the shopper state is a local SQLite file (a read takes tens of
        microseconds and never waits for the updater in WAL mode: the gateway reads it on the
        event loop, without a worker thread); False for Redis (a network round trip)."""
        from shoprec.featurestore.shopper import SqliteShopperState

        try:
            return isinstance(self._shopper_state(), SqliteShopperState)
        except (redis.RedisError, sqlite3.Error):
            return False  # reads go through a worker thread and fail there as 503

    def excluded(self, customer_id: str) -> frozenset[str]:
        """Articles never to list for the customer: marked ``not_interested`` or in the bought
        set (:mod:`.shopper`, one query for both), shared by every process that reads this repo.

        Raises:
            OnlineStoreError: the state cannot be read.
        """
        try:
            return self._shopper_state().excluded(customer_id)
        except (redis.RedisError, sqlite3.Error) as exc:
            raise OnlineStoreError(f"shopper state of {self.repo_path}: {exc}") from exc

    def session_views(self, session_id: str) -> list[str]:
        """Distinct articles viewed in the session, most recent first (:mod:`.shopper`).

        Raises:
            OnlineStoreError: the state cannot be read.
        """
        try:
            return self._shopper_state().session_views(session_id)
        except (redis.RedisError, sqlite3.Error) as exc:
            raise OnlineStoreError(f"shopper state of {self.repo_path}: {exc}") from exc

    def _load(self) -> _Version:
        folder, name = resolve(self.repo_path)
        return _Version(folder, name, self._redis_url, self.article_display)

    @property
    def version(self) -> str | None:
        """Name of the version being read (None for an unversioned repo)."""
        return self._version.name

    @property
    def serving_cutoff(self) -> datetime:
        return self._version.serving_cutoff

    @property
    def widths(self) -> dict[str, int]:
        return self._version.widths

    @property
    def online_store(self) -> OnlineStoreKind:
        return self._version.online_store

    @property
    def articles_in_memory(self) -> bool:
        """Whether :meth:`get_articles` is an in-memory lookup (``ArticleDisplay.MEMORY``)."""
        return self.article_display is ArticleDisplay.MEMORY

    def refresh(self) -> bool:
        """Switch to the version ``CURRENT`` names now, if it is another one; True when
        switched. The new version is loaded completely before the switch.

        Raises:
            ArtifactError: the new version cannot be read (the current one stays in use).
        """
        if current_version(self.repo_path) in (None, self._version.name):
            return False
        old, self._version = self._version, self._load()
        old.close()
        return True

    def ping(self) -> None:
        """Read one (absent) customer through the recommend service, as a request would, and
        check that the store holds this version completely (its sentinel).

        Raises:
            OnlineStoreError: the store is unreachable, was never materialized, is empty or
                holds another export.
        """
        version = self._version
        version.read(version.recommend, s.CUSTOMER_ID, [""])
        version.check_complete()

    def known_customers(self, ids: Sequence[str]) -> npt.NDArray[np.bool_]:
        """bool (B,): which ids are in the customer table of the version being read."""
        hashes = id_hashes(ids)
        table = self._version.customer_hashes
        if len(table) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
        return np.asarray(table[pos] == hashes)

    def get_customers(
        self, ids: Sequence[str]
    ) -> tuple[npt.NDArray[np.bool_], dict[str, npt.NDArray[Any]]]:
        """Encoded features of customers, ready to send to the Triton ``recommend`` ensemble.

        Args:
            ids: B customer ids (duplicates allowed).

        Returns:
            ``found``: bool (B,), False for customers not in the store; ``features``: keyed by
            ``schema.ENCODED_CUSTOMER_FEATURES``: ``customer_sparse`` int64 (B, Fc),
            ``customer_dense`` float32 (B, Fdc), ``hist_ids`` int64 (B, N), ``hist_counts``
            float32 (B, N); rows of missing customers are zeros.

        Raises:
            ValueError: an id is not a str.
            OnlineStoreError: the store cannot be read, or a customer is missing and the store
                does not hold this version completely (empty or foreign store): a missing
                customer is then not known to be new.
            ArtifactError: a stored list's length disagrees with the manifest (the store and
                the repo were written by different exports).
        """
        version = self._version
        B = len(ids)
        features = {
            name: np.zeros((B, version.widths[name]), dtype=dtype)
            for name, dtype in ENCODED_DTYPES.items()
        }
        if B == 0:
            return np.zeros(0, dtype=bool), features
        proto = version.read(version.recommend, s.CUSTOMER_ID, ids)
        names = list(proto.metadata.feature_names.val)
        found = _found(proto.results[names.index(s.T_CUSTOMER_SPARSE)], B)
        if not found.all():
            version.check_complete()
        rows = np.flatnonzero(found)
        for name, out in features.items():
            field = _LIST_FIELD[out.dtype]
            values = proto.results[names.index(name)].values
            width = version.widths[name]
            for row in rows:
                seq = getattr(values[row], field).val
                if len(seq) != width:
                    raise ArtifactError(
                        f"{version.folder}: {name} of {ids[row]!r} has {len(seq)} values, the "
                        f"manifest says {width}; materialize again"
                    )
                out[row] = seq
        return found, features

    def get_articles(self, ids: Sequence[str]) -> list[dict[str, str | None] | None]:
        """Display fields of articles, for a response.

        Args:
            ids: article ids.

        Returns:
            Per id (same order): ``{NAME, *ARTICLE_ATTRIBUTES, DESCRIPTION: str | None}``, or
            None for an article not in the store.

        Raises:
            ValueError: an id is not a str.
            OnlineStoreError: the store cannot be read.
        """
        if not ids:
            return []
        version = self._version
        if version.articles is not None:
            bad = [i for i in ids if not isinstance(i, str)]
            if bad:
                raise ValueError(f"{s.ARTICLE_ID} values must be str, got {bad[0]!r}")
            rows = (version.articles.get(i) for i in ids)
            return [None if r is None else dict(zip(DISPLAY_FIELDS, r, strict=True)) for r in rows]
        proto = version.read(version.display, s.ARTICLE_ID, ids)
        names = list(proto.metadata.feature_names.val)
        columns = [(name, proto.results[names.index(name)]) for name in DISPLAY_FIELDS]
        found = _found(columns[0][1], len(ids))
        out: list[dict[str, str | None] | None] = []
        for row in range(len(ids)):
            if not found[row]:
                out.append(None)
                continue
            out.append(
                {
                    name: (v.string_val if v.HasField("string_val") else None)
                    for name, result in columns
                    for v in (result.values[row],)
                }
            )
        return out

    def all_articles(self) -> dict[str, dict[str, str | None]]:
        """Display fields (``NAME``, ``ARTICLE_ATTRIBUTES``, ``DESCRIPTION``) of every article
        of the version being read, by article id: the exported articles table, read on the
        first call per version and then the same dict object, so that a caller may cache
        what it derives from it by identity.

        Raises:
            OSError, pyarrow.ArrowInvalid: the table cannot be read.
        """
        return self._version.catalogue()

    def popular(self, k: int) -> list[str]:
        """The cold-start list: at most ``k`` article ids by purchases in the 7 days before the
        serving cutoff, most sold first, ties by id (fewer if fewer articles sold).

        Raises:
            ValueError: ``k < 1``.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        return self._version.popular[:k]

    def close(self) -> None:
        """Close the store connections of the version being read."""
        self._version.close()
        if self._shopper is not None:
            self._shopper.close()
