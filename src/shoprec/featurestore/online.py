"""Export the serving snapshot as the Parquet tables the Feast feature views read.

Shape letters: B = customers, Fc / Fdc = customer sparse / dense widths, N = history length.

``export_online_tables`` writes into one directory (a feature repo's ``data/``,
:data:`ONLINE_DATA_DIR`):

* ``customers.parquet``: ``CUSTOMER_ID`` (string), ``EVENT_TIMESTAMP`` (timestamp[us, UTC] =
  the serving cutoff) and ``schema.ENCODED_CUSTOMER_FEATURES`` as list columns:
  ``customer_sparse`` list<int64> (Fc), ``customer_dense`` list<float> (Fdc), ``hist_ids``
  list<int64> (N), ``hist_counts`` list<float> (N). These are exactly the arrays
  :func:`shoprec.features.encode.encode_customers` returns for the serving snapshot, i.e. the
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
from typing import Any, Final

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec import schema as s
from shoprec.config import PipelineConfig
from shoprec.dataset.build import load_dataset
from shoprec.errors import ArtifactError
from shoprec.features.encode import EncodedCustomers, encode_customers
from shoprec.features.workflow import Workflow
from shoprec.ingest.canonical import read_canonical

ONLINE_DATA_DIR: Final = "data"  # relative to a feature repo; the FileSources read from here
CUSTOMERS_FILE: Final = "customers.parquet"
ARTICLES_FILE: Final = "articles.parquet"
POPULAR_FILE: Final = "popular.parquet"
MANIFEST_FILE: Final = "online_tables.json"
POPULAR_SIZE: Final = 100
DISPLAY_FIELDS: Final = (s.NAME, *s.ARTICLE_ATTRIBUTES, s.DESCRIPTION)

# Arrow type of each encoded customer feature; the order is schema.ENCODED_CUSTOMER_FEATURES.
ENCODED_DTYPES: Final[dict[str, np.dtype]] = {
    s.T_CUSTOMER_SPARSE: np.dtype(np.int64),
    s.T_CUSTOMER_DENSE: np.dtype(np.float32),
    s.T_HIST_IDS: np.dtype(np.int64),
    s.T_HIST_COUNTS: np.dtype(np.float32),
}
_TIMESTAMP_TYPE: Final = pa.timestamp("us", tz="UTC")


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


def encoded_columns(enc: EncodedCustomers) -> dict[str, np.ndarray]:
    """``enc`` keyed by ``schema.ENCODED_CUSTOMER_FEATURES`` (the Triton input names)."""
    return {
        s.T_CUSTOMER_SPARSE: enc.sparse,
        s.T_CUSTOMER_DENSE: enc.dense,
        s.T_HIST_IDS: enc.hist_ids,
        s.T_HIST_COUNTS: enc.hist_counts,
    }


def _list_array(matrix: np.ndarray, dtype: np.dtype) -> pa.ListArray:
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
        s.EVENT_TIMESTAMP: pa.array([event_time] * len(enc.ids), type=_TIMESTAMP_TYPE),
    }
    for name, matrix in encoded_columns(enc).items():
        columns[name] = _list_array(matrix, ENCODED_DTYPES[name])
    return pa.table(columns)


def article_table(articles: pl.DataFrame, event_time: datetime) -> pa.Table:
    """Arrow table of article display fields, sorted by article id."""
    frame = articles.select(s.ARTICLE_ID, *DISPLAY_FIELDS).sort(s.ARTICLE_ID)
    columns: dict[str, pa.Array] = {
        s.ARTICLE_ID: pa.array(frame.get_column(s.ARTICLE_ID).to_list(), type=pa.string()),
        s.EVENT_TIMESTAMP: pa.array([event_time] * frame.height, type=_TIMESTAMP_TYPE),
    }
    for name in DISPLAY_FIELDS:
        columns[name] = pa.array(frame.get_column(name).to_list(), type=pa.string())
    return pa.table(columns)


def popular_articles(article_features: pl.DataFrame, k: int = POPULAR_SIZE) -> pl.DataFrame:
    """The ``k`` articles with most ``SALES_7D``, ties by article id; unsold ones left out.

    Args:
        article_features: ``article_features`` rows as of the serving cutoff (``SALES_7D`` =
            purchase lines in the 7 days before it, the same count the "last-week popularity"
            baseline ranks by).

    Returns:
        ``ARTICLE_ID`` (str), ``SALES_7D`` (int64), at most ``k`` rows, best first.
    """
    return (
        article_features.select(s.ARTICLE_ID, pl.col(s.SALES_7D).cast(pl.Int64))
        .filter(pl.col(s.SALES_7D) > 0)
        .sort([s.SALES_7D, s.ARTICLE_ID], descending=[True, False])
        .head(k)
    )


def _read_model_inputs(models_dir: Path) -> tuple[Workflow, int]:
    # Imported here: shoprec.artifacts imports torch and faiss (~4 s), and the feature repo and
    # the gateway import this module for its file names only.
    from shoprec.artifacts import CONFIG_FILE, WORKFLOW_FILE, read_json

    config = PipelineConfig.from_dict(read_json(models_dir / CONFIG_FILE))
    return Workflow.load(models_dir / WORKFLOW_FILE), config.dataset.history_length


def export_online_tables(
    models_dir: Path, dataset_dir: Path, canonical_dir: Path, out_dir: Path
) -> OnlineTables:
    """Write the customer, article and popular tables and the manifest to ``out_dir``.

    Args:
        models_dir: ``models/<name>``: ``workflow.json`` and ``config.json`` (for N =
            ``dataset.history_length``).
        dataset_dir: ``data/<name>/dataset``: the serving snapshot (latest customer and article
            features, serving cutoff).
        canonical_dir: ``data/<name>/canonical``: the article catalog (display fields).
        out_dir: created if missing; existing files of the same names are replaced.

    Returns:
        Paths, row counts, the cutoff and the encoded widths.

    Raises:
        ArtifactError: an input file is missing, or the snapshot's history lists are longer
            than the model's N (dataset and models built with different configs).
    """
    workflow, history_length = _read_model_inputs(models_dir)
    data = load_dataset(dataset_dir)
    canonical = read_canonical(canonical_dir)
    longest = data.latest_customers.get_column(s.HIST_ARTICLE_IDS).list.len().max()
    if isinstance(longest, int) and longest > history_length:
        raise ArtifactError(
            f"{dataset_dir}: history lists hold up to {longest} articles but {models_dir} was "
            f"trained with history_length={history_length}; rebuild one of them"
        )
    enc = encode_customers(workflow, data.latest_customers, history_length)
    event_time = cutoff_timestamp(data.serving_cutoff)
    customers = customer_table(enc, event_time)
    articles = article_table(canonical.articles, event_time)
    popular = popular_articles(data.latest_articles)

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in (CUSTOMERS_FILE, ARTICLES_FILE, POPULAR_FILE)}
    pq.write_table(customers, paths[CUSTOMERS_FILE])
    pq.write_table(articles, paths[ARTICLES_FILE])
    popular.write_parquet(paths[POPULAR_FILE])
    widths = {name: int(m.shape[1]) for name, m in encoded_columns(enc).items()}
    manifest: dict[str, Any] = {
        "serving_cutoff": event_time.isoformat(),
        "rows": {
            CUSTOMERS_FILE: customers.num_rows,
            ARTICLES_FILE: articles.num_rows,
            POPULAR_FILE: popular.height,
        },
        "widths": widths,
    }
    manifest_path = out_dir / MANIFEST_FILE
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return OnlineTables(
        customers=paths[CUSTOMERS_FILE],
        articles=paths[ARTICLES_FILE],
        popular=paths[POPULAR_FILE],
        manifest=manifest_path,
        n_customers=customers.num_rows,
        n_articles=articles.num_rows,
        n_popular=popular.height,
        serving_cutoff=event_time,
        widths=widths,
    )


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
