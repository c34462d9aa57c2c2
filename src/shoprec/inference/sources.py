"""Candidate sources: several small retrievers with one interface, and their union.

Each source proposes, per customer, a fixed number of article rows with a score; the union
deduplicates them and records, for every candidate, each source's score and reciprocal rank
(0 where the source did not propose it). These per-source features go to the ranker. The same
classes run in offline evaluation and inside the Triton ``retrieval`` step.

Sources (after the H&M Kaggle 1st-place recipe: several candidate sources, one ranker):

* :class:`AnnSource` - the Two-Tower's item-index ANN top n (score = inner product).
* :class:`HistorySource` - the customer's repurchase list (repurchase; score = log1p(count)):
  their R distinct past articles in history order, R chosen per dataset
  (``data.dataset.choose_repurchase_length``; deeper than the N history slots the models
  read, where customers buy many distinct articles).
* :class:`CoPurchaseSource` - articles bought together (same customer, same day) with the
  history's articles, from a table fitted on transactions before the cutoff
  (:func:`shoprec.features.copurchase.copurchase_table`); score = sum over history articles
  of log1p(count) x co-purchase weight.
* :class:`PopularSource` - the articles most sold in the 7 days before the cutoff, the same
  list for everyone (score = log1p(sales)).

Shape letters: B = customers, C = union width, N = history length, R = repurchase-list
length, D = embedding dim,
V = article vocabulary size, K = neighbours per article, S = sources (:data:`SOURCE_NAMES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import numpy.typing as npt

from shoprec import schema as s
from shoprec.inference.index import search

if TYPE_CHECKING:
    import faiss

PAD: Final = s.NO_CANDIDATE
SOURCE_NAMES: Final = s.CANDIDATE_SOURCES
FEATURES_PER_SOURCE: Final = 2  # score, 1 / (1 + rank)
SOURCE_FEATURE_WIDTH: Final = FEATURES_PER_SOURCE * len(SOURCE_NAMES)
_UNION_BLOCK: Final = 4096  # customers merged at a time by union_candidates

Rows = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SourceQuery:
    """What the sources see of B customers.

    Attributes:
        queries: float32 (B, D) query-tower embeddings (only :class:`AnnSource` reads them).
        hist_ids: int64 (B, N) history article vocabulary ids, 0 = padding.
        hist_counts: float32 (B, N) purchases of each history article.
        repurchase_ids: int64 (B, R) the repurchase list's vocabulary ids, 0 = padding.
        repurchase_counts: float32 (B, R) purchases of each of them.
    """

    queries: npt.NDArray[np.float32]
    hist_ids: npt.NDArray[np.int64]
    hist_counts: npt.NDArray[np.float32]
    repurchase_ids: npt.NDArray[np.int64]
    repurchase_counts: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.hist_ids)

    @property
    def widths(self) -> QueryWidths:
        """(N, R) of this query."""
        return QueryWidths(self.hist_ids.shape[1], self.repurchase_ids.shape[1])

    def slice(self, start: int, stop: int) -> SourceQuery:
        """Customers ``start:stop`` (views, no copy)."""
        return SourceQuery(
            self.queries[start:stop],
            self.hist_ids[start:stop],
            self.hist_counts[start:stop],
            self.repurchase_ids[start:stop],
            self.repurchase_counts[start:stop],
        )


@dataclass(frozen=True)
class QueryWidths:
    """The list widths of a :class:`SourceQuery`: N (history) and R (repurchase list)."""

    history: int
    repurchase: int


class CandidateSource(Protocol):
    """One candidate source: ``name`` (in :data:`SOURCE_NAMES`), ``width(widths)`` = columns
    it returns for a query of those :class:`QueryWidths`, ``generate(query)`` -> (article
    rows int64 (B, width), PAD where none; scores float32 (B, width), higher = better, best
    first)."""

    name: str

    def width(self, widths: QueryWidths) -> int: ...

    def generate(self, query: SourceQuery) -> tuple[Rows, Scores]: ...


class AnnSource:
    """The item index's top n for the query embedding.

    Args:
        index: FAISS inner-product index whose id i is article row ``index_rows[i]``.
        index_rows: int64 (I,).
        n: candidates per customer (>= 1).
    """

    name = s.SOURCE_ANN

    def __init__(self, index: faiss.Index, index_rows: Rows, n: int):
        if n < 1:
            raise ValueError(f"ANN candidates must be >= 1, got {n}")
        self.index, self.index_rows, self.n = index, index_rows, n

    def width(self, widths: QueryWidths) -> int:
        return min(self.n, int(self.index.ntotal))

    def generate(self, query: SourceQuery) -> tuple[Rows, Scores]:
        scores, ids = search(self.index, query.queries, self.n)
        rows = np.where(ids >= 0, self.index_rows[np.clip(ids, 0, None)], PAD)
        return rows.astype(np.int64), np.where(ids >= 0, scores, 0).astype(np.float32)


class HistorySource:
    """The customer's repurchase list (R distinct past articles in history order, most
    purchased first by default; score log1p(purchases)): the repurchase source.

    Args:
        history_rows: int64 (V,) article vocabulary id -> article row, PAD if not served
            (``inference.candidates.vocab_to_row``).
    """

    name = s.SOURCE_HISTORY

    def __init__(self, history_rows: Rows):
        self.history_rows = history_rows

    def width(self, widths: QueryWidths) -> int:
        return widths.repurchase

    def generate(self, query: SourceQuery) -> tuple[Rows, Scores]:
        rows = self.history_rows[query.repurchase_ids]
        scores = np.where(rows != PAD, np.log1p(query.repurchase_counts), 0)
        return rows, scores.astype(np.float32)


class CoPurchaseSource:
    """Articles bought together with the customer's history articles.

    Args:
        neighbours: int64 (V, K) per article vocabulary id its co-purchased articles'
            vocabulary ids, 0 = none (from ``features.copurchase.copurchase_arrays``).
        weights: float32 (V, K) their co-purchase weights (>= 0).
        history_rows: int64 (V,) vocabulary id -> article row, PAD if not served.
        n: candidates per customer (>= 1).
    """

    name = s.SOURCE_COPURCHASE

    def __init__(self, neighbours: Rows, weights: Scores, history_rows: Rows, n: int):
        if neighbours.shape != weights.shape or neighbours.ndim != 2:
            raise ValueError(
                f"co-purchase neighbours {neighbours.shape} and weights {weights.shape} differ"
            )
        if n < 1:
            raise ValueError(f"co-purchase candidates must be >= 1, got {n}")
        self.neighbours, self.weights, self.history_rows, self.n = (
            neighbours,
            weights,
            history_rows,
            n,
        )

    def width(self, widths: QueryWidths) -> int:
        return self.n

    def generate(self, query: SourceQuery) -> tuple[Rows, Scores]:
        b = len(query)
        hist = np.clip(query.hist_ids, 0, len(self.neighbours) - 1)
        nb = self.neighbours[hist].reshape(b, -1)  # (B, N*K) vocab ids
        w = (self.weights[hist] * np.log1p(query.hist_counts)[:, :, None]).reshape(b, -1)
        w = np.where(query.hist_ids.repeat(self.neighbours.shape[1], 1) >= 2, w, 0)
        # vocabulary ids < 2 are padding / out of vocabulary (features.workflow.FIRST_ID)
        # sum the weights of one article proposed by several history articles
        valid = (nb >= 2) & (w > 0) & (self.history_rows[nb] != PAD)  # served articles only
        cust = np.nonzero(valid)[0]
        key = cust.astype(np.int64) * len(self.neighbours) + nb[valid]
        uniq, inverse = np.unique(key, return_inverse=True)
        # summed in float64, ranked and returned as float32 scores
        total = np.bincount(inverse, weights=w[valid].astype(np.float64)).astype(np.float32)
        row_of, vocab = np.divmod(uniq, len(self.neighbours))
        order = _best_first(row_of, total)  # per customer: best first, ties by id
        row_of, vocab, total = row_of[order], vocab[order], total[order]
        first = np.searchsorted(row_of, row_of, side="left")
        rank = np.arange(len(row_of)) - first
        keep = rank < self.n
        rows = np.full((b, self.n), PAD, dtype=np.int64)
        scores = np.zeros((b, self.n), dtype=np.float32)
        rows[row_of[keep], rank[keep]] = self.history_rows[vocab[keep]]
        scores[row_of[keep], rank[keep]] = total[keep]
        return rows, scores


def _best_first(row_of: Rows, total: npt.NDArray[np.float32]) -> Rows:
    """The order that sorts (customer ``row_of``, article) pairs, given sorted by customer then
    article, by customer, then float32 ``total`` (> 0) descending, then article: one stable
    sort of an int64 key, customer x 2^31 + (2^31 - 1 - the total's IEEE-754 bits), which
    order like the totals for positive floats. The order of ``np.lexsort((article, -total,
    row_of))`` (``tests/test_sources.py``) in a fraction of its time (1.2 M pairs of 4,096
    customers: 0.06 s against 1.08 s)."""
    bits = total.astype(np.float32).view(np.int32).astype(np.int64)
    return np.argsort(row_of * (1 << 31) + ((1 << 31) - 1 - bits), kind="stable")


class PopularSource:
    """The same popular articles for every customer.

    Args:
        rows: int64 (P,) article rows, best first.
        scores: float32 (P,) their scores (log1p of last-week sales).
        n: candidates (the first n of ``rows``).
    """

    name = s.SOURCE_POPULAR

    def __init__(self, rows: Rows, scores: Scores, n: int):
        if rows.shape != scores.shape:
            raise ValueError(f"popular rows {rows.shape} and scores {scores.shape} differ")
        self.rows, self.scores, self.n = rows[:n], scores[:n].astype(np.float32), n

    def width(self, widths: QueryWidths) -> int:
        return self.n

    def generate(self, query: SourceQuery) -> tuple[Rows, Scores]:
        b = len(query)
        rows = np.full((b, self.n), PAD, dtype=np.int64)
        scores = np.zeros((b, self.n), dtype=np.float32)
        rows[:, : len(self.rows)] = self.rows
        scores[:, : len(self.rows)] = self.scores
        return rows, scores


def union_width(sources: list[CandidateSource], widths: QueryWidths) -> int:
    """C, the union's width: the sum of the sources' widths."""
    return sum(src.width(widths) for src in sources)


def union_candidates(
    sources: list[CandidateSource], query: SourceQuery
) -> tuple[Rows, npt.NDArray[np.float32], dict[str, Rows]]:
    """Run every source and merge their lists.

    Returns:
        (candidates int64 (B, C) article rows, first occurrence kept in source order, PAD for
        none and repeats; features float32 (B, C, 2 S): for source j of
        :data:`SOURCE_NAMES`, column 2j = its score for the candidate and 2j + 1 =
        1 / (1 + its rank), both 0 when the source did not propose it (a source not in
        ``sources`` is all 0); each source's own rows, by name).
    """
    if len(query) <= _UNION_BLOCK:
        return _union_block(sources, query)
    # In blocks of customers: the sources' and the merge's temporaries are (B, N * K) and
    # (B, C) wide, gigabytes for a window of 300k customers (H&M size).
    blocks = [
        _union_block(sources, query.slice(start, start + _UNION_BLOCK))
        for start in range(0, len(query), _UNION_BLOCK)
    ]
    by_source = {name: np.concatenate([b[2][name] for b in blocks]) for name in blocks[0][2]}
    return (
        np.concatenate([b[0] for b in blocks]),
        np.concatenate([b[1] for b in blocks]),
        by_source,
    )


def _union_block(
    sources: list[CandidateSource], query: SourceQuery
) -> tuple[Rows, npt.NDArray[np.float32], dict[str, Rows]]:
    """:func:`union_candidates` of one block of customers."""
    from shoprec.inference.candidates import dedupe_rows

    lists = {src.name: src.generate(query) for src in sources}
    if lists:
        cands = dedupe_rows(np.concatenate([r for r, _ in lists.values()], axis=1))
    else:
        cands = np.zeros((len(query), 0), dtype=np.int64)
    feats = np.zeros((*cands.shape, SOURCE_FEATURE_WIDTH), dtype=np.float32)
    for name, (rows, scores) in lists.items():
        j = SOURCE_NAMES.index(name)
        hit, pos = _positions(cands, rows)
        feats[..., 2 * j] = np.where(hit, np.take_along_axis(scores, pos, axis=1), 0)
        feats[..., 2 * j + 1] = np.where(hit, 1.0 / (1.0 + pos), 0)
    return cands, feats, {name: rows for name, (rows, _) in lists.items()}


def _positions(cands: Rows, rows: Rows) -> tuple[npt.NDArray[np.bool_], Rows]:
    """Where each candidate sits in one source's list: (hit bool (B, C), position int64 (B, C),
    the first one where the source lists it twice, 0 where it does not list it).

    By a sorted search over (customer, row) keys: O(B (C + c) log) time and O(B (C + c))
    memory, where the (B, C, c) comparison it replaces needed gigabytes at R = 512."""
    b, width = rows.shape
    if width == 0 or cands.shape[1] == 0:
        return np.zeros(cands.shape, dtype=bool), np.zeros(cands.shape, dtype=np.int64)
    span = int(max(rows.max(initial=0), cands.max(initial=0))) + 1
    base = np.arange(b, dtype=np.int64)[:, None] * span
    keys = np.where(rows != PAD, base + rows, -1).ravel()
    order = np.argsort(keys, kind="stable")  # equal keys keep list order: first = best rank
    sorted_keys = keys[order]
    wanted = np.where(cands != PAD, base + cands, -2)
    at = np.minimum(np.searchsorted(sorted_keys, wanted, side="left"), len(keys) - 1)
    hit = (sorted_keys[at] == wanted) & (cands != PAD)
    pos = np.where(hit, order[at] % width, 0)
    return hit, pos.astype(np.int64)
