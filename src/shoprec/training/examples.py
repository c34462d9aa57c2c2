"""Ranker training examples mined from retrieval: candidates of a window, labelled by purchases.

Shape letters: B = customers, C = candidates per customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from shoprec import schema as s
from shoprec.config import PipelineConfig, RankerNegatives
from shoprec.data.dataset import SPLIT_TRAIN, SPLIT_VAL, DatasetArtifacts
from shoprec.features.assemble import ExampleBlocks, RankingInputs
from shoprec.features.copurchase import copurchase_arrays
from shoprec.features.popular import popular_articles
from shoprec.features.workflow import Workflow
from shoprec.inference.candidates import PAD, vocab_to_row
from shoprec.inference.index import build_index
from shoprec.inference.sources import (
    AnnSource,
    CandidateSource,
    CoPurchaseSource,
    HistorySource,
    PopularSource,
    SourceQuery,
    union_candidates,
)
from shoprec.training.encoded import EncodedDataset
from shoprec.training.two_tower import embed_items, embed_queries


def window_ids(data: DatasetArtifacts, split: str) -> list[int]:
    return [w.index for w in data.window(split)]


def indexable_articles(data: DatasetArtifacts, window: int) -> pl.Series:
    """Article ids sold before the window's cutoff: the ANN index's catalog for it."""
    return data.article_features.filter(
        (pl.col(s.WINDOW) == window) & pl.col(s.DAYS_SINCE_FIRST_SALE).is_not_null()
    ).get_column(s.ARTICLE_ID)


def article_rows(enc: EncodedDataset, window: int, ids: pl.Series) -> np.ndarray:
    return (
        enc.article_index.filter(
            (pl.col(s.WINDOW) == window) & pl.col(s.ARTICLE_ID).is_in(ids.implode())
        )
        .get_column("_row")
        .to_numpy()
        .astype(np.int64)
    )


@dataclass
class WindowCandidates:
    """Candidate retrieval of a window's customers (``inference.sources.union_candidates``).

    Attributes:
        customer_rows: int64 (B,) rows of ``EncodedDataset.customers``.
        candidates: int64 (B, C) article rows, PAD for none and repeats.
        features: float32 (B, C, len(schema.SOURCE_DENSE)) per-source score and reciprocal rank.
        by_source: each source's own article rows int64 (B, c), by source name.
    """

    customer_rows: np.ndarray
    candidates: np.ndarray
    features: np.ndarray
    by_source: dict[str, np.ndarray]


def window_sources(
    two_tower: Any,
    enc: EncodedDataset,
    data: DatasetArtifacts,
    window: int,
    config: PipelineConfig,
) -> list[CandidateSource]:
    """The candidate sources as of ``window``'s first day (``EvalConfig`` sets which and how
    many): ANN over the articles sold before it, the history, the window's co-purchase table
    and its last-week best sellers."""
    index_rows = article_rows(enc, window, indexable_articles(data, window))
    index = build_index(embed_items(two_tower, enc.articles, index_rows), config.index)
    card = two_tower.item_tower.article_table.num_embeddings
    window_rows = enc.window_articles(window)
    hist_map = vocab_to_row(enc.articles, window_rows, card)
    ev = config.eval
    sources: list[CandidateSource] = [AnnSource(index, index_rows, ev.candidates)]
    if ev.history_candidates:
        sources.append(HistorySource(hist_map))
    if ev.copurchase_candidates > 0:
        nb, w = copurchase_arrays(
            data.copurchase_of(window),
            enc.articles.ids[window_rows],
            enc.articles.sparse[window_rows, 0],
            card,
            config.dataset.copurchase_neighbours,
        )
        sources.append(CoPurchaseSource(nb, w, hist_map, ev.copurchase_candidates))
    if ev.popular_candidates > 0:
        pop = popular_articles(
            data.article_features.filter(pl.col(s.WINDOW) == window), ev.popular_candidates
        )
        rows = article_rows(enc, window, pop.get_column(s.ARTICLE_ID))
        order = {a: i for i, a in enumerate(pop.get_column(s.ARTICLE_ID).to_list())}
        rows = rows[np.argsort([order[a] for a in enc.articles.ids[rows]], kind="stable")]
        sales = np.log1p(pop.get_column(s.SALES_7D).to_numpy().astype(np.float32))
        sources.append(PopularSource(rows, sales[: len(rows)], ev.popular_candidates))
    return sources


def window_candidates(
    two_tower: Any,
    enc: EncodedDataset,
    data: DatasetArtifacts,
    window: int,
    config: PipelineConfig,
    customer_rows: np.ndarray | None = None,
) -> WindowCandidates:
    """Candidate retrieval for the customers of a window (default all), as of its first day,
    from every source of :func:`window_sources`."""
    cust_rows = enc.window_customers(window) if customer_rows is None else customer_rows
    sources = window_sources(two_tower, enc, data, window, config)
    query = SourceQuery(
        embed_queries(two_tower, enc.customers, cust_rows),
        enc.customers.hist_ids[cust_rows],
        enc.customers.hist_counts[cust_rows],
        enc.customers.repurchase_ids[cust_rows],
        enc.customers.repurchase_counts[cust_rows],
    )
    cands, feats, by_source = union_candidates(sources, query)
    return WindowCandidates(cust_rows, cands, feats, by_source)


def source_columns(features: np.ndarray) -> dict[str, np.ndarray]:
    """float32 (M, len(SOURCE_DENSE)) -> example-frame columns named ``schema.SOURCE_DENSE``."""
    return {name: features[:, j] for j, name in enumerate(s.SOURCE_DENSE)}


def example_inputs(enc: EncodedDataset, examples: pl.DataFrame) -> RankingInputs:
    """Ranker inputs of an example frame; its ``schema.SOURCE_DENSE`` columns (when present,
    as :func:`candidate_examples` writes them) are the source features, else all 0."""
    rows = example_rows(enc, examples)
    return rows.slice(0, len(rows))


@dataclass
class ExampleRows:
    """M ranker examples held compactly: the (customer, article) rows of each and its source
    features; the ``RankingInputs`` are assembled a block at a time (``slice``, ``take``).

    What training holds for millions of examples (H&M size): 2 x 4 bytes of rows + 32 of
    source features per example, against about 800 for ``RankingInputs`` (its history ids
    alone are 8 N bytes). Satisfies ``features.assemble.ExampleBlocks``.

    Attributes:
        enc: the encoded dataset the rows point into.
        customer_rows, article_rows: int32 (M,) rows of ``enc.customers`` / ``enc.articles``.
        source_features: float32 (M, len(schema.SOURCE_DENSE)).
    """

    enc: EncodedDataset
    customer_rows: np.ndarray
    article_rows: np.ndarray
    source_features: np.ndarray

    def __len__(self) -> int:
        return len(self.customer_rows)

    @property
    def num_dense(self) -> int:
        """Fd of the assembled inputs."""
        return int(self.slice(0, 0).dense.shape[1])

    @property
    def num_sparse(self) -> int:
        """Fs of the assembled inputs."""
        return int(self.slice(0, 0).sparse.shape[1])

    def slice(self, start: int, stop: int) -> RankingInputs:
        """``RankingInputs`` of examples ``start:stop``."""
        return self.take(np.arange(start, min(stop, len(self)), dtype=np.int64))

    def take(self, index: np.ndarray) -> RankingInputs:
        """``RankingInputs`` of examples ``index`` (int (B,))."""
        return self.enc.ranking_inputs(
            self.customer_rows[index].astype(np.int64),
            self.article_rows[index].astype(np.int64),
            self.source_features[index],
        )


def example_rows(enc: EncodedDataset, examples: pl.DataFrame) -> ExampleRows:
    """:class:`ExampleRows` of an example frame; its ``schema.SOURCE_DENSE`` columns (when
    present, as :func:`candidate_examples` writes them) are the source features, else all 0.

    Raises:
        KeyError: an example's customer or article has no features in its window.
    """
    if all(name in examples.columns for name in s.SOURCE_DENSE):
        feats = examples.select(s.SOURCE_DENSE).to_numpy().astype(np.float32)
    else:
        feats = np.zeros((examples.height, len(s.SOURCE_DENSE)), dtype=np.float32)
    c_rows, a_rows = enc.rows(examples)
    return ExampleRows(enc, c_rows.astype(np.int32), a_rows.astype(np.int32), feats)


def candidate_examples(
    two_tower: Any,
    enc: EncodedDataset,
    data: DatasetArtifacts,
    window: int,
    config: PipelineConfig,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Ranker examples from retrieval: every purchased candidate (label 1) and up to
    ``candidate_negatives`` retrieved, not purchased candidates per customer (label 0), for at
    most ``max_customers_per_window`` customers (a seeded sample). Columns: WINDOW,
    CUSTOMER_ID, ARTICLE_ID, LABEL and the candidate's ``schema.SOURCE_DENSE``."""
    rows = enc.window_customers(window)
    if len(rows) > config.ranker.max_customers_per_window:
        rows = np.sort(rng.choice(rows, config.ranker.max_customers_per_window, replace=False))
    wc = window_candidates(two_tower, enc, data, window, config, rows)
    b, c = np.nonzero(wc.candidates != PAD)
    pairs = pl.DataFrame(
        {
            s.WINDOW: np.full(len(b), window, dtype=np.int32),
            s.CUSTOMER_ID: enc.customers.ids[wc.customer_rows[b]].astype(str),
            s.ARTICLE_ID: enc.articles.ids[wc.candidates[b, c]].astype(str),
            "_random": rng.random(len(b)),
            **source_columns(wc.features[b, c]),
        }
    )
    positives = data.examples.filter((pl.col(s.WINDOW) == window) & (pl.col(s.LABEL) == 1)).select(
        s.CUSTOMER_ID, s.ARTICLE_ID, s.LABEL
    )
    labelled = pairs.join(positives, on=[s.CUSTOMER_ID, s.ARTICLE_ID], how="left").with_columns(
        pl.col(s.LABEL).fill_null(0).cast(pl.Int8)
    )
    negatives = (
        labelled.filter(pl.col(s.LABEL) == 0)
        .sort("_random")
        .filter(pl.int_range(pl.len()).over(s.CUSTOMER_ID) < config.ranker.candidate_negatives)
    )
    return (
        pl.concat([labelled.filter(pl.col(s.LABEL) == 1), negatives])
        .sort([s.CUSTOMER_ID, s.ARTICLE_ID])
        .select(s.WINDOW, s.CUSTOMER_ID, s.ARTICLE_ID, s.LABEL, *s.SOURCE_DENSE)
    )


