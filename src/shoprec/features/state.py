"""A customer's online features from their transactions: the one function behind both the
serving snapshot (``shoprec materialize``) and the near-real-time updater (``shoprec updater``).

Both call :func:`encode_customer_state` with the same fitted workflow and the same history
settings, so a customer updated from the event log holds exactly the arrays a fresh
materialization of the same transactions would hold (``tests/test_updater.py`` checks it).

Shape letters: B = customers, Fs / Fd = customer sparse / dense widths, N = history length.
"""

from __future__ import annotations

from datetime import date

import polars as pl

from shoprec import schema as s
from shoprec.config import HistoryOrder
from shoprec.features.build import customer_features
from shoprec.features.encode import EncodedCustomers, encode_customers
from shoprec.features.workflow import Workflow

_CUTOFF = "_cutoff"
# Columns of a transaction frame that customer features read.
STATE_TRANSACTION_COLUMNS = (s.T_DAT, s.CUSTOMER_ID, s.ARTICLE_ID, s.PRICE)


def encode_customer_state(
    transactions: pl.DataFrame,
    customers: pl.DataFrame,
    snapshot_cutoff: date,
    workflow: Workflow,
    history_length: int,
    history_order: HistoryOrder = HistoryOrder.FREQUENCY,
    repurchase_length: int | None = None,
) -> EncodedCustomers:
    """Encoded online features (the ``recommend`` ensemble's customer inputs) of customers.

    Each customer's features are computed as of their own cutoff: ``snapshot_cutoff``, or the
    day after their latest transaction when that is later (purchases logged after the
    snapshot count; features see only ``t_dat < cutoff``). The cutoff is a function of the
    customer's own transactions, so recomputing a customer from scratch gives the same arrays
    whatever order the events arrived in.

    Args:
        transactions: the customers' transactions, at least ``STATE_TRANSACTION_COLUMNS``
            (``t_dat`` date, ids str, ``price`` float in currency units); rows of customers
            absent from ``customers`` are ignored.
        customers: ``schema.CUSTOMER_COLUMNS``, one row per customer to encode.
        snapshot_cutoff: the serving snapshot's cutoff (the day after its last transaction).
        workflow: the fitted preprocessing workflow of the served model.
        history_length: N.
        history_order: the dataset's ``history_order``.
        repurchase_length: R, the dataset's repurchase-list length (None = N).

    Returns:
        :class:`~shoprec.features.encode.EncodedCustomers` sorted by customer id: sparse int64
        (B, Fs), dense float32 (B, Fd), hist_ids int64 (B, N), hist_counts float32 (B, N),
        hist_last_days / hist_first_days float32 (B, N) (days from the last / first purchase of
        each history article to the customer's cutoff), repurchase_ids int64 (B, R),
        repurchase_counts float32 (B, R), the columns of
        ``schema.ENCODED_CUSTOMER_FEATURES``.

    Raises:
        ValueError: ``history_length < 1`` or ``repurchase_length < 1``.
    """
    last = transactions.group_by(s.CUSTOMER_ID).agg(pl.col(s.T_DAT).max().alias(_CUTOFF))
    cutoffs = (
        customers.select(s.CUSTOMER_ID)
        .join(last, on=s.CUSTOMER_ID, how="left")
        .with_columns(
            pl.max_horizontal(
                pl.lit(snapshot_cutoff, dtype=pl.Date),
                pl.col(_CUTOFF) + pl.duration(days=1),
            ).alias(_CUTOFF)
        )
    )
    frames = []
    for (cutoff,), group in cutoffs.group_by(_CUTOFF, maintain_order=True):
        if not isinstance(cutoff, date):  # polars types group keys as object
            raise TypeError(f"cutoff {cutoff!r} is not a date")
        ids = group.get_column(s.CUSTOMER_ID)
        frames.append(
            customer_features(
                transactions,
                customers,
                cutoff,
                history_length,
                customer_ids=ids,
                history_order=history_order,
                repurchase_length=repurchase_length,
            )
        )
    if not frames:
        frames.append(
            customer_features(
                transactions, customers, snapshot_cutoff, history_length,
                history_order=history_order, repurchase_length=repurchase_length,
            )
        )  # fmt: skip
    frame = pl.concat(frames).sort(s.CUSTOMER_ID)
    return encode_customers(workflow, frame, history_length, repurchase_length)
