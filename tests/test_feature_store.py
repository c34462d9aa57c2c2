"""Feature store: export -> feast apply -> materialize -> online read, on SQLite and Redis.

The Redis tests use the server at 127.0.0.1:6379 under a Feast project unique to the run and
delete that project's keys afterwards.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Array, Float32, Int64, String

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.config import DatasetConfig, PipelineConfig
from shoprec.data.dataset import SPLIT_TRAIN, build_dataset
from shoprec.data.ingest.canonical import write_canonical
from shoprec.errors import ArtifactError
from shoprec.export.online_tables import export_online_tables, materialize
from shoprec.features.encode import EncodedCustomers, encode_customers, fit_workflow
from shoprec.features.workflow import Workflow
from shoprec.featurestore import OnlineFeatures, OnlineStoreError
from shoprec.featurestore import store as store_module
from shoprec.featurestore.store import (
    MaterializeReport,
    default_definitions,
    load_definitions,
    teardown,
)
from shoprec.featurestore.tables import (
    ARTICLES_FILE,
    CUSTOMERS_FILE,
    DISPLAY_FIELDS,
    MANIFEST_FILE,
    POPULAR_FILE,
    encoded_columns,
    read_customer_ids,
)
from shoprec.featurestore.versions import (
    CURRENT_FILE,
    FEATURE_STORE_YAML,
    current_dir,
    list_versions,
)
from toydata import make_canonical

REDIS_URL = "127.0.0.1:6379"
HISTORY = 6  # > the 4 distinct articles a toy customer buys, so rows end in padding
REPURCHASE = 8  # R of the repurchase lists (also padding-ended)
# Purchases in the toy data's last 7 days (see toydata: c0..c2 cycle through a0..a3 and
# c3..c5 through a4..a7 with offsets; each skips one article a day), worked out by hand.
EXPECTED_POPULAR = [
    ("a1", 6),
    ("a4", 6),
    ("a0", 5),
    ("a2", 5),
    ("a3", 5),
    ("a5", 5),
    ("a6", 5),
    ("a7", 5),
]


@dataclass
class Toy:
    root: Path
    models: Path
    dataset: Path
    canonical: Path
    encoded: EncodedCustomers
    cutoff: datetime

    def models_copy(self, name: str) -> Path:
        """A fresh models dir (the feature repo is written under it)."""
        out = self.root / "models" / name
        out.mkdir(parents=True)
        for f in (A.CONFIG_FILE, A.WORKFLOW_FILE):
            shutil.copyfile(self.models / f, out / f)
        return out


def _redis_available() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _project_keys(project: str) -> list[bytes]:
    """Keys of every version of the Feast project ``project`` (``<project>_<version>``), the
    sentinels included."""
    pattern = b"*" + project.encode() + b"_v*"
    return list(redis.Redis(host="127.0.0.1", port=6379).scan_iter(match=pattern))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Toy:
    root = tmp_path_factory.mktemp("fs")
    canonical = make_canonical()
    write_canonical(canonical, root / "canonical", {"source": "toy"})
    config = PipelineConfig(
        dataset=DatasetConfig(train_windows=2, history_length=HISTORY, repurchase_length=REPURCHASE)
    )
    data = build_dataset(canonical, config.dataset, root / "dataset")
    train = [w.index for w in data.window(SPLIT_TRAIN)]
    purchases = canonical.transactions.join(
        canonical.articles.select(s.ARTICLE_SPARSE), on=s.ARTICLE_ID
    )
    wf = fit_workflow(
        config.workflow,
        data.customer_features.filter(pl.col(s.WINDOW).is_in(train)),
        data.article_features.filter(pl.col(s.WINDOW).is_in(train)),
        purchases,
    )
    models = root / "models" / "toy"
    models.mkdir(parents=True)
    wf.save(models / A.WORKFLOW_FILE)
    (models / A.CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    return Toy(
        root,
        models,
        root / "dataset",
        root / "canonical",
        encode_customers(wf, data.latest_customers, HISTORY, REPURCHASE),
        datetime(2020, 2, 12, tzinfo=UTC),
    )


@pytest.fixture(scope="module")
def sqlite_repo(toy: Toy) -> Path:
    report = materialize(toy.models, toy.dataset, toy.canonical)
    assert report.rows == {s.CUSTOMER_FEATURE_VIEW: 6, s.ARTICLE_FEATURE_VIEW: 8}
    assert report.serving_cutoff == toy.cutoff
    assert set(report.seconds) == {"export", "apply", "materialize", "bought"}
    assert not report.exclude_purchased and report.n_bought == 0  # no policy recorded: keep
    return report.repo_path


@pytest.fixture(scope="module")
def redis_project() -> Iterator[str]:
    if not _redis_available():
        pytest.skip(f"no Redis server at {REDIS_URL}")
    project = f"shoprec_test_{uuid.uuid4().hex[:12]}"
    yield project
    for key in _project_keys(project):  # only if a test failed before its own teardown
        redis.Redis(host="127.0.0.1", port=6379).delete(key)


@pytest.fixture(scope="module")
def redis_repo(toy: Toy, redis_project: str) -> Iterator[Path]:
    report = materialize(
        toy.models_copy("toy_redis"),
        toy.dataset,
        toy.canonical,
        online_store="redis",
        redis_url=REDIS_URL,
        project=redis_project,
    )
    assert len(_project_keys(redis_project)) == 6 + 8 + 1  # rows + the sentinel
    yield report.repo_path
    teardown(report.repo_path)
    assert _project_keys(redis_project) == []


@pytest.fixture(
    params=[("sqlite", "store"), ("redis", "store"), ("sqlite", "memory"), ("redis", "memory")],
    ids="-".join,
)
def online(request: pytest.FixtureRequest) -> OnlineFeatures:
    store, display = request.param
    return OnlineFeatures(request.getfixturevalue(f"{store}_repo"), article_display=display)


# ---- export ----------------------------------------------------------------------------------


def test_export_writes_the_encoded_arrays_with_explicit_types_deterministically(
    toy: Toy, tmp_path: Path
) -> None:
    a = export_online_tables(toy.models, toy.dataset, toy.canonical, tmp_path / "a")
    b = export_online_tables(toy.models, toy.dataset, toy.canonical, tmp_path / "b")
    for name in (CUSTOMERS_FILE, ARTICLES_FILE, POPULAR_FILE, MANIFEST_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (a.n_customers, a.n_articles, a.n_popular) == (b.n_customers, b.n_articles, 8)
    assert (a.n_customers, a.n_articles) == (6, 8)
    assert a.widths == {
        s.T_CUSTOMER_SPARSE: 3,
        s.T_CUSTOMER_DENSE: toy.encoded.dense.shape[1],
        s.T_HIST_IDS: HISTORY,
        s.T_HIST_COUNTS: HISTORY,
        s.T_HIST_LAST_DAYS: HISTORY,
        s.T_HIST_FIRST_DAYS: HISTORY,
        s.T_REPURCHASE_IDS: REPURCHASE,
        s.T_REPURCHASE_COUNTS: REPURCHASE,
    }
    table = pq.read_table(a.customers)
    assert table.schema.field(s.EVENT_TIMESTAMP).type == pa.timestamp("us", tz="UTC")
    assert table.schema.field(s.T_HIST_IDS).type == pa.list_(pa.int64())
    assert table.schema.field(s.T_HIST_COUNTS).type == pa.list_(pa.float32())
    assert set(table.column(s.EVENT_TIMESTAMP).to_pylist()) == {toy.cutoff}
    assert table.column(s.CUSTOMER_ID).to_pylist() == [f"c{i}" for i in range(6)]
    for name, expected in encoded_columns(toy.encoded).items():
        got = np.array(table.column(name).to_pylist(), dtype=expected.dtype)
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert toy.encoded.hist_ids[:, 4:].max() == 0  # padding survives the trip
    articles = pq.read_table(a.articles)
    assert articles.column_names == [
        s.ARTICLE_ID,
        s.EVENT_TIMESTAMP,
        s.NAME,
        *s.ARTICLE_ATTRIBUTES,
        s.DESCRIPTION,
    ]


def test_popular_is_last_week_purchases_most_first_ties_by_id(toy: Toy, tmp_path: Path) -> None:
    tables = export_online_tables(toy.models, toy.dataset, toy.canonical, tmp_path)
    popular = pl.read_parquet(tables.popular)
    assert list(popular.iter_rows()) == EXPECTED_POPULAR
    assert popular.columns == [s.ARTICLE_ID, s.SALES_7D]


def test_read_customer_ids_of_the_exported_table(toy: Toy, tmp_path: Path) -> None:
    export_online_tables(toy.models, toy.dataset, toy.canonical, tmp_path / "data")
    assert read_customer_ids(tmp_path / "data") == [f"c{i}" for i in range(6)]
    with pytest.raises(ArtifactError, match=f"{CUSTOMERS_FILE} not found"):
        read_customer_ids(tmp_path)


def test_export_rejects_a_model_with_a_shorter_history(toy: Toy, tmp_path: Path) -> None:
    models = toy.models_copy("short_history")
    config = PipelineConfig(dataset=DatasetConfig(history_length=2))
    (models / A.CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    with pytest.raises(ArtifactError, match="history_length=2"):
        export_online_tables(models, toy.dataset, toy.canonical, tmp_path)


# ---- declarations ----------------------------------------------------------------------------


def test_feature_repo_declares_the_schema_names(sqlite_repo: Path) -> None:
    assert default_definitions() == Path(__file__).resolve().parents[1] / "feature_repo" / (
        "definitions.py"
    )
    objects = {type(o).__name__ + ":" + o.name: o for o in load_definitions(default_definitions())}
    customer = objects[f"Entity:{s.FEAST_CUSTOMER_ENTITY}"]
    assert customer.join_key == s.CUSTOMER_ID
    assert objects[f"Entity:{s.FEAST_ARTICLE_ENTITY}"].join_key == s.ARTICLE_ID
    fv = objects[f"FeatureView:{s.CUSTOMER_FEATURE_VIEW}"]
    assert {f.name: f.dtype for f in fv.features} == {
        s.T_CUSTOMER_SPARSE: Array(Int64),
        s.T_CUSTOMER_DENSE: Array(Float32),
        s.T_HIST_IDS: Array(Int64),
        s.T_HIST_COUNTS: Array(Float32),
        s.T_HIST_LAST_DAYS: Array(Float32),
        s.T_HIST_FIRST_DAYS: Array(Float32),
        s.T_REPURCHASE_IDS: Array(Int64),
        s.T_REPURCHASE_COUNTS: Array(Float32),
    }
    art = objects[f"FeatureView:{s.ARTICLE_FEATURE_VIEW}"]
    assert [f.name for f in art.features] == [s.NAME, *s.ARTICLE_ATTRIBUTES, s.DESCRIPTION]
    assert {f.dtype for f in art.features} == {String}
    assert fv.batch_source.path == f"data/{CUSTOMERS_FILE}"  # relative: resolved per repo
    # what `feast apply` registered in the dataset's repo
    store = FeatureStore(repo_path=str(current_dir(sqlite_repo)))
    assert {v.name for v in store.list_feature_views()} == {
        s.CUSTOMER_FEATURE_VIEW,
        s.ARTICLE_FEATURE_VIEW,
    }
    services = {fs.name: fs for fs in store.list_feature_services()}
    assert set(services) == {s.RECOMMEND_FEATURE_SERVICE, s.ARTICLE_FEATURE_SERVICE}
    projections = services[s.RECOMMEND_FEATURE_SERVICE].feature_view_projections
    assert [f.name for f in projections[0].features] == list(s.ENCODED_CUSTOMER_FEATURES)
    assert (current_dir(sqlite_repo) / "definitions.py").read_bytes() == (
        default_definitions().read_bytes()
    )


def _sqlite_tables(report: MaterializeReport) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the version's SQLite online tables, per feature view, in key order."""
    db = current_dir(report.repo_path) / "data" / "online_store.db"
    views = (s.CUSTOMER_FEATURE_VIEW, s.ARTICLE_FEATURE_VIEW)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {
            view: conn.execute(
                "SELECT entity_key, feature_name, value, vector_value, event_ts, created_ts "
                f"FROM {report.project}_{view} ORDER BY entity_key, feature_name"
            ).fetchall()
            for view in views
        }


