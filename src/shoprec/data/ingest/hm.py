"""Ingest the H&M Personalized Fashion Recommendations (Kaggle 2022) files.

Reads ``articles.csv``, ``customers.csv`` and ``transactions_train.csv`` (public Kaggle
schema, :data:`shoprec.schema.HM_ARTICLE_COLUMNS` etc.) and writes the canonical tables.

Policy: H&M data is used as is; nothing is dropped. Any unparseable value, duplicate id, or
transaction that refers to an article or customer missing from the other files stops the
ingest with an :class:`~shoprec.errors.InputDataError` naming the file, column, 1-based data
row (header excluded) and value, and nothing is written.

Memory: every file is scanned as strings and parsed with polars expressions; the 31.8M-row
transactions file is parsed with the streaming engine, so only the parsed columns are held
(about 3.5 GB for the full file: the 64-character customer ids dominate).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from shoprec import schema
from shoprec.data.ingest.canonical import (
    ARTICLE_SCHEMA,
    CUSTOMER_SCHEMA,
    SALES_CHANNELS,
    TRANSACTION_SCHEMA,
    Canonical,
    IngestReport,
    write_canonical,
)
from shoprec.errors import InputDataError

DATE_FORMAT: Final = "%Y-%m-%d"
# Article ids are written with or without their leading zero; both pad to HM_ARTICLE_ID_DIGITS.
_ARTICLE_ID_PATTERN: Final = rf"^[0-9]{{1,{schema.HM_ARTICLE_ID_DIGITS}}}$"
_FLAG_PREFIX: Final = "__bad_"
HM_CSV_FILES: Final = (schema.HM_ARTICLES_CSV, schema.HM_CUSTOMERS_CSV, schema.HM_TRANSACTIONS_CSV)


@dataclass(frozen=True)
class _Rule:
    """A check on one raw column: ``bad`` is True on offending rows; ``expected`` says what a
    valid value looks like (used in the message)."""

    column: str
    bad: pl.Expr
    expected: str


def _flags(rules: Sequence[_Rule]) -> list[pl.Expr]:
    """One boolean column per rule, named by the rule's position."""
    return [rule.bad.alias(f"{_FLAG_PREFIX}{i}") for i, rule in enumerate(rules)]


def _describe(value: object) -> str:
    return "an empty value" if value is None or value == "" else repr(value)


def _header(path: Path) -> list[str]:
    """Column names of the CSV at ``path``, as in the file (see :func:`_raw_scan`).

    Raises:
        InputDataError: the file is missing or empty.
    """
    if not path.is_file():
        raise InputDataError(f"{path.name}: file not found: {path}")
    try:
        return pl.scan_csv(path, infer_schema=False).collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise InputDataError(f"{path.name}: cannot read the CSV header: {exc}") from exc


def _raw_scan(path: Path) -> pl.LazyFrame:
    """Lazy scan of ``path``, every column a string, empty fields null.

    Windows line endings: polars reads ``\\r\\n`` itself, but a file whose lines end in
    ``\\r\\r\\n`` (a CRLF file converted to CRLF once more) keeps a ``\\r``
    at the end of the last column's name and values; it is removed here.
    """
    header = _header(path)
    frame = pl.scan_csv(
        path,
        infer_schema=False,
        schema_overrides={c: pl.String for c in header},
        empty_string_is_null=True,
    )
    last = header[-1]
    if last.endswith("\r"):
        clean = last.rstrip("\r")
        stripped = pl.col(last).str.strip_chars_end("\r")
        frame = frame.with_columns(
            pl.when(stripped.str.len_bytes() > 0).then(stripped).alias(last)
        ).rename({last: clean})
    return frame


def _scan(path: Path, required: Sequence[str]) -> pl.LazyFrame:
    """Lazy scan of ``path`` (:func:`_raw_scan`) holding the ``required`` columns.

    Raises:
        InputDataError: the file is missing, empty, or lacks one of ``required`` columns.
    """
    header = [c.rstrip("\r") for c in _header(path)]
    for column in required:
        if column not in header:
            raise InputDataError(
                f"{path.name}: column {column!r} missing (columns present: {header})"
            )
    columns = list(dict.fromkeys(required))
    # Empty fields, quoted ("") or not, are nulls.
    return _raw_scan(path).select(
        pl.when(pl.col(c).str.len_bytes() > 0).then(pl.col(c)).alias(c) for c in columns
    )


def _collect(path: Path, frame: pl.LazyFrame) -> pl.DataFrame:
    """Collect ``frame`` with the streaming engine, turning parser errors into InputDataError."""
    try:
        return frame.collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise InputDataError(f"{path.name}: cannot parse the CSV: {exc}") from exc


