"""The best sellers of the last 7 days: the popular candidate source and the cold-start list."""

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
