"""Canonical tables: the one format every source is ingested into.

Three tables (column names from :mod:`shoprec.schema`), stored as
``<out_dir>/{articles,customers,transactions}.parquet`` plus ``<out_dir>/ingest_report.json``:

* articles (A rows): ``article_id`` Utf8 unique non-null, ``name`` Utf8 non-null, the five
  attribute columns and ``description`` Utf8 nullable.
* customers (C rows): ``customer_id`` Utf8 unique non-null, ``age`` Float32 nullable (years),
  ``segment``/``household``/``postal_code`` Utf8 nullable.
* transactions (T rows): ``t_dat`` Date, ``customer_id`` Utf8, ``article_id`` Utf8,
  ``price`` Float32 (currency units per item, finite, >= 0), ``quantity`` Int32 (>= 1),
  ``sales_channel_id`` Int8 (1 = store, 2 = online); no nulls; every id exists in its table.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import polars as pl

from shoprec import schema
from shoprec.errors import ArtifactError, InputDataError

REPORT_FILE: Final = "ingest_report.json"
SALES_CHANNELS: Final = (1, 2)

ARTICLE_SCHEMA: Final = pl.Schema({c: pl.String() for c in schema.ARTICLE_COLUMNS})
CUSTOMER_SCHEMA: Final = pl.Schema(
    {
        schema.CUSTOMER_ID: pl.String(),
        schema.AGE: pl.Float32(),
        **{c: pl.String() for c in schema.CUSTOMER_ATTRIBUTES},
    }
)
TRANSACTION_SCHEMA: Final = pl.Schema(
    {
        schema.T_DAT: pl.Date(),
        schema.CUSTOMER_ID: pl.String(),
        schema.ARTICLE_ID: pl.String(),
        schema.PRICE: pl.Float32(),
        schema.QUANTITY: pl.Int32(),
        schema.SALES_CHANNEL_ID: pl.Int8(),
    }
)
TABLE_SCHEMAS: Final[dict[str, pl.Schema]] = {
    schema.ARTICLES: ARTICLE_SCHEMA,
    schema.CUSTOMERS: CUSTOMER_SCHEMA,
    schema.TRANSACTIONS: TRANSACTION_SCHEMA,
}
# Columns that may hold nulls; every other canonical column must not.
NULLABLE: Final[dict[str, tuple[str, ...]]] = {
    schema.ARTICLES: (*schema.ARTICLE_ATTRIBUTES, schema.DESCRIPTION),
    schema.CUSTOMERS: (schema.AGE, *schema.CUSTOMER_ATTRIBUTES),
    schema.TRANSACTIONS: (),
}


@dataclass
class Canonical:
    """The three canonical tables (see the module docstring for columns and dtypes)."""

    articles: pl.DataFrame
    customers: pl.DataFrame
    transactions: pl.DataFrame

    def table(self, name: str) -> pl.DataFrame:
        """The table called ``name`` (one of :data:`shoprec.schema.CANONICAL_TABLES`).

        Raises:
            KeyError: ``name`` is not a canonical table.
        """
        if name not in schema.CANONICAL_TABLES:
            raise KeyError(f"unknown canonical table {name!r}; valid: {schema.CANONICAL_TABLES}")
        frame: pl.DataFrame = getattr(self, name)
        return frame


@dataclass
class IngestReport:
    """What an ingest did.

    Attributes:
        source: where the data came from (e.g. ``"hm:/data/raw"``, ``"completejourney"``).
        rows: rows written per canonical table.
        dropped: rows dropped per reason (reason -> count; zero counts are kept so that the
            report lists every rule the source applies).
        seconds: wall-clock seconds spent reading and converting the source, up to the call
            of :func:`write_canonical` (its final validation and the Parquet writing excluded).
    """

    source: str
    rows: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with keys ``source``, ``rows``, ``dropped``, ``seconds``."""
        return asdict(self)


def _fail(table: str, column: str, row: int, problem: str) -> InputDataError:
    """An InputDataError naming ``table``, ``column`` and the 1-based ``row``."""
    return InputDataError(f"{table}: column {column!r}: row {row}: {problem}")


def _first_true(mask: pl.Series) -> int | None:
    """0-based index of the first True in ``mask`` (nulls count as False), or None."""
    hits = mask.fill_null(False).arg_true()
    return None if hits.is_empty() else int(hits[0])


def _check_columns(table: str, frame: pl.DataFrame) -> None:
    expected = TABLE_SCHEMAS[table]
    if tuple(frame.columns) != tuple(expected):
        missing = [c for c in expected if c not in frame.columns]
        extra = [c for c in frame.columns if c not in expected]
        raise InputDataError(
            f"{table}: columns {frame.columns} do not match the canonical {list(expected)} "
            f"(missing {missing}, unexpected {extra})"
        )
    for column, dtype in expected.items():
        if frame.schema[column] != dtype:
            raise InputDataError(
                f"{table}: column {column!r}: dtype {frame.schema[column]} != expected {dtype}"
            )


def _check_nulls(table: str, frame: pl.DataFrame) -> None:
    for column in frame.columns:
        if column in NULLABLE[table]:
            continue
        row = _first_true(frame[column].is_null())
        if row is not None:
            raise _fail(table, column, row + 1, "null value in a non-nullable column")


def _check_unique(table: str, frame: pl.DataFrame, column: str) -> None:
    row = _first_true(frame[column].is_duplicated())
    if row is not None:
        value = frame[column][row]
        raise _fail(table, column, row + 1, f"duplicate id {value!r}")


