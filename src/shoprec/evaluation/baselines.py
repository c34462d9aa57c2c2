"""Non-neural baselines that the Two-Tower + DLRM pipeline is compared against.

All share the :class:`Recommender` interface: ``fit(transactions, cutoff)`` learns from the
rows with ``t_dat < cutoff`` only (the filter is applied inside ``fit``, so passing the full
table cannot leak the evaluation window), and ``recommend(customer_ids, k)`` returns, per
customer, at most ``k`` distinct article id strings, best first.

"Purchase count" here is the number of transaction rows (purchase lines), not the sum of
``quantity``, as in the H&M data where every row is one item.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Sequence
from typing import Literal, Protocol, Self

import implicit.als
import implicit.cpu.als
import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from shoprec.schema import ARTICLE_ID, CUSTOMER_ID, T_DAT, TRANSACTION_COLUMNS

_COUNT = "_count"
_LAST = "_last"
_ROW = "_row"
_COL = "_col"


class Recommender(Protocol):
    """A model that is fitted on past transactions and recommends top-k article lists."""

    def fit(self, transactions: pl.DataFrame, cutoff: datetime.date) -> Self:
        """Learn from the rows of ``transactions`` with ``t_dat < cutoff``; return ``self``."""
        ...

    def recommend(self, customer_ids: Sequence[str], k: int) -> list[list[str]]:
        """Per customer (same order), at most ``k`` distinct article ids, best first."""
        ...


class NotFittedError(RuntimeError):
    """``recommend`` was called before ``fit``."""


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def _check_days(days: int | None, name: str) -> None:
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
        raise ValueError(f"{name} must be an integer >= 1 or None, got {days!r}")


def _history(
    transactions: pl.DataFrame,
    cutoff: datetime.date,
    days: int | None = None,
    columns: Sequence[str] = (ARTICLE_ID,),
) -> pl.DataFrame:
    """The ``columns`` of the rows with ``cutoff - days <= t_dat < cutoff`` (all rows before
    ``cutoff`` if ``days`` is None); only those columns are copied (tens of millions of rows at
    H&M size). Raises ``ValueError`` naming missing columns or a ``cutoff`` that is not a date.
    """
    return _lazy_history(transactions, cutoff, days, columns).collect()


def _lazy_history(
    transactions: pl.DataFrame,
    cutoff: datetime.date,
    days: int | None,
    columns: Sequence[str],
) -> pl.LazyFrame:
    """:func:`_history`, not collected (nothing is copied yet); raises as it does."""
    if isinstance(cutoff, datetime.datetime) or not isinstance(cutoff, datetime.date):
        raise ValueError(f"cutoff must be a datetime.date, got {cutoff!r}")
    missing = [c for c in TRANSACTION_COLUMNS if c not in transactions.columns]
    if missing:
        raise ValueError(f"transactions is missing column(s) {missing}")
    predicate = pl.col(T_DAT) < cutoff
    if days is not None:
        predicate &= pl.col(T_DAT) >= cutoff - datetime.timedelta(days=days)
    return transactions.lazy().filter(predicate).select(columns)


def _ranked_articles(history: pl.DataFrame) -> list[str]:
    """Article ids by purchase count (descending), ties by article id (ascending)."""
    counts = history.group_by(ARTICLE_ID).agg(pl.len().alias(_COUNT))
    return counts.sort([_COUNT, ARTICLE_ID], descending=[True, False])[ARTICLE_ID].to_list()


class _Popularity:
    """Shared implementation of the popularity baselines (one list for every customer)."""

    def __init__(self, days: int | None) -> None:
        _check_days(days, "days")
        self.days = days
        self._ranked: list[str] | None = None

    def fit(self, transactions: pl.DataFrame, cutoff: datetime.date) -> Self:
        self._ranked = _ranked_articles(_history(transactions, cutoff, self.days))
        return self

    def top(self, k: int) -> list[str]:
        """The ``k`` most popular articles (fewer if fewer were sold), best first."""
        _check_k(k)
        if self._ranked is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit first")
        return self._ranked[:k]

    def recommend(self, customer_ids: Sequence[str], k: int) -> list[list[str]]:
        top = self.top(k)
        return [list(top) for _ in customer_ids]


class GlobalPopularity(_Popularity):
    """The most purchased articles over all history before the cutoff, the same list for
    every customer. Ties are broken by article id (ascending), so results are deterministic.
    """

    def __init__(self) -> None:
        super().__init__(days=None)


class RecentPopularity(_Popularity):
    """The most purchased articles in the ``days`` days before the cutoff
    (``cutoff - days <= t_dat < cutoff``), the same list for every customer; ties by article
    id. The list is shorter than ``k`` when fewer articles sold in the window.

    Raises:
        ValueError: if ``days < 1``.
    """

    def __init__(self, days: int = 7) -> None:
        super().__init__(days=days)


class Repurchase:
    """The customer's own past purchases, padded with a fallback recommender's list.

    Own articles are ranked by purchase count (descending), then by the date of the last
    purchase (most recent first), then by article id. When a customer has fewer than ``k``
    own articles the list is padded with ``fill``'s recommendations for that customer,
    skipping articles already in the list; customers without history get ``fill``'s list.
    With ``fill=None`` lists are not padded (customers without history get ``[]``).
    ``fit`` keeps the rows before the cutoff uncollected (a polars ``LazyFrame`` over the
    given table, nothing copied) and ``recommend`` ranks the asked customers' rows only.

    Args:
        days: only purchases in the ``days`` days before the cutoff count; None = all history.
        fill: fallback recommender, fitted by :meth:`fit` on the same rows and cutoff. It is
            deep-copied here, so the default instance is never shared and the caller's
            instance is left untouched.

    Raises:
        ValueError: if ``days < 1``.
    """

    def __init__(
        self,
        days: int | None = None,
        fill: Recommender | None = RecentPopularity(),  # noqa: B008 (deep-copied below)
    ) -> None:
        _check_days(days, "days")
        self.days = days
        self.fill = copy.deepcopy(fill)
        # the rows before the cutoff, not collected: ``recommend`` ranks the asked customers'
        # own purchases only (a tenth of the lines at H&M size, where grouping and sorting
        # every customer's pairs took minutes and gigabytes)
        self._history: pl.LazyFrame | None = None

    def fit(self, transactions: pl.DataFrame, cutoff: datetime.date) -> Self:
        columns = (CUSTOMER_ID, ARTICLE_ID, T_DAT)
        self._history = _lazy_history(transactions, cutoff, self.days, columns)
        if self.fill is not None:
            self.fill.fit(transactions, cutoff)
        return self

    def recommend(self, customer_ids: Sequence[str], k: int) -> list[list[str]]:
        _check_k(k)
        if self._history is None:
            raise NotFittedError("Repurchase is not fitted; call fit first")
        asked = pl.Series(list(customer_ids), dtype=pl.String)
        ranked = (
            self._history.filter(pl.col(CUSTOMER_ID).is_in(asked.implode()))
            .group_by(CUSTOMER_ID, ARTICLE_ID)
            .agg(pl.len().alias(_COUNT), pl.col(T_DAT).max().alias(_LAST))
            .sort([CUSTOMER_ID, _COUNT, _LAST, ARTICLE_ID], descending=[False, True, True, False])
            .group_by(CUSTOMER_ID, maintain_order=True)
            .agg(pl.col(ARTICLE_ID).head(k))
            .collect()
        )
        own = dict(zip(ranked[CUSTOMER_ID].to_list(), ranked[ARTICLE_ID].to_list(), strict=True))
        lists = [list(own.get(c, [])) for c in customer_ids]
        short = [i for i, rec in enumerate(lists) if len(rec) < k]
        if self.fill is None or not short:
            return lists
        # len(own) < k, so 2k fill items always hold the k - len(own) that are not own items.
        fills = self.fill.recommend([customer_ids[i] for i in short], 2 * k)
        for i, fill in zip(short, fills, strict=True):
            rec = lists[i]
            seen = set(rec)
            for article in fill:
                if len(rec) == k:
                    break
                if article not in seen:
                    rec.append(article)
                    seen.add(article)
        return lists


def _bm25(
    counts: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    n_rows: int,
    n_cols: int,
    k1: float = 100.0,
    b: float = 0.8,
) -> np.ndarray:
    """BM25 weights of the nonzero entries ``counts`` at (``rows``, ``cols``) of an
    ``n_rows x n_cols`` matrix, as ``implicit.nearest_neighbours.bm25_weight``:
    ``count * (k1 + 1) / (k1 * length_norm[row] + count) * idf[col]`` with
    ``idf = log(n_rows) - log1p(nonzeros in the column)`` and
    ``length_norm = 1 - b + b * row_sum / mean(row_sum)``. Negative weights (an article bought
    by (nearly) every customer has ``idf <= 0``) are clipped to 0.
    """
    idf = np.log(n_rows) - np.log1p(np.bincount(cols, minlength=n_cols))
    row_sums = np.bincount(rows, weights=counts, minlength=n_rows)
    length_norm = (1.0 - b) + b * row_sums / row_sums.mean()
    weight = counts * (k1 + 1.0) / (k1 * length_norm[rows] + counts) * idf[cols]
    return np.maximum(weight, 0.0)


class ALSRecommender:
    """Implicit-feedback matrix factorisation by alternating least squares.

    Hu, Koren & Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008,
    as implemented by ``implicit.cpu.als.AlternatingLeastSquares`` (conjugate-gradient
    solver). The customer x article matrix holds the confidence ``c = 1 + alpha * w`` of every
    purchased pair, where ``w`` is the pair's purchase count (rows before the cutoff) with
    ``weighting="count"``, or its BM25 weight with ``weighting="bm25"`` (``_bm25``: the count
    saturated with ``K1 = 100``, scaled down for customers with long histories with ``B = 0.8``
    and by the article's inverse document frequency over customers, as
    ``implicit.nearest_neighbours.bm25_weight``; clipped at 0). Unobserved pairs have
    preference 0 and confidence 1. Scores are the dot product of the factors; already
    purchased articles are not filtered out, because repurchases are common in retail.
    Customers not seen by ``fit`` get the :class:`GlobalPopularity` list.

    Defaults were chosen on the Complete Journey validation week only (fit on
    ``t_dat < 2017-12-19``, MAP@12 over the 1,359 customers who bought in 2017-12-19..12-25;
    global popularity scores 0.0480 there), 15 iterations throughout::

        weighting factors reg            alpha          MAP@12                 (Recall@12, NDCG@12)
        count     64      0.01           40             0.0076  (old defaults)  (0.0177, 0.0162)
        count     32-128  0.01 - 1.0     40             0.0076 - 0.0098         (<= 0.024, <= 0.022)
        count     32-128  0.01 - 1.0     10             0.0164 - 0.0194         (<= 0.040, <= 0.049)
        count     32-128  0.01 - 1.0     1              0.0405 - 0.0420         (<= 0.066, <= 0.099)
        count     64      1 / 10 / 100   2.5            0.0319 / 0.0330 / 0.0465
        count     64      1 / 10 / 100   1              0.0418 / 0.0444 / 0.0468
        count     64      1 / 3 / 10     0.25           0.0499 / 0.0505 / 0.0519
        count     64      30 / 100       0.25           0.0559 / 0.0438
        count     32 / 128  10           0.25           0.0477 / 0.0515
        count     64      10             0.1 / 0        0.0501 / 0.0442
        count     64      30             0.5 / 0.1      0.0542 / 0.0532
        bm25      64      10             0.25 / 1 / 10  0.0540 / 0.0416 / 0.0046
        bm25      64      30 / 100       0.25           0.0614 / 0.0447         (0.0787, 0.1346)
        bm25      64      30             0.5            0.0567

    Chosen (best validation MAP@12): ``weighting="bm25"``, 64 factors, ``regularization=30``,
    ``alpha=0.25``: MAP@12 0.0614, Recall@12 0.0787, NDCG@12 0.1346 (the old defaults, count
    weighting with 0.01 / 40: 0.0076).

    Large ``alpha`` (the paper's 40) is what sinks ALS on grocery data: counts reach the
    hundreds, heavy buyers' pairs get confidences in the thousands, and the factors fit rare
    articles (median popularity rank of the top 12 beyond 1,000). The index mapping is right:
    ``recommend`` returns the brute-force argsort of ``user_factors @ item_factors.T``.

    The same ``seed`` and data give the same recommendations. BLAS is limited to one thread
    while the model is built and fitted, as ``implicit`` recommends. ``regularization`` is
    absolute (not scaled by the number of customers), so tiny data sets want a smaller one.

    Raises:
        ValueError: if ``factors``, ``iterations`` < 1, ``regularization``, ``alpha`` < 0, or
            ``weighting`` is not ``"bm25"`` or ``"count"``.
    """

    def __init__(
        self,
        factors: int = 64,
        iterations: int = 15,
        regularization: float = 30.0,
        alpha: float = 0.25,
        seed: int = 42,
        weighting: Literal["bm25", "count"] = "bm25",
    ) -> None:
        if factors < 1:
            raise ValueError(f"factors must be >= 1, got {factors!r}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations!r}")
        if regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {regularization!r}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        if weighting not in ("bm25", "count"):
            raise ValueError(f"weighting must be 'bm25' or 'count', got {weighting!r}")
        self.weighting = weighting
        self.factors = factors
        self.iterations = iterations
        self.regularization = regularization
        self.alpha = alpha
        self.seed = seed
        self._popularity = GlobalPopularity()
        self._fitted = False
        # None when there are no rows before the cutoff.
        self._model: implicit.cpu.als.AlternatingLeastSquares | None = None
        self._customer_index: dict[str, int] = {}
        self._article_ids: np.ndarray = np.empty(0, dtype=object)

    def fit(self, transactions: pl.DataFrame, cutoff: datetime.date) -> Self:
        self._popularity.fit(transactions, cutoff)
        history = _history(transactions, cutoff, columns=(CUSTOMER_ID, ARTICLE_ID))
        customers = history[CUSTOMER_ID].unique().sort()
        articles = history[ARTICLE_ID].unique().sort()
        # the matrix's row and column of every line: positions in the sorted ids (32-bit), so
        # the pairs are grouped by integers, not by the id strings of every line
        pairs = (
            pl.DataFrame(
                {
                    _ROW: customers.search_sorted(history[CUSTOMER_ID]),
                    _COL: articles.search_sorted(history[ARTICLE_ID]),
                }
            )
            .group_by(_ROW, _COL)
            .agg(pl.len().alias(_COUNT))
        )
        del history
        rows = pairs[_ROW].to_numpy().astype(np.int64)
        cols = pairs[_COL].to_numpy().astype(np.int64)
        weight = pairs[_COUNT].to_numpy().astype(np.float64)
        del pairs
        if self.weighting == "bm25" and len(weight) > 0:
            weight = _bm25(weight, rows, cols, len(customers), len(articles))
        confidence = (1.0 + self.alpha * weight).astype(np.float32)
        user_items = sp.csr_matrix(
            (confidence, (rows, cols)),
            shape=(len(customers), len(articles)),
            dtype=np.float32,
        )
        self._customer_index = {c: i for i, c in enumerate(customers.to_list())}
        self._article_ids = np.asarray(articles.to_list(), dtype=object)
        self._model = None
        if user_items.nnz > 0:
            with threadpool_limits(1, "blas"):
                self._model = implicit.als.AlternatingLeastSquares(
                    factors=self.factors,
                    regularization=self.regularization,
                    alpha=1.0,  # the matrix already holds the confidence 1 + alpha * w
                    iterations=self.iterations,
                    use_gpu=False,
                    random_state=self.seed,
                )
                self._model.fit(user_items, show_progress=False)
        self._fitted = True
        return self

    def recommend(self, customer_ids: Sequence[str], k: int) -> list[list[str]]:
        _check_k(k)
        if not self._fitted:
            raise NotFittedError("ALSRecommender is not fitted; call fit first")
        popular = self._popularity.top(k)
        lists = [list(popular) for _ in customer_ids]
        known = [i for i, c in enumerate(customer_ids) if c in self._customer_index]
        if self._model is None or not known:
            return lists
        rows = np.array([self._customer_index[customer_ids[i]] for i in known], dtype=np.int64)
        n = min(k, len(self._article_ids))
        ids, _ = self._model.recommend(rows, None, N=n, filter_already_liked_items=False)
        for i, item_ids in zip(known, ids, strict=True):
            lists[i] = self._article_ids[item_ids].tolist()
        return lists
