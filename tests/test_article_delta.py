"""The article delta (new articles without a rebuild), without Triton: the store (SQLite and
Redis), and the exported steps of the tiny run (``test_export.tiny_run``) loaded with
``SHOPREC_ARTICLE_DELTA`` set: the article encoder's rows make a copy of an existing article
(new id) similar to it, retrievable by its item vector, and rankable.

Over real processes (the updater calling Triton, a Triton restart): ``tests/test_nrt.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis

from shoprec import schema as s
from shoprec.data.dataset import load_dataset
from shoprec.events import ArticleFields
from shoprec.serving.article_delta import (
    ENV_ARTICLE_DELTA,
    DeltaRow,
    RedisArticleDelta,
    SqliteArticleDelta,
    open_article_delta,
)
from shoprec.serving.article_encoder import ArticleEncoderStep
from shoprec.serving.ranking import RankingStep
from shoprec.serving.repository import export_id, read_repository_manifest
from shoprec.serving.retrieval import RetrievalStep
from shoprec.serving.runtime import RequestError, load_step
from shoprec.serving.similar_items import SimilarItemsStep
from shoprec.updater.articles import ArticleIndexer, fields_tensor
from test_export import TinyRun, tiny_run


def row(article_id: str, value: float, deleted: bool = False) -> DeltaRow:
    return DeltaRow(
        article_id,
        np.full(4, value, dtype=np.float32),
        np.full(3, value, dtype=np.float32),
        np.array([1, 2], dtype=np.int64),
        np.array([0.5], dtype=np.float32),
        deleted,
    )


def check_store(delta: SqliteArticleDelta | RedisArticleDelta) -> None:
    assert delta.version("e1") == 0 and len(delta.load("e1")) == 0
    delta.put("e1", [row("a", 1.0), row("b", 2.0)])
    delta.put("e2", [row("z", 9.0)])  # another export: its own slots and version
    delta.put("e1", [row("c", 3.0), row("a", 4.0, deleted=True)])  # a keeps slot 0
    got = delta.load("e1")
    assert got.version == delta.version("e1") == 2
    assert got.ids == ["a", "b", "c"]
    np.testing.assert_array_equal(got.item[:, 0], [4.0, 2.0, 3.0])
    np.testing.assert_array_equal(got.live, [False, True, True])
    assert got.sparse.dtype == np.int64 and got.sparse.shape == (3, 2)
    assert delta.load("e2").ids == ["z"]


def test_sqlite_delta_keeps_slots_per_export(tmp_path: Path) -> None:
    delta = open_article_delta(str(tmp_path / "delta.db"))
    assert isinstance(delta, SqliteArticleDelta)
    check_store(delta)
    delta.close()
    reopened = SqliteArticleDelta(tmp_path / "delta.db")  # durable: another process sees it
    assert reopened.load("e1").ids == ["a", "b", "c"]
    reopened.close()


def test_redis_delta_keeps_slots_per_export() -> None:
    prefix = f"shoprec-test-{uuid.uuid4().hex[:8]}"
    try:
        delta = open_article_delta(f"redis://127.0.0.1:6379/0#{prefix}")
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    assert isinstance(delta, RedisArticleDelta)
    client = redis.Redis()
    try:
        check_store(delta)
    finally:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        delta.close()


def test_a_redis_location_needs_a_key_prefix() -> None:
    with pytest.raises(ValueError, match="needs a '#<key prefix>' suffix"):
        open_article_delta("redis://127.0.0.1:6379/0")


# ---- the exported steps with the delta -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


def test_steps_merge_a_new_copy_of_an_existing_article(
    tiny: TinyRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ARTICLE_DELTA, str(tmp_path / "delta.db"))
    repo = tiny.repo
    encoder = load_step(repo / s.TRITON_ARTICLE_ENCODER)
    similar = load_step(repo / s.TRITON_SIMILAR_ITEMS)
    retrieval = load_step(repo / s.TRITON_RETRIEVAL)
    ranking = load_step(repo / s.TRITON_RANKING)
    assert isinstance(encoder, ArticleEncoderStep)
    assert isinstance(similar, SimilarItemsStep)
    assert isinstance(retrieval, RetrievalStep) and isinstance(ranking, RankingStep)
    served = read_repository_manifest(repo)["dims"]["served_articles"]

    # An existing article with a first sale (served), copied under a new id.
    articles = load_dataset(tiny.dataset_dir).latest_articles
    source = articles.filter(pl.col(s.DAYS_SINCE_FIRST_SALE).is_not_null()).row(3, named=True)
    new_id = f"new-{uuid.uuid4().hex[:6]}"
    fields = np.array(
        [[(source.get(n) or "").encode() for n in s.ARTICLE_FIELDS]] * 2, dtype=object
    )
    ids_in = np.array([[new_id.encode()], [source[s.ARTICLE_ID].encode()]], dtype=object)
    out = encoder({s.T_ARTICLE_ID: ids_in, s.T_ARTICLE_FIELDS: fields})
    assert out[s.T_KNOWN][:, 0].tolist() == [False, True]
    export = export_id(repo / s.TRITON_ARTICLE_ENCODER / "1")
    assert export and out[s.T_EXPORT_ID][0, 0] == export.encode()
    np.testing.assert_allclose(np.linalg.norm(out[s.T_ITEM_EMBEDDING], axis=1), 1.0, rtol=1e-5)
    # Same fields: the same text vector as the exported article's.
    np.testing.assert_allclose(out[s.T_TEXT_EMBEDDING][0], out[s.T_TEXT_EMBEDDING][1], atol=1e-6)

    # Before the delta holds it: unknown to similar_items.
    with pytest.raises(RequestError, match="unknown article_id"):
        similar.similar(np.array([[new_id.encode()]], dtype=object))
    delta = SqliteArticleDelta(tmp_path / "delta.db")
    delta.put(
        export,
        [
            DeltaRow(
                new_id,
                out[s.T_ITEM_EMBEDDING][0],
                out[s.T_TEXT_EMBEDDING][0],
                out[s.T_ARTICLE_SPARSE][0],
                out[s.T_ARTICLE_DENSE][0],
            )
        ],
    )

    # similar_items: the new article heads the existing one's list (identical text), and its
    # own list is the existing article's group first.
    got, scores = similar.similar(np.array([[source[s.ARTICLE_ID].encode()]], dtype=object))
    assert got[0, 0] == new_id.encode() and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(scores[0][np.isfinite(scores[0])]) <= 1e-6)
    own, own_scores = similar.similar(np.array([[new_id.encode()]], dtype=object))
    assert new_id.encode() not in set(own[0])
    assert own_scores[0, 0] == pytest.approx(1.0, abs=1e-5)

    # retrieval: the new article's item vector as the query finds delta row A + 0 first.
    query = out[s.T_ITEM_EMBEDDING][:1]
    hist = np.zeros((1, 16), dtype=np.int64)
    rep = np.zeros((1, 24), dtype=np.int64)
    cands, feats = retrieval.retrieve(
        query, hist, np.zeros((1, 16), dtype=np.float32), rep, np.zeros((1, 24), np.float32)
    )
    assert cands[0, 0] == served  # slot 0 -> served row A
    # ranking: the delta row alone as the candidates: it is scored and mapped back to its id.
    only = np.full_like(cands, -1)

    def rank_only(row: int) -> tuple[np.ndarray, np.ndarray]:
        only[0, 0] = row
        zeros = np.zeros((1, 16), dtype=np.float32)
        return ranking.rank(
            np.full((1, 3), 1, dtype=np.int64),
            np.zeros((1, ranking.dense_width), dtype=np.float32),
            hist,
            zeros,
            only,
            feats,
            zeros,
            zeros,
        )

    ranked, ranked_scores = rank_only(served)
    assert ranked[0, 0] == new_id.encode() and np.isfinite(ranked_scores[0, 0])
    assert ranked[0, 1] == b""
    with pytest.raises(RequestError, match="outside"):
        rank_only(served + 1)  # no slot 1
    delta.close()


def test_fields_tensor_orders_the_article_fields() -> None:
    got = fields_tensor([ArticleFields(name="Oat drink", department="GROCERY")])
    assert got.shape == (1, len(s.ARTICLE_FIELDS))
    assert got[0, s.ARTICLE_FIELDS.index(s.NAME)] == b"Oat drink"
    assert got[0, s.ARTICLE_FIELDS.index(s.DEPARTMENT)] == b"GROCERY"
    assert got[0, s.ARTICLE_FIELDS.index(s.DESCRIPTION)] == b""


class FakeEncoder:
    """Encodes an article as vectors filled with its name's length; ``known`` ids are known."""

    def __init__(self, known: set[str], export: str = "e1") -> None:
        self.known, self.export, self.calls = known, export, 0

    def encode(self, article_ids: Sequence[str], fields: Sequence[ArticleFields]) -> dict[str, Any]:
        self.calls += 1
        n = len(article_ids)
        size = np.array([[len(f.name)] for f in fields], dtype=np.float32)
        return {
            s.T_ITEM_EMBEDDING: np.repeat(size, 4, axis=1),
            s.T_TEXT_EMBEDDING: np.repeat(size, 3, axis=1),
            s.T_ARTICLE_SPARSE: np.ones((n, 2), dtype=np.int64),
            s.T_ARTICLE_DENSE: np.zeros((n, 1), dtype=np.float32),
            s.T_KNOWN: np.array([[a in self.known] for a in article_ids]),
            s.T_EXPORT_ID: np.full((n, 1), self.export.encode(), dtype=object),
        }

    def close(self) -> None:
        pass


