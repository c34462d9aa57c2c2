"""Candidate sources (inference/sources.py) and the co-purchase table, by hand."""

from __future__ import annotations

from datetime import date

import faiss
import numpy as np
import polars as pl
import pytest

from shoprec import schema as s
from shoprec.features.copurchase import WEIGHT, copurchase_arrays, copurchase_table
from shoprec.inference.sources import (
    PAD,
    SOURCE_FEATURE_WIDTH,
    AnnSource,
    CandidateSource,
    CoPurchaseSource,
    HistorySource,
    PopularSource,
    QueryWidths,
    SourceQuery,
    _best_first,
    union_candidates,
    union_width,
)


def _tx(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    """(customer, article, day of January 2020) purchase lines."""
    return pl.DataFrame(
        {
            s.CUSTOMER_ID: [r[0] for r in rows],
            s.ARTICLE_ID: [r[1] for r in rows],
            s.T_DAT: [date(2020, 1, r[2]) for r in rows],
        }
    )


def test_copurchase_table_by_hand_and_cutoff() -> None:
    tx = _tx(
        [
            ("c1", "a", 1), ("c1", "b", 1),  # basket {a, b}
            ("c2", "a", 2), ("c2", "b", 2), ("c2", "c", 2),  # basket {a, b, c}
            ("c3", "a", 3),  # basket {a}
            ("c1", "c", 9), ("c1", "a", 9),  # on the cutoff day: never read
        ]
    )  # fmt: skip
    table = copurchase_table(tx, date(2020, 1, 9), lookback_days=30, k=5)
    got = {(a, b): w for a, b, w in table.iter_rows()}
    # a in 3 baskets, b in 2, c in 1; a&b together twice, a&c once, b&c once
    assert got[("a", "b")] == pytest.approx(2 / np.sqrt(3 * 2))
    assert got[("a", "c")] == pytest.approx(1 / np.sqrt(3 * 1))
    assert got[("c", "b")] == pytest.approx(1 / np.sqrt(1 * 2))
    assert len(got) == 6
    assert table.filter(pl.col(s.ARTICLE_ID) == "a").get_column(WEIGHT).is_sorted(descending=True)
    assert copurchase_table(tx, date(2020, 1, 2), 30, 5).height == 2  # only day 1: a<->b
    with pytest.raises(ValueError, match="must be >= 1"):
        copurchase_table(tx, date(2020, 1, 9), 0, 5)
    # encoded: vocabulary ids a=2, b=3, c=4; unknown articles dropped
    nb, w = copurchase_arrays(
        table, np.array(["a", "b"], dtype=object), np.array([2, 3]), cardinality=5, k=2
    )
    assert nb[2].tolist() == [3, 0] and nb[3].tolist() == [2, 0] and not nb[4].any()
    assert w[2, 0] == pytest.approx(2 / np.sqrt(6))


def _query(
    hist: list[list[int]],
    counts: list[list[float]],
    repurchase: list[list[int]] | None = None,
    repurchase_counts: list[list[float]] | None = None,
) -> SourceQuery:
    """B customers' history lists; the repurchase lists default to the history lists."""
    return SourceQuery(
        np.eye(len(hist), 4, dtype=np.float32),
        np.array(hist, dtype=np.int64),
        np.array(counts, dtype=np.float32),
        np.array(hist if repurchase is None else repurchase, dtype=np.int64),
        np.array(counts if repurchase_counts is None else repurchase_counts, dtype=np.float32),
    )


def test_sources_and_union_features_by_hand() -> None:
    # vocabulary ids 2..6 are article rows 0..4; id 7 is not served
    history_rows = np.array([PAD, PAD, 0, 1, 2, 3, 4, PAD])
    hist = _query([[2, 3], [0, 0]], [[3.0, 1.0], [0.0, 0.0]])
    history = HistorySource(history_rows)
    rows, scores = history.generate(hist)
    assert rows.tolist() == [[0, 1], [PAD, PAD]]
    np.testing.assert_allclose(scores[0], np.log1p([3.0, 1.0]))

    # article 2 co-bought with 4 (0.5) and 5 (0.1); article 3 with 4 (0.2) and 7 (0.9)
    nb = np.zeros((8, 2), dtype=np.int64)
    w = np.zeros((8, 2), dtype=np.float32)
    nb[2], w[2] = [4, 5], [0.5, 0.1]
    nb[3], w[3] = [4, 7], [0.2, 0.9]
    co = CoPurchaseSource(nb, w, history_rows, n=3)
    rows, scores = co.generate(hist)
    # 4: 0.5 log1p(3) + 0.2 log1p(1); 5: 0.1 log1p(3); 7 is not served: left out
    assert rows[0].tolist() == [2, 3, PAD]
    np.testing.assert_allclose(
        scores[0, :2], [0.5 * np.log1p(3) + 0.2 * np.log1p(1), 0.1 * np.log1p(3)], rtol=1e-6
    )
    assert rows[1].tolist() == [PAD] * 3  # no history, no co-purchases

    popular = PopularSource(np.array([4, 2]), np.array([2.0, 1.0], dtype=np.float32), n=3)
    rows, _ = popular.generate(hist)
    assert rows.tolist() == [[4, 2, PAD], [4, 2, PAD]]

    index = faiss.IndexFlatIP(4)
    index.add(np.eye(4, dtype=np.float32))
    ann = AnnSource(index, np.array([4, 3, 2, 1]), n=1)  # query b matches index id b
    sources: list[CandidateSource] = [ann, history, co, popular]
    assert union_width(sources, QueryWidths(history=2, repurchase=2)) == 1 + 2 + 3 + 3
    cands, feats, by_source = union_candidates(sources, hist)
    assert feats.shape == (2, 9, SOURCE_FEATURE_WIDTH)
    assert set(by_source) == {s.SOURCE_ANN, s.SOURCE_HISTORY, s.SOURCE_COPURCHASE, s.SOURCE_POPULAR}
    # customer 0: ann -> row 4; history rows 0, 1; co-purchase 2, 3; popular 4 (dup), 2 (dup)
    assert [c for c in cands[0] if c != PAD] == [4, 0, 1, 2, 3]
    row4 = feats[0, 0]
    assert row4[0] == pytest.approx(1.0) and row4[1] == 1.0  # ANN score, rank 0
    assert row4[2:4].tolist() == [0, 0]  # not in the history
    assert row4[6] == pytest.approx(2.0) and row4[7] == 1.0  # popular, rank 0
    row2 = feats[0, list(cands[0]).index(2)]
    assert row2[5] == pytest.approx(1.0) and row2[7] == pytest.approx(
        0.5
    )  # co-purchase #1, popular #2
    assert (feats[cands == PAD] == 0).all()


def test_history_source_reads_the_whole_repurchase_list() -> None:
    """The history source proposes the R-long repurchase list, not only the N history slots
    (which the co-purchase source reads)."""
    history_rows = np.array([PAD, PAD, 0, 1, 2, 3, 4, PAD])
    # customer 0: history [2] (N = 1); repurchase list [2, 3, 7, 5] (7 is not served)
    query = _query(
        [[2], [0]], [[3.0], [0.0]], [[2, 3, 7, 5], [6, 0, 0, 0]], [[3, 2, 2, 1], [1, 0, 0, 0]]
    )
    assert query.widths == QueryWidths(history=1, repurchase=4)
    history = HistorySource(history_rows)
    assert history.width(query.widths) == 4
    rows, scores = history.generate(query)
    assert rows.tolist() == [[0, 1, PAD, 3], [4, PAD, PAD, PAD]]
    np.testing.assert_allclose(scores, np.log1p([[3, 2, 0, 1], [1, 0, 0, 0]]), rtol=1e-6)
    nb = np.zeros((8, 1), dtype=np.int64)
    nb[2], nb[3] = 6, 5  # article 2 is co-bought with 6, article 3 with 5
    co = CoPurchaseSource(nb, np.ones((8, 1), np.float32), history_rows, n=2)
    co_rows, _ = co.generate(query)
    assert co_rows[0].tolist() == [4, PAD]  # from the history slot 2 only, not from 3
    cands, feats, _ = union_candidates([history, co], query)
    assert [c for c in cands[0] if c != PAD] == [0, 1, 3, 4]
    row3 = feats[0, list(cands[0]).index(3)]
    j = 2 * s.CANDIDATE_SOURCES.index(s.SOURCE_HISTORY)
    assert row3[j] == pytest.approx(np.log1p(1)) and row3[j + 1] == pytest.approx(1 / 4)


def test_union_positions_equal_the_pairwise_comparison() -> None:
    """``_positions`` (a sorted search) = the first match of the (B, C, c) comparison, with
    padding and a source that lists an article twice."""
    from shoprec.inference.sources import _positions

    rng = np.random.default_rng(1)
    cands = rng.integers(-1, 30, (50, 40))
    rows = rng.integers(-1, 30, (50, 12))  # repeats within a row: the first one counts
    hit, pos = _positions(cands, rows)
    match = (cands[:, :, None] == rows[:, None, :]) & (cands != PAD)[:, :, None]
    np.testing.assert_array_equal(hit, match.any(-1))
    np.testing.assert_array_equal(pos, np.where(match.any(-1), match.argmax(-1), 0))
    assert hit.any() and (~hit).any()
    empty_hit, empty_pos = _positions(cands, np.zeros((50, 0), dtype=np.int64))
    assert not empty_hit.any() and empty_pos.shape == cands.shape


def test_co_purchase_source_rejects_mismatched_tables() -> None:
    with pytest.raises(ValueError, match="neighbours .* and weights .* differ"):
        CoPurchaseSource(
            np.zeros((3, 2), np.int64), np.zeros((3, 1), np.float32), np.zeros(3, np.int64), 1
        )


def test_repurchase_share_and_the_exclusion_policy() -> None:
    from shoprec.config import ExcludePurchased
    from shoprec.features.popular import repurchase_share

    # c1 buys a on days 1, 1 and 5 (the day-5 line is a repurchase), b once; c2 buys a once
    tx = _tx([("c1", "a", 1), ("c1", "a", 1), ("c1", "a", 5), ("c1", "b", 2), ("c2", "a", 3)])
    assert repurchase_share(tx) == pytest.approx(1 / 5)
    assert repurchase_share(tx.head(0)) == 0.0
    assert ExcludePurchased.AUTO.resolve(0.01, 0.05) is True  # fashion-like: exclude
    assert ExcludePurchased.AUTO.resolve(0.2, 0.05) is False  # grocery-like: keep
    assert ExcludePurchased.ALWAYS.resolve(0.9, 0.05) is True
    assert ExcludePurchased.NEVER.resolve(0.0, 0.05) is False


def test_rule_rankers_score_from_the_source_features() -> None:
    from shoprec.features.assemble import RankingInputs
    from shoprec.models.rules import RuleKind, RuleRanker

    width = 3 + len(s.SOURCE_DENSE)
    dense = np.zeros((3, width), dtype=np.float32)
    col = {name: 3 + j for j, name in enumerate(s.SOURCE_DENSE)}
    dense[0, col["popular_score"]] = 5.0  # a best seller, never bought
    dense[1, col["history_score"]] = np.log1p(2)  # bought twice, not popular
    dense[2, col["history_score"]] = np.log1p(1)
    dense[2, col["popular_score"]] = 1.0  # bought once, a little popular
    inputs = RankingInputs(dense, np.zeros((3, 1), np.int64), np.zeros((3, 2), np.int64))
    pop = RuleRanker(RuleKind.POPULARITY, [5], width).predict(inputs)
    assert np.argsort(-pop).tolist() == [0, 2, 1]
    rep = RuleRanker(RuleKind.REPURCHASE, [5], width).predict(inputs)
    assert np.argsort(-rep).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="inputs have 11 dense features, expected 12"):
        RuleRanker(RuleKind.POPULARITY, [5], width + 1).predict(inputs)


