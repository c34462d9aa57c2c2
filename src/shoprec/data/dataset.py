"""Chronological split into windows, ranking labels and negative sampling.

Windows count back from the last transaction date: window 0 (test) is the last
``window_days`` days, window 1 (validation) the ``window_days`` before it, windows 2..
are training windows. Every feature of a window is computed as of its first day, from
transactions strictly before it, so labels never leak into features. The serving snapshot
uses the day after the last transaction as its cutoff.

Negatives follow the reference H&M/Merlin design: for each positive (customer, article)
pair, ``negatives_per_positive`` articles are drawn for the same (recently active) customer
from the article popularity distribution of the ``popularity_days`` before the cutoff,
excluding that customer's positives in the window.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shoprec import schema as s
from shoprec.config import DatasetConfig, HistoryOrder
from shoprec.data.ingest.canonical import Canonical
from shoprec.errors import ArtifactError, InputDataError
from shoprec.features.build import (
    article_features,
    customer_features,
    history_pairs,
    transactions_before,
)
from shoprec.features.copurchase import copurchase_table

SPLIT_TEST = "test"
SPLIT_VAL = "val"
SPLIT_TRAIN = "train"

CUSTOMER_FEATURES_FILE = "customer_features.parquet"
ARTICLE_FEATURES_FILE = "article_features.parquet"
EXAMPLES_FILE = "examples.parquet"
WINDOWS_FILE = "windows.json"
LATEST_CUSTOMERS_FILE = "customer_features_latest.parquet"
LATEST_ARTICLES_FILE = "article_features_latest.parquet"
COPURCHASE_FILE = "copurchase.parquet"
SERVING_WINDOW = -1  # the WINDOW value of the serving snapshot's co-purchase table
# choose_repurchase_length: R holds this share of the repurchases of the last training window ...
REPURCHASE_COVERAGE = 0.95
REPURCHASE_STEP = 64  # ... rounded up to a multiple of this ...
MAX_REPURCHASE_LENGTH = 512  # ... and at most this (candidates the ranker scores per customer)


@dataclass(frozen=True)
class Window:
    """A label window ``[start, end)``; its features are as of ``start``."""

    index: int
    split: str
    start: date
    end: date

    def to_dict(self) -> dict[str, str | int]:
        d = asdict(self)
        return {**d, "start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_dict(cls, d: dict) -> Window:
        return cls(
            int(d["index"]),
            str(d["split"]),
            date.fromisoformat(d["start"]),
            date.fromisoformat(d["end"]),
        )


def make_windows(first_day: date, last_day: date, config: DatasetConfig) -> list[Window]:
    """Windows counting back from ``last_day`` (inclusive), test first.

    Raises:
        InputDataError: the data spans too few days for test + validation + one training
            window after at least one window of history.
    """
    if config.window_days < 1 or config.train_windows < 1:
        raise ValueError(
            f"window_days and train_windows must be >= 1, got {config.window_days}, "
            f"{config.train_windows}"
        )
    end = last_day + timedelta(days=1)
    width = timedelta(days=config.window_days)
    if config.test_start is not None:
        try:
            start = date.fromisoformat(config.test_start)
        except ValueError as exc:
            raise InputDataError(
                f"dataset.test_start: {config.test_start!r} is not an ISO date (YYYY-MM-DD)"
            ) from exc
        if not first_day < start <= last_day:
            raise InputDataError(
                f"dataset.test_start: {start} is outside the transactions' days "
                f"{first_day}..{last_day} (the test window must start on a day with data after "
                "the first)"
            )
        end = start + width  # data after the test window is left out of every window
    windows: list[Window] = []
    for i in range(config.train_windows + 2):
        start = end - width
        if start - width < first_day:  # a window needs at least one window of history
            break
        split = SPLIT_TEST if i == 0 else SPLIT_VAL if i == 1 else SPLIT_TRAIN
        windows.append(Window(i, split, start, end))
        end = start
    if len(windows) < 3:
        raise InputDataError(
            f"transactions span {first_day}..{last_day}: too short for test, validation and "
            f"one training window of {config.window_days} days plus history"
        )
    return windows


def window_positives(transactions: pl.DataFrame, window: Window) -> pl.DataFrame:
    """Distinct (customer, article) pairs purchased in the window, sorted."""
    return (
        transactions.filter((pl.col(s.T_DAT) >= window.start) & (pl.col(s.T_DAT) < window.end))
        .select(s.CUSTOMER_ID, s.ARTICLE_ID)
        .unique()
        .sort([s.CUSTOMER_ID, s.ARTICLE_ID])
    )


def sample_negatives(
    positives: pl.DataFrame,
    transactions: pl.DataFrame,
    cutoff: date,
    config: DatasetConfig,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Popularity-sampled negatives for the positives' customers.

    Args:
        positives: (customer_id, article_id) pairs of the window.
        transactions: all transactions; only the ``popularity_days`` before ``cutoff`` are read
            (all history before ``cutoff`` if that period is empty).
        cutoff: the window's first day.

    Returns:
        (customer_id, article_id) pairs, about ``negatives_per_positive`` per positive, none of
        which is a positive of the window, without duplicates.
    """
    history = transactions_before(transactions, cutoff)
    recent = history.filter(pl.col(s.T_DAT) >= cutoff - timedelta(days=config.popularity_days))
    if recent.height == 0:
        recent = history
    pop = recent.group_by(s.ARTICLE_ID).len().sort(s.ARTICLE_ID)
    if pop.height == 0:
        raise InputDataError(f"no transactions before {cutoff} to sample negatives from")
    if positives.height == 0:
        return positives.select(s.CUSTOMER_ID, s.ARTICLE_ID)
    p = pop.get_column("len").to_numpy().astype(np.float64)
    n = positives.height * config.negatives_per_positive
    # Oversample by 50% so that dropping collisions with positives still leaves enough.
    draw = rng.choice(pop.height, size=int(n * 1.5) + 16, p=p / p.sum())
    # Each positive's customer in turn, cycling: a customer gets negatives pro rata. Gathered
    # from the columns, so the ids keep their dtype (strings, or build_dataset's id codes).
    cycle = np.arange(len(draw)) % positives.height
    cand = pl.DataFrame(
        [
            positives.get_column(s.CUSTOMER_ID).gather(cycle),
            pop.get_column(s.ARTICLE_ID).gather(draw),
        ]
    )
    cand = cand.join(positives, on=[s.CUSTOMER_ID, s.ARTICLE_ID], how="anti")
    cand = cand.unique(maintain_order=True)
    return cand.head(n).sort([s.CUSTOMER_ID, s.ARTICLE_ID])