def test_indexer_writes_unknown_articles_marks_deletions_and_follows_the_export(
    tmp_path: Path,
) -> None:
    delta = SqliteArticleDelta(tmp_path / "delta.db")
    encoder = FakeEncoder(known={"old"})
    indexer = ArticleIndexer(encoder, delta, batch=2)
    for article_id, name in (("old", "x"), ("n1", "ab"), ("n2", "abc"), ("n3", "abcd")):
        indexer.put(article_id, ArticleFields(name=name))
    assert indexer.flush() == 3 and encoder.calls == 2  # batches of 2; "old" is known
    got = delta.load("e1")
    assert got.ids == ["n1", "n2", "n3"] and got.item[:, 0].tolist() == [2.0, 3.0, 4.0]
    indexer.put("n1", ArticleFields(name="abcdef"))  # changed: same slot, new vectors
    indexer.delete("n2")
    indexer.flush()
    got = delta.load("e1")
    assert got.ids == ["n1", "n2", "n3"] and got.item[0, 0] == 6.0
    assert got.live.tolist() == [True, False, True]
    encoder.export = "e2"  # a new export is served: every API article again, in its scope
    indexer.put("n4", ArticleFields(name="a"))
    indexer.flush()
    assert delta.load("e2").ids[0] == "n4"
    assert sorted(delta.load("e2").ids) == ["n1", "n3", "n4"]
    assert not indexer.pending
    delta.close()


