"""The near-real-time feature updater: reads the event log in order and keeps every affected
customer's encoded online features (``customer_encoded_fv``) and the shopper state
(:mod:`shoprec.featurestore.shopper`) up to date.

State. The served feature-store version holds the snapshot's transactions, customers and
fitted workflow (``featurestore.tables.STATE_*``) and the last log offset folded into them
(``log_offset``). A customer's full history is those transactions plus the purchase events of
the log after ``log_offset``; a customer touched by a log entry is recomputed from that history
with :func:`shoprec.features.state.encode_customer_state`, the function the snapshot export
calls, so the updated row equals what a fresh export of the same data would hold.

Events become transaction lines the way ``shoprec ingest events`` folds them (``t_dat`` = the
event's UTC date, ``price`` = the event's price, else the article's mean snapshot price, else
0); when the snapshot's served policy excludes already-bought articles (manifest
``exclude_purchased``), each purchase also joins the customer's bought set in the shopper
state. ``not_interested`` events add to the customer's exclusions, ``view`` events with a
``session_id`` to the session's views, customer ``PUT`` replaces the attributes, an erasure
drops everything of the customer and deletes their store row again (the gateway removed it
at erasure; this updater may have written it back from entries it read before).

A new customer (no snapshot row) is written after their first purchase: until then the gateway
serves them the popular list.

Position and restarts. After each batch has been written to the store, the offset of its last
entry is stored (``updater_position.json`` in the version's folder, written to a temporary file,
fsynced and renamed). At start the updater replays the log from ``log_offset`` to that position
into memory without writing, then continues: entries after the position are applied again if
the process died before storing it, and applying is a recompute from state, so each event takes
effect exactly once (``tests/test_updater.py`` kills it with SIGKILL mid-stream). Events are
de-duplicated by ``event_id`` (the Redis log remembers ids only for a window).

Versions. The updater follows ``CURRENT``: when a new materialization is published it loads
the new snapshot and starts from that version's own position.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date
from pathlib import Path
from typing import Any, Final

import polars as pl

from shoprec import schema as s
from shoprec.config import HistoryOrder
from shoprec.events import (
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
from shoprec.features.state import STATE_TRANSACTION_COLUMNS, encode_customer_state
from shoprec.features.workflow import Workflow
from shoprec.featurestore.shopper import (
    SqliteShopperState,
    article_delta_location,
    open_shopper_state,
)
from shoprec.featurestore.tables import (
    ONLINE_DATA_DIR,
    STATE_CUSTOMERS_FILE,
    STATE_KEY,
    STATE_TRANSACTIONS_FILE,
    STATE_WORKFLOW_FILE,
    encoded_columns,
    read_manifest,
)
from shoprec.featurestore.versions import resolve
from shoprec.featurestore.writer import OnlineWriter
from shoprec.serving.article_delta import ENV_ARTICLE_DELTA, open_article_delta
from shoprec.updater.articles import ArticleEncoder, ArticleIndexer

log = logging.getLogger(__name__)

POSITION_FILE: Final = "updater_position.json"


@dataclass(frozen=True)
class UpdaterConfig:
    """How the updater polls.

    Attributes:
        batch: log entries read per step (1..10,000).
        poll_s: sleep when the log had nothing new (seconds).
        prune_every_s: how often expired session views are pruned (SQLite state).
    """

    batch: int = 1000
    poll_s: float = 0.02
    prune_every_s: float = 60.0


@dataclass(frozen=True)
class StepReport:
    """One step: entries read, customers written, the position after it."""

    entries: int
    customers: int
    position: int


def read_position(folder: Path) -> int | None:
    """The stored position of the updater in a version folder (None when never stored)."""
    try:
        return int(json.loads((folder / POSITION_FILE).read_text())["offset"])
    except FileNotFoundError:
        return None


def _write_position(folder: Path, offset: int) -> None:
    path = folder / POSITION_FILE
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        out.write(json.dumps({"offset": offset}))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FeatureUpdater:
    """Event log -> online store (see the module docstring). Not thread-safe: one process per
    feature repo.

    Args:
        repo_path: the feature repo (``models/<name>/feature_repo``).
        reader: the event log.
        redis_url: overrides the Redis address of a Redis repo.
        config: polling settings.
        encoder: the served article encoder (Triton ``article_encoder``); with it, articles
            put through the API that the served model does not know are encoded into the
            article delta (``SHOPREC_ARTICLE_DELTA``, default: next to the online store,
            ``featurestore.shopper.article_delta_location``). None: they are not.

    Raises:
        ArtifactError: the repo is not materialized, or its version has no updater state
            (materialized before the updater existed: materialize again).
    """

    def __init__(
        self,
        repo_path: Path,
        reader: LogReader,
        *,
        redis_url: str | None = None,
        config: UpdaterConfig | None = None,
        encoder: ArticleEncoder | None = None,
    ) -> None:
        self.repo_path = Path(repo_path)
        self.reader = reader
        self.config = config or UpdaterConfig()
        self.writer = OnlineWriter(self.repo_path, redis_url=redis_url)
        self.shopper = open_shopper_state(self.repo_path, redis_url=redis_url)
        self.articles: ArticleIndexer | None = None
        if encoder is not None:
            location = os.environ.get(ENV_ARTICLE_DELTA) or article_delta_location(
                self.repo_path, redis_url=redis_url
            )
            self.articles = ArticleIndexer(encoder, open_article_delta(location))
        self._last_prune = time.monotonic()
        self._load()

    # -- state -----------------------------------------------------------------------------

    def _load(self) -> None:
        folder, version = resolve(self.repo_path)
        data_dir = folder / ONLINE_DATA_DIR
        manifest = read_manifest(data_dir)
        if STATE_KEY not in manifest:
            from shoprec.errors import ArtifactError

            raise ArtifactError(f"{folder}: no updater state in the snapshot (materialize again)")
        state: dict[str, Any] = manifest[STATE_KEY]
        self.folder, self.version = folder, version
        self.snapshot_cutoff = date.fromisoformat(state["serving_cutoff"])
        self.history_length = int(state["history_length"])
        self.history_order = HistoryOrder(state["history_order"])
        self.repurchase_length = int(state["repurchase_length"])
        self.base_offset = int(state["log_offset"])
        # The served policy: each purchase joins the shopper state's bought set when it
        # excludes (False for snapshots materialized before the bought sets existed).
        self.exclude_purchased = bool(state.get("exclude_purchased", False))
        self.workflow = Workflow.load(data_dir / STATE_WORKFLOW_FILE)
        self.snapshot_tx = pl.read_parquet(data_dir / STATE_TRANSACTIONS_FILE).select(
            STATE_TRANSACTION_COLUMNS
        )
        self._index_snapshot()
        self.snapshot_customers = pl.read_parquet(data_dir / STATE_CUSTOMERS_FILE)
        self._snapshot_ids = set(self.snapshot_customers.get_column(s.CUSTOMER_ID).to_list())
        self._mean_price: dict[str, float] | None = None
        self._hash_to_id: dict[str, str] | None = None
        # What the log added since base_offset.
        self.lines: dict[str, list[tuple[date, str, float]]] = defaultdict(list)
        self.attributes: dict[str, Customer] = {}
        self.sessions_of: dict[str, set[str]] = defaultdict(set)
        self.erased: set[str] = set()
        self.seen_events: set[str] = set()
        self._last_ts: dict[str, int] = {}
        # Feast's Redis store skips a row not newer (whole seconds) than the stored one: after
        # a restart, write at least one second after this start, later than any write of the
        # process before.
        self._min_ts = int(time.time()) + 1
        self.position = self.base_offset
        saved = read_position(folder)
        if saved is not None and saved > self.base_offset:
            self._replay(saved)
        self.position = max(saved or 0, self.base_offset)
        log.info("updater on version %s from offset %d", version, self.position)

    def _replay(self, until: int) -> None:
        """Rebuild the in-memory state from the log up to ``until`` (already written)."""
        after = self.base_offset
        while after < until:
            entries = [e for e in self.reader.read_after(after, 10_000) if e.offset <= until]
            if not entries:
                return
            self._apply(entries, write_shopper=False)
            after = entries[-1].offset

    def _index_snapshot(self) -> None:
        """Row range of each customer in the snapshot transactions, so that a recompute slices
        its customers' rows instead of scanning every row."""
        self.snapshot_tx = self.snapshot_tx.sort(s.CUSTOMER_ID, maintain_order=True)
        ranges = (
            self.snapshot_tx.with_row_index("_row")
            .group_by(s.CUSTOMER_ID)
            .agg(pl.col("_row").min().alias("start"), pl.len().alias("n"))
        )
        self._rows: dict[str, tuple[int, int]] = {
            cid: (int(start), int(n)) for cid, start, n in ranges.iter_rows()
        }

    def _snapshot_rows(self, customer_ids: list[str]) -> list[pl.DataFrame]:
        out = [self.snapshot_tx.clear()]
        for cid in customer_ids:
            span = self._rows.get(cid)
            if span is not None:
                out.append(self.snapshot_tx.slice(*span))
        return out

    def _mean_prices(self) -> dict[str, float]:
        if self._mean_price is None:
            frame = self.snapshot_tx.group_by(s.ARTICLE_ID).agg(pl.col(s.PRICE).mean())
            self._mean_price = dict(frame.iter_rows())
        return self._mean_price

    def _id_of_hash(self, digest: str) -> str | None:
        known = {cid for cid in (*self.lines, *self.attributes) if customer_hash(cid) == digest}
        if known:
            return known.pop()
        if self._hash_to_id is None:
            self._hash_to_id = {customer_hash(cid): cid for cid in self._snapshot_ids}
        return self._hash_to_id.get(digest)

    def _apply(self, entries: list[LogEntry], *, write_shopper: bool) -> set[str]:
        """Fold entries into memory (and the shopper state); the customers to recompute."""
        touched: set[str] = set()
        for entry in entries:
            record = entry.record
            if entry.kind is EntryKind.EVENT and isinstance(record, Event):
                if record.event_id in self.seen_events:
                    continue
                self.seen_events.add(record.event_id)
                touched |= self._event(entry, record, write_shopper)
            elif entry.kind is EntryKind.CUSTOMER_PUT and isinstance(record, Customer):
                self.attributes[record.customer_id] = record
                self.erased.discard(record.customer_id)
                touched.add(record.customer_id)
            elif isinstance(record, ArticleState) and self.articles is not None:
                if record.deleted:
                    self.articles.delete(record.article_id)
                elif entry.kind is EntryKind.ARTICLE_PUT and record.fields is not None:
                    self.articles.put(record.article_id, record.fields)
            elif entry.kind is EntryKind.CUSTOMER_ERASED and isinstance(record, Erasure):
                cid = self._id_of_hash(record.customer_hash)
                if cid is not None:
                    self.lines.pop(cid, None)
                    self.attributes.pop(cid, None)
                    sessions = sorted(self.sessions_of.pop(cid, set()))
                    self.erased.add(cid)
                    touched.discard(cid)
                    if cid in self._snapshot_ids:  # their snapshot rows leave the state too
                        self._snapshot_ids.discard(cid)
                        gone = pl.col(s.CUSTOMER_ID) == cid
                        self.snapshot_tx = self.snapshot_tx.filter(~gone)
                        self._index_snapshot()
                        self.snapshot_customers = self.snapshot_customers.filter(~gone)
                    if write_shopper:
                        # The gateway deleted the row at erasure; delete again in case this
                        # updater wrote it back from entries read before the erasure.
                        self.writer.delete(s.CUSTOMER_ID, [cid])
                        self.shopper.forget(cid, sessions)
        return touched

    def _event(self, entry: LogEntry, event: Event, write_shopper: bool) -> set[str]:
        cid = event.customer_id
        if event.session_id is not None:
            self.sessions_of[cid].add(event.session_id)
        if event.type is EventType.PURCHASE:
            price = event.price
            if price is None:
                price = float(self._mean_prices().get(event.article_id) or 0.0)
            day = event.timestamp.astimezone(UTC).date()
            self.lines[cid].append((day, event.article_id, price))
            self.erased.discard(cid)
            if write_shopper and self.exclude_purchased:
                self.shopper.add_bought(cid, [event.article_id])
            return {cid}
        if not write_shopper:
            return set()
        if event.type is EventType.NOT_INTERESTED:
            self.shopper.exclude(cid, [event.article_id])
        elif event.type is EventType.VIEW and event.session_id is not None:
            self.shopper.add_view(
                event.session_id, entry.offset, event.article_id, entry.recorded_at
            )
        return set()

    # -- features --------------------------------------------------------------------------

    def encode(self, customer_ids: list[str]) -> tuple[list[str], dict[str, Any]]:
        """Encoded features of customers from their snapshot + log history; the ids that
        have a row (snapshot customers, and new customers with at least one purchase), in
        id order, and ``featurestore.tables.encoded_columns`` of them."""
        wanted = sorted(
            cid
            for cid in customer_ids
            if cid not in self.erased and (cid in self._snapshot_ids or self.lines.get(cid))
        )
        if not wanted:
            return [], {}
        ids = pl.Series(s.CUSTOMER_ID, wanted, dtype=pl.Utf8)
        rows = [
            {s.T_DAT: day, s.CUSTOMER_ID: cid, s.ARTICLE_ID: aid, s.PRICE: price}
            for cid in wanted
            for day, aid, price in self.lines.get(cid, ())
        ]
        tx = pl.concat(
            [
                *self._snapshot_rows(wanted),
                pl.DataFrame(rows, schema=self.snapshot_tx.schema),
            ]
        )
        snapshot = self.snapshot_customers.filter(pl.col(s.CUSTOMER_ID).is_in(ids.implode()))
        put = [
            self.attributes[c].model_dump(include=set(s.CUSTOMER_COLUMNS))
            for c in wanted
            if c in self.attributes
        ]
        put_ids = [c for c in wanted if c in self.attributes]
        new = [
            {s.CUSTOMER_ID: c}
            for c in wanted
            if c not in self.attributes and c not in self._snapshot_ids
        ]
        customers = pl.concat(
            [
                snapshot.filter(~pl.col(s.CUSTOMER_ID).is_in(put_ids)),
                pl.DataFrame(put, schema=snapshot.schema),
                pl.DataFrame(new, schema=snapshot.schema),
            ]
        )
        enc = encode_customer_state(
            tx,
            customers,
            self.snapshot_cutoff,
            self.workflow,
            self.history_length,
            self.history_order,
            self.repurchase_length,
        )
        return [str(c) for c in enc.ids], encoded_columns(enc)

    def _write(self, customer_ids: set[str]) -> int:
        ids, features = self.encode(sorted(customer_ids))
        if not ids:
            return 0
        now = int(time.time())
        stamps = []
        for cid in ids:
            ts = max(now, self._min_ts, self._last_ts.get(cid, 0) + 1)
            self._last_ts[cid] = ts
            stamps.append(ts)
        self.writer.put_customers(ids, features, stamps)
        return len(ids)

    # -- loop ------------------------------------------------------------------------------

    def step(self) -> StepReport:
        """Read one batch after the position, apply it, write the touched customers, store
        the position. Follows a newly published feature-store version first.

        Raises:
            EventLogError: the log cannot be read.
            OnlineStoreError: the store cannot be written (the position is not moved).
        """
        _, version = resolve(self.repo_path)
        if version != self.version:
            self._load()
        entries = self.reader.read_after(self.position, self.config.batch)
        if not entries:
            if self.articles is not None:
                self.articles.idle()  # pending after a replay or a failed flush; a re-export
            return StepReport(0, 0, self.position)
        touched = self._apply(entries, write_shopper=True)
        written = self._write(touched)
        if self.articles is not None:
            self.articles.flush()
        self.position = entries[-1].offset
        _write_position(self.folder, self.position)
        return StepReport(len(entries), written, self.position)

    def run_until_caught_up(self) -> int:
        """Steps until the log has nothing new; entries applied."""
        total = 0
        while True:
            report = self.step()
            total += report.entries
            if not report.entries:
                return total

    def run_forever(self, should_stop: Any = None, heartbeat: Path | None = None) -> None:
        """Poll the log until ``should_stop()`` is true; errors are logged and retried.
        ``heartbeat``: a file touched at least every 5 s while the loop runs (healthchecks)."""
        beat = 0.0
        while should_stop is None or not should_stop():
            if heartbeat is not None and time.monotonic() - beat > 5.0:
                heartbeat.touch()
                beat = time.monotonic()
            try:
                report = self.step()
            except Exception as exc:  # noqa: BLE001 - a supervised loop: log, back off, retry
                log.warning("updater step failed: %s", exc)
                time.sleep(1.0)
                continue
            due = time.monotonic() - self._last_prune > self.config.prune_every_s
            if due and isinstance(self.shopper, SqliteShopperState):
                with contextlib.suppress(Exception):
                    self.shopper.prune()
                self._last_prune = time.monotonic()
            if not report.entries:
                time.sleep(self.config.poll_s)

    def close(self) -> None:
        self.shopper.close()
        self.reader.close()
        if self.articles is not None:
            self.articles.encoder.close()
            self.articles.delta.close()
