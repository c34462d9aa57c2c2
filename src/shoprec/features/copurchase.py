"""Item-to-item co-purchase ("bought together"): the table behind ``CoPurchaseSource``.

Two articles are bought together when one customer buys both on the same day (a basket).
The weight of (a, b) is the number of baskets holding both divided by sqrt(baskets of a x
baskets of b) (cosine of the basket-incidence vectors, as in item-based collaborative
filtering, Sarwar et al. WWW 2001). Only transactions strictly before the cutoff and at most
``lookback_days`` before it are read, so a window's table never sees its labels.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from shoprec import schema as s
from shoprec.features.workflow import FIRST_ID

NEIGHBOUR: Final = "neighbour_id"
WEIGHT: Final = "weight"


def copurchase_table(
    transactions: pl.DataFrame,
    cutoff: date,
    lookback_days: int = 56,
    k: int = 20,
    max_basket: int = 50,
) -> pl.DataFrame:
    """The ``k`` articles most bought together with each article, before ``cutoff``.

    Args:
        transactions: canonical transactions (rows on/after ``cutoff`` are ignored).
        lookback_days: only the days in [cutoff - lookback_days, cutoff) are read.
        k: neighbours kept per article (>= 1).
        max_basket: baskets with more distinct articles are skipped (pairs grow as its
            square; such baskets say little about any one pair).

    Returns:
        ``ARTICLE_ID`` (str), ``NEIGHBOUR`` (str), ``WEIGHT`` (float64, in (0, 1]); per
        article at most ``k`` rows, best first, ties by neighbour id.

    Raises:
        ValueError: ``lookback_days`` or ``k`` < 1.
    """
    if lookback_days < 1 or k < 1:
        raise ValueError(f"lookback_days and k must be >= 1, got {lookback_days} and {k}")
    baskets = (
        transactions.filter(
            (pl.col(s.T_DAT) < cutoff) & (pl.col(s.T_DAT) >= cutoff - timedelta(days=lookback_days))
        )
        .select(s.CUSTOMER_ID, s.T_DAT, s.ARTICLE_ID)
        .unique()
        .with_columns(pl.len().over(s.CUSTOMER_ID, s.T_DAT).alias("_size"))
        .filter(pl.col("_size") <= max_basket)
        .drop("_size")
    )
    freq = baskets.group_by(s.ARTICLE_ID).agg(pl.len().alias("_n"))
    pairs = (
        baskets.join(baskets.rename({s.ARTICLE_ID: NEIGHBOUR}), on=[s.CUSTOMER_ID, s.T_DAT])
        .filter(pl.col(s.ARTICLE_ID) != pl.col(NEIGHBOUR))
        .group_by(s.ARTICLE_ID, NEIGHBOUR)
        .agg(pl.len().alias("_both"))
    )
    return (
        pairs.join(freq, on=s.ARTICLE_ID)
        .join(freq.rename({s.ARTICLE_ID: NEIGHBOUR, "_n": "_m"}), on=NEIGHBOUR)
        .with_columns(
            (pl.col("_both") / (pl.col("_n").cast(pl.Float64) * pl.col("_m")).sqrt()).alias(WEIGHT)
        )
        .sort([s.ARTICLE_ID, WEIGHT, NEIGHBOUR], descending=[False, True, False])
        .group_by(s.ARTICLE_ID, maintain_order=True)
        .head(k)
        .select(s.ARTICLE_ID, NEIGHBOUR, WEIGHT)
    )


def copurchase_arrays(
    table: pl.DataFrame,
    article_ids: npt.NDArray[np.object_],
    vocab_ids: npt.NDArray[np.int64],
    cardinality: int,
    k: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Encode a :func:`copurchase_table` for ``inference.sources.CoPurchaseSource``.

    Args:
        article_ids: object (A,) the article ids the table may name (e.g. a window's encoded
            articles), with ``vocab_ids`` int64 (A,) their article-id vocabulary ids.
        cardinality: V, the article-id vocabulary size.
        k: K, columns kept per article (best first).

    Returns:
        (neighbours int64 (V, K) vocabulary ids, 0 = none; weights float32 (V, K), 0 = none).
        Rows naming an article outside ``article_ids`` or the vocabulary (id < 2) are dropped.
    """
    nb = np.zeros((cardinality, k), dtype=np.int64)
    w = np.zeros((cardinality, k), dtype=np.float32)
    lookup = pl.DataFrame(
        {s.ARTICLE_ID: article_ids.astype(str), "_v": vocab_ids.astype(np.int64)}
    ).unique(s.ARTICLE_ID)
    coded = (
        table.join(lookup, on=s.ARTICLE_ID)
        .join(lookup.rename({s.ARTICLE_ID: NEIGHBOUR, "_v": "_nv"}), on=NEIGHBOUR)
        .filter((pl.col("_v") >= FIRST_ID) & (pl.col("_nv") >= FIRST_ID))
        .sort(["_v", WEIGHT, "_nv"], descending=[False, True, False])
    )
    a = coded.get_column("_v").to_numpy()
    b = coded.get_column("_nv").to_numpy()
    weight = coded.get_column(WEIGHT).to_numpy()
    col = np.arange(len(a)) - np.searchsorted(a, a, side="left")
    ok = col < k
    nb[a[ok], col[ok]] = b[ok]
    w[a[ok], col[ok]] = weight[ok]
    return nb, w
