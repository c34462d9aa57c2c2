"""Synthetic H&M-format data: file format, determinism and the signal it is meant to carry."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from shoprec import schema
from shoprec.data.ingest import SCALES, generate_synthetic

FILES = (schema.HM_ARTICLES_CSV, schema.HM_CUSTOMERS_CSV, schema.HM_TRANSACTIONS_CSV)
HEX64 = r"^[0-9a-f]{64}$"
ARTICLE_ID_RE = r"^0[0-9]{9}$"


def _read(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


def _num(value: object) -> float:
    """A Series aggregate (``min``, ``mean``, ...) as a number: polars types it as any scalar."""
    assert isinstance(value, int | float), value
    return value


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    generate_synthetic(out, "tiny", seed=0, progress=False)
    return out


def test_tiny_row_counts_match_scale(tmp_path: Path) -> None:
    counts = generate_synthetic(tmp_path, "tiny", seed=3, progress=False)
    sc = SCALES["tiny"]
    assert counts == {
        schema.ARTICLES: sc.n_articles,
        schema.CUSTOMERS: sc.n_customers,
        schema.TRANSACTIONS: sc.n_transactions,
    }
    assert _read(tmp_path / schema.HM_ARTICLES_CSV).height == 200
    assert _read(tmp_path / schema.HM_CUSTOMERS_CSV).height == 300
    assert _read(tmp_path / schema.HM_TRANSACTIONS_CSV).height == 20_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)  # no temp files left


def test_scales_pin_the_kaggle_size() -> None:
    hm = SCALES["hm"]
    assert (hm.n_customers, hm.n_articles, hm.n_transactions) == (1_371_980, 105_542, 31_788_324)
    assert (hm.start, hm.end) == (date(2018, 9, 20), date(2020, 9, 22))
    assert SCALES["tiny"].n_days == 70


def test_headers_are_the_kaggle_columns(tiny: Path) -> None:
    with (tiny / schema.HM_ARTICLES_CSV).open() as f:
        assert f.readline().rstrip("\n").split(",") == list(schema.HM_ARTICLE_COLUMNS)
    with (tiny / schema.HM_CUSTOMERS_CSV).open() as f:
        assert f.readline().rstrip("\n").split(",") == list(schema.HM_CUSTOMER_COLUMNS)
    with (tiny / schema.HM_TRANSACTIONS_CSV).open() as f:
        assert f.readline().rstrip("\n").split(",") == list(schema.HM_TRANSACTION_COLUMNS)


def test_values_look_like_hm(tiny: Path) -> None:
    articles = _read(tiny / schema.HM_ARTICLES_CSV)
    customers = _read(tiny / schema.HM_CUSTOMERS_CSV)
    tx = _read(tiny / schema.HM_TRANSACTIONS_CSV)
    article_id, product_code = schema.HM_ARTICLE_COLUMNS[:2]
    assert articles[article_id].str.contains(ARTICLE_ID_RE).all()
    assert articles[article_id].is_unique().all()
    # article_id = 0 + product_code (6 digits) + 3-digit variant
    assert (articles[article_id].str.slice(1, 6) == articles[product_code]).all()
    t_dat, customer_id, tx_article, price, channel = schema.HM_TRANSACTION_COLUMNS
    assert tx[tx_article].str.contains(ARTICLE_ID_RE).all()
    assert tx[tx_article].is_in(articles[article_id].implode()).all()
    assert tx[customer_id].str.contains(HEX64).all()
    assert tx[customer_id].is_in(customers[schema.HM_CUSTOMER_COLUMNS[0]].implode()).all()
    dates = tx[t_dat].str.to_date("%Y-%m-%d")
    assert dates.min() == SCALES["tiny"].start and dates.max() == SCALES["tiny"].end
    assert dates.is_sorted()
    prices = tx[price].cast(pl.Float64)
    assert _num(prices.min()) > 0.001 and _num(prices.max()) < 0.6
    assert set(tx[channel].unique()) == {"1", "2"}

    cid, fn, active, club, news, age, postal = schema.HM_CUSTOMER_COLUMNS
    assert customers[cid].str.contains(HEX64).all() and customers[cid].is_sorted()
    assert customers[postal].str.contains(HEX64).all()
    assert set(customers[fn].drop_nulls()) == {"1.0"}
    assert set(customers[club].drop_nulls()) <= {"ACTIVE", "PRE-CREATE", "LEFT CLUB"}
    assert set(customers[news].drop_nulls()) <= {"NONE", "Regularly", "Monthly"}
    ages = customers[age].drop_nulls()
    assert ages.str.contains(r"^[0-9]+$").all()
    assert _num(ages.cast(pl.Int64).min()) >= 16 and _num(ages.cast(pl.Int64).max()) <= 99


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path, tiny: Path) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    generate_synthetic(again, "tiny", seed=0, progress=False)
    generate_synthetic(other, "tiny", seed=1, progress=False)
    for name in FILES:
        assert (again / name).read_bytes() == (tiny / name).read_bytes(), name
        assert (other / name).read_bytes() != (tiny / name).read_bytes(), name


def test_unknown_scale_and_bad_seed_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown synthetic scale 'huge'; valid scales: \["):
        generate_synthetic(tmp_path, "huge")
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        generate_synthetic(tmp_path, "tiny", seed=-1)
    assert list(tmp_path.iterdir()) == []


def _transactions(tiny: Path) -> pl.DataFrame:
    t_dat = schema.HM_TRANSACTION_COLUMNS[0]
    return _read(tiny / schema.HM_TRANSACTIONS_CSV).with_columns(
        pl.col(t_dat).str.to_date("%Y-%m-%d")
    )


def test_weekends_are_busier(tiny: Path) -> None:
    t_dat = schema.HM_TRANSACTION_COLUMNS[0]
    per_day = _transactions(tiny).group_by(t_dat).len()
    weekend = _num(per_day.filter(pl.col(t_dat).dt.weekday() >= 6)["len"].mean())
    weekday = _num(per_day.filter(pl.col(t_dat).dt.weekday() <= 4)["len"].mean())
    assert weekend > 1.2 * weekday


def test_popularity_is_skewed(tiny: Path) -> None:
    article = schema.HM_TRANSACTION_COLUMNS[2]
    counts = _transactions(tiny)[article].value_counts(sort=True)["count"]
    top_decile = _num(counts.head(SCALES["tiny"].n_articles // 10).sum())
    assert top_decile > 0.35 * _num(counts.sum())  # ~0.2 without the Zipf law


def test_customers_have_taste_clusters(tiny: Path) -> None:
    raw = {canonical: source for source, canonical in schema.HM_ARTICLE_MAP.items()}
    article_id, section = raw[schema.ARTICLE_ID], raw[schema.SECTION]
    customer, article = schema.HM_TRANSACTION_COLUMNS[1:3]
    sections = _read(tiny / schema.HM_ARTICLES_CSV).select(
        pl.col(article_id).alias(article), pl.col(section)
    )
    per = _transactions(tiny).join(sections, on=article).group_by(customer, section).len()
    top_share = per.group_by(customer).agg(pl.col("len").max() / pl.col("len").sum())
    # 13 sections: without taste the top one would hold ~1/13 + noise of a customer's items
    assert _num(top_share["len"].mean()) > 0.5


def test_new_articles_appear_and_customers_repeat(tiny: Path) -> None:
    t_dat, customer, article = schema.HM_TRANSACTION_COLUMNS[:3]
    tx = _transactions(tiny)
    first_sale = tx.group_by(article).agg(pl.col(t_dat).min())[t_dat]
    assert (first_sale > SCALES["tiny"].start + timedelta(days=14)).sum() >= 20
    repeats = tx.height - tx.select(pl.struct(customer, article).n_unique()).item()
    assert repeats > 0.5 * tx.height


def _repurchase_share(folder: Path) -> float:
    from shoprec.features.popular import repurchase_share

    t_dat, customer, article = schema.HM_TRANSACTION_COLUMNS[:3]
    tx = _transactions(folder).select(
        pl.col(t_dat).alias(schema.T_DAT),
        pl.col(customer).alias(schema.CUSTOMER_ID),
        pl.col(article).alias(schema.ARTICLE_ID),
    )
    return repurchase_share(tx)


def test_regimes_grocery_rebuys_fashion_never_does(tmp_path: Path, tiny: Path) -> None:
    counts = {}
    for regime in ("grocery", "fashion"):
        counts[regime] = generate_synthetic(
            tmp_path / regime, "tiny", seed=0, progress=False, regime=regime
        )
    t_dat, customer, article = schema.HM_TRANSACTION_COLUMNS[:3]
    fashion = _transactions(tmp_path / "fashion")
    assert fashion.select(pl.struct(customer, article).n_unique()).item() == fashion.height
    assert counts["fashion"][schema.TRANSACTIONS] == fashion.height < SCALES["tiny"].n_transactions
    assert _repurchase_share(tmp_path / "fashion") == 0.0
    assert _repurchase_share(tmp_path / "grocery") > _repurchase_share(tiny) > 0.05
    with pytest.raises(ValueError, match=r"unknown synthetic regime 'media'.*'grocery'"):
        generate_synthetic(tmp_path, "tiny", regime="media")