def _raise_first(path: Path, flags: pl.DataFrame, rules: Sequence[_Rule]) -> None:
    """Raise for the earliest offending row over all ``rules`` (ties: first rule wins).

    ``flags`` holds the columns :func:`_flags` makes, row-aligned with the file.
    The offending raw value is read back from the file (cheap: one row).
    """
    first: tuple[int, int] | None = None
    for i in range(len(rules)):
        hits = flags[f"{_FLAG_PREFIX}{i}"].fill_null(False).arg_true()
        if not hits.is_empty() and (first is None or int(hits[0]) < first[0]):
            first = (int(hits[0]), i)
    if first is None:
        return
    row, i = first
    rule = rules[i]
    raw = _raw_scan(path).select(rule.column).slice(row, 1).collect()
    value = raw[rule.column][0]
    raise InputDataError(
        f"{path.name}: column {rule.column!r}: row {row + 1}: "
        f"{_describe(value)} is not {rule.expected}"
    )


def _article_id(raw: str) -> tuple[pl.Expr, _Rule]:
    """Parsed (zero-padded) article id expression and its format rule."""
    col = pl.col(raw)
    rule = _Rule(
        raw,
        col.is_null() | ~col.str.contains(_ARTICLE_ID_PATTERN),
        f"an article id of at most {schema.HM_ARTICLE_ID_DIGITS} digits",
    )
    return col.str.zfill(schema.HM_ARTICLE_ID_DIGITS), rule


def _not_empty(raw: str, what: str) -> _Rule:
    return _Rule(raw, pl.col(raw).is_null(), what)


def _duplicate(raw: str, parsed: pl.Expr) -> _Rule:
    return _Rule(raw, ~parsed.is_first_distinct(), "a unique id (it occurs earlier in the file)")


def _parse(
    path: Path, frame: pl.LazyFrame, parsed: dict[str, pl.Expr], rules: Sequence[_Rule]
) -> pl.DataFrame:
    """Evaluate ``parsed`` columns and ``rules`` on ``frame``; raise on the first bad row.

    Returns:
        The parsed columns only, in ``parsed`` order.
    """
    out = _collect(
        path,
        frame.select(
            *(expr.alias(name) for name, expr in parsed.items()),
            *_flags(rules),
        ),
    )
    _raise_first(path, out, rules)
    if out.height == 0:
        raise InputDataError(f"{path.name}: no data rows (the file holds only its header): {path}")
    return out.select(list(parsed))


def _articles(path: Path) -> pl.DataFrame:
    raw = {canonical: source for source, canonical in schema.HM_ARTICLE_MAP.items()}
    article_id, id_rule = _article_id(raw[schema.ARTICLE_ID])
    # Display names: prod_name; the (never seen in practice) empty name falls back to the id.
    name = pl.coalesce(pl.col(raw[schema.NAME]), pl.lit("Article ") + article_id)
    parsed = {schema.ARTICLE_ID: article_id, schema.NAME: name}
    parsed |= {c: pl.col(raw[c]) for c in ARTICLE_SCHEMA if c not in parsed}
    # The duplicate check runs after the format check so it sees only well-formed ids.
    rules = [id_rule, _duplicate(raw[schema.ARTICLE_ID], article_id)]
    frame = _parse(path, _scan(path, list(schema.HM_ARTICLE_MAP)), parsed, rules)
    return frame.cast(ARTICLE_SCHEMA)


def _customers(path: Path) -> pl.DataFrame:
    raw = {canonical: source for source, canonical in schema.HM_CUSTOMER_MAP.items()}
    customer_id = pl.col(raw[schema.CUSTOMER_ID])
    age_raw = pl.col(raw[schema.AGE])
    age = age_raw.cast(pl.Float64, strict=False)
    parsed = {schema.CUSTOMER_ID: customer_id, schema.AGE: age}
    parsed |= {c: pl.col(raw[c]) for c in CUSTOMER_SCHEMA if c not in parsed}
    rules = [
        _not_empty(raw[schema.CUSTOMER_ID], "a customer id"),
        _duplicate(raw[schema.CUSTOMER_ID], customer_id),
        _Rule(
            raw[schema.AGE],
            age_raw.is_not_null() & (age.is_null() | ~age.is_finite() | (age < 0)),
            "an age in years (a number >= 0, or empty)",
        ),
    ]
    frame = _parse(path, _scan(path, list(schema.HM_CUSTOMER_MAP)), parsed, rules)
    return frame.cast(CUSTOMER_SCHEMA)


