"""Ranker training examples mined from retrieval: candidates of a window, labelled by purchases.

Shape letters: B = customers, C = candidates per customer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from shoprec import schema as s
from shoprec.config import PipelineConfig, RankerNegatives
from shoprec.data.dataset import SPLIT_TRAIN, SPLIT_VAL, DatasetArtifacts
from shoprec.features.assemble import RankingInputs
from shoprec.features.workflow import Workflow
from shoprec.inference.candidates import PAD, retrieve_candidates, vocab_to_row
from shoprec.inference.index import build_index
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
        enc.article_index.filter((pl.col(s.WINDOW) == window) & pl.col(s.ARTICLE_ID).is_in(ids))
        .get_column("_row")
        .to_numpy()
        .astype(np.int64)
    )


def window_candidates(
    two_tower: Any,
    enc: EncodedDataset,
    data: DatasetArtifacts,
    window: int,
    config: PipelineConfig,
    customer_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate retrieval for the customers of a window (default all), as of its first day.

    Returns (customer rows int64 (B,), candidate article rows int64 (B, C) with PAD); the first
    ``config.eval.candidates`` columns come from the ANN index, the rest from the history.
    """
    cust_rows = enc.window_customers(window) if customer_rows is None else customer_rows
    index_rows = article_rows(enc, window, indexable_articles(data, window))
    index = build_index(embed_items(two_tower, enc.articles, index_rows), config.index)
    queries = embed_queries(two_tower, enc.customers, cust_rows)
    card = two_tower.item_tower.article_table.num_embeddings
    hist_map = vocab_to_row(enc.articles, enc.window_articles(window), card)
    hist = enc.customers.hist_ids[cust_rows] if config.eval.history_candidates else None
    cands, _ = retrieve_candidates(
        index, queries, config.eval.candidates, index_rows, hist, hist_map
    )
    return cust_rows, cands


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
    most ``max_customers_per_window`` customers (a seeded sample)."""
    rows = enc.window_customers(window)
    if len(rows) > config.ranker.max_customers_per_window:
        rows = np.sort(rng.choice(rows, config.ranker.max_customers_per_window, replace=False))
    cust_rows, cands = window_candidates(two_tower, enc, data, window, config, rows)
    b, c = np.nonzero(cands != PAD)
    pairs = pl.DataFrame(
        {
            s.WINDOW: np.full(len(b), window, dtype=np.int32),
            s.CUSTOMER_ID: enc.customers.ids[cust_rows[b]].astype(str),
            s.ARTICLE_ID: enc.articles.ids[cands[b, c]].astype(str),
            "_random": rng.random(len(b)),
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
        .select(s.WINDOW, s.CUSTOMER_ID, s.ARTICLE_ID, s.LABEL)
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
        return tr, candidate_examples(two_tower, enc, data, val_w, config, rng)
    ex = data.examples
    return ex.filter(pl.col(s.WINDOW).is_in(train_w)), ex.filter(pl.col(s.WINDOW) == val_w)


def ranker_widths(wf: Workflow, inputs: RankingInputs) -> tuple[list[int], int]:
    """(F sparse table sizes, Fd) of the rankers' inputs under the fitted workflow."""
    return (
        wf.cardinalities(s.CUSTOMER_SPARSE) + wf.cardinalities(s.ARTICLE_SPARSE),
        int(inputs.dense.shape[1]),
    )
