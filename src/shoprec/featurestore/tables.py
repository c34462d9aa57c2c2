"""The Parquet tables the Feast feature views read, their manifest, and the encoded layout.

Shape letters: B = customers, Fc / Fdc = customer sparse / dense widths, N = history length,
R = repurchase-list length.

``shoprec.export.online_tables.export_online_tables`` writes them into one directory (a
feature repo's ``data/``, :data:`ONLINE_DATA_DIR`):

* ``customers.parquet``: ``CUSTOMER_ID`` (string), ``EVENT_TIMESTAMP`` (timestamp[us, UTC] =
  the serving cutoff) and ``schema.ENCODED_CUSTOMER_FEATURES`` as list columns:
  ``customer_sparse`` list<int64> (Fc), ``customer_dense`` list<float> (Fdc), ``hist_ids``
  list<int64> (N), ``hist_counts``, ``hist_last_days``, ``hist_first_days`` list<float> (N),
  ``repurchase_ids`` list<int64> (R), ``repurchase_counts`` list<float> (R).
  These are exactly the arrays
  :func:`shoprec.features.state.encode_customer_state` returns for the serving snapshot, i.e. the
  inputs of the Triton ``recommend`` ensemble, so a request needs no transformation.
* ``articles.parquet``: ``ARTICLE_ID``, ``EVENT_TIMESTAMP`` and the display fields ``NAME``,
  ``schema.ARTICLE_ATTRIBUTES``, ``DESCRIPTION`` (string, nullable) of every catalog article.
* ``popular.parquet``: the gateway's cold-start fallback, ``ARTICLE_ID`` and ``SALES_7D``
  (int64, purchase lines in the 7 days before the cutoff), at most :data:`POPULAR_SIZE` rows,
  most sold first, ties by article id; articles without a sale in those days are left out.
* ``online_tables.json``: the manifest: serving cutoff, row counts, the width of every
  encoded customer feature (so that a reader can shape an all-missing batch) and file names.

Rows are sorted by id and the files are written by pyarrow with explicit types (``list``, not
polars' ``large_list``; ``string``, not ``large_string``), so the same inputs give the same
bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec import schema as s
from shoprec.errors import ArtifactError

if TYPE_CHECKING:  # features.encode imports polars, which online readers do not need
    from shoprec.features.encode import EncodedCustomers

ONLINE_DATA_DIR: Final = "data"  # relative to a feature repo; the FileSources read from here
CUSTOMERS_FILE: Final = "customers.parquet"
ARTICLES_FILE: Final = "articles.parquet"
POPULAR_FILE: Final = "popular.parquet"
MANIFEST_FILE: Final = "online_tables.json"
# The near-real-time updater's starting state (shoprec.updater): the snapshot's transactions
# (t_dat, customer_id, article_id, price) and customers (schema.CUSTOMER_COLUMNS), and the
# fitted workflow; the manifest's "state" key holds history_length, history_order, the serving
# cutoff day and log_offset (the last event-log offset folded into the canonical tables).
STATE_TRANSACTIONS_FILE: Final = "state_transactions.parquet"
STATE_CUSTOMERS_FILE: Final = "state_customers.parquet"
STATE_WORKFLOW_FILE: Final = "workflow.json"
STATE_KEY: Final = "state"
POPULAR_SIZE: Final = 100
DISPLAY_FIELDS: Final = (s.NAME, *s.ARTICLE_ATTRIBUTES, s.DESCRIPTION)

# numpy dtype of each encoded customer feature, in schema.ENCODED_CUSTOMER_FEATURES order.
ENCODED_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    name: np.dtype(s.TENSORS[name].numpy) for name in s.ENCODED_CUSTOMER_FEATURES
}
TIMESTAMP_TYPE: Final = pa.timestamp("us", tz="UTC")


class ArticleDisplay(StrEnum):
    """Where ``OnlineFeatures.get_articles`` reads article display fields from."""

    MEMORY = "memory"  # the article feature view's source table, loaded once at start
    STORE = "store"  # the online store, one Feast read per call


@dataclass(frozen=True)
class OnlineTables:
    """What :func:`export_online_tables` wrote.

    Attributes:
        customers / articles / popular / manifest: file paths.
        n_customers / n_articles / n_popular: rows in each table.
        serving_cutoff: the features' event timestamp (tz-aware UTC midnight of the cutoff day).
        widths: columns of each encoded customer feature (Fc, Fdc, N, N).
    """

    customers: Path
    articles: Path
    popular: Path
    manifest: Path
    n_customers: int
    n_articles: int
    n_popular: int
    serving_cutoff: datetime
    widths: dict[str, int]


def cutoff_timestamp(cutoff: date) -> datetime:
    """The serving cutoff day as a tz-aware UTC datetime (midnight)."""
    return datetime.combine(cutoff, time(0), tzinfo=UTC)


def encoded_columns(enc: EncodedCustomers) -> dict[str, npt.NDArray[Any]]:
    """``enc`` keyed by ``schema.ENCODED_CUSTOMER_FEATURES`` (the Triton input names)."""
    return {
        s.T_CUSTOMER_SPARSE: enc.sparse,
        s.T_CUSTOMER_DENSE: enc.dense,
        s.T_HIST_IDS: enc.hist_ids,
        s.T_HIST_COUNTS: enc.hist_counts,
        s.T_HIST_LAST_DAYS: enc.hist_last_days,
        s.T_HIST_FIRST_DAYS: enc.hist_first_days,
        s.T_REPURCHASE_IDS: enc.repurchase_ids,
        s.T_REPURCHASE_COUNTS: enc.repurchase_counts,
    }


def _list_array(matrix: npt.NDArray[Any], dtype: np.dtype[Any]) -> pa.ListArray:
    """(B, W) matrix -> arrow list<dtype> array of B lists of W values each."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(matrix, dtype=dtype).reshape(-1))
    return pa.ListArray.from_arrays(offsets, values)


