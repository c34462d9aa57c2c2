from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from shoprec import schema as s
from shoprec.config import DatasetConfig, WorkflowConfig
from shoprec.data.dataset import (
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VAL,
    build_dataset,
    choose_repurchase_length,
    load_dataset,
    make_windows,
    sample_negatives,
    window_positives,
)
from shoprec.data.ingest.canonical import Canonical
from shoprec.errors import InputDataError
from shoprec.features.build import article_features, customer_features
from shoprec.features.copurchase import copurchase_table
from shoprec.features.encode import (
    cross_features,
    encode_articles,
    encode_customers,
    fit_workflow,
    price_relative,
)
from shoprec.features.workflow import Workflow
from toydata import make_canonical


def test_customer_features_by_hand(toy: Canonical) -> None:
    cutoff = date(2020, 1, 4)  # sees 2020-01-01..03: c0 bought a0, a1, a2
    f = customer_features(toy.transactions, toy.customers, cutoff, history_length=2)
    c0 = f.filter(pl.col(s.CUSTOMER_ID) == "c0").row(0, named=True)
    assert c0[s.N_PURCHASES] == 3
    assert c0[s.N_DISTINCT_ARTICLES] == 3
    assert c0[s.DAYS_SINCE_LAST] == 1
    assert c0[s.DAYS_SINCE_FIRST] == 3
    assert c0[s.MEAN_PRICE] == pytest.approx((1 + 2 + 3) / 3)
    assert c0[s.HIST_ARTICLE_IDS] == ["a2", "a1"]  # newest first, truncated to 2
    assert c0[s.HIST_COUNTS] == [1, 1]
    assert f.height == 6


def test_repurchase_list_extends_the_history_list_in_the_same_order(toy: Canonical) -> None:
    cutoff = date(2020, 1, 4)  # c0 bought a0, a1, a2 once each (Jan 1..3)
    f = customer_features(toy.transactions, toy.customers, cutoff, 2, ["c0"], repurchase_length=3)
    c0 = f.row(0, named=True)
    assert c0[s.HIST_ARTICLE_IDS] == ["a2", "a1"]
    assert c0[s.REPURCHASE_ARTICLE_IDS] == ["a2", "a1", "a0"]
    assert c0[s.REPURCHASE_COUNTS] == [1, 1, 1]
    default = customer_features(toy.transactions, toy.customers, cutoff, 2, ["c0"])
    assert default.get_column(s.REPURCHASE_ARTICLE_IDS).to_list() == [["a2", "a1"]]  # R = N
    with pytest.raises(ValueError, match="repurchase_length must be >= 1, got 0"):
        customer_features(toy.transactions, toy.customers, cutoff, 2, repurchase_length=0)


