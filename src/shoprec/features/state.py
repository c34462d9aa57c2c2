"""A customer's online state: the one function that computes every encoded per-customer
feature written to the online store.

The snapshot export (``export.online_tables``) calls :func:`encode_customer_state` for every
customer as of the serving cutoff; an updater that refreshes customers from their new events
calls it for those customers with their transactions up to now. Nothing else computes
customer features for the online store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl

from shoprec.config import HistoryOrder
from shoprec.features.build import customer_features
from shoprec.features.encode import EncodedCustomers, encode_customers
from shoprec.features.workflow import Workflow


def encode_customer_state(
    transactions: pl.DataFrame,
    customers: pl.DataFrame,
    cutoff: date,
    workflow: Workflow,
    history_length: int,
    history_order: HistoryOrder = HistoryOrder.FREQUENCY,
    customer_ids: Sequence[str] | pl.Series | None = None,
) -> EncodedCustomers:
    """Encoded features of a set of customers as of ``cutoff``.

    Args:
        transactions: canonical transactions of (at least) those customers; rows on/after
            ``cutoff`` are ignored.
        customers: canonical customers table (static attributes).
        cutoff: the first day the features must not see (the serving cutoff, or tomorrow).
        workflow: the fitted preprocessing workflow (``models/<name>/workflow.json``).
        history_length: N of the trained models.
        history_order: the dataset's ``DatasetConfig.history_order``.
        customer_ids: restrict to these customers (default: every row of ``customers``).

    Returns:
        ``EncodedCustomers`` sorted by customer id: the columns of
        ``schema.ENCODED_CUSTOMER_FEATURES`` (``featurestore.tables.encoded_columns``): sparse
        int64 (B, Fc), dense float32 (B, Fdc), history ids int64 (B, N), counts and days
        since the last / first purchase of each history article float32 (B, N).

    Raises:
        ValueError: ``history_length < 1``.
    """
    frame = customer_features(
        transactions, customers, cutoff, history_length, customer_ids, history_order
    )
    return encode_customers(workflow, frame, history_length)