@dataclass(frozen=True)
class IdCodes:
    """Customer and article ids as ``pl.Enum`` codes whose categories are the sorted distinct
    ids: grouping, joining and sorting by id then read a 4-byte code instead of the id string
    (64 characters per H&M customer), and sort in the strings' (lexical) order, so every
    feature computed on coded tables equals the one computed on the strings once
    :meth:`decode` has turned the codes back (``tests/test_features.py`` checks it).
    ``build_dataset`` works on coded tables; its files hold strings."""

    customer: pl.Enum
    article: pl.Enum

    @classmethod
    def of(cls, canonical: Canonical) -> IdCodes:
        """Codes for every id of the customers, articles and transactions tables."""

        def categories(table: pl.DataFrame, column: str) -> pl.Series:
            ids = [table.get_column(column), canonical.transactions.get_column(column)]
            return pl.concat(ids).unique().sort()

        return cls(
            pl.Enum(categories(canonical.customers, s.CUSTOMER_ID)),
            pl.Enum(categories(canonical.articles, s.ARTICLE_ID)),
        )

    def encode(self, canonical: Canonical) -> Canonical:
        """The three tables with their id columns coded (the other columns shared)."""
        customer = pl.col(s.CUSTOMER_ID).cast(self.customer)
        article = pl.col(s.ARTICLE_ID).cast(self.article)
        return Canonical(
            articles=canonical.articles.with_columns(article),
            customers=canonical.customers.with_columns(customer),
            transactions=canonical.transactions.with_columns(customer, article),
        )

    @staticmethod
    def decode(frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with every ``pl.Enum`` column, and list of them, turned back into
        strings (``pl.String``, ``pl.List(pl.String)``); other columns unchanged."""
        decoded = []
        for name, dtype in frame.schema.items():
            if isinstance(dtype, pl.Enum):
                decoded.append(pl.col(name).cast(pl.String))
            elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Enum):
                decoded.append(pl.col(name).cast(pl.List(pl.String)))
        return frame.with_columns(decoded)


@dataclass
class DatasetArtifacts:
    """The labelled dataset as loaded from disk (all frames are polars)."""

    windows: list[Window]
    customer_features: pl.DataFrame  # WINDOW + customer_features() columns
    article_features: pl.DataFrame  # WINDOW + article_features() columns
    examples: pl.DataFrame  # WINDOW, CUSTOMER_ID, ARTICLE_ID, LABEL
    latest_customers: pl.DataFrame  # serving snapshot (cutoff = day after the last purchase)
    latest_articles: pl.DataFrame
    serving_cutoff: date
    # WINDOW (SERVING_WINDOW = the snapshot) + ``features.copurchase.copurchase_table`` columns
    copurchase: pl.DataFrame
    repurchase_length: int  # R of the repurchase lists (``choose_repurchase_length``)

    def copurchase_of(self, window: int) -> pl.DataFrame:
        """The co-purchase table as of ``window``'s first day (``SERVING_WINDOW``: snapshot)."""
        return self.copurchase.filter(pl.col(s.WINDOW) == window).drop(s.WINDOW)

    def window(self, split: str) -> list[Window]:
        return [w for w in self.windows if w.split == split]


def choose_repurchase_length(
    transactions: pl.DataFrame,
    cutoff: date,
    history_length: int,
    window_days: int,
    history_order: HistoryOrder = HistoryOrder.FREQUENCY,
    configured: int | None = None,
) -> int:
    """R, the length of every customer's repurchase list (what the history candidate source
    reads): ``configured`` when given, else chosen from the purchases before ``cutoff`` (the
    first validation day, so the choice never sees evaluated purchases).

    The chosen R is how deep in their history lists customers found what they bought again:
    over the ``window_days`` before ``cutoff``, every purchase of an article the customer had
    bought before that window is a repurchase, at some position of their history list as of
    the window's start (``history_order``, as ``features.build.customer_features`` orders
    it); R is the :data:`REPURCHASE_COVERAGE` quantile of those positions + 1, rounded up to a
    multiple of :data:`REPURCHASE_STEP`, clipped to [``history_length``, max(``history_length``,
    :data:`MAX_REPURCHASE_LENGTH`)]. No repurchase (a fashion-like catalog) gives R = N; a
    grocery catalog gets a deep list.

    Raises:
        ValueError: ``configured < 1`` or ``window_days < 1`` (the value is named).
    """
    if configured is not None:
        if configured < 1:
            raise ValueError(f"dataset.repurchase_length must be >= 1, got {configured}")
        return configured
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    start = cutoff - timedelta(days=window_days)
    bought = (
        transactions.filter((pl.col(s.T_DAT) >= start) & (pl.col(s.T_DAT) < cutoff))
        .select(s.CUSTOMER_ID, s.ARTICLE_ID)
        .unique()
    )
    # only the window's buyers have positions to find: their lines alone are grouped (a week's
    # buyers are a small share of every customer at H&M size)
    buyers_history = transactions_before(transactions, start).join(
        bought.select(s.CUSTOMER_ID).unique(), on=s.CUSTOMER_ID, how="semi"
    )
    ranked = history_pairs(buyers_history, history_order).with_columns(
        pl.int_range(pl.len()).over(s.CUSTOMER_ID).alias("_position")
    )
    positions = bought.join(ranked, on=[s.CUSTOMER_ID, s.ARTICLE_ID]).get_column("_position")
    if positions.len() == 0:
        return history_length
    depth = float(np.quantile(positions.to_numpy() + 1, REPURCHASE_COVERAGE))
    steps = int(np.ceil(depth / REPURCHASE_STEP))
    most = max(history_length, MAX_REPURCHASE_LENGTH)
    return int(np.clip(steps * REPURCHASE_STEP, history_length, most))


def build_dataset(canonical: Canonical, config: DatasetConfig, out_dir: Path) -> DatasetArtifacts:
    """Build windows, features as of each window start, labelled examples and the serving
    snapshot, and write them as Parquet under ``out_dir``.

    The test window gets features for every customer who buys in it; its examples (positives
    plus sampled negatives) are the labelled test set of the ranker. Every feature is
    computed on the tables with :class:`IdCodes` ids and written with string ids.
    """
    if canonical.transactions.height == 0:
        raise InputDataError("transactions table is empty")
    canonical = IdCodes.of(canonical).encode(canonical)
    tx = canonical.transactions
    first_day, last_day = _date(tx.get_column(s.T_DAT).min()), _date(tx.get_column(s.T_DAT).max())
    windows = make_windows(first_day, last_day, config)
    (test,) = [w for w in windows if w.split == SPLIT_TEST]
    buyers = window_positives(tx, test).get_column(s.CUSTOMER_ID).n_unique()
    if buyers < config.min_test_customers:
        raise InputDataError(
            f"the test window {test.start}..{test.end} (exclusive) holds {buyers} customers "
            f"with a purchase, fewer than dataset.min_test_customers={config.min_test_customers}:"
            " widen dataset.window_days, move dataset.test_start (--test-start), or lower "
            "dataset.min_test_customers"
        )
    first_eval = min(w.start for w in windows if w.split != SPLIT_TRAIN)
    repurchase = choose_repurchase_length(
        tx,
        first_eval,
        config.history_length,
        config.window_days,
        config.history_order,
        config.repurchase_length,
    )
    rng = np.random.default_rng(config.seed)
    cust_frames, art_frames, ex_frames, co_frames = [], [], [], []

    def copurchase(cutoff: date, index: int) -> pl.DataFrame:
        table = copurchase_table(tx, cutoff, config.copurchase_days, config.copurchase_neighbours)
        return table.with_columns(pl.lit(index, dtype=pl.Int32).alias(s.WINDOW))

    for w in windows:
        co_frames.append(copurchase(w.start, w.index))
        pos = window_positives(tx, w)
        neg = sample_negatives(pos, tx, w.start, config, rng)
        ex_frames.append(
            pl.concat(
                [
                    pos.with_columns(pl.lit(1, dtype=pl.Int8).alias(s.LABEL)),
                    neg.with_columns(pl.lit(0, dtype=pl.Int8).alias(s.LABEL)),
                ]
            ).with_columns(pl.lit(w.index, dtype=pl.Int32).alias(s.WINDOW))
        )
        ids = pos.get_column(s.CUSTOMER_ID).unique()
        cust_frames.append(
            customer_features(
                tx,
                canonical.customers,
                w.start,
                config.history_length,
                ids,
                config.history_order,
                repurchase,
            ).with_columns(pl.lit(w.index, dtype=pl.Int32).alias(s.WINDOW))
        )
        art_frames.append(
            article_features(tx, canonical.articles, w.start).with_columns(
                pl.lit(w.index, dtype=pl.Int32).alias(s.WINDOW)
            )
        )
    serving_cutoff = last_day + timedelta(days=1)
    co_frames.append(copurchase(serving_cutoff, SERVING_WINDOW))
    decode = IdCodes.decode
    art = DatasetArtifacts(
        windows=windows,
        customer_features=decode(pl.concat(cust_frames)),
        article_features=decode(pl.concat(art_frames)),
        examples=decode(pl.concat(ex_frames)).select(
            s.WINDOW, s.CUSTOMER_ID, s.ARTICLE_ID, s.LABEL
        ),
        latest_customers=decode(
            customer_features(
                tx,
                canonical.customers,
                serving_cutoff,
                config.history_length,
                history_order=config.history_order,
                repurchase_length=repurchase,
            )
        ),
        latest_articles=decode(article_features(tx, canonical.articles, serving_cutoff)),
        serving_cutoff=serving_cutoff,
        copurchase=decode(pl.concat(co_frames)),
        repurchase_length=repurchase,
    )
    _write(art, out_dir)
    return art


def _date(value: object) -> date:
    if not isinstance(value, date):
        raise InputDataError(f"transactions: column {s.T_DAT!r} holds {value!r}, not a date")
    return value


def _write(art: DatasetArtifacts, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    art.customer_features.write_parquet(out_dir / CUSTOMER_FEATURES_FILE)
    art.article_features.write_parquet(out_dir / ARTICLE_FEATURES_FILE)
    art.examples.write_parquet(out_dir / EXAMPLES_FILE)
    art.latest_customers.write_parquet(out_dir / LATEST_CUSTOMERS_FILE)
    art.latest_articles.write_parquet(out_dir / LATEST_ARTICLES_FILE)
    art.copurchase.write_parquet(out_dir / COPURCHASE_FILE)
    meta = {
        "windows": [w.to_dict() for w in art.windows],
        "serving_cutoff": art.serving_cutoff.isoformat(),
        "repurchase_length": art.repurchase_length,
    }
    (out_dir / WINDOWS_FILE).write_text(json.dumps(meta, indent=2))


def _read(path: Path, rows: bool) -> pl.DataFrame:
    """The Parquet file at ``path``, or (``rows=False``) an empty frame of its schema."""
    return pl.read_parquet(path) if rows else pl.DataFrame(schema=pl.read_parquet_schema(path))


def load_dataset(
    out_dir: Path, latest_customers: bool = True, windows: bool = True
) -> DatasetArtifacts:
    """Load what ``build_dataset`` wrote; ``latest_customers=False`` leaves the serving
    snapshot's customers out (what only ``export`` reads, 1.5 GiB at H&M size),
    ``windows=False`` the windows' customer and article features, examples and co-purchase
    tables (what only ``train`` and ``evaluate`` read, 3.3 GiB at H&M size): empty frames of
    their schemas. Raises ``ArtifactError`` naming a missing file."""
    files = (
        WINDOWS_FILE,
        CUSTOMER_FEATURES_FILE,
        ARTICLE_FEATURES_FILE,
        EXAMPLES_FILE,
        LATEST_CUSTOMERS_FILE,
        LATEST_ARTICLES_FILE,
        COPURCHASE_FILE,
    )
    for f in files:
        if not (out_dir / f).exists():
            raise ArtifactError(f"{out_dir / f} not found (run `shoprec build-dataset` first)")
    meta = json.loads((out_dir / WINDOWS_FILE).read_text())
    return DatasetArtifacts(
        windows=[Window.from_dict(d) for d in meta["windows"]],
        customer_features=_read(out_dir / CUSTOMER_FEATURES_FILE, windows),
        article_features=_read(out_dir / ARTICLE_FEATURES_FILE, windows),
        examples=_read(out_dir / EXAMPLES_FILE, windows),
        latest_customers=_read(out_dir / LATEST_CUSTOMERS_FILE, latest_customers),
        latest_articles=pl.read_parquet(out_dir / LATEST_ARTICLES_FILE),
        serving_cutoff=date.fromisoformat(meta["serving_cutoff"]),
        copurchase=_read(out_dir / COPURCHASE_FILE, windows),
        repurchase_length=_repurchase_length(meta, out_dir),
    )


def _repurchase_length(meta: dict[str, Any], out_dir: Path) -> int:
    if "repurchase_length" not in meta:
        raise ArtifactError(
            f"{out_dir / WINDOWS_FILE} names no repurchase_length (a dataset built before the "
            "repurchase lists): run `shoprec build-dataset` again"
        )
    return int(meta["repurchase_length"])


def dataset_summary(data: DatasetArtifacts) -> list[dict[str, Any]]:
    """Per window: split, dates, positives, negatives, customers."""
    counts = data.examples.group_by(s.WINDOW).agg(
        (pl.col(s.LABEL) == 1).sum().alias("positives"),
        (pl.col(s.LABEL) == 0).sum().alias("negatives"),
        pl.col(s.CUSTOMER_ID).n_unique().alias("customers"),
    )
    by_w = {r[s.WINDOW]: r for r in counts.iter_rows(named=True)}
    return [
        {
            "window": w.index,
            "split": w.split,
            "start": w.start.isoformat(),
            "end": w.end.isoformat(),
            **{k: by_w[w.index][k] for k in ("positives", "negatives", "customers")},
        }
        for w in data.windows
    ]