def test_repurchase_length_is_how_deep_the_last_training_window_found_repurchases() -> None:
    from shoprec.data.dataset import MAX_REPURCHASE_LENGTH, choose_repurchase_length

    def lines(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
        """(customer, article, day of January 2020) purchase lines."""
        return pl.DataFrame(
            {
                s.CUSTOMER_ID: [r[0] for r in rows],
                s.ARTICLE_ID: [r[1] for r in rows],
                s.T_DAT: [date(2020, 1, r[2]) for r in rows],
            }
        )

    # c0 bought a000..a999 once each on Jan 1: history positions = the number (ties by id)
    history = lines([("c0", f"a{i:03d}", 1) for i in range(1000)])
    cutoff = date(2020, 1, 10)  # the window: Jan 3..9

    def chosen(bought: list[tuple[str, str, int]], n: int = 64) -> int:
        return choose_repurchase_length(pl.concat([history, lines(bought)]), cutoff, n, 7)

    # a150 again (position 150, depth 151 -> 192), c1 and "new" never bought before: ignored,
    # a999 on the cutoff day: not seen
    assert (
        chosen([("c0", "a150", 4), ("c0", "new", 4), ("c1", "a001", 5), ("c0", "a999", 10)]) == 192
    )
    assert chosen([("c0", "a150", 4)], n=256) == 256  # never below N
    assert chosen([("c0", "a001", 4)]) == 64
    assert chosen([("c0", "new", 4)]) == 64  # no repurchase (fashion): R = N
    assert chosen([("c0", "a999", 9)]) == MAX_REPURCHASE_LENGTH  # capped
    # a frequent article leads the list: a500 bought 3 times before is at position 0
    again = [("c0", "a500", 2), ("c0", "a500", 2), ("c0", "a500", 4)]
    assert chosen(again) == 64
    assert choose_repurchase_length(history, cutoff, 64, 7, configured=100) == 100
    with pytest.raises(ValueError, match="dataset.repurchase_length must be >= 1, got 0"):
        choose_repurchase_length(history, cutoff, 64, 7, configured=0)
    with pytest.raises(ValueError, match="window_days must be >= 1, got 0"):
        choose_repurchase_length(history, cutoff, 64, 0)


def _toy_workflow(toy: Canonical, cutoff: date) -> tuple[pl.DataFrame, Workflow]:
    """The toy data's customer feature rows (N = 4) as of ``cutoff``, and a workflow fitted
    on them, its article feature rows and every purchase line."""
    cust = customer_features(toy.transactions, toy.customers, cutoff, 4)
    arts = article_features(toy.transactions, toy.articles, cutoff)
    purchases = toy.transactions.join(toy.articles, on=s.ARTICLE_ID)
    return cust, fit_workflow(WorkflowConfig(), cust, arts, purchases)


def test_workflow_dense_columns_of_some_features_by_hand(toy: Canonical) -> None:
    _, wf = _toy_workflow(toy, date(2020, 1, 9))
    names = wf.dense_names(s.ARTICLE_DENSE)
    # sales_7d, sales_28d, mean price + missing, days since first sale + missing, all, trend
    assert len(names) == 8
    kept = wf.dense_columns(s.ARTICLE_DENSE, s.ITEM_TOWER_DENSE)
    assert kept == [0, 1, 2, 3, 4, 5]
    assert [names[i] for i in wf.dense_columns(s.ARTICLE_DENSE, [s.SALES_TREND])] == [s.SALES_TREND]
    with pytest.raises(KeyError, match="'nope'"):
        wf.dense_columns(s.ARTICLE_DENSE, ["nope"])


def test_customer_without_history_gets_zero_counts_and_null_recency(toy: Canonical) -> None:
    f = customer_features(toy.transactions, toy.customers, date(2020, 1, 1), 4, ["c3"])
    row = f.row(0, named=True)
    assert (row[s.N_PURCHASES], row[s.DAYS_SINCE_LAST], row[s.HIST_ARTICLE_IDS]) == (0, None, [])


def test_article_features_by_hand(toy: Canonical) -> None:
    f = article_features(toy.transactions, toy.articles, date(2020, 1, 9))
    a0 = f.filter(pl.col(s.ARTICLE_ID) == "a0").row(0, named=True)
    # a0 is bought when (day + customer) % 4 == 0: c0 on Jan 1, 5; c1 on Jan 4, 8;
    # c2 on Jan 3, 7. Cutoff Jan 9: 6 sales in 28 days, 5 in the 7 days Jan 2..8.
    assert a0[s.SALES_28D] == 6
    assert a0[s.SALES_7D] == 5
    assert a0[s.DAYS_SINCE_FIRST_SALE] == 8
    assert a0[s.ARTICLE_MEAN_PRICE] == pytest.approx(1.0)
    assert a0[s.SALES_ALL] == 6  # every sale before the cutoff
    # last week 5 against 1 sale in the three weeks before (1/3 a week)
    assert a0[s.SALES_TREND] == pytest.approx(np.log((1 + 5) / (1 + 1 / 3)))
    earlier = article_features(toy.transactions, toy.articles, date(2020, 1, 2))
    # before any of its sales but one: 1 sale all time, trend log(2 / 1)
    a0 = earlier.filter(pl.col(s.ARTICLE_ID) == "a0").row(0, named=True)
    assert (a0[s.SALES_ALL], a0[s.SALES_TREND]) == (1, pytest.approx(np.log(2.0)))


def test_price_relative_is_the_log_price_ratio_on_one_scale(toy: Canonical) -> None:
    cutoff = date(2020, 1, 9)
    cust = customer_features(toy.transactions, toy.customers, cutoff, 4)
    arts = article_features(toy.transactions, toy.articles, cutoff)
    wf = fit_workflow(
        WorkflowConfig(), cust, arts, toy.transactions.join(toy.articles, on=s.ARTICLE_ID)
    )
    c, a = encode_customers(wf, cust, 4), encode_articles(wf, arts)
    got = price_relative(c.dense[[0, 0, 3]], a.dense[[0, 1, 2]])
    raw_c = cust.get_column(s.MEAN_PRICE).to_numpy()[[0, 0, 3]]
    raw_a = arts.get_column(s.ARTICLE_MEAN_PRICE).to_numpy()[[0, 1, 2]]
    std = wf.numeric_ops[s.MEAN_PRICE].std
    want = (np.log1p(raw_a) - np.log1p(raw_c)) / std
    want = np.where(np.isnan(want), 0.0, want)  # a customer or article without a price
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got[0] != 0  # a0 costs 1, c0 paid more on average


def test_make_windows_counts_back_from_the_last_day() -> None:
    w = make_windows(date(2020, 1, 1), date(2020, 2, 11), DatasetConfig(train_windows=2))
    assert [(x.split, x.start, x.end) for x in w] == [
        (SPLIT_TEST, date(2020, 2, 5), date(2020, 2, 12)),
        (SPLIT_VAL, date(2020, 1, 29), date(2020, 2, 5)),
        (SPLIT_TRAIN, date(2020, 1, 22), date(2020, 1, 29)),
        (SPLIT_TRAIN, date(2020, 1, 15), date(2020, 1, 22)),
    ]


def test_make_windows_rejects_too_short_data() -> None:
    with pytest.raises(InputDataError, match="too short"):
        make_windows(date(2020, 1, 1), date(2020, 1, 20), DatasetConfig())


def test_negatives_never_collide_with_positives_and_are_seeded(toy: Canonical) -> None:
    windows = make_windows(date(2020, 1, 1), date(2020, 2, 11), DatasetConfig(train_windows=2))
    pos = window_positives(toy.transactions, windows[0])
    cfg = DatasetConfig(negatives_per_positive=1)
    neg1 = sample_negatives(pos, toy.transactions, windows[0].start, cfg, np.random.default_rng(1))
    neg2 = sample_negatives(pos, toy.transactions, windows[0].start, cfg, np.random.default_rng(1))
    assert neg1.equals(neg2)
    assert neg1.join(pos, on=[s.CUSTOMER_ID, s.ARTICLE_ID], how="inner").height == 0
    assert 0 < neg1.height <= pos.height
    assert neg1.is_duplicated().sum() == 0


def test_dataset_has_no_leakage_from_the_label_window(toy: Canonical, tmp_path: Path) -> None:
    """Features of every window must not change when data on/after its start changes."""
    cfg = DatasetConfig(train_windows=2, history_length=4)
    data = build_dataset(toy, cfg, tmp_path / "a")
    for w in data.windows:
        tx = toy.transactions
        future = tx.filter(pl.col(s.T_DAT) >= w.start)
        # Replace the future with different purchases (same customers, shifted articles).
        changed = future.with_columns(
            pl.lit("a7").alias(s.ARTICLE_ID), (pl.col(s.PRICE) * 10).alias(s.PRICE)
        )
        perturbed = Canonical(
            toy.articles, toy.customers, pl.concat([tx.filter(pl.col(s.T_DAT) < w.start), changed])
        )
        ids = data.customer_features.filter(pl.col(s.WINDOW) == w.index).get_column(s.CUSTOMER_ID)
        got = customer_features(
            perturbed.transactions,
            perturbed.customers,
            w.start,
            cfg.history_length,
            ids,
            repurchase_length=data.repurchase_length,
        )
        want = data.customer_features.filter(pl.col(s.WINDOW) == w.index).drop(s.WINDOW)
        assert s.REPURCHASE_ARTICLE_IDS in want.columns  # the repurchase lists
        assert got.equals(want), f"customer features of window {w.index} leak"
        if w.split != SPLIT_TRAIN and w.start == min(
            v.start for v in data.windows if v.split != SPLIT_TRAIN
        ):
            # R is chosen from the purchases before the first evaluated day only
            chosen = choose_repurchase_length(perturbed.transactions, w.start, 4, cfg.window_days)
            assert chosen == data.repurchase_length
        got_a = article_features(perturbed.transactions, perturbed.articles, w.start)
        want_a = data.article_features.filter(pl.col(s.WINDOW) == w.index).drop(s.WINDOW)
        assert {s.SALES_ALL, s.SALES_TREND} <= set(want_a.columns)  # popularity features
        assert got_a.equals(want_a), f"article features of window {w.index} leak"
        got_c = copurchase_table(
            perturbed.transactions, w.start, cfg.copurchase_days, cfg.copurchase_neighbours
        )
        assert got_c.equals(data.copurchase_of(w.index)), f"co-purchase of {w.index} leaks"


def test_leak_check_would_catch_a_feature_reading_the_label_window(toy: Canonical) -> None:
    """The comparison above fails when the cutoff is moved into the label window."""
    w_start = date(2020, 2, 5)
    honest = customer_features(toy.transactions, toy.customers, w_start, 4)
    leaky = customer_features(toy.transactions, toy.customers, w_start + timedelta(days=1), 4)
    assert not honest.equals(leaky)


def test_dataset_round_trip_and_reproducibility(toy: Canonical, tmp_path: Path) -> None:
    cfg = DatasetConfig(train_windows=2)
    a = build_dataset(toy, cfg, tmp_path / "a")
    b = build_dataset(make_canonical(), cfg, tmp_path / "b")
    assert a.examples.equals(b.examples)
    loaded = load_dataset(tmp_path / "a")
    assert loaded.examples.equals(a.examples)
    assert loaded.customer_features.equals(a.customer_features)
    assert loaded.windows == a.windows
    assert loaded.serving_cutoff == date(2020, 2, 12)
    assert loaded.latest_customers.equals(a.latest_customers) and a.latest_customers.height > 0
    # train and evaluate leave the serving snapshot's customers out: same schema, no rows
    lean = load_dataset(tmp_path / "a", latest_customers=False)
    assert lean.latest_customers.height == 0
    assert lean.latest_customers.schema == a.latest_customers.schema
    assert lean.customer_features.equals(a.customer_features)
    # export's online tables read the serving snapshot only
    snapshot = load_dataset(tmp_path / "a", windows=False)
    assert snapshot.latest_customers.equals(a.latest_customers)
    assert snapshot.latest_articles.equals(a.latest_articles)
    assert snapshot.repurchase_length == a.repurchase_length and snapshot.windows == a.windows
    for name in ("customer_features", "article_features", "examples", "copurchase"):
        frame = getattr(snapshot, name)
        assert frame.height == 0 and frame.schema == getattr(a, name).schema, name
    labels = a.examples.group_by(s.WINDOW).agg(pl.col(s.LABEL).sum().alias("p"), pl.len())
    assert labels.height == len(a.windows)


def test_cross_features_by_hand() -> None:
    hist = np.array([[5, 3, 0]])  # most recent first; 0 = padding
    counts = np.array([[2.0, 1.0, 0.0]], dtype=np.float32)
    attrs = np.zeros((8, 3), dtype=np.int64)
    attrs[3] = [1, 7, 9]
    attrs[5] = [2, 7, 9]
    attrs[6] = [2, 8, 9]
    cand = np.array([[3, 6, 4]])
    last = np.array([[3.0, 10.0, 0.0]], dtype=np.float32)  # days since the last purchase
    first = np.array([[23.0, 10.0, 0.0]], dtype=np.float32)  # days since the first purchase
    out = cross_features(hist, counts, cand, attrs, last, first)
    assert out.shape == (1, 3, 8)
    # candidate 3: bought once at position 1; same type as itself (1), group 7 shared with 5 too;
    # 10 days since its one purchase: no cycle.
    np.testing.assert_allclose(
        out[0, 0], [*(np.log1p([1, 0, 1, 3, 3]) + [0, 0.5, 0, 0, 0]), np.log1p(10), -1, -1]
    )
    # candidate 6: not bought; type 2 like article 5 (2 purchases); department 9 like both.
    np.testing.assert_allclose(out[0, 1], [*np.log1p([0, 0, 2, 0, 3]), -1, -1, -1])
    # candidate 4 has unknown attributes (0): matches nothing.
    np.testing.assert_allclose(out[0, 2], [0, 0, 0, 0, 0, -1, -1, -1])
    # article 5 bought twice, 23 and 3 days ago: cycle 20 days, due ratio 3 / 20
    again = cross_features(hist, counts, np.array([[5]]), attrs, last, first)
    np.testing.assert_allclose(again[0, 0, 5:], [np.log1p(3), np.log1p(20), 3 / 20], rtol=1e-6)
    # without the purchase days the last three are unknown (-1)
    np.testing.assert_allclose(cross_features(hist, counts, cand, attrs)[..., 5:], -1)


def test_history_order_frequency_versus_recency(toy: Canonical) -> None:
    from shoprec.config import HistoryOrder

    extra = pl.DataFrame(
        {
            s.T_DAT: [date(2019, 12, 1)] * 3,
            s.CUSTOMER_ID: ["c0"] * 3,
            s.ARTICLE_ID: ["a3"] * 3,
            s.PRICE: [1.0] * 3,
            s.QUANTITY: [1] * 3,
            s.SALES_CHANNEL_ID: [1] * 3,
        },
        schema=toy.transactions.schema,
    )
    tx = pl.concat([extra, toy.transactions])
    cutoff = date(2020, 1, 3)  # c0 bought a0 (Jan 1), a1 (Jan 2); a3 three times in 2019
    by_freq = customer_features(tx, toy.customers, cutoff, 2, ["c0"], HistoryOrder.FREQUENCY)
    by_recency = customer_features(tx, toy.customers, cutoff, 2, ["c0"], HistoryOrder.RECENCY)
    assert by_freq.get_column(s.HIST_ARTICLE_IDS).to_list() == [["a3", "a1"]]
    assert by_freq.get_column(s.HIST_COUNTS).to_list() == [[3, 1]]
    assert by_recency.get_column(s.HIST_ARTICLE_IDS).to_list() == [["a1", "a0"]]


def test_encode_customer_state_of_some_customers_equals_their_rows_of_all(toy: Canonical) -> None:
    """The online state of a subset (what an updater writes) = those rows of the snapshot."""
    from shoprec.features.state import encode_customer_state

    cutoff = date(2020, 2, 12)
    frame, wf = _toy_workflow(toy, cutoff)
    snapshot = toy.transactions.filter(pl.col(s.T_DAT) < cutoff)  # what a snapshot holds
    every = encode_customer_state(snapshot, toy.customers, cutoff, wf, 4, repurchase_length=6)
    assert every.repurchase_ids.shape == (len(every.ids), 6)
    np.testing.assert_array_equal(every.repurchase_ids[:, :4], every.hist_ids)  # same order
    ids = list(every.ids[[1, 3]])
    chosen = toy.customers.filter(pl.col(s.CUSTOMER_ID).is_in(ids))
    some = encode_customer_state(snapshot, chosen, cutoff, wf, 4, repurchase_length=6)
    expected = every.take(np.array([1, 3]))
    for name in (
        "ids", "sparse", "dense", "hist_ids", "hist_counts", "hist_last_days", "repurchase_ids",
        "repurchase_counts",
    ):  # fmt: skip
        np.testing.assert_array_equal(getattr(some, name), getattr(expected, name), err_msg=name)
    np.testing.assert_array_equal(some.hist_first_days, expected.hist_first_days)
    # days since the last purchase of a history article are counted to the cutoff
    last = frame.filter(pl.col(s.CUSTOMER_ID) == ids[0]).get_column(s.HIST_LAST_DAYS).to_list()[0]
    assert some.hist_last_days[0, : len(last)].tolist() == last and min(last) >= 1


def test_test_start_places_the_windows_and_too_few_test_customers_is_an_error(
    toy: Canonical, tmp_path: Path
) -> None:
    w = make_windows(
        date(2020, 1, 1),
        date(2020, 2, 11),
        DatasetConfig(train_windows=1, test_start="2020-02-01"),
    )
    assert [(x.split, x.start, x.end) for x in w] == [
        (SPLIT_TEST, date(2020, 2, 1), date(2020, 2, 8)),
        (SPLIT_VAL, date(2020, 1, 25), date(2020, 2, 1)),
        (SPLIT_TRAIN, date(2020, 1, 18), date(2020, 1, 25)),
    ]
    with pytest.raises(InputDataError, match="'2020-13-01' is not an ISO date"):
        make_windows(date(2020, 1, 1), date(2020, 2, 11), DatasetConfig(test_start="2020-13-01"))
    with pytest.raises(InputDataError, match="2021-01-01 is outside the transactions' days"):
        make_windows(date(2020, 1, 1), date(2020, 2, 11), DatasetConfig(test_start="2021-01-01"))
    cfg = DatasetConfig(train_windows=2, history_length=4, min_test_customers=7)
    with pytest.raises(
        InputDataError,
        match=r"holds 6 customers with a purchase, fewer than dataset.min_test_customers=7",
    ):
        build_dataset(toy, cfg, tmp_path / "few")
    assert not (tmp_path / "few").exists()


def _shuffled_ids_canonical(seed: int = 3) -> Canonical:
    """Random baskets (1-6 articles a customer-day, repeats included) over ids whose lexical
    order is neither their insertion nor their numeric order."""
    rng = np.random.default_rng(seed)
    toy = make_canonical()
    # 36 customers: the last 6 never buy
    customer_ids = [f"{p}{n}" for p, n in zip("zbbZaä" * 6, rng.permutation(36), strict=True)]
    article_ids = [f"{p}{n}" for p, n in zip("yYx0" * 6, rng.permutation(24), strict=True)]
    customers = pl.concat([toy.customers] * 6).with_columns(pl.Series(s.CUSTOMER_ID, customer_ids))
    articles = pl.concat([toy.articles] * 3).with_columns(pl.Series(s.ARTICLE_ID, article_ids))
    days, who, what = [], [], []
    for d in range(70):
        for c in rng.choice(30, size=8, replace=False):
            for a in rng.choice(24, size=int(rng.integers(1, 7))):
                days.append(date(2020, 1, 1) + timedelta(days=d))
                who.append(customer_ids[c])
                what.append(article_ids[a])
    n = len(days)
    tx = pl.DataFrame(
        {
            s.T_DAT: days,
            s.CUSTOMER_ID: who,
            s.ARTICLE_ID: what,
            s.PRICE: rng.uniform(0.01, 0.5, n),
            s.QUANTITY: [1] * n,
            s.SALES_CHANNEL_ID: rng.integers(1, 3, n),
        },
        schema=toy.transactions.schema,
    )
    return Canonical(articles=articles, customers=customers, transactions=tx)


def customer_ids_never(canonical: Canonical) -> str:
    """A customer of ``canonical`` without a transaction."""
    ids = canonical.customers.join(canonical.transactions, on=s.CUSTOMER_ID, how="anti")
    return str(ids[s.CUSTOMER_ID][0])


def test_features_on_id_codes_equal_the_features_on_the_id_strings() -> None:
    from shoprec.config import HistoryOrder
    from shoprec.data.dataset import IdCodes, Window

    strings = _shuffled_ids_canonical()
    codes = IdCodes.of(strings)
    assert codes.customer.categories.to_list() == sorted(strings.customers[s.CUSTOMER_ID])
    coded = codes.encode(strings)
    decode = IdCodes.decode
    cutoff = date(2020, 2, 20)
    # a subset with a customer who never bought and an id no table holds
    some = [*strings.customers[s.CUSTOMER_ID].head(12), customer_ids_never(strings), "no-such-id"]
    for order in HistoryOrder:
        for ids in (None, some):
            want = customer_features(
                strings.transactions, strings.customers, cutoff, 5, ids, order, 9
            )
            got = customer_features(coded.transactions, coded.customers, cutoff, 5, ids, order, 9)
            assert want.height > 0 and got.schema[s.HIST_ARTICLE_IDS] != pl.List(pl.String)
            assert_frame_equal(decode(got), want)  # values and dtypes
    want = copurchase_table(strings.transactions, cutoff, 28, 4)
    assert want.height > 0
    assert_frame_equal(decode(copurchase_table(coded.transactions, cutoff, 28, 4)), want)
    want = article_features(strings.transactions, strings.articles, cutoff)
    assert_frame_equal(decode(article_features(coded.transactions, coded.articles, cutoff)), want)
    window = Window(0, SPLIT_TEST, cutoff, cutoff + timedelta(days=7))
    cfg = DatasetConfig(negatives_per_positive=3)

    def negatives(tx: pl.DataFrame) -> pl.DataFrame:
        pos = window_positives(tx, window)
        return sample_negatives(pos, tx, cutoff, cfg, np.random.default_rng(5))

    want = negatives(strings.transactions)
    assert want.height > 0
    assert_frame_equal(decode(negatives(coded.transactions)), want)
    assert_frame_equal(decode(coded.transactions), strings.transactions)
    for order in HistoryOrder:
        depth = [
            choose_repurchase_length(c.transactions, cutoff, 2, 7, order) for c in (strings, coded)
        ]
        assert depth[0] == depth[1]
