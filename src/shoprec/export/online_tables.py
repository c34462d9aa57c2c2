"""Export the serving snapshot as the Parquet tables the Feast feature views read, and load
them into the online store (``shoprec materialize``).

The tables and their manifest are described in :mod:`shoprec.featurestore.tables`; loading
them into Feast is :func:`shoprec.featurestore.store.apply_and_materialize`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from shoprec import schema as s
from shoprec.config import PipelineConfig
from shoprec.data.dataset import load_dataset
from shoprec.data.ingest.canonical import read_canonical, read_report
from shoprec.errors import ArtifactError
from shoprec.features.popular import popular_articles
from shoprec.features.state import STATE_TRANSACTION_COLUMNS, encode_customer_state
from shoprec.features.workflow import Workflow
from shoprec.featurestore.store import (
    DEFAULT_REDIS_URL,
    MaterializeReport,
    OnlineStoreError,
    OnlineStoreKind,
    apply_and_materialize,
    check_online_store,
    default_definitions,
    default_project,
    load_definitions,
    prune_versions,
    repo_dir,
    teardown,
    write_sentinel,
)
from shoprec.featurestore.tables import (
    ARTICLES_FILE,
    CUSTOMERS_FILE,
    DISPLAY_FIELDS,
    MANIFEST_FILE,
    ONLINE_DATA_DIR,
    POPULAR_FILE,
    POPULAR_SIZE,
    STATE_CUSTOMERS_FILE,
    STATE_KEY,
    STATE_TRANSACTIONS_FILE,
    STATE_WORKFLOW_FILE,
    TIMESTAMP_TYPE,
    OnlineTables,
    customer_table,
    cutoff_timestamp,
    encoded_columns,
)
from shoprec.featurestore.versions import new_version, publish, version_dir


def article_table(articles: pl.DataFrame, event_time: datetime) -> pa.Table:
    """Arrow table of article display fields, sorted by article id."""
    frame = articles.select(s.ARTICLE_ID, *DISPLAY_FIELDS).sort(s.ARTICLE_ID)
    columns: dict[str, pa.Array] = {
        s.ARTICLE_ID: pa.array(frame.get_column(s.ARTICLE_ID).to_list(), type=pa.string()),
        s.EVENT_TIMESTAMP: pa.array([event_time] * frame.height, type=TIMESTAMP_TYPE),
    }
    for name in DISPLAY_FIELDS:
        columns[name] = pa.array(frame.get_column(name).to_list(), type=pa.string())
    return pa.table(columns)


def _read_model_inputs(models_dir: Path) -> tuple[Workflow, PipelineConfig, Path]:
    # Imported here: shoprec.artifacts imports torch and faiss (~4 s), and the feature repo and
    # the gateway import this module for its file names only.
    from shoprec.artifacts import CONFIG_FILE, WORKFLOW_FILE, read_json

    config = PipelineConfig.from_dict(read_json(models_dir / CONFIG_FILE))
    return Workflow.load(models_dir / WORKFLOW_FILE), config, models_dir / WORKFLOW_FILE


def _folded_offset(canonical_dir: Path) -> int:
    """The last event-log offset ``shoprec ingest events`` folded into the canonical tables
    (0 when none): the updater of this snapshot starts after it."""
    try:
        report = read_report(canonical_dir)
    except ArtifactError:
        return 0
    return int(report.get("events", {}).get("to_offset", 0))


def export_online_tables(
    models_dir: Path,
    dataset_dir: Path,
    canonical_dir: Path,
    out_dir: Path,
    *,
    exclude_purchased: bool = False,
) -> OnlineTables:
    """Write the customer, article and popular tables and the manifest to ``out_dir``.

    Args:
        models_dir: ``models/<name>``: ``workflow.json`` and ``config.json`` (for N =
            ``dataset.history_length``).
        dataset_dir: ``data/<name>/dataset``: the serving snapshot (latest customer and article
            features, serving cutoff) and R, its repurchase-list length.
        canonical_dir: ``data/<name>/canonical``: the article catalog (display fields).
        out_dir: created if missing; existing files of the same names are replaced.
        exclude_purchased: the served policy, recorded in the manifest's updater state (the
            updater adds each purchase to the shopper state's bought set when True).

    Returns:
        Paths, row counts, the cutoff and the encoded widths.

    Raises:
        ArtifactError: an input file is missing, or the snapshot's history lists are longer
            than the model's N (dataset and models built with different configs).
    """
    workflow, config, workflow_path = _read_model_inputs(models_dir)
    history_length = config.dataset.history_length
    # the serving snapshot only: the windows' features, examples and co-purchase tables are
    # train's and evaluate's (3.3 GiB at H&M size, where this step peaked at 16.4 GiB with them)
    data = load_dataset(dataset_dir, windows=False)
    longest = data.latest_customers.get_column(s.HIST_ARTICLE_IDS).list.len().max()
    data.latest_customers = data.latest_customers.clear()  # checked: read no more
    canonical = read_canonical(canonical_dir)
    if isinstance(longest, int) and longest > history_length:
        raise ArtifactError(
            f"{dataset_dir}: history lists hold up to {longest} articles but {models_dir} was "
            f"trained with history_length={history_length}; rebuild one of them"
        )
    # The canonical tables (with what `shoprec ingest events` folded in): the same function and
    # inputs the near-real-time updater recomputes customers from (shoprec.features.state).
    state_tx = canonical.transactions.select(STATE_TRANSACTION_COLUMNS).sort(
        [s.CUSTOMER_ID, s.T_DAT, s.ARTICLE_ID]
    )
    state_customers = canonical.customers.select(s.CUSTOMER_COLUMNS).sort(s.CUSTOMER_ID)
    enc = encode_customer_state(
        state_tx,
        state_customers,
        data.serving_cutoff,
        workflow,
        history_length,
        config.dataset.history_order,
        data.repurchase_length,
    )
    event_time = cutoff_timestamp(data.serving_cutoff)
    customers = customer_table(enc, event_time)
    articles = article_table(canonical.articles, event_time)
    popular = popular_articles(data.latest_articles, POPULAR_SIZE)

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in (CUSTOMERS_FILE, ARTICLES_FILE, POPULAR_FILE)}
    pq.write_table(customers, paths[CUSTOMERS_FILE])
    pq.write_table(articles, paths[ARTICLES_FILE])
    popular.write_parquet(paths[POPULAR_FILE])
    state_tx.write_parquet(out_dir / STATE_TRANSACTIONS_FILE)
    state_customers.write_parquet(out_dir / STATE_CUSTOMERS_FILE)
    shutil.copyfile(workflow_path, out_dir / STATE_WORKFLOW_FILE)
    widths = {name: int(m.shape[1]) for name, m in encoded_columns(enc).items()}
    manifest: dict[str, Any] = {
        "serving_cutoff": event_time.isoformat(),
        "rows": {
            CUSTOMERS_FILE: customers.num_rows,
            ARTICLES_FILE: articles.num_rows,
            POPULAR_FILE: popular.height,
        },
        "widths": widths,
        STATE_KEY: {
            "serving_cutoff": data.serving_cutoff.isoformat(),
            "history_length": history_length,
            "history_order": config.dataset.history_order.value,
            "repurchase_length": data.repurchase_length,
            "log_offset": _folded_offset(canonical_dir),
            "exclude_purchased": bool(exclude_purchased),
        },
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


def write_bought_sets(
    repo: Path,
    transactions: Path,
    exclude_purchased: bool,
    kind: OnlineStoreKind,
    *,
    connection_string: str | None = None,
    base_project: str | None = None,
) -> int:
    """Load the distinct (customer, article) pairs of ``transactions`` (the snapshot's updater
    state, Parquet) into the shopper state's bought sets when ``exclude_purchased``; clear the
    bought sets otherwise. Bulk writes (:data:`shoprec.featurestore.shopper.BULK_ROWS` pairs
    per SQLite transaction / Redis pipeline); the pairs are added, so purchases the updater
    already wrote after the snapshot stay.

    Returns:
        Pairs written (0 when cleared).

    Raises:
        OnlineStoreError: the shopper state cannot be written.
    """
    from shoprec.featurestore.shopper import BULK_ROWS, shopper_state_at

    state = shopper_state_at(
        repo, kind, connection_string=connection_string, base_project=base_project
    )
    try:
        if not exclude_purchased:
            state.clear_bought()
            return 0
        pairs = (
            pl.scan_parquet(transactions)
            .select(s.CUSTOMER_ID, s.ARTICLE_ID)
            .unique()
            .sort(s.CUSTOMER_ID, s.ARTICLE_ID)
            .collect()
        )
        # Python strings of one batch at a time (tens of millions of pairs at H&M size).
        written = 0
        for batch in pairs.iter_slices(BULK_ROWS):
            written += state.load_bought(
                batch.get_column(s.CUSTOMER_ID).to_list(),
                batch.get_column(s.ARTICLE_ID).to_list(),
            )
        return written
    except (redis.RedisError, sqlite3.Error) as exc:
        raise OnlineStoreError(f"shopper state of {repo}: {exc}") from exc
    finally:
        state.close()


def materialize(
    models_dir: Path,
    dataset_dir: Path,
    canonical_dir: Path,
    *,
    online_store: OnlineStoreKind | str = OnlineStoreKind.SQLITE,
    redis_url: str = DEFAULT_REDIS_URL,
    project: str | None = None,
    definitions: Path | None = None,
) -> MaterializeReport:
    """Export the serving snapshot, ``feast apply`` the declarations and materialize it as a
    new version of the dataset's feature repo, then publish that version.

    Writes ``models_dir/feature_repo/versions/<version>/``
    (:mod:`shoprec.featurestore.versions`): the exported tables (:func:`export_online_tables`),
    :func:`~shoprec.featurestore.store.apply_and_materialize` into the Feast project
    ``<project>_<version>``, and the store's sentinel of that version, last; only then
    ``CURRENT`` moves to it (readers switch), and versions older than the one before it are
    torn down. When the served policy excludes already-bought articles
    (:func:`shoprec.artifacts.exported_exclusion`), every (customer, article) pair of the
    snapshot's transactions is added to the shopper state's bought sets before the switch
    (:func:`write_bought_sets`); when it keeps them, the bought sets are cleared. A failure
    leaves the served version as it was (the new one is removed; bought pairs already added
    stay: they are purchases all the same).

    Args:
        models_dir: ``models/<name>`` (workflow, config; receives ``feature_repo/``).
        dataset_dir / canonical_dir: ``data/<name>/dataset`` and ``data/<name>/canonical``.
        online_store: ``"sqlite"`` (file under the repo) or ``"redis"``.
        redis_url: ``host:port[,key=value...]`` (Feast's format, e.g. ``,password=...``);
            only with Redis.
        project: base of the Feast project (letters, digits, ``_``); default
            ``default_project``. Rows of different projects never collide in a shared Redis.
        definitions: the declarations file copied into the repo; default
            ``default_definitions``.

    Returns:
        Feature repo path, the version's project, row counts, the policy, the bought pairs
        written and seconds per step (``export``, ``apply``, ``materialize``, ``bought``).

    Raises:
        ValueError: unknown ``online_store`` or invalid ``project``.
        ArtifactError: an input artifact or ``definitions`` is missing.
        OnlineStoreError: Redis is unreachable (checked before anything is written).
    """
    from shoprec.artifacts import exported_exclusion

    kind = OnlineStoreKind(online_store)
    exclude_purchased = exported_exclusion(models_dir)
    base = project or default_project(models_dir)
    definitions = definitions or default_definitions()
    objects = load_definitions(definitions)
    repo = repo_dir(models_dir)
    version = new_version()
    config = check_online_store(kind, redis_url, base)
    project = config["project"] = f"{base}_{version}"
    folder = version_dir(repo, version)
    try:
        t = time.perf_counter()
        tables = export_online_tables(
            models_dir,
            dataset_dir,
            canonical_dir,
            folder / ONLINE_DATA_DIR,
            exclude_purchased=exclude_purchased,
        )
        seconds = {"export": time.perf_counter() - t}
        seconds.update(apply_and_materialize(folder, config, definitions, objects))
        t = time.perf_counter()
        n_bought = write_bought_sets(
            repo,
            folder / ONLINE_DATA_DIR / STATE_TRANSACTIONS_FILE,
            exclude_purchased,
            kind,
            connection_string=config["online_store"].get("connection_string"),
            base_project=base,
        )
        seconds["bought"] = time.perf_counter() - t
        rows = {
            s.CUSTOMER_FEATURE_VIEW: tables.n_customers,
            s.ARTICLE_FEATURE_VIEW: tables.n_articles,
        }
        write_sentinel(folder, rows)
    except BaseException:
        with contextlib.suppress(Exception):
            if folder.is_dir() and (folder / "feature_store.yaml").is_file():
                teardown(folder)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    publish(repo, version)
    prune_versions(repo)
    return MaterializeReport(
        repo_path=repo,
        project=project,
        online_store=kind,
        serving_cutoff=tables.serving_cutoff,
        rows=rows,
        n_popular=tables.n_popular,
        seconds=seconds,
        exclude_purchased=exclude_purchased,
        n_bought=n_bought,
        version=version,
    )