def test_idle_indexer_follows_a_new_export_without_a_new_put(tmp_path: Path) -> None:
    delta = SqliteArticleDelta(tmp_path / "delta.db")
    encoder = FakeEncoder(known=set())
    indexer = ArticleIndexer(encoder, delta, probe_every_s=0.0)
    indexer.put("n1", ArticleFields(name="ab"))
    assert indexer.idle() == 1  # pending: flushed
    calls = encoder.calls
    assert indexer.idle() == 0 and encoder.calls == calls + 1  # a probe, same export
    encoder.export = "e2"  # re-exported and served; no article put since
    assert indexer.idle() == 1
    assert delta.load("e2").ids == ["n1"]
    slow = ArticleIndexer(encoder, delta, probe_every_s=3600.0)
    slow.put("n9", ArticleFields(name="x"))
    slow.flush()
    calls = encoder.calls
    assert slow.idle() == 0 and encoder.calls == calls  # no probe before probe_every_s
    delta.close()


class BrokenDelta:
    def version(self, export_id: str) -> int:
        raise OSError("disk gone")


def test_a_failing_delta_read_keeps_the_last_copy_and_is_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from shoprec.serving.article_delta import DeltaView

    view = DeltaView(BrokenDelta(), "e1")  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="shoprec.serving.article_delta"):
        for _ in range(5):
            assert len(view.current()) == 0
    lines = [r for r in caplog.records if "article delta unreadable" in r.getMessage()]
    assert len(lines) == 1 and "disk gone" in lines[0].getMessage()
    assert view.failures == 4  # counted for the next report