def _check_known(frame: pl.DataFrame, column: str, known: pl.Series, owner: str) -> None:
    row = _first_true(~frame[column].is_in(known.implode()))
    if row is not None:
        value = frame[column][row]
        raise _fail(schema.TRANSACTIONS, column, row + 1, f"{value!r} is not in {owner}")


def validate_canonical(c: Canonical) -> None:
    """Check ``c`` against the canonical schema.

    Checks, in order: column names/order and dtypes per table; at least one row per table; no
    nulls outside the nullable
    columns; unique ``article_id`` and ``customer_id``; every transaction's ids exist in
    articles/customers; ``quantity >= 1``; ``price`` finite and ``>= 0``; ``sales_channel_id``
    in (1, 2); ``age`` finite and ``>= 0`` where present.

    Raises:
        InputDataError: the first failed check, naming table, column, 1-based row and value,
            e.g. ``transactions: column 'quantity': row 7: quantity 0 < 1``.
    """
    for table in schema.CANONICAL_TABLES:
        frame = c.table(table)
        _check_columns(table, frame)
        if frame.height == 0:
            raise InputDataError(f"{table}: no rows")
        _check_nulls(table, frame)
    _check_unique(schema.ARTICLES, c.articles, schema.ARTICLE_ID)
    _check_unique(schema.CUSTOMERS, c.customers, schema.CUSTOMER_ID)

    ages = c.customers[schema.AGE]
    row = _first_true(~ages.is_finite() | (ages < 0))
    if row is not None:
        raise _fail(schema.CUSTOMERS, schema.AGE, row + 1, f"age {ages[row]!r} is not >= 0")

    t = c.transactions
    _check_known(t, schema.ARTICLE_ID, c.articles[schema.ARTICLE_ID], schema.ARTICLES)
    _check_known(t, schema.CUSTOMER_ID, c.customers[schema.CUSTOMER_ID], schema.CUSTOMERS)
    row = _first_true(t[schema.QUANTITY] < 1)
    if row is not None:
        raise _fail(
            schema.TRANSACTIONS, schema.QUANTITY, row + 1, f"quantity {t[schema.QUANTITY][row]} < 1"
        )
    price = t[schema.PRICE]
    row = _first_true(~price.is_finite() | (price < 0))
    if row is not None:
        raise _fail(
            schema.TRANSACTIONS, schema.PRICE, row + 1, f"price {price[row]!r} is not finite >= 0"
        )
    channel = t[schema.SALES_CHANNEL_ID]
    row = _first_true(~channel.is_in(list(SALES_CHANNELS)))
    if row is not None:
        raise _fail(
            schema.TRANSACTIONS,
            schema.SALES_CHANNEL_ID,
            row + 1,
            f"sales channel {channel[row]} not in {SALES_CHANNELS}",
        )


def _sibling(path: Path, tag: str) -> Path:
    """Create and return a new empty hidden directory next to ``path`` (umask permissions)."""
    sibling = path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex}"
    sibling.mkdir()
    return sibling


def write_canonical(c: Canonical, out_dir: Path, report: dict[str, Any]) -> Path:
    """Validate ``c`` and write it to ``out_dir`` atomically.

    The tables and ``report`` (as ``ingest_report.json``) are written into a temporary sibling
    directory, which then replaces ``out_dir`` by rename. An existing ``out_dir`` is replaced
    only after the new one is complete (moved aside, the new one renamed in, the old one
    deleted); on any failure the temporary directory is removed and an existing ``out_dir``
    is left as it was.

    Args:
        c: the tables to write.
        out_dir: target directory; its parent is created if missing.
        report: JSON-serialisable ingest report (e.g. :meth:`IngestReport.to_dict`).

    Returns:
        ``out_dir``.

    Raises:
        InputDataError: ``c`` fails :func:`validate_canonical`.
        OSError: the directory cannot be written.
    """
    validate_canonical(c)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out_dir, "tmp")
    try:
        for table in schema.CANONICAL_TABLES:
            c.table(table).write_parquet(tmp / f"{table}.parquet")
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        if not out_dir.exists():
            os.rename(tmp, out_dir)
            return out_dir
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = _sibling(out_dir, "old")
    try:
        os.rename(out_dir, backup / out_dir.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        backup.rmdir()
        raise
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(backup / out_dir.name, out_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        backup.rmdir()
        raise
    shutil.rmtree(backup, ignore_errors=True)
    return out_dir


def read_canonical(dir: Path) -> Canonical:
    """Read the tables :func:`write_canonical` wrote to ``dir``.

    Raises:
        ArtifactError: ``dir`` or one of its Parquet files is missing, or a table has no rows
            (the message names the file).
    """
    return Canonical(
        **{table: read_canonical_table(dir, table) for table in schema.CANONICAL_TABLES}
    )


def read_canonical_table(dir: Path, table: str) -> pl.DataFrame:
    """One table of ``dir`` (``"articles"``, ``"customers"`` or ``"transactions"``).

    Raises:
        ArtifactError: the Parquet file is missing or has no rows (the message names it).
    """
    path = Path(dir) / f"{table}.parquet"
    if not path.is_file():
        raise ArtifactError(f"canonical table {table!r} missing: {path} (run shoprec ingest)")
    frame = pl.read_parquet(path)
    if frame.height == 0:
        raise ArtifactError(f"canonical table {table!r} has no rows: {path} (ingest again)")
    return frame


def read_report(dir: Path) -> dict[str, Any]:
    """The ingest report stored with the tables in ``dir``.

    Raises:
        ArtifactError: ``dir/ingest_report.json`` is missing.
    """
    path = Path(dir) / REPORT_FILE
    if not path.is_file():
        raise ArtifactError(f"ingest report missing: {path}")
    report: dict[str, Any] = json.loads(path.read_text())
    return report
