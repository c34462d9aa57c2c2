"""Model inputs: the workflow's feature spec, encoded batches and customer x article features.

Shape letters: B = batch (customers or examples), C = candidates per customer,
N = history length, Fs = sparse features, Fd = dense features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl

from shoprec import schema as s
from shoprec.config import WorkflowConfig
from shoprec.features.workflow import (
    FIRST_ID,
    Categorify,
    Normalize,
    Workflow,
    ragged_positions,
)

# Log-scaled counts and durations; features that can be unknown carry a missing indicator.
_LOG = {
    s.N_PURCHASES, s.N_PURCHASES_28D, s.DAYS_SINCE_LAST, s.DAYS_SINCE_FIRST, s.MEAN_PRICE,
    s.N_DISTINCT_ARTICLES, s.SALES_7D, s.SALES_28D, s.ARTICLE_MEAN_PRICE,
    s.DAYS_SINCE_FIRST_SALE, s.SALES_ALL,
}  # fmt: skip
_NULLABLE = {
    s.AGE, s.DAYS_SINCE_LAST, s.DAYS_SINCE_FIRST, s.MEAN_PRICE, s.ARTICLE_MEAN_PRICE,
    s.DAYS_SINCE_FIRST_SALE,
}  # fmt: skip
# Article attributes compared with the customer's history in the cross features.
CROSS_ATTRIBUTES = (s.PRODUCT_TYPE, s.PRODUCT_GROUP, s.DEPARTMENT)


def make_workflow(config: WorkflowConfig) -> Workflow:
    """The unfitted workflow for every model feature (see ``schema``)."""
    cats = [Categorify(n, config.min_frequency) for n in s.CUSTOMER_SPARSE]
    cats.append(Categorify(s.ARTICLE_ID, config.article_min_frequency))
    cats += [Categorify(n, config.min_frequency) for n in s.ARTICLE_ATTRIBUTES]
    nums = [
        Normalize(n, log=n in _LOG, missing_indicator=n in _NULLABLE)
        for n in (*s.CUSTOMER_DENSE, *s.ARTICLE_DENSE)
    ]
    return Workflow(cats, nums)


PURCHASE_LINES: Final = "purchase_lines"  # lines an aggregated purchases row stands for


def purchase_lines(transactions: pl.DataFrame, articles: pl.DataFrame) -> pl.DataFrame:
    """Per article bought in ``transactions``: its ``schema.ARTICLE_SPARSE`` attributes (from
    ``articles``; null when it is not there) and ``PURCHASE_LINES``, its purchase lines.

    What :func:`fit_workflow` counts, one row per article instead of one per line (31.8 M
    lines joined with six string attributes are gigabytes at H&M size).
    """
    counts = transactions.group_by(s.ARTICLE_ID).agg(pl.len().cast(pl.Int64).alias(PURCHASE_LINES))
    return counts.join(articles.select(s.ARTICLE_SPARSE), on=s.ARTICLE_ID, how="left")


def fit_workflow(
    config: WorkflowConfig,
    customer_frame: pl.DataFrame,
    article_frame: pl.DataFrame,
    purchases: pl.DataFrame,
) -> Workflow:
    """Fit the workflow on training data only.

    Args:
        customer_frame: customer features of the training windows (one row per customer and
            window); fits customer categoricals and customer numerics.
        article_frame: article features of the training windows; fits article numerics.
        purchases: training-period transactions joined with article attributes, or the same
            aggregated (:func:`purchase_lines`: one row per article with its
            ``PURCHASE_LINES``); fits the article id and attribute vocabularies, frequency =
            purchase lines.
    """
    wf = make_workflow(config)
    for name in s.CUSTOMER_SPARSE:
        wf.categorical_ops[name].fit(customer_frame.get_column(name))
    lines = purchases.get_column(PURCHASE_LINES) if PURCHASE_LINES in purchases.columns else None
    for name in s.ARTICLE_SPARSE:
        wf.categorical_ops[name].fit(purchases.get_column(name), lines)
    for name in s.CUSTOMER_DENSE:
        wf.numeric_ops[name].fit(customer_frame.get_column(name))
    for name in s.ARTICLE_DENSE:
        wf.numeric_ops[name].fit(article_frame.get_column(name))
    # One scale for both prices, so that their difference is a log price ratio
    # (``price_relative``): log1p(price) standardised by the customers' mean-price statistics.
    customer_price = wf.numeric_ops[s.MEAN_PRICE]
    article_price = wf.numeric_ops[s.ARTICLE_MEAN_PRICE]
    article_price.mean, article_price.std = customer_price.mean, customer_price.std
    return wf


def dense_column(names: Sequence[str], name: str) -> int:
    """Column of ``name``'s value in a dense block encoded from ``names`` (``Workflow.dense``:
    each name one column, plus its missing indicator when nullable).

    Raises:
        KeyError: ``name`` is not in ``names``.
    """
    col = 0
    for n in names:
        if n == name:
            return col
        col += 2 if n in _NULLABLE else 1
    raise KeyError(f"{name!r} is not among the dense features {list(names)}")


def dense_width(names: Sequence[str]) -> int:
    """Columns of a dense block encoded from ``names`` (missing indicators included)."""
    return sum(2 if n in _NULLABLE else 1 for n in names)


_CUSTOMER_PRICE = dense_column(s.CUSTOMER_DENSE, s.MEAN_PRICE)
_ARTICLE_PRICE = dense_column(s.ARTICLE_DENSE, s.ARTICLE_MEAN_PRICE)


def price_relative(
    customer_dense: npt.NDArray[np.float32], article_dense: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """``schema.PRICE_RELATIVE`` of M (customer, article) pairs, float32 (M,).

    Args:
        customer_dense: float32 (M, Fdc) encoded ``schema.CUSTOMER_DENSE`` of each pair's
            customer.
        article_dense: float32 (M, Fda) encoded ``schema.ARTICLE_DENSE`` of each pair's article.

    Returns:
        The difference of the two encoded prices: both are log1p(price in currency units)
        standardised with the same statistics (:func:`fit_workflow`), so it is
        ``(log1p(article mean price) - log1p(customer mean price)) / std``: 0 = the
        customer's usual price, > 0 dearer. 0 when either price is unknown.

    Raises:
        ValueError: a width is not that of the encoded schema block.
    """
    for name, block, names in (
        ("customer_dense", customer_dense, s.CUSTOMER_DENSE),
        ("article_dense", article_dense, s.ARTICLE_DENSE),
    ):
        if block.shape[1] != dense_width(names):
            raise ValueError(
                f"{name} has {block.shape[1]} columns, expected {dense_width(names)} "
                f"(encoded {list(names)})"
            )
    known = (customer_dense[:, _CUSTOMER_PRICE + 1] == 0) & (
        article_dense[:, _ARTICLE_PRICE + 1] == 0
    )
    diff = article_dense[:, _ARTICLE_PRICE] - customer_dense[:, _CUSTOMER_PRICE]
    return np.where(known, diff, 0.0).astype(np.float32)


@dataclass
class EncodedCustomers:
    """Encoded customer features.

    Attributes:
        ids: customer ids (B,), object array of str.
        sparse: int64 (B, Fs) ids of ``schema.CUSTOMER_SPARSE``.
        dense: float32 (B, Fd) normalised ``schema.CUSTOMER_DENSE`` (+ missing indicators).
        hist_ids: int64 (B, N) article vocabulary ids, most recent first, 0 = padding.
        hist_counts: float32 (B, N) purchase counts of those articles, 0 for padding.
        hist_last_days / hist_first_days: float32 (B, N) days from the last / first purchase
            of each history article to the cutoff, 0 for padding.
        repurchase_ids: int64 (B, R) the repurchase list's vocabulary ids (history order, the
            history list is its first N), 0 = padding.
        repurchase_counts: float32 (B, R) purchase counts of those articles, 0 for padding.
    """

    ids: npt.NDArray[np.object_]
    sparse: npt.NDArray[np.int64]
    dense: npt.NDArray[np.float32]
    hist_ids: npt.NDArray[np.int64]
    hist_counts: npt.NDArray[np.float32]
    hist_last_days: npt.NDArray[np.float32]
    hist_first_days: npt.NDArray[np.float32]
    repurchase_ids: npt.NDArray[np.int64]
    repurchase_counts: npt.NDArray[np.float32]

    def take(self, index: npt.NDArray[np.integer[Any]]) -> EncodedCustomers:
        return EncodedCustomers(
            self.ids[index],
            self.sparse[index],
            self.dense[index],
            self.hist_ids[index],
            self.hist_counts[index],
            self.hist_last_days[index],
            self.hist_first_days[index],
            self.repurchase_ids[index],
            self.repurchase_counts[index],
        )


@dataclass
class EncodedArticles:
    """Encoded article features.

    Attributes:
        ids: article ids (B,), object array of str.
        sparse: int64 (B, Fs) ids of ``schema.ARTICLE_SPARSE`` (column 0 = article id).
        dense: float32 (B, Fd) normalised ``schema.ARTICLE_DENSE`` (+ missing indicators).
    """

    ids: npt.NDArray[np.object_]
    sparse: npt.NDArray[np.int64]
    dense: npt.NDArray[np.float32]

    def take(self, index: npt.NDArray[np.integer[Any]]) -> EncodedArticles:
        return EncodedArticles(self.ids[index], self.sparse[index], self.dense[index])


def _list_matrix(frame: pl.DataFrame, column: str, length: int) -> npt.NDArray[np.float32]:
    """A list[int] column -> float32 (B, length), left-aligned, 0 padding."""
    out = np.zeros((frame.height, length), dtype=np.float32)
    raw = frame.get_column(column).list.head(length)
    lengths = raw.list.len().to_numpy()
    if frame.height and lengths.sum():
        rows, cols = ragged_positions(lengths)
        out[rows, cols] = raw.explode().drop_nulls().to_numpy().astype(np.float32)
    return out


def encode_customers(
    wf: Workflow, frame: pl.DataFrame, history_length: int, repurchase_length: int | None = None
) -> EncodedCustomers:
    """Encode customer feature rows (as written by ``customer_features``): history arrays N
    wide, repurchase arrays R = ``repurchase_length`` wide (None = N)."""
    hist = frame.get_column(s.HIST_ARTICLE_IDS)
    rep_len = history_length if repurchase_length is None else repurchase_length
    articles = wf.categorical_ops[s.ARTICLE_ID]
    return EncodedCustomers(
        ids=frame.get_column(s.CUSTOMER_ID).to_numpy().astype(object),
        sparse=wf.categorical_matrix(frame, s.CUSTOMER_SPARSE),
        dense=wf.dense(frame, s.CUSTOMER_DENSE),
        hist_ids=articles.transform_lists(hist, history_length),
        hist_counts=_list_matrix(frame, s.HIST_COUNTS, history_length),
        hist_last_days=_list_matrix(frame, s.HIST_LAST_DAYS, history_length),
        hist_first_days=_list_matrix(frame, s.HIST_FIRST_DAYS, history_length),
        repurchase_ids=articles.transform_lists(
            frame.get_column(s.REPURCHASE_ARTICLE_IDS), rep_len
        ),
        repurchase_counts=_list_matrix(frame, s.REPURCHASE_COUNTS, rep_len),
    )


def encode_articles(wf: Workflow, frame: pl.DataFrame) -> EncodedArticles:
    """Encode article feature rows (as written by ``article_features``)."""
    return EncodedArticles(
        ids=frame.get_column(s.ARTICLE_ID).to_numpy().astype(object),
        sparse=wf.categorical_matrix(frame, s.ARTICLE_SPARSE),
        dense=wf.dense(frame, s.ARTICLE_DENSE),
    )


def attribute_table(wf: Workflow, articles: EncodedArticles) -> npt.NDArray[np.int64]:
    """Map article vocabulary id -> encoded ``CROSS_ATTRIBUTES``.

    Returns int64 (V, len(CROSS_ATTRIBUTES)), V = article id cardinality; rows of padding,
    OOV and articles absent from ``articles`` are 0 (unknown: never matches).
    """
    card = wf.categorical_ops[s.ARTICLE_ID].cardinality
    table = np.zeros((card, len(CROSS_ATTRIBUTES)), dtype=np.int64)
    cols = [s.ARTICLE_SPARSE.index(a) for a in CROSS_ATTRIBUTES]
    known = articles.sparse[:, 0] >= FIRST_ID
    table[articles.sparse[known, 0]] = articles.sparse[known][:, cols]
    return table


def cross_features(
    hist_ids: npt.NDArray[np.int64],
    hist_counts: npt.NDArray[np.float32],
    candidates: npt.NDArray[np.int64],
    attributes: npt.NDArray[np.int64],
    hist_last_days: npt.NDArray[np.float32] | None = None,
    hist_first_days: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """Customer x article features from the customer's purchase history.

    Args:
        hist_ids: int64 (B, N) article vocabulary ids, most recent first, 0 = padding.
        hist_counts: float32 (B, N) purchases of each history article.
        candidates: int64 (B, C) article vocabulary ids to score.
        attributes: int64 (V, 3) from ``attribute_table``.
        hist_last_days / hist_first_days: float32 (B, N) days from the last / first purchase
            of each history article to the cutoff (None = unknown: the last three features
            are -1).

    Returns:
        float32 (B, C, 8) = ``schema.HISTORY_CROSS_DENSE``: log1p(purchases of the candidate),
        1 / (1 + position of the candidate in the history) or 0 if absent, log1p(purchases
        of history articles sharing the candidate's product type / group / department), and
        for a candidate in the history: log1p(days since its last purchase), log1p(its
        purchase cycle = days between first and last purchase / (purchases - 1), -1 when
        bought once) and days since last / cycle (1 = due again now; -1 when bought once);
        all three -1 when the candidate is not in the history.
    """
    valid = hist_ids >= FIRST_ID  # (B, N)
    same = (hist_ids[:, None, :] == candidates[:, :, None]) & valid[:, None, :]  # (B, C, N)
    counts = hist_counts[:, None, :]
    out = np.empty((*candidates.shape, len(s.HISTORY_CROSS_DENSE)), dtype=np.float32)
    out[..., 0] = np.log1p((same * counts).sum(-1))
    first = np.where(same.any(-1), same.argmax(-1), -1)
    out[..., 1] = np.where(first >= 0, 1.0 / (1.0 + np.maximum(first, 0)), 0.0)
    hist_attr = attributes[hist_ids]  # (B, N, 3)
    cand_attr = attributes[candidates]  # (B, C, 3)
    for j in range(len(CROSS_ATTRIBUTES)):
        match = (
            (hist_attr[:, None, :, j] == cand_attr[:, :, None, j])
            & (cand_attr[:, :, None, j] > 0)
            & valid[:, None, :]
        )
        out[..., 2 + j] = np.log1p((match * counts).sum(-1))
    out[..., 5:] = -1.0
    if hist_last_days is not None and hist_first_days is not None:
        inside = same.any(-1)
        pos = np.maximum(first, 0)
        cnt = np.take_along_axis(hist_counts, pos, axis=1)
        last = np.take_along_axis(hist_last_days, pos, axis=1)
        span = np.take_along_axis(hist_first_days, pos, axis=1) - last
        repeat = inside & (cnt > 1)
        cycle = np.where(repeat, np.maximum(span, 1.0) / np.maximum(cnt - 1, 1.0), 1.0)
        out[..., 5] = np.where(inside, np.log1p(last), -1.0)
        out[..., 6] = np.where(repeat, np.log1p(cycle), -1.0)
        out[..., 7] = np.where(repeat, last / cycle, -1.0)
    return out