def test_bulk_write_stores_exactly_what_feasts_converter_gives(
    toy: Toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoded customer rows are serialized a column at a time (featurestore.wire); the
    article view (strings, nulls) goes through Feast's converter. Forcing Feast's converter for
    every view must store the same rows, byte for byte."""
    used: dict[str, bool] = {}
    serialize = store_module._numeric_list_rows

    def spy(batch: pa.RecordBatch, view: Any, *args: Any) -> Any:
        rows = serialize(batch, view, *args)
        used[view.name] = rows is not None
        return rows

    monkeypatch.setattr(store_module, "_numeric_list_rows", spy)
    ours = materialize(toy.models_copy("wire_ours"), toy.dataset, toy.canonical)
    assert used == {s.CUSTOMER_FEATURE_VIEW: True, s.ARTICLE_FEATURE_VIEW: False}
    monkeypatch.setattr(store_module, "_numeric_list_rows", lambda *args: None)
    feasts = materialize(toy.models_copy("wire_feast"), toy.dataset, toy.canonical)
    rows = _sqlite_tables(ours)
    assert len(rows[s.CUSTOMER_FEATURE_VIEW]) == 6 * len(s.ENCODED_CUSTOMER_FEATURES)
    assert rows == _sqlite_tables(feasts)


# ---- online reads, SQLite and Redis ----------------------------------------------------------


def test_round_trip_equals_encode_customers_exactly(online: OnlineFeatures, toy: Toy) -> None:
    ids = ["c3", "nobody", "c0", "c5", "c3", "c1", "c2", "c4"]
    found, features = online.get_customers(ids)
    assert found.dtype == np.bool_
    assert found.tolist() == [True, False, True, True, True, True, True, True]
    rows = [int(i[1:]) for i in ids if i != "nobody"]
    for name, expected in encoded_columns(toy.encoded).items():
        got = features[name]
        assert got.dtype == expected.dtype, name
        assert got.shape == (len(ids), expected.shape[1]), name
        np.testing.assert_array_equal(got[found], expected[rows], err_msg=name)
        assert not got[1].any(), name  # the unknown customer's row is zeros
    assert online.serving_cutoff == toy.cutoff


def test_unknown_customers_only_and_no_customers(online: OnlineFeatures) -> None:
    found, features = online.get_customers(["x", "y"])
    assert found.tolist() == [False, False]
    assert features[s.T_HIST_IDS].shape == (2, HISTORY)
    assert all(not f.any() for f in features.values())
    found, features = online.get_customers([])
    assert found.shape == (0,)
    assert features[s.T_CUSTOMER_DENSE].shape[0] == 0
    assert features[s.T_CUSTOMER_DENSE].dtype == np.float32


def test_article_display_fields(online: OnlineFeatures) -> None:
    a0, unknown, a4 = online.get_articles(["a0", "zz", "a4"])
    assert a0 == {
        s.NAME: "Article 0",
        s.PRODUCT_TYPE: "shirt",
        s.PRODUCT_GROUP: "A",
        s.DEPARTMENT: "fashion",
        s.SECTION: "women",
        s.VARIANT: "red",
        s.DESCRIPTION: None,
    }
    assert unknown is None
    assert a4 is not None
    assert (a4[s.NAME], a4[s.SECTION], a4[s.VARIANT]) == ("Article 4", None, "1kg")
    assert online.get_articles([]) == []
    with pytest.raises(ValueError, match="article_id values must be str, got 7"):
        online.get_articles(["a0", 7])  # type: ignore[list-item]


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_article_display_from_memory_equals_the_online_store(
    store: str, toy: Toy, request: pytest.FixtureRequest
) -> None:
    repo = request.getfixturevalue(f"{store}_repo")
    ids = [f"a{i}" for i in range(8)] + ["zz", "a3", ""]
    store_reader = OnlineFeatures(repo, article_display="store")
    memory_reader = OnlineFeatures(repo, article_display="memory")
    assert (store_reader.articles_in_memory, memory_reader.articles_in_memory) == (False, True)
    from_store, from_memory = store_reader.get_articles(ids), memory_reader.get_articles(ids)
    assert from_memory == from_store
    assert sum(a is None for a in from_store) == 2
    with pytest.raises(ValueError, match="'disk' is not a valid ArticleDisplay"):
        OnlineFeatures(repo, article_display="disk")


@pytest.mark.parametrize("display", ["memory", "store"])
def test_all_articles_is_every_article_with_its_display_fields(
    sqlite_repo: Path, display: str
) -> None:
    reader = OnlineFeatures(sqlite_repo, article_display=display)
    every = reader.all_articles()
    ids = sorted(every)
    assert ids == sorted(f"a{i}" for i in range(len(ids))) and len(ids) >= 8
    assert [every[a] for a in ids] == reader.get_articles(ids)
    assert reader.all_articles() is every  # one dict per version: callers cache by identity


def test_popular_list(online: OnlineFeatures) -> None:
    assert online.popular(3) == ["a1", "a4", "a0"]
    assert online.popular(100) == [a for a, _ in EXPECTED_POPULAR]
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        online.popular(0)


def test_ids_must_be_strings(online: OnlineFeatures) -> None:
    online.ping()
    ids: list[Any] = ["c0", 3]
    with pytest.raises(ValueError, match="customer_id values must be str, got 3"):
        online.get_customers(ids)


# ---- failures --------------------------------------------------------------------------------


def test_unreachable_redis_fails_fast_with_the_address(toy: Toy, redis_repo: Path) -> None:
    models = toy.models_copy("toy_no_redis")
    t = time.perf_counter()
    with pytest.raises(OnlineStoreError, match=r"Redis at 127\.0\.0\.1:1.* is unreachable"):
        materialize(
            models, toy.dataset, toy.canonical, online_store="redis", redis_url="127.0.0.1:1"
        )
    assert time.perf_counter() - t < 5
    assert not (models / "feature_repo").exists()  # checked before anything is written

    online = OnlineFeatures(redis_repo, redis_url="127.0.0.1:1")
    t = time.perf_counter()
    with pytest.raises(OnlineStoreError, match=r"\(127\.0\.0\.1:1,.*\) is unreachable"):
        online.ping()
    with pytest.raises(OnlineStoreError, match="Connection refused"):
        online.get_customers(["c0"])
    assert time.perf_counter() - t < 5


def test_unmaterialized_or_missing_repo_gives_clear_errors(
    sqlite_repo: Path, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactError, match="nowhere: no materialized feature store"):
        OnlineFeatures(tmp_path / "nowhere")
    repo = tmp_path / "copy"
    # Without SQLite's -wal/-shm files: they vanish when another reader of the shared repo
    # closes (a race copytree lost once), and the copy's database is deleted anyway.
    shutil.copytree(sqlite_repo, repo, ignore=shutil.ignore_patterns("*.db-wal", "*.db-shm"))
    (current_dir(repo) / "data" / "online_store.db").unlink()
    with pytest.raises(OnlineStoreError, match="not materialized"):
        OnlineFeatures(repo).ping()
    with pytest.raises(ValueError, match="applies to Redis only"):
        OnlineFeatures(sqlite_repo, redis_url=REDIS_URL)
    assert "type: sqlite" in (current_dir(sqlite_repo) / FEATURE_STORE_YAML).read_text()
    (repo / CURRENT_FILE).write_text("../../etc\n")
    with pytest.raises(ValueError, match="not a feature repo version name"):
        OnlineFeatures(repo)


def test_invalid_project_or_store_kind(toy: Toy) -> None:
    with pytest.raises(ValueError, match="'my-project'"):
        materialize(toy.models, toy.dataset, toy.canonical, project="my-project")
    with pytest.raises(ValueError, match="'postgres'"):
        materialize(toy.models, toy.dataset, toy.canonical, online_store="postgres")
    with pytest.raises(ArtifactError, match="Feast declarations not found: .*nowhere.py"):
        materialize(toy.models, toy.dataset, toy.canonical, definitions=Path("nowhere.py"))


# ---- refresh and teardown on Redis -----------------------------------------------------------


def test_rematerializing_replaces_redis_rows_and_teardown_spares_other_projects(
    toy: Toy, redis_repo: Path, redis_project: str
) -> None:
    """Feast's Redis store keeps a row whose event time is not newer; a retrained workflow with
    the same snapshot must still be served in full (a new version), old versions are pruned,
    and teardown touches one feature repo's projects only.
    """
    models = toy.models_copy("toy_retrained")
    project = redis_project + "_b"
    client = redis.Redis(host="127.0.0.1", port=6379)
    decoy = b""
    try:
        first = materialize(
            models, toy.dataset, toy.canonical, online_store="redis", project=project
        )
        online = OnlineFeatures(first.repo_path)
        assert online.version == first.version
        wf = Workflow.load(models / A.WORKFLOW_FILE)
        vocab = wf.categorical_ops[s.ARTICLE_ID].vocab
        vocab["a0"], vocab["a4"] = vocab["a4"], vocab["a0"]  # "retrained": other article ids
        wf.save(models / A.WORKFLOW_FILE)
        second = materialize(
            models, toy.dataset, toy.canonical, online_store="redis", project=project
        )
        assert second.project == f"{project}_{second.version}" != first.project
        # the reader keeps its version until it refreshes, then reads the new one
        _, before = online.get_customers(["c0", "c3"])
        np.testing.assert_array_equal(before[s.T_HIST_IDS], toy.encoded.hist_ids[[0, 3]])
        assert online.refresh() is True and online.refresh() is False
        assert online.version == second.version
        _, features = online.get_customers(["c0", "c3"])
        expected = encode_customers(
            wf,
            pl.read_parquet(toy.dataset / "customer_features_latest.parquet"),
            HISTORY,
            REPURCHASE,
        )
        np.testing.assert_array_equal(features[s.T_HIST_IDS], expected.hist_ids[[0, 3]])
        assert not np.array_equal(expected.hist_ids, toy.encoded.hist_ids)
        assert len(_project_keys(project)) == 2 * (6 + 8 + 1)  # both versions are kept

        third = materialize(
            models, toy.dataset, toy.canonical, online_store="redis", project=project
        )
        assert list_versions(third.repo_path) == [second.version, third.version]
        assert len(_project_keys(project)) == 2 * (6 + 8 + 1)  # the first one is gone
        assert not [k for k in _project_keys(project) if k.endswith(first.project.encode())]

        # the key project "other_<project>" would give customer c0: ends with it too
        c0 = EntityKeyProto(join_keys=[s.CUSTOMER_ID], entity_values=[ValueProto(string_val="c0")])
        decoy = (
            serialize_entity_key(c0, entity_key_serialization_version=3)
            + b"other_"
            + third.project.encode()
        )
        client.set(decoy, b"1")
        teardown(third.repo_path)
        assert _project_keys(project) == [decoy]
        assert len(_project_keys(redis_project)) == 6 + 8 + 1  # the other repo is untouched
        with pytest.raises(ArtifactError, match="no materialized feature store"):
            OnlineFeatures(third.repo_path)
    finally:
        client.delete(decoy, *_project_keys(project))


# ---- store integrity: versions, sentinel, known customers -------------------------------------


def test_materialize_publishes_a_complete_version_with_a_sentinel(
    toy: Toy, sqlite_repo: Path
) -> None:
    online = OnlineFeatures(sqlite_repo)
    (version,) = list_versions(sqlite_repo)
    assert (sqlite_repo / CURRENT_FILE).read_text() == version + "\n"
    assert online.version == version
    db = current_dir(sqlite_repo) / "data" / "online_store.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        ((value,),) = conn.execute("SELECT value FROM shoprec_materialized").fetchall()
    record = json.loads(value)
    assert record["project"] == f"shoprec_toy_{version}"
    assert record["rows"] == {s.CUSTOMER_FEATURE_VIEW: 6, s.ARTICLE_FEATURE_VIEW: 8}
    online.ping()
    assert online.known_customers(["c0", "nobody", "c5", ""]).tolist() == [
        True,
        False,
        True,
        False,
    ]


def test_an_empty_or_foreign_store_is_an_error_not_a_cold_start(toy: Toy, redis_repo: Path) -> None:
    """Redis restarted without persistence: the sentinel is gone with the rows. A reader must
    not take every customer for a new one."""
    online = OnlineFeatures(redis_repo)
    project = online._version.config.project
    client = redis.Redis(host="127.0.0.1", port=6379)
    key = f"shoprec:materialized:{project}"
    saved = client.get(key)
    assert saved is not None
    try:
        client.delete(key)
        with pytest.raises(OnlineStoreError, match="holds no materialized version"):
            online.ping()
        with pytest.raises(OnlineStoreError, match="holds no materialized version"):
            online.get_customers(["c0", "nobody"])
        found, _ = online.get_customers(["c0"])  # all found: no doubt, no extra read
        assert found.tolist() == [True]
        client.set(key, json.dumps({**json.loads(saved), "manifest_sha256": "0" * 64}))
        with pytest.raises(OnlineStoreError, match="foreign store"):
            online.ping()
    finally:
        client.set(key, saved)
    online.ping()


def test_a_failed_materialize_leaves_the_served_version(toy: Toy, tmp_path: Path) -> None:
    models = toy.models_copy("toy_fails")
    first = materialize(models, toy.dataset, toy.canonical)
    (models / A.WORKFLOW_FILE).write_text("{broken")
    with pytest.raises(Exception):  # noqa: B017 - whatever the JSON reader raises
        materialize(models, toy.dataset, toy.canonical)
    assert list_versions(first.repo_path) == [first.version]
    online = OnlineFeatures(first.repo_path)
    assert online.version == first.version
    online.ping()


def _online_rows(folder: Path) -> list[tuple[Any, ...]]:
    project = FeatureStore(repo_path=str(folder)).config.project
    rows: list[tuple[Any, ...]] = []
    with contextlib.closing(sqlite3.connect(folder / "data" / "online_store.db")) as db:
        for view in (s.CUSTOMER_FEATURE_VIEW, s.ARTICLE_FEATURE_VIEW):
            rows += db.execute(
                "SELECT ?, entity_key, feature_name, value, event_ts, created_ts "
                f"FROM {project}_{view} ORDER BY entity_key, feature_name",
                (view,),
            ).fetchall()
    return rows


def test_the_sqlite_bulk_load_writes_the_rows_feast_materialize_writes(
    sqlite_repo: Path, tmp_path: Path
) -> None:
    """The bulk path (one executemany per batch) against Feast's own materialize of the same
    exported tables into a copy of the repo: byte-identical rows."""
    bulk = current_dir(sqlite_repo)
    feast_copy = tmp_path / "feast"
    shutil.copytree(bulk / "data", feast_copy / "data", ignore=shutil.ignore_patterns("*.db*"))
    for name in ("feature_store.yaml", "definitions.py"):
        shutil.copyfile(bulk / name, feast_copy / name)
    store = FeatureStore(repo_path=str(feast_copy))
    store.apply(load_definitions(feast_copy / "definitions.py"))
    store.materialize(start_date=datetime(1970, 1, 1, tzinfo=UTC), end_date=datetime.now(UTC))
    expected = _online_rows(feast_copy)
    # 6 customers x their encoded arrays, 8 articles x their display fields
    assert len(expected) == 6 * len(s.ENCODED_CUSTOMER_FEATURES) + 8 * len(DISPLAY_FIELDS)
    assert _online_rows(bulk) == expected
