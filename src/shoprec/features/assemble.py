"""Assemble model inputs from encoded features: the one code path used offline and online.

``ranking_inputs`` builds the DLRM's inputs for (customer, article) pairs; training calls it
on labelled examples, evaluation and the Triton ranking step call it on retrieved candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from shoprec import schema as s
from shoprec.features.encode import (
    EncodedArticles,
    EncodedCustomers,
    cross_features,
    price_relative,
)

# Pairs assembled at a time by ``ranking_inputs`` (bounds its temporaries, not its output).
RANKING_BLOCK = 65_536

# Position of the article-id column in the ranker's sparse input (customer sparse first).
RANKING_HISTORY_FEATURE = len(s.CUSTOMER_SPARSE)


@dataclass
class RankingInputs:
    """Ranker inputs for M (customer, article) pairs.

    Attributes:
        dense: float32 (M, Fd) = customer dense, article dense, ``schema.CROSS_DENSE`` (the
            history x candidate features, then the price relative to the customer's usual),
            ``schema.SOURCE_DENSE`` (the candidate sources' scores and reciprocal ranks).
        sparse: int64 (M, Fs) = customer sparse, article sparse.
        hist_ids: int64 (M, N) the customer's history (article vocabulary ids).
    """

    dense: npt.NDArray[np.float32]
    sparse: npt.NDArray[np.int64]
    hist_ids: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.dense)

    @property
    def num_dense(self) -> int:
        """Fd."""
        return int(self.dense.shape[1])

    @property
    def num_sparse(self) -> int:
        """Fs."""
        return int(self.sparse.shape[1])

    def slice(self, start: int, stop: int) -> RankingInputs:
        return RankingInputs(
            self.dense[start:stop], self.sparse[start:stop], self.hist_ids[start:stop]
        )

    def take(self, index: npt.NDArray[np.integer[Any]]) -> RankingInputs:
        """Rows ``index`` (int (B,)), a copy."""
        return RankingInputs(self.dense[index], self.sparse[index], self.hist_ids[index])


class ExampleBlocks(Protocol):
    """M ranker examples whose :class:`RankingInputs` are given a block at a time: a
    ``RankingInputs`` itself, or ``training.examples.ExampleRows`` (row pairs only, the
    inputs assembled on demand: 50 bytes per example instead of 800 with N = 64)."""

    def __len__(self) -> int: ...

    @property
    def num_dense(self) -> int: ...

    @property
    def num_sparse(self) -> int: ...

    def slice(self, start: int, stop: int) -> RankingInputs: ...

    def take(self, index: npt.NDArray[np.integer[Any]]) -> RankingInputs: ...


def ranking_inputs(
    customers: EncodedCustomers,
    articles: EncodedArticles,
    attributes: npt.NDArray[np.int64],
    customer_rows: npt.NDArray[np.integer[Any]],
    article_rows: npt.NDArray[np.integer[Any]],
    source_features: npt.NDArray[np.float32] | None = None,
) -> RankingInputs:
    """Ranker inputs for pairs ``(customers[customer_rows[m]], articles[article_rows[m]])``.

    Args:
        attributes: int64 (V, 3) from ``attribute_table``.
        customer_rows, article_rows: int64 (M,) row positions.
        source_features: float32 (M, len(schema.SOURCE_DENSE)) from
            ``inference.sources.union_candidates``; None = all 0 (a pair no source proposed).
    """
    if customer_rows.shape != article_rows.shape:
        raise ValueError(
            f"customer_rows {customer_rows.shape} and article_rows {article_rows.shape} differ"
        )
    m = len(customer_rows)
    if source_features is None:
        source_features = np.zeros((m, len(s.SOURCE_DENSE)), dtype=np.float32)
    if source_features.shape != (m, len(s.SOURCE_DENSE)):
        raise ValueError(
            f"source_features has shape {source_features.shape}, expected "
            f"({m}, {len(s.SOURCE_DENSE)})"
        )
    widths = (customers.dense.shape[1], articles.dense.shape[1], len(s.CROSS_DENSE))
    dense = np.empty((m, sum(widths) + len(s.SOURCE_DENSE)), dtype=np.float32)
    sparse = np.empty((m, customers.sparse.shape[1] + articles.sparse.shape[1]), dtype=np.int64)
    hist = customers.hist_ids[customer_rows]
    # In blocks: the cross features hold (rows, N, 3) temporaries, gigabytes at millions of
    # examples (H&M size); a block keeps them to tens of MB whatever M is.
    for start in range(0, m, RANKING_BLOCK):
        stop = min(start + RANKING_BLOCK, m)
        c_rows, a_rows = customer_rows[start:stop], article_rows[start:stop]
        cross = cross_features(
            hist[start:stop],
            customers.hist_counts[c_rows],
            articles.sparse[a_rows, :1],
            attributes,
            customers.hist_last_days[c_rows],
            customers.hist_first_days[c_rows],
        )[:, 0, :]
        customer_dense = customers.dense[c_rows]
        article_dense = articles.dense[a_rows]
        dense[start:stop] = np.concatenate(
            [
                customer_dense,
                article_dense,
                cross,
                price_relative(customer_dense, article_dense)[:, None],
                source_features[start:stop].astype(np.float32, copy=False),
            ],
            axis=1,
        )
        sparse[start:stop] = np.concatenate(
            [customers.sparse[c_rows], articles.sparse[a_rows]], axis=1
        )
    return RankingInputs(dense=dense, sparse=sparse, hist_ids=hist)