def _transactions(path: Path, articles: pl.DataFrame, customers: pl.DataFrame) -> pl.DataFrame:
    article_id, id_rule = _article_id(schema.ARTICLE_ID)
    t_dat = pl.col(schema.T_DAT).str.to_date(DATE_FORMAT, strict=False)
    price = pl.col(schema.PRICE).cast(pl.Float64, strict=False)
    channel = pl.col(schema.SALES_CHANNEL_ID).cast(pl.Int64, strict=False)
    customer_id = pl.col(schema.CUSTOMER_ID)
    parsed = {
        schema.T_DAT: t_dat,
        schema.CUSTOMER_ID: customer_id,
        schema.ARTICLE_ID: article_id,
        schema.PRICE: price.cast(pl.Float32),
        schema.QUANTITY: pl.lit(1, dtype=pl.Int32),
        schema.SALES_CHANNEL_ID: channel.cast(pl.Int8, strict=False),
    }
    rules = [
        _Rule(schema.T_DAT, t_dat.is_null(), "a date (YYYY-MM-DD)"),
        _not_empty(schema.CUSTOMER_ID, "a customer id"),
        id_rule,
        _Rule(
            schema.PRICE,
            price.is_null() | ~price.is_finite() | (price < 0),
            "a price (a finite number >= 0)",
        ),
        _Rule(
            schema.SALES_CHANNEL_ID,
            ~channel.is_in(list(SALES_CHANNELS)).fill_null(False),
            f"a sales channel id in {SALES_CHANNELS}",
        ),
    ]
    frame = _parse(path, _scan(path, schema.HM_TRANSACTION_COLUMNS), parsed, rules)
    # Membership is checked on the parsed frame: one hash set per id column, not one per batch.
    # The H&M transaction columns carry the canonical names, so the rules read either frame.
    membership = [
        _Rule(
            schema.CUSTOMER_ID,
            ~pl.col(schema.CUSTOMER_ID).is_in(customers[schema.CUSTOMER_ID].implode()),
            f"a customer in {schema.HM_CUSTOMERS_CSV}",
        ),
        _Rule(
            schema.ARTICLE_ID,
            ~pl.col(schema.ARTICLE_ID).is_in(articles[schema.ARTICLE_ID].implode()),
            f"an article in {schema.HM_ARTICLES_CSV}",
        ),
    ]
    _raise_first(path, frame.select(_flags(membership)), membership)
    return frame.cast(TRANSACTION_SCHEMA)


def read_hm(raw_dir: Path) -> Canonical:
    """Read and validate the three H&M files in ``raw_dir`` as canonical tables.

    Mapping: articles via :data:`~shoprec.schema.HM_ARTICLE_MAP` (``article_id`` zero-padded to
    :data:`~shoprec.schema.HM_ARTICLE_ID_DIGITS` digits, e.g. ``108775015`` ->
    ``"0108775015"``), customers via :data:`~shoprec.schema.HM_CUSTOMER_MAP` (``age`` years as
    Float32, null when empty), transactions with ``t_dat`` parsed from YYYY-MM-DD, ``price``
    as Float32 (H&M's scaled currency units), ``quantity`` = 1 per row (a repeated row is a
    repeated purchase), ``sales_channel_id`` 1 or 2.

    Windows line endings and a UTF-8 byte-order mark are accepted.

    Raises:
        InputDataError: a file or column is missing, a file has no data rows, a value cannot be
            parsed, an id is duplicated, or a transaction refers to an unknown article or
            customer. The message
            names the file, column, 1-based data row and value, e.g.
            ``transactions_train.csv: column 'price': row 3: 'abc' is not a price ...``.
    """
    raw_dir = Path(raw_dir)
    paths = [raw_dir / name for name in HM_CSV_FILES]
    for path in paths:
        _header(path)  # fail on a missing file before spending minutes on the others
    articles_path, customers_path, transactions_path = paths
    articles = _articles(articles_path)
    customers = _customers(customers_path)
    transactions = _transactions(transactions_path, articles, customers)
    return Canonical(articles=articles, customers=customers, transactions=transactions)


def ingest_hm(raw_dir: Path, out_dir: Path) -> IngestReport:
    """Ingest the H&M Kaggle files in ``raw_dir`` into canonical Parquet tables in ``out_dir``.

    See :func:`read_hm` for the mapping. On the full data (105,542 articles, 1,371,980
    customers, 31,788,324 transactions) peak memory is a few GB.

    Returns:
        The report (also written to ``out_dir/ingest_report.json``); ``dropped`` is empty,
        since H&M rows are never dropped.

    Raises:
        InputDataError: see :func:`read_hm`; nothing is written and an existing ``out_dir``
            is left untouched.
    """
    start = time.perf_counter()
    canonical = read_hm(raw_dir)
    report = IngestReport(
        source=f"hm:{Path(raw_dir)}",
        rows={name: canonical.table(name).height for name in schema.CANONICAL_TABLES},
        dropped={},
        seconds=round(time.perf_counter() - start, 3),
    )
    write_canonical(canonical, Path(out_dir), report.to_dict())
    return report
