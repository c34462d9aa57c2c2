"""Assemble model inputs from encoded features: the one code path used offline and online.

``ranking_inputs`` builds the DLRM's inputs for (customer, article) pairs; training calls it
on labelled examples, evaluation and the Triton ranking step call it on retrieved candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shoprec import schema as s
from shoprec.features.encode import (
    EncodedArticles,
    EncodedCustomers,
    cross_features,
    price_relative,
)

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

    def slice(self, start: int, stop: int) -> RankingInputs:
        return RankingInputs(
            self.dense[start:stop], self.sparse[start:stop], self.hist_ids[start:stop]
        )


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
    hist = customers.hist_ids[customer_rows]
    cross = cross_features(
        hist,
        customers.hist_counts[customer_rows],
        articles.sparse[article_rows, :1],
        attributes,
        customers.hist_last_days[customer_rows],
        customers.hist_first_days[customer_rows],
    )[:, 0, :]
    if source_features is None:
        source_features = np.zeros((len(customer_rows), len(s.SOURCE_DENSE)), dtype=np.float32)
    if source_features.shape != (len(customer_rows), len(s.SOURCE_DENSE)):
        raise ValueError(
            f"source_features has shape {source_features.shape}, expected "
            f"({len(customer_rows)}, {len(s.SOURCE_DENSE)})"
        )
    customer_dense = customers.dense[customer_rows]
    article_dense = articles.dense[article_rows]
    return RankingInputs(
        dense=np.concatenate(
            [
                customer_dense,
                article_dense,
                cross,
                price_relative(customer_dense, article_dense)[:, None],
                source_features.astype(np.float32, copy=False),
            ],
            axis=1,
        ),
        sparse=np.concatenate(
            [customers.sparse[customer_rows], articles.sparse[article_rows]], axis=1
        ),
        hist_ids=hist,
    )
