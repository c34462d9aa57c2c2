"""The labelled dataset with every feature encoded once (training and offline evaluation).

Shape letters as in :mod:`shoprec.features.assemble`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from shoprec import schema as s
from shoprec.data.dataset import DatasetArtifacts
from shoprec.features.assemble import RankingInputs, ranking_inputs
from shoprec.features.encode import (
    EncodedArticles,
    EncodedCustomers,
    attribute_table,
    encode_articles,
    encode_customers,
)
from shoprec.features.workflow import Workflow

_ROW = "_row"


@dataclass
class EncodedDataset:
    """The labelled dataset with every feature encoded once.

    ``customer_row`` / ``article_row`` map (window, id) to rows of ``customers`` / ``articles``.
    """

    customers: EncodedCustomers
    articles: EncodedArticles
    attributes: np.ndarray
    customer_index: pl.DataFrame  # WINDOW, CUSTOMER_ID, _row
    article_index: pl.DataFrame  # WINDOW, ARTICLE_ID, _row

    def rows(self, pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Row positions of (WINDOW, CUSTOMER_ID, ARTICLE_ID) pairs, in the order given.

        Raises:
            KeyError: a pair's customer or article has no features in its window.
        """
        joined = (
            pairs.select(s.WINDOW, s.CUSTOMER_ID, s.ARTICLE_ID)
            .with_row_index("_order")
            .join(
                self.customer_index.rename({_ROW: "_c"}), on=[s.WINDOW, s.CUSTOMER_ID], how="left"
            )
            .join(self.article_index.rename({_ROW: "_a"}), on=[s.WINDOW, s.ARTICLE_ID], how="left")
            .sort("_order")
        )
        missing = joined.filter(pl.col("_c").is_null() | pl.col("_a").is_null())
        if missing.height:
            raise KeyError(f"no features for pair {missing.row(0, named=True)}")
        return (
            joined.get_column("_c").to_numpy().astype(np.int64),
            joined.get_column("_a").to_numpy().astype(np.int64),
        )

    def window_articles(self, window: int) -> np.ndarray:
        """Rows of ``articles`` for one window, in article-id order."""
        return (
            self.article_index.filter(pl.col(s.WINDOW) == window)
            .get_column(_ROW)
            .to_numpy()
            .astype(np.int64)
        )

    def window_customers(self, window: int) -> np.ndarray:
        return (
            self.customer_index.filter(pl.col(s.WINDOW) == window)
            .get_column(_ROW)
            .to_numpy()
            .astype(np.int64)
        )

    def ranking_inputs(
        self,
        customer_rows: np.ndarray,
        article_rows: np.ndarray,
        source_features: np.ndarray | None = None,
    ) -> RankingInputs:
        return ranking_inputs(
            self.customers,
            self.articles,
            self.attributes,
            customer_rows,
            article_rows,
            source_features,
        )


def encode_dataset(wf: Workflow, data: DatasetArtifacts, history_length: int) -> EncodedDataset:
    """Encode the customer and article features of every window with the fitted workflow
    (history arrays N = ``history_length`` wide, repurchase arrays the dataset's R)."""
    cust = data.customer_features
    arts = data.article_features
    customers = encode_customers(wf, cust, history_length, data.repurchase_length)
    articles = encode_articles(wf, arts)
    # Attributes are static: every window's rows of an article write the same values.
    return EncodedDataset(
        customers=customers,
        articles=articles,
        attributes=attribute_table(wf, articles),
        customer_index=cust.select(s.WINDOW, s.CUSTOMER_ID).with_row_index(_ROW),
        article_index=arts.select(s.WINDOW, s.ARTICLE_ID).with_row_index(_ROW),
    )
