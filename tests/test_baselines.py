"""Tests for shoprec.evaluation.baselines."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Literal

import polars as pl
import pytest

from shoprec.evaluation.baselines import (
    ALSRecommender,
    GlobalPopularity,
    NotFittedError,
    RecentPopularity,
    Recommender,
    Repurchase,
)
from shoprec.schema import (
    ARTICLE_ID,
    CUSTOMER_ID,
    PRICE,
    QUANTITY,
    SALES_CHANNEL_ID,
    T_DAT,
    TRANSACTION_COLUMNS,
)

CUTOFF = datetime.date(2020, 9, 10)


def _frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    """Transactions from (ISO date, customer, article) triples."""
    n = len(rows)
    frame = pl.DataFrame(
        {
            T_DAT: [datetime.date.fromisoformat(r[0]) for r in rows],
            CUSTOMER_ID: [r[1] for r in rows],
            ARTICLE_ID: [r[2] for r in rows],
            PRICE: [0.05] * n,
            QUANTITY: [1] * n,
            SALES_CHANNEL_ID: [2] * n,
        },
        schema={
            T_DAT: pl.Date,
            CUSTOMER_ID: pl.String,
            ARTICLE_ID: pl.String,
            PRICE: pl.Float64,
            QUANTITY: pl.Int64,
            SALES_CHANNEL_ID: pl.Int64,
        },
    )
    return frame.select(TRANSACTION_COLUMNS)


# Counts before CUTOFF, all history:   A 3, B 3, E 3, C 2, D 2 -> A, B, E, C, D (ties by id)
# Counts in the 7 days 09-03..09-09:   B 2, C 2, D 2, A 1    -> B, C, D, A
HISTORY = _frame(
    [
        ("2020-08-20", "c3", "E"),
        ("2020-08-20", "c3", "E"),
        ("2020-08-21", "c3", "E"),
        ("2020-09-01", "c1", "A"),
        ("2020-09-02", "c1", "A"),  # one day before the 7-day window
        ("2020-09-02", "c1", "B"),
        ("2020-09-03", "c4", "C"),  # first day of the 7-day window (inclusive)
        ("2020-09-05", "c2", "B"),
        ("2020-09-06", "c2", "D"),
        ("2020-09-07", "c2", "B"),
        ("2020-09-08", "c1", "C"),
        ("2020-09-09", "c3", "D"),
        ("2020-09-09", "c3", "A"),
    ]
)
# Rows on or after the cutoff: they must change nothing.
FUTURE = _frame(
    [
        ("2020-09-10", "c1", "Z"),
        ("2020-09-10", "c5", "Z"),
        ("2020-09-10", "c5", "Z"),
        ("2020-09-11", "c5", "Z"),
        ("2020-09-12", "c2", "E"),
        ("2020-09-12", "c6", "D"),
    ]
)
CUSTOMERS = ["c1", "c2", "c3", "c4", "c5", "c6"]


def test_global_popularity_exact() -> None:
    model = GlobalPopularity().fit(HISTORY, CUTOFF)
    assert model.recommend(["c1", "unknown"], 4) == [["A", "B", "E", "C"]] * 2
    assert model.recommend(["c1"], 100) == [["A", "B", "E", "C", "D"]]
    assert model.recommend([], 3) == []


def test_recent_popularity_window_bounds() -> None:
    model = RecentPopularity(days=7).fit(HISTORY, CUTOFF)
    assert model.recommend(["c1"], 12) == [["B", "C", "D", "A"]]
    # One day: only 09-09 (D, A), tie broken by id.
    assert RecentPopularity(days=1).fit(HISTORY, CUTOFF).recommend(["c1"], 12) == [["A", "D"]]


def test_repurchase_ranks_by_count_then_recency_then_id() -> None:
    model = Repurchase(fill=None).fit(HISTORY, CUTOFF)
    assert model.recommend(["c1", "c2", "c3", "c4", "c5"], 12) == [
        ["A", "C", "B"],  # A bought twice; C (09-08) more recent than B (09-02)
        ["B", "D"],
        ["E", "A", "D"],  # A and D both once on 09-09 -> by id
        ["C"],
        [],  # no history and no fill
    ]
    assert model.recommend(["c1", "c3"], 2) == [["A", "C"], ["E", "A"]]


def test_repurchase_pads_with_fill_without_duplicates() -> None:
    model = Repurchase().fit(HISTORY, CUTOFF)  # fill = RecentPopularity(7): B, C, D, A
    assert model.recommend(["c1", "c2", "c5"], 4) == [
        ["A", "C", "B", "D"],
        ["B", "D", "C", "A"],
        ["B", "C", "D", "A"],  # unknown customer: the fill list
    ]
    global_fill = Repurchase(fill=GlobalPopularity()).fit(HISTORY, CUTOFF)
    assert global_fill.recommend(["c2"], 5) == [["B", "D", "A", "E", "C"]]


def test_repurchase_days_limits_history() -> None:
    model = Repurchase(days=7).fit(HISTORY, CUTOFF)
    assert model.recommend(["c1", "c3"], 4) == [["C", "B", "D", "A"], ["A", "D", "B", "C"]]


def test_repurchase_does_not_share_or_fit_the_given_fill() -> None:
    assert Repurchase().fill is not Repurchase().fill
    fill = GlobalPopularity()
    Repurchase(fill=fill).fit(HISTORY, CUTOFF)
    with pytest.raises(NotFittedError):
        fill.recommend(["c1"], 3)


def _als() -> ALSRecommender:
    return ALSRecommender(factors=8, iterations=10, seed=7)


@pytest.mark.parametrize(
    "make",
    [GlobalPopularity, RecentPopularity, Repurchase, _als],
    ids=["global", "recent", "repurchase", "als"],
)
def test_rows_on_or_after_cutoff_change_nothing(make: Callable[[], Recommender]) -> None:
    past = make().fit(HISTORY, CUTOFF).recommend(CUSTOMERS, 12)
    everything = make().fit(pl.concat([FUTURE, HISTORY]), CUTOFF).recommend(CUSTOMERS, 12)
    assert everything == past
    assert all("Z" not in rec for rec in everything)


@pytest.mark.parametrize(
    "make",
    [GlobalPopularity, RecentPopularity, Repurchase, _als],
    ids=["global", "recent", "repurchase", "als"],
)
def test_lists_are_distinct_and_at_most_k(make: Callable[[], Recommender]) -> None:
    model: Recommender = make().fit(HISTORY, CUTOFF)
    for k in (1, 2, 3, 50):
        for rec in model.recommend(CUSTOMERS, k):
            assert len(rec) <= k
            assert len(set(rec)) == len(rec)
            assert all(isinstance(a, str) for a in rec)


@pytest.mark.parametrize(
    "make",
    [GlobalPopularity, RecentPopularity, Repurchase, _als],
    ids=["global", "recent", "repurchase", "als"],
)
@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one_raises(make: Callable[[], Recommender], k: int) -> None:
    model = make().fit(HISTORY, CUTOFF)
    with pytest.raises(ValueError, match=rf"k must be an integer >= 1, got {k}"):
        model.recommend(["c1"], k)


@pytest.mark.parametrize(
    "make",
    [GlobalPopularity, RecentPopularity, Repurchase, _als],
    ids=["global", "recent", "repurchase", "als"],
)
def test_recommend_before_fit_raises(make: Callable[[], Recommender]) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        make().recommend(["c1"], 3)


def test_fit_validates_inputs() -> None:
    with pytest.raises(ValueError, match=rf"missing column\(s\) \['{PRICE}'\]"):
        GlobalPopularity().fit(HISTORY.drop(PRICE), CUTOFF)
    with pytest.raises(ValueError, match="cutoff must be a datetime.date"):
        GlobalPopularity().fit(HISTORY, datetime.datetime(2020, 9, 10))
    with pytest.raises(ValueError, match="days must be an integer >= 1 or None, got 0"):
        RecentPopularity(days=0)
    with pytest.raises(ValueError, match="days must be an integer >= 1 or None, got -1"):
        Repurchase(days=-1)
    with pytest.raises(ValueError, match="factors must be >= 1, got 0"):
        ALSRecommender(factors=0)
    with pytest.raises(ValueError, match="alpha must be >= 0, got -1.0"):
        ALSRecommender(alpha=-1.0)
    with pytest.raises(ValueError, match="weighting must be 'bm25' or 'count', got 'tfidf'"):
        ALSRecommender(weighting="tfidf")  # type: ignore[arg-type]  # a bad value on purpose


def test_empty_history_gives_empty_lists() -> None:
    before_everything = datetime.date(2020, 1, 1)
    assert GlobalPopularity().fit(HISTORY, before_everything).recommend(["c1"], 3) == [[]]
    assert _als().fit(HISTORY, before_everything).recommend(["c1"], 3) == [[]]


# ---- ALS -------------------------------------------------------------------------------------


def _two_clusters() -> pl.DataFrame:
    """Customers w0..w9 buy 3 of articles a0..a4 (6 sales each); customers m0..m19 buy 3 of
    b0..b5 (10 sales each), so global popularity ranks every b item above every a item.
    """
    rows = []
    for cluster, n_customers, articles in (
        ("w", 10, [f"a{i}" for i in range(5)]),
        ("m", 20, [f"b{i}" for i in range(6)]),
    ):
        for u in range(n_customers):
            for j in range(3):
                article = articles[(u + j) % len(articles)]
                rows.append(("2020-09-01", f"{cluster}{u}", article))
    return _frame(rows)


@pytest.mark.parametrize("weighting", ["bm25", "count"])
def test_als_recommends_in_cluster_items(weighting: Literal["bm25", "count"]) -> None:
    # Two clusters are a rank-2 structure; with 2 factors every customer's top 5 holds the
    # items of their own cluster only, including ones they never bought (w's top 5 = a0..a4).
    # The default regularization (30) is sized for ~2,500 customers; 30 customers want less.
    data = _two_clusters()
    model = ALSRecommender(
        factors=2, iterations=15, regularization=0.1, seed=42, weighting=weighting
    ).fit(data, CUTOFF)
    women, men = [f"w{u}" for u in range(10)], [f"m{u}" for u in range(20)]
    for rec in model.recommend(women, 5):
        assert sorted(rec) == [f"a{i}" for i in range(5)]
    for rec in model.recommend(men, 5):
        assert all(a.startswith("b") for a in rec)
    # Unlike the popularity list, which is all b items for everyone.
    popular = GlobalPopularity().fit(data, CUTOFF).recommend(["w0"], 5)[0]
    assert all(a.startswith("b") for a in popular)


def test_als_same_seed_same_recommendations() -> None:
    data = _two_clusters()
    first = ALSRecommender(factors=8, iterations=5, seed=3).fit(data, CUTOFF)
    second = ALSRecommender(factors=8, iterations=5, seed=3).fit(data, CUTOFF)
    customers = [f"w{u}" for u in range(10)] + [f"m{u}" for u in range(20)]
    assert first.recommend(customers, 11) == second.recommend(customers, 11)
    assert first._model is not None and second._model is not None
    assert (first._model.user_factors == second._model.user_factors).all()


def test_als_unseen_customer_gets_global_popularity() -> None:
    data = _two_clusters()
    model = ALSRecommender(factors=8, iterations=5).fit(data, CUTOFF)
    popular = GlobalPopularity().fit(data, CUTOFF).recommend(["new"], 7)[0]
    assert model.recommend(["new", "w0", "other"], 7)[0] == popular
    assert model.recommend(["new", "w0", "other"], 7)[2] == popular
    assert model.recommend(["w0"], 7)[0] != popular


def test_als_k_larger_than_catalogue() -> None:
    model = ALSRecommender(factors=8, iterations=5).fit(_two_clusters(), CUTOFF)
    (rec,) = model.recommend(["w0"], 100)
    assert sorted(rec) == sorted([f"a{i}" for i in range(5)] + [f"b{i}" for i in range(6)])


def test_als_bm25_matches_implicit_and_clips_negative_idf() -> None:
    import numpy as np
    import scipy.sparse as sp
    from implicit.nearest_neighbours import bm25_weight

    from shoprec.evaluation.baselines import _bm25

    rng = np.random.default_rng(0)
    dense = rng.integers(0, 4, size=(20, 9)) * (rng.random((20, 9)) < 0.4)
    dense[:, 0] = 0
    dense[:5, 0] = 7  # column 0: bought by 5 of 20 customers
    coo = sp.coo_matrix(dense.astype(np.float64))
    ours = _bm25(coo.data, coo.row.astype(np.int64), coo.col.astype(np.int64), 20, 9)
    reference = bm25_weight(coo, K1=100, B=0.8)
    expected = sp.coo_matrix((reference.data, (reference.row, reference.col)), shape=(20, 9))
    got = sp.coo_matrix((ours, (coo.row, coo.col)), shape=(20, 9))
    assert np.allclose(got.toarray(), np.maximum(expected.toarray(), 0.0))
    # An article every customer bought has idf = log(n) - log(n + 1) < 0: clipped to 0.
    rows, cols = np.array([0, 1, 2, 2]), np.array([0, 0, 0, 1])
    weights = _bm25(np.array([2.0, 1.0, 1.0, 1.0]), rows, cols, 3, 2)
    assert (weights[:3] == 0.0).all() and weights[3] > 0.0


def test_als_count_weighting_old_behaviour_still_available() -> None:
    data = _two_clusters()
    model = ALSRecommender(
        factors=2, iterations=15, regularization=0.01, alpha=40.0, seed=42, weighting="count"
    ).fit(data, CUTOFF)
    for rec in model.recommend([f"w{u}" for u in range(10)], 5):
        assert sorted(rec) == [f"a{i}" for i in range(5)]
