"""Raw features as of a cutoff date, computed only from transactions strictly before it.

These functions are the single definition of every derived feature: the labelled dataset
(one cutoff per window) and the serving snapshot (cutoff = the day after the last transaction)
both call them, so training and serving see the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import polars as pl

from shoprec import schema as s
from shoprec.config import HistoryOrder

_LAST = "_last_t_dat"
_FIRST = "_first_t_dat"
_N = "_n"


def history_pairs(hist: pl.DataFrame, history_order: HistoryOrder) -> pl.DataFrame:
    """Each customer's distinct (customer, article) pairs of the transactions ``hist``, in
    history order: sorted by CUSTOMER_ID, then FREQUENCY: purchases descending, last purchase
    most recent first; RECENCY: the two the other way round; final ties by article id.
    Columns: CUSTOMER_ID, ARTICLE_ID, ``_n`` (purchases, u32), the last and first purchase
    dates. The order of the history and repurchase lists (:func:`customer_features`) and of
    the positions ``data.dataset.choose_repurchase_length`` reads."""
    keys = [_N, _LAST] if history_order is HistoryOrder.FREQUENCY else [_LAST, _N]
    return (
        hist.group_by([s.CUSTOMER_ID, s.ARTICLE_ID])
        .agg(
            pl.len().alias(_N),
            pl.col(s.T_DAT).max().alias(_LAST),
            pl.col(s.T_DAT).min().alias(_FIRST),
        )
        .sort([s.CUSTOMER_ID, *keys, s.ARTICLE_ID], descending=[False, True, True, False])
    )


def transactions_before(transactions: pl.DataFrame, cutoff: date) -> pl.DataFrame:
    """Rows with ``t_dat < cutoff``: the only rows any feature as of ``cutoff`` may read."""
    return transactions.filter(pl.col(s.T_DAT) < cutoff)


def customer_features(
    transactions: pl.DataFrame,
    customers: pl.DataFrame,
    cutoff: date,
    history_length: int,
    customer_ids: Sequence[str] | pl.Series | None = None,
    history_order: HistoryOrder = HistoryOrder.FREQUENCY,
    repurchase_length: int | None = None,
) -> pl.DataFrame:
    """Customer features as of ``cutoff``.

    Args:
        transactions: canonical transactions (any dates; rows on/after ``cutoff`` are ignored).
        customers: canonical customers table (static attributes).
        cutoff: first day the features must not see.
        history_length: N, the number of distinct past articles kept.
        customer_ids: restrict to these customers (default: every customer in ``customers``).
        history_order: FREQUENCY keeps the N most purchased articles (ties: most recent
            first), RECENCY the N most recently purchased (ties: most purchased first).

    Returns:
        One row per customer: ``schema.CUSTOMER_COLUMNS``, the ``schema.CUSTOMER_DENSE``
        aggregates (counts as int, days as int, mean price in currency units; null where the
        customer has no purchase before ``cutoff``), ``HIST_ARTICLE_IDS`` (list[str], at most
        N, in ``history_order``, final ties by article id), ``HIST_COUNTS``
        (list[int], purchases of each), ``HIST_LAST_DAYS`` / ``HIST_FIRST_DAYS`` (list[int],
        days from the last / first purchase of each to ``cutoff``, >= 1),
        ``REPURCHASE_ARTICLE_IDS`` (list[str], at most R, same order) and
        ``REPURCHASE_COUNTS`` (list[int]). Ids keep the inputs' dtype: ``pl.Enum`` id codes
        (``data.dataset.IdCodes``) give ``pl.Enum`` ids and lists of them.

    Raises:
        ValueError: ``history_length < 1`` or ``repurchase_length < 1``.
    """
    if history_length < 1:
        raise ValueError(f"history_length must be >= 1, got {history_length}")
    repurchase = history_length if repurchase_length is None else repurchase_length
    if repurchase < 1:
        raise ValueError(f"repurchase_length must be >= 1, got {repurchase_length}")
    base = customers.select(s.CUSTOMER_COLUMNS)
    hist = transactions_before(transactions, cutoff)
    if customer_ids is not None:
        # in the id column's dtype: strings, or the id codes ``data.dataset`` builds with
        ids = (
            pl.Series(s.CUSTOMER_ID, customer_ids)
            .cast(base.schema[s.CUSTOMER_ID], strict=False)  # an unknown code: null, dropped
            .drop_nulls()
            .unique()
        )
        base = base.filter(pl.col(s.CUSTOMER_ID).is_in(ids.implode()))
        hist = hist.filter(pl.col(s.CUSTOMER_ID).is_in(ids.implode()))
    agg = hist.group_by(s.CUSTOMER_ID).agg(
        pl.len().cast(pl.Int64).alias(s.N_PURCHASES),
        (pl.col(s.T_DAT) >= cutoff - timedelta(days=28))
        .sum()
        .cast(pl.Int64)
        .alias(s.N_PURCHASES_28D),
        pl.col(s.T_DAT).max().alias(_LAST),
        pl.col(s.T_DAT).min().alias(_FIRST),
        pl.col(s.PRICE).mean().cast(pl.Float64).alias(s.MEAN_PRICE),
        pl.col(s.ARTICLE_ID).n_unique().cast(pl.Int64).alias(s.N_DISTINCT_ARTICLES),
    )
    lists = (
        history_pairs(hist, history_order)
        .group_by(s.CUSTOMER_ID, maintain_order=True)
        .agg(
            pl.col(s.ARTICLE_ID).head(history_length).alias(s.HIST_ARTICLE_IDS),
            pl.col(_N).head(history_length).cast(pl.Int64).alias(s.HIST_COUNTS),
            (pl.lit(cutoff, dtype=pl.Date) - pl.col(_LAST))
            .dt.total_days()
            .head(history_length)
            .cast(pl.Int64)
            .alias(s.HIST_LAST_DAYS),
            (pl.lit(cutoff, dtype=pl.Date) - pl.col(_FIRST))
            .dt.total_days()
            .head(history_length)
            .cast(pl.Int64)
            .alias(s.HIST_FIRST_DAYS),
            pl.col(s.ARTICLE_ID).head(repurchase).alias(s.REPURCHASE_ARTICLE_IDS),
            pl.col(_N).head(repurchase).cast(pl.Int64).alias(s.REPURCHASE_COUNTS),
        )
    )
    cutoff_lit = pl.lit(cutoff, dtype=pl.Date)
    return (
        base.join(agg, on=s.CUSTOMER_ID, how="left")
        .join(lists, on=s.CUSTOMER_ID, how="left")
        .with_columns(
            pl.col(s.N_PURCHASES).fill_null(0),
            pl.col(s.N_PURCHASES_28D).fill_null(0),
            pl.col(s.N_DISTINCT_ARTICLES).fill_null(0),
            (cutoff_lit - pl.col(_LAST)).dt.total_days().alias(s.DAYS_SINCE_LAST),
            (cutoff_lit - pl.col(_FIRST)).dt.total_days().alias(s.DAYS_SINCE_FIRST),
            pl.col(s.HIST_ARTICLE_IDS).fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
            pl.col(s.HIST_COUNTS).fill_null(pl.lit([], dtype=pl.List(pl.Int64))),
            pl.col(s.HIST_LAST_DAYS).fill_null(pl.lit([], dtype=pl.List(pl.Int64))),
            pl.col(s.HIST_FIRST_DAYS).fill_null(pl.lit([], dtype=pl.List(pl.Int64))),
            pl.col(s.REPURCHASE_ARTICLE_IDS).fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
            pl.col(s.REPURCHASE_COUNTS).fill_null(pl.lit([], dtype=pl.List(pl.Int64))),
        )
        .select(
            *s.CUSTOMER_COLUMNS,
            *[c for c in s.CUSTOMER_DENSE if c != s.AGE],
            s.HIST_ARTICLE_IDS,
            s.HIST_COUNTS,
            s.HIST_LAST_DAYS,
            s.HIST_FIRST_DAYS,
            s.REPURCHASE_ARTICLE_IDS,
            s.REPURCHASE_COUNTS,
        )
        .sort(s.CUSTOMER_ID)
    )


def article_features(
    transactions: pl.DataFrame, articles: pl.DataFrame, cutoff: date
) -> pl.DataFrame:
    """Article features as of ``cutoff``.

    Returns:
        One row per article in ``articles``: ``schema.ARTICLE_COLUMNS`` plus ``SALES_7D`` and
        ``SALES_28D`` (int, purchase lines in the 7 / 28 days before ``cutoff``),
        ``ARTICLE_MEAN_PRICE`` (float, currency units; null if never sold) and
        ``DAYS_SINCE_FIRST_SALE`` (int days; null if never sold), ``SALES_ALL`` (int, purchase
        lines before ``cutoff``, all time) and ``SALES_TREND`` (float, ``log((1 + SALES_7D) /
        (1 + (SALES_28D - SALES_7D) / 3))``: last week against the weekly mean of the three
        weeks before; 0 = flat, > 0 rising). Sorted by article id.
    """
    hist = transactions_before(transactions, cutoff)
    agg = hist.group_by(s.ARTICLE_ID).agg(
        (pl.col(s.T_DAT) >= cutoff - timedelta(days=7)).sum().cast(pl.Int64).alias(s.SALES_7D),
        (pl.col(s.T_DAT) >= cutoff - timedelta(days=28)).sum().cast(pl.Int64).alias(s.SALES_28D),
        pl.col(s.PRICE).mean().cast(pl.Float64).alias(s.ARTICLE_MEAN_PRICE),
        pl.col(s.T_DAT).min().alias(_FIRST),
        pl.len().cast(pl.Int64).alias(s.SALES_ALL),
    )
    return (
        articles.select(s.ARTICLE_COLUMNS)
        .join(agg, on=s.ARTICLE_ID, how="left")
        .with_columns(
            pl.col(s.SALES_7D).fill_null(0),
            pl.col(s.SALES_28D).fill_null(0),
            pl.col(s.SALES_ALL).fill_null(0),
            (pl.lit(cutoff, dtype=pl.Date) - pl.col(_FIRST))
            .dt.total_days()
            .alias(s.DAYS_SINCE_FIRST_SALE),
        )
        .with_columns(
            ((1.0 + pl.col(s.SALES_7D)) / (1.0 + (pl.col(s.SALES_28D) - pl.col(s.SALES_7D)) / 3.0))
            .log()
            .alias(s.SALES_TREND)
        )
        .drop(_FIRST)
        .sort(s.ARTICLE_ID)
    )