def ranker_examples(
    two_tower: Any, enc: EncodedDataset, data: DatasetArtifacts, config: PipelineConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rankers' (training, validation) examples: WINDOW, CUSTOMER_ID, ARTICLE_ID, LABEL.

    ``config.ranker.negatives`` picks the negatives: retrieved, not purchased candidates of the
    Two-Tower (seeded by ``config.ranker.seed``) or the labelled dataset's sampled ones. Every
    ranker (``shoprec train``'s DLRM, ``shoprec compare-rankers``) trains on these.
    """
    train_w, (val_w,) = window_ids(data, SPLIT_TRAIN), window_ids(data, SPLIT_VAL)
    if config.ranker.negatives is RankerNegatives.CANDIDATES:
        rng = np.random.default_rng(config.ranker.seed)
        tr = pl.concat([candidate_examples(two_tower, enc, data, w, config, rng) for w in train_w])
        va = candidate_examples(two_tower, enc, data, val_w, config, rng)
    else:
        ex = data.examples
        tr, va = ex.filter(pl.col(s.WINDOW).is_in(train_w)), ex.filter(pl.col(s.WINDOW) == val_w)
    order = [s.WINDOW, s.CUSTOMER_ID, s.ARTICLE_ID]
    return tr.sort(order), va.sort(order)


def example_groups(examples: pl.DataFrame) -> np.ndarray:
    """int64 (G,) sizes of the runs of consecutive rows with one (WINDOW, CUSTOMER_ID): the
    query groups of a learning-to-rank objective (frames from :func:`ranker_examples`)."""
    if examples.height == 0:
        return np.zeros(0, dtype=np.int64)
    keys = examples.select(s.WINDOW, s.CUSTOMER_ID)
    new = keys.select(
        (
            (pl.col(s.WINDOW) != pl.col(s.WINDOW).shift(1))
            | (pl.col(s.CUSTOMER_ID) != pl.col(s.CUSTOMER_ID).shift(1))
        )
        .fill_null(True)
        .alias("_new")
    ).get_column("_new")
    return np.bincount(new.cum_sum().to_numpy() - 1).astype(np.int64)


def ranker_widths(wf: Workflow, inputs: ExampleBlocks) -> tuple[list[int], int]:
    """(F sparse table sizes, Fd) of the rankers' inputs under the fitted workflow."""
    return (
        wf.cardinalities(s.CUSTOMER_SPARSE) + wf.cardinalities(s.ARTICLE_SPARSE),
        inputs.num_dense,
    )