def customer_table(enc: EncodedCustomers, event_time: datetime) -> pa.Table:
    """Arrow table of encoded customers, sorted by customer id (see the module docstring)."""
    order = np.argsort(enc.ids.astype(str), kind="stable")
    enc = enc.take(order)
    columns: dict[str, pa.Array] = {
        s.CUSTOMER_ID: pa.array(enc.ids.tolist(), type=pa.string()),
        s.EVENT_TIMESTAMP: pa.array([event_time] * len(enc.ids), type=TIMESTAMP_TYPE),
    }
    for name, matrix in encoded_columns(enc).items():
        columns[name] = _list_array(matrix, ENCODED_DTYPES[name])
    return pa.table(columns)


def read_manifest(data_dir: Path) -> dict[str, Any]:
    """The manifest :func:`export_online_tables` wrote to ``data_dir``.

    Raises:
        ArtifactError: the manifest is missing (the tables were never exported there).
    """
    path = data_dir / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found (run the feature store materialization first)")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def read_customer_ids(data_dir: Path) -> list[str]:
    """The ids of the customers in the customer table exported to ``data_dir`` (B of them,
    sorted by id as written), read without Feast.

    Raises:
        ArtifactError: the table is missing (the tables were never exported there).
    """
    path = data_dir / CUSTOMERS_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found (run the feature store materialization first)")
    ids: list[str] = pq.read_table(path, columns=[s.CUSTOMER_ID]).column(0).to_pylist()
    return ids


def read_article_ids(data_dir: Path) -> list[str]:
    """The ids of the articles in the article table exported to ``data_dir`` (sorted by id as
    written), read without Feast.

    Raises:
        ArtifactError: the table is missing (the tables were never exported there).
    """
    path = data_dir / ARTICLES_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found (run the feature store materialization first)")
    ids: list[str] = pq.read_table(path, columns=[s.ARTICLE_ID]).column(0).to_pylist()
    return ids
