"""Fold the event log into the canonical tables: what the write API took in, for the next
training (``shoprec ingest events --name NAME``).

What a fold does, reading the log with :class:`shoprec.events.LogReader`:

* erasures: every customer whose id hashes (SHA-256) to an erasure marker of the log leaves
  the customers table with all their transactions;
* purchases: every ``purchase`` event after the fold's watermark becomes a transaction line:
  ``t_dat`` = the event's UTC date, ``price`` = its price (else the article's mean price in
  the canonical transactions, else 0: counted as ``price_imputed``), ``quantity`` (1 when
  absent), ``sales_channel_id`` = 2 (online). Views, add-to-cart and not-interested events
  have no canonical table: they are counted and stay in the log for the feature updater;
* customers: the log's customer records (``PUT``) replace the canonical row or are added;
  a customer seen only in events is added with unknown attributes;
* articles: articles put through the API replace the canonical row or are added; a deleted
  article leaves the table unless a transaction needs it (then it stays, counted as
  ``deleted_articles_kept``); hidden articles stay (hiding is a serving decision, kept in the
  log, not a property of the data).

Idempotence: the offset of the last folded entry is the watermark, stored with the ingest
report (``ingest_report.json``, key ``events``); a second fold takes only later entries. A
new ingest of the source (``shoprec pipeline`` runs one) writes a report without a
watermark, and folding again re-applies the whole log, so the canonical tables are always
"source + log". Events are de-duplicated by ``event_id`` within a fold (the Redis log
remembers ids only for its de-duplication window).

The tables are written with :func:`~shoprec.data.ingest.canonical.write_canonical`
(validated, atomic): on any error the earlier tables stay as they were.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date
from pathlib import Path
from typing import Any, Final

import polars as pl

from shoprec import schema
from shoprec.data.ingest.canonical import (
    ARTICLE_SCHEMA,
    CUSTOMER_SCHEMA,
    TRANSACTION_SCHEMA,
    Canonical,
    read_canonical,
    read_report,
    write_canonical,
)
from shoprec.events import (
    MAX_READ,
    ArticleState,
    Customer,
    EntryKind,
    Erasure,
    Event,
    EventType,
    LogEntry,
    LogReader,
    customer_hash,
)

REPORT_KEY: Final = "events"
ONLINE_CHANNEL: Final = 2  # sales_channel_id of events from the write API
GAP_WARNING_DAYS: Final = 7  # purchases starting this long after the canonical data: warned


@dataclass
class FoldReport:
    """What :func:`fold_event_log` did (counts of entries, rows and ids)."""

    log: str
    from_offset: int
    to_offset: int
    entries: int = 0
    events: dict[str, int] = field(default_factory=dict)  # per event type
    duplicate_events: int = 0
    transactions_added: int = 0
    price_imputed: int = 0
    customers_added: int = 0
    customers_updated: int = 0
    articles_added: int = 0
    articles_updated: int = 0
    deleted_articles_dropped: int = 0
    deleted_articles_kept: int = 0
    erasures: int = 0
    customers_erased: int = 0
    transactions_erased: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_all(reader: LogReader, after: int) -> list[LogEntry]:
    entries: list[LogEntry] = []
    while True:
        chunk = reader.read_after(after, MAX_READ)
        if not chunk:
            return entries
        entries += chunk
        after = chunk[-1].offset


def _erase(c: Canonical, hashes: set[str], report: FoldReport) -> Canonical:
    if not hashes:
        return c
    ids = c.customers.get_column(schema.CUSTOMER_ID)
    doomed = [cid for cid in ids.to_list() if customer_hash(cid) in hashes]
    if not doomed:
        return c
    gone = pl.col(schema.CUSTOMER_ID).is_in(doomed)
    report.customers_erased = len(doomed)
    report.transactions_erased = int(c.transactions.select(gone.sum()).item())
    return Canonical(c.articles, c.customers.filter(~gone), c.transactions.filter(~gone))


def _purchases(events: list[Event], c: Canonical, report: FoldReport) -> pl.DataFrame:
    """Transaction lines of the purchase events, in the canonical schema."""
    mean_price = dict(
        c.transactions.group_by(schema.ARTICLE_ID).agg(pl.col(schema.PRICE).mean()).iter_rows()
    )
    rows: dict[str, list[Any]] = {name: [] for name in TRANSACTION_SCHEMA}
    for event in events:
        price = event.price
        if price is None:
            price = float(mean_price.get(event.article_id) or 0.0)
            report.price_imputed += 1
        rows[schema.T_DAT].append(event.timestamp.astimezone(UTC).date())
        rows[schema.CUSTOMER_ID].append(event.customer_id)
        rows[schema.ARTICLE_ID].append(event.article_id)
        rows[schema.PRICE].append(price)
        rows[schema.QUANTITY].append(event.quantity or 1)
        rows[schema.SALES_CHANNEL_ID].append(ONLINE_CHANNEL)
    return pl.DataFrame(rows, schema=TRANSACTION_SCHEMA)


def _upsert(table: pl.DataFrame, rows: pl.DataFrame, key: str) -> tuple[pl.DataFrame, int, int]:
    """``table`` with ``rows`` replacing rows of the same ``key`` or appended; (table,
    added, updated)."""
    if rows.is_empty():
        return table, 0, 0
    present = rows.get_column(key).is_in(table.get_column(key).implode())
    updated = int(present.sum())
    kept = table.filter(~pl.col(key).is_in(rows.get_column(key).implode()))
    return pl.concat([kept, rows]), rows.height - updated, updated


def fold_event_log(canonical_dir: Path, reader: LogReader, log_name: str) -> FoldReport:
    """Fold the log into the canonical tables of ``canonical_dir`` (see the module docstring).

    Args:
        canonical_dir: ``data/<name>/canonical``, written by ``shoprec ingest``.
        reader: the log.
        log_name: how the report names the log (its path or URL without password).

    Returns:
        The :class:`FoldReport`, also stored in ``ingest_report.json`` under ``"events"``
        with the watermark.

    Raises:
        ArtifactError: the canonical tables or their report are missing.
        InputDataError: the folded tables fail validation (nothing is written).
        EventLogError: the log cannot be read.
    """
    start = time.perf_counter()
    c = read_canonical(canonical_dir)
    source_report = read_report(canonical_dir)
    after = int(source_report.get(REPORT_KEY, {}).get("to_offset", 0))
    entries = _read_all(reader, after)
    report = FoldReport(log=log_name, from_offset=after, to_offset=after, entries=len(entries))
    if entries:
        report.to_offset = entries[-1].offset

    hashes = {e.record.customer_hash for e in entries if isinstance(e.record, Erasure)}
    report.erasures = len(hashes)
    c = _erase(c, hashes, report)

    seen: set[str] = set()
    purchases: list[Event] = []
    for entry in entries:
        if entry.kind is not EntryKind.EVENT or not isinstance(entry.record, Event):
            continue
        event = entry.record
        if event.event_id in seen:
            report.duplicate_events += 1
            continue
        seen.add(event.event_id)
        report.events[event.type.value] = report.events.get(event.type.value, 0) + 1
        if event.type is EventType.PURCHASE:
            purchases.append(event)

    states = reader.articles()
    new_lines = _purchases(purchases, c, report)
    transactions = pl.concat([c.transactions, new_lines])
    articles = _fold_articles(c.articles, states, transactions, report)
    customers = _fold_customers(c.customers, reader.customers(), new_lines, report)
    folded = Canonical(articles, customers, transactions)
    report.transactions_added = new_lines.height
    if not new_lines.is_empty() and not c.transactions.is_empty():
        last: date = c.transactions.get_column(schema.T_DAT).max()  # type: ignore[assignment]
        first: date = new_lines.get_column(schema.T_DAT).min()  # type: ignore[assignment]
        gap = (first - last).days
        if gap > GAP_WARNING_DAYS:
            report.warnings.append(
                f"the log's purchases start {gap} days after the last canonical one ({last}); "
                "the training windows count back from the last purchase date"
            )
    report.seconds = round(time.perf_counter() - start, 3)
    write_canonical(folded, canonical_dir, {**source_report, REPORT_KEY: report.to_dict()})
    return report


def _fold_articles(
    articles: pl.DataFrame,
    states: list[ArticleState],
    transactions: pl.DataFrame,
    report: FoldReport,
) -> pl.DataFrame:
    """Articles put through the API upserted; deleted ones dropped unless ``transactions``
    needs them."""
    rows = pl.DataFrame(
        [{schema.ARTICLE_ID: s.article_id, **s.fields.display()} for s in states if s.fields],
        schema=ARTICLE_SCHEMA,
    )
    articles, report.articles_added, report.articles_updated = _upsert(
        articles, rows, schema.ARTICLE_ID
    )
    deleted = {s.article_id for s in states if s.deleted}
    present = deleted & set(articles.get_column(schema.ARTICLE_ID).to_list())
    sold = present & set(transactions.get_column(schema.ARTICLE_ID).unique().to_list())
    report.deleted_articles_kept = len(sold)
    report.deleted_articles_dropped = len(present - sold)
    return articles.filter(~pl.col(schema.ARTICLE_ID).is_in(sorted(present - sold)))


def _fold_customers(
    customers: pl.DataFrame, records: list[Customer], lines: pl.DataFrame, report: FoldReport
) -> pl.DataFrame:
    rows = pl.DataFrame(
        [r.model_dump(include=set(CUSTOMER_SCHEMA)) for r in records], schema=CUSTOMER_SCHEMA
    )
    customers, report.customers_added, report.customers_updated = _upsert(
        customers, rows, schema.CUSTOMER_ID
    )
    known = customers.get_column(schema.CUSTOMER_ID).implode()
    unseen = (
        lines.select(schema.CUSTOMER_ID)
        .unique(maintain_order=True)
        .filter(~pl.col(schema.CUSTOMER_ID).is_in(known))
    )
    if unseen.is_empty():
        return customers
    report.customers_added += unseen.height
    empty = pl.DataFrame(
        {
            schema.CUSTOMER_ID: unseen.get_column(schema.CUSTOMER_ID),
            **{name: None for name in list(CUSTOMER_SCHEMA)[1:]},
        },
        schema=CUSTOMER_SCHEMA,
    )
    return pl.concat([customers, empty])