def test_union_over_blocks_of_customers_equals_each_customer_alone() -> None:
    """More customers than one block (``_UNION_BLOCK``): rows, features and each source's
    lists equal those of every customer's union computed alone."""
    from shoprec.inference import sources as src

    rng = np.random.default_rng(0)
    b, n, v, d = src._UNION_BLOCK + 37, 6, 40, 8
    vectors = rng.standard_normal((v, d)).astype(np.float32)
    index = faiss.IndexFlatIP(d)
    index.add(vectors)
    rows_of_vocab = np.arange(v, dtype=np.int64)
    rows_of_vocab[:2] = PAD  # vocabulary ids 0 / 1: padding, out of vocabulary
    neighbours = rng.integers(0, v, (v, 3))
    sources: list[CandidateSource] = [
        AnnSource(index, np.arange(v, dtype=np.int64), 5),
        HistorySource(rows_of_vocab),
        CoPurchaseSource(neighbours, rng.random((v, 3)).astype(np.float32), rows_of_vocab, 4),
        PopularSource(np.array([3, 1, 4], dtype=np.int64), np.ones(3, np.float32), 3),
    ]
    query = SourceQuery(
        rng.standard_normal((b, d)).astype(np.float32),
        rng.integers(0, v, (b, n)),
        rng.integers(1, 4, (b, n)).astype(np.float32),
        rng.integers(0, v, (b, 2 * n)),
        rng.integers(1, 4, (b, 2 * n)).astype(np.float32),
    )
    cands, feats, by_source = union_candidates(sources, query)
    for i in (0, src._UNION_BLOCK - 1, src._UNION_BLOCK, b - 1):
        one_c, one_f, one_by = union_candidates(sources, query.slice(i, i + 1))
        np.testing.assert_array_equal(cands[i], one_c[0])
        np.testing.assert_array_equal(feats[i], one_f[0])
        for name, rows in one_by.items():
            np.testing.assert_array_equal(by_source[name][i], rows[0])
    assert cands.shape == (b, union_width(sources, query.widths)) and feats.shape[:2] == cands.shape
    assert cands.shape[1] == 5 + 2 * n + 4 + 3


def test_copurchase_order_is_lexsorts_by_customer_score_and_article() -> None:
    rng = np.random.default_rng(5)
    for n, ties in ((20_000, False), (20_000, True), (1, True), (0, False)):
        row = np.sort(rng.integers(0, 300, n))
        art = rng.integers(0, 5_000, n)
        by = np.lexsort((art, row))
        row, art = row[by], art[by]
        total = (
            rng.integers(1, 4, n).astype(np.float32)
            if ties
            else rng.random(n).astype(np.float32) * 40 + 1e-6
        )
        assert np.array_equal(_best_first(row, total), np.lexsort((art, -total, row)))
