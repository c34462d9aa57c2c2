"""A hand-made canonical dataset small enough to check values by hand."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from shoprec import schema as s
from shoprec.data.ingest.canonical import Canonical


def make_canonical(days: int = 42, seed: int = 0) -> Canonical:
    """6 customers, 8 articles in 2 groups, daily purchases over ``days`` days from 2020-01-01.

    Customers c0..c2 buy group A (a0..a3), c3..c5 group B (a4..a7); each customer buys one
    article every day, cycling through their group's articles with an offset.
    """
    articles = pl.DataFrame(
        {
            s.ARTICLE_ID: [f"a{i}" for i in range(8)],
            s.NAME: [f"Article {i}" for i in range(8)],
            s.PRODUCT_TYPE: ["shirt", "shirt", "dress", "dress", "ice", "ice", "milk", "milk"],
            s.PRODUCT_GROUP: ["A"] * 4 + ["B"] * 4,
            s.DEPARTMENT: ["fashion"] * 4 + ["grocery"] * 4,
            s.SECTION: ["women"] * 4 + [None] * 4,
            s.VARIANT: ["red", "blue", "red", "blue", "1kg", "2kg", "1l", "2l"],
            s.DESCRIPTION: [None] * 8,
        },
        schema={c: pl.Utf8 for c in s.ARTICLE_COLUMNS},
    )
    customers = pl.DataFrame(
        {
            s.CUSTOMER_ID: [f"c{i}" for i in range(6)],
            s.AGE: [25.0, 35.0, None, 45.0, 55.0, None],
            s.SEGMENT: ["ACTIVE", "ACTIVE", None, "ACTIVE", "LEFT", "ACTIVE"],
            s.HOUSEHOLD: ["NONE", "Regularly", "NONE", None, "NONE", "NONE"],
            s.POSTAL_CODE: ["p0", "p0", "p1", "p1", "p2", "p2"],
        },
        schema={
            s.CUSTOMER_ID: pl.Utf8,
            s.AGE: pl.Float32,
            s.SEGMENT: pl.Utf8,
            s.HOUSEHOLD: pl.Utf8,
            s.POSTAL_CODE: pl.Utf8,
        },
    )
    rows = []
    start = date(2020, 1, 1)
    for d in range(days):
        for c in range(6):
            group = 0 if c < 3 else 4
            a = group + (d + c + seed) % 4
            rows.append((start + timedelta(days=d), f"c{c}", f"a{a}", 1.0 + a, 1, 1 + c % 2))
    tx = pl.DataFrame(
        rows,
        schema={
            s.T_DAT: pl.Date,
            s.CUSTOMER_ID: pl.Utf8,
            s.ARTICLE_ID: pl.Utf8,
            s.PRICE: pl.Float32,
            s.QUANTITY: pl.Int32,
            s.SALES_CHANNEL_ID: pl.Int8,
        },
        orient="row",
    )
    return Canonical(articles=articles, customers=customers, transactions=tx)
