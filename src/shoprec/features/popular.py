"""Article popularity and repurchase statistics: the popular candidate source, the
cold-start list, and the share of purchases that are repurchases."""

from __future__ import annotations

import polars as pl

from shoprec import schema as s


def popular_articles(article_features: pl.DataFrame, k: int) -> pl.DataFrame:
    """The ``k`` articles with most ``SALES_7D``, ties by article id; unsold ones left out.

    Args:
        article_features: ``article_features`` rows as of the serving cutoff (``SALES_7D`` =
            purchase lines in the 7 days before it, the same count the "last-week popularity"
            baseline ranks by).

    Returns:
        ``ARTICLE_ID`` (str), ``SALES_7D`` (int64), at most ``k`` rows, best first.
    """
    return (
        article_features.select(s.ARTICLE_ID, pl.col(s.SALES_7D).cast(pl.Int64))
        .filter(pl.col(s.SALES_7D) > 0)
        .sort([s.SALES_7D, s.ARTICLE_ID], descending=[True, False])
        .head(k)
    )


def repurchase_share(transactions: pl.DataFrame) -> float:
    """Share of purchase lines whose article the same customer bought on an earlier day.

    Range [0, 1]; 0 for an empty table. A grocery basket rebuys (Complete Journey: ~0.5), a
    fashion catalog hardly does (H&M: a few percent).
    """
    if transactions.height == 0:
        return 0.0
    # A line is a repeat unless it is on its (customer, article) pair's first day. The ids are
    # grouped as 32-bit category codes: grouping and joining the id strings of 30 M lines
    # (H&M size) took over 10 GB.
    codes = transactions.select(
        pl.col(s.CUSTOMER_ID).cast(pl.String).cast(pl.Categorical).to_physical(),
        pl.col(s.ARTICLE_ID).cast(pl.String).cast(pl.Categorical).to_physical(),
        pl.col(s.T_DAT),
    )
    first_day = (
        codes.group_by(s.CUSTOMER_ID, s.ARTICLE_ID)
        .agg((pl.col(s.T_DAT) == pl.col(s.T_DAT).min()).sum().alias("first_day"))
        .get_column("first_day")
        .sum()
    )
    return (transactions.height - int(first_day)) / transactions.height
