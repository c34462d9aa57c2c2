"""The write API's online-store writer on both Feast stores: article rows in (the latest of two
writes within one second wins), entities out (every row of the entity, nothing of others).

The Redis store is the shared server at 127.0.0.1:6379, under a Feast project unique to the
run whose keys are deleted afterwards (as tests/test_feature_store.py does)."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from servers import ToyStore, build_toy_store
from shoprec import schema as s
from shoprec.export.online_tables import materialize
from shoprec.featurestore import OnlineFeatures
from shoprec.featurestore.store import teardown
from shoprec.featurestore.writer import ArticleRow, OnlineWriter

REDIS_URL = "127.0.0.1:6379"


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ToyStore:
    return build_toy_store(tmp_path_factory.mktemp("writer"))


@pytest.fixture(params=["sqlite", "redis"])
def repo(request: pytest.FixtureRequest, toy: ToyStore, tmp_path: Path) -> Iterator[Path]:
    """A freshly materialized copy of the toy store (SQLite, or Redis under its own project)."""
    models = tmp_path / "models" / "toy"
    shutil.copytree(toy.models_dir, models, ignore=shutil.ignore_patterns("feature_repo"))
    dataset, canonical = toy.root / "data" / "toy" / "dataset", toy.canonical_dir
    if request.param == "sqlite":
        yield materialize(models, dataset, canonical).repo_path
        return
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis server at {REDIS_URL}")
    project = f"shoprec_writer_{uuid.uuid4().hex[:12]}"
    report = materialize(
        models, dataset, canonical, online_store="redis", redis_url=REDIS_URL, project=project
    )
    yield report.repo_path
    teardown(report.repo_path)


def fields(name: str) -> dict[str, str | None]:
    return {s.NAME: name, **dict.fromkeys(s.ARTICLE_ATTRIBUTES), s.DESCRIPTION: "d"}


def test_article_rows_go_in_and_the_latest_write_wins(repo: Path) -> None:
    writer = OnlineWriter(repo)
    now = int(time.time())
    writer.put_articles(
        [ArticleRow("n1", fields("first"), now), ArticleRow("a0", fields("A0"), now)]
    )
    writer.put_articles([ArticleRow("n1", fields("second"), now + 1)])  # within one second
    reader = OnlineFeatures(repo, article_display="store")
    assert reader.get_articles(["n1", "a0", "a1"]) == [
        fields("second"),
        fields("A0"),
        {
            s.NAME: "Article 1", s.PRODUCT_TYPE: "shirt", s.PRODUCT_GROUP: "A",
            s.DEPARTMENT: "fashion", s.SECTION: "women", s.VARIANT: "blue", s.DESCRIPTION: None,
        },
    ]  # fmt: skip


def test_deleting_entities_removes_all_their_rows_and_nothing_else(repo: Path) -> None:
    writer = OnlineWriter(repo)
    reader = OnlineFeatures(repo, article_display="store")
    assert writer.delete(s.CUSTOMER_ID, ["c1", "c4", "nobody"]) == 2
    found, _ = reader.get_customers(["c0", "c1", "c2", "c3", "c4", "c5"])
    assert found.tolist() == [True, False, True, True, False, True]
    assert writer.delete(s.CUSTOMER_ID, ["c1"]) == 0  # already gone
    assert writer.delete(s.ARTICLE_ID, ["a3"]) == 1
    assert reader.get_articles(["a3", "a2"])[0] is None
    assert reader.get_articles(["a2"])[0] is not None
    with pytest.raises(KeyError):
        writer.delete("basket_id", ["b1"])
