"""The near-real-time updater over a real event log (SQLite) and a real Feast online store
(SQLite, the toy store of ``servers.build_toy_store``).

The reference is a from-scratch rebuild through the offline path: ``shoprec ingest events``
(``fold_event_log``) folds the same log into a copy of the canonical tables and
``export_online_tables`` encodes every customer again; the rows the updater wrote must equal
the rebuilt ones.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from servers import ToyStore, build_toy_store, wait_for
from shoprec import schema as s
from shoprec.artifacts import write_exported_policy
from shoprec.data.ingest.events import fold_event_log
from shoprec.events import Customer, Event, open_event_log, open_log_reader
from shoprec.export.online_tables import export_online_tables, materialize
from shoprec.featurestore import OnlineFeatures
from shoprec.featurestore.shopper import open_shopper_state
from shoprec.featurestore.tables import ENCODED_DTYPES
from shoprec.featurestore.versions import current_dir
from shoprec.featurestore.writer import OnlineWriter
from shoprec.updater import FeatureUpdater
from shoprec.updater.process import read_position

DAY = "2020-02-1{d}T10:00:00Z"  # the toy data ends 2020-02-11


@pytest.fixture
def toy(tmp_path: Path) -> ToyStore:
    return build_toy_store(tmp_path / "toy")


def event(
    event_id: str, kind: str, customer: str, article: str, day: int = 2, **extra: Any
) -> Event:
    return Event.model_validate(
        {
            "event_id": event_id,
            "type": kind,
            "customer_id": customer,
            "article_id": article,
            "timestamp": DAY.format(d=day),
            **extra,
        }
    )


def purchase(i: int, customer: str, article: str, day: int = 2, **extra: Any) -> Event:
    return event(f"e{i}", "purchase", customer, article, day, **extra)


def append(log: Path, *records: Event | Customer) -> None:
    async def write() -> None:
        writer = open_event_log(str(log))
        events = [r for r in records if isinstance(r, Event)]
        if events:
            await writer.append_events(events)
        for r in records:
            if isinstance(r, Customer):
                await writer.put_customer(r)
        await writer.close()

    asyncio.run(write())


def rebuild(toy: ToyStore, log: Path, out: Path) -> dict[str, dict[str, np.ndarray]]:
    """Encoded rows by customer id after folding the log into a copy of the canonical tables."""
    canonical = out / "canonical"
    shutil.copytree(toy.canonical_dir, canonical)
    reader = open_log_reader(str(log))
    fold_event_log(canonical, reader, "test")
    reader.close()
    dataset = toy.root / "data" / "toy" / "dataset"
    tables = export_online_tables(toy.models_dir, dataset, canonical, out / "tables")
    table = pq.read_table(tables.customers).to_pydict()
    return {
        cid: {
            name: np.asarray(table[name][i], dtype=dtype) for name, dtype in ENCODED_DTYPES.items()
        }
        for i, cid in enumerate(table[s.CUSTOMER_ID])
    }


def stored(toy: ToyStore, ids: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    reader = OnlineFeatures(toy.repo)
    try:
        return reader.get_customers(list(ids))
    finally:
        reader.close()


def assert_store_equals_rebuild(toy: ToyStore, expected: dict[str, dict[str, np.ndarray]]) -> None:
    ids = sorted(expected)
    found, features = stored(toy, ids)
    assert found.all()
    for row, cid in enumerate(ids):
        for name, want in expected[cid].items():
            np.testing.assert_array_equal(features[name][row], want, err_msg=f"{cid} {name}")


def test_updated_features_equal_a_rebuild_of_the_folded_log(toy: ToyStore, tmp_path: Path) -> None:
    log = tmp_path / "events.db"
    append(
        log,
        purchase(1, "c0", "a5", price=3.0),
        purchase(2, "c0", "a5", day=3),  # no price: the article's mean snapshot price
        purchase(3, "web-1", "a2", price=1.0),  # a new customer's first purchase
        purchase(1, "c0", "a5", price=3.0),  # a replay: the log keeps it once
        event("n1", "not_interested", "c1", "a3"),
        event("v1", "view", "web-2", "a6", session_id="s-1"),
        Customer(customer_id="c2", age=61.0, segment="LEFT"),  # attributes replaced
        Customer(customer_id="web-3", age=20.0),  # no purchase yet: stays unknown
    )
    before_found, before = stored(toy, ["c0", "web-1"])
    assert before_found.tolist() == [True, False]

    updater = FeatureUpdater(toy.repo, open_log_reader(str(log)))
    assert updater.run_until_caught_up() > 0
    updater.close()

    expected = rebuild(toy, log, tmp_path / "rebuild")
    # The offline fold adds a customer known only from PUT (no purchase); online they stay
    # unknown (popular list) until their first purchase.
    del expected["web-3"]
    assert_store_equals_rebuild(toy, expected)
    found, after = stored(toy, ["c0", "web-1", "web-3"])
    assert found.tolist() == [True, True, False]  # web-3 gets the popular list until a purchase
    assert not np.array_equal(after[s.T_HIST_IDS][0], before[s.T_HIST_IDS][0])
    shopper = open_shopper_state(toy.repo)
    assert shopper.excluded("c1") == {"a3"}
    assert shopper.session_views("s-1") == ["a6"]
    shopper.close()


def test_bought_sets_follow_the_served_policy(toy: ToyStore, tmp_path: Path) -> None:
    """Materialize loads every snapshot purchase into the bought sets when the exported policy
    excludes (beyond the N = 6 history slots too), the updater adds each purchase event and
    drops the set at erasure; a policy that keeps bought articles clears them."""
    dataset = toy.root / "data" / "toy" / "dataset"
    shopper = open_shopper_state(toy.repo)
    assert shopper.excluded("c0") == frozenset()  # the toy store: no policy recorded, keep
    write_exported_policy(toy.models_dir, True)
    report = materialize(toy.models_dir, dataset, toy.canonical_dir)
    assert report.exclude_purchased
    pairs = toy.canonical.transactions.select(s.CUSTOMER_ID, s.ARTICLE_ID).unique()
    assert report.n_bought == pairs.height
    assert shopper.excluded("c0") == {"a0", "a1", "a2", "a3"}
    log = tmp_path / "events.db"
    append(
        log,
        purchase(1, "c0", "a5", price=1.0),
        purchase(2, "web-1", "a2", price=1.0),
        purchase(3, "c4", "a1", price=1.0),
    )
    updater = FeatureUpdater(toy.repo, open_log_reader(str(log)))
    updater.run_until_caught_up()
    updater.close()
    assert shopper.excluded("c0") == {"a0", "a1", "a2", "a3", "a5"}
    assert shopper.excluded("web-1") == {"a2"}

    async def erase() -> None:
        writer = open_event_log(str(log))
        await writer.erase_customer("c4")
        await writer.close()

    asyncio.run(erase())
    again = FeatureUpdater(toy.repo, open_log_reader(str(log)))
    again.run_until_caught_up()
    again.close()
    assert shopper.excluded("c4") == frozenset()
    assert shopper.excluded("c0") == {"a0", "a1", "a2", "a3", "a5"}

    write_exported_policy(toy.models_dir, False)
    report = materialize(toy.models_dir, dataset, toy.canonical_dir)
    assert not report.exclude_purchased and report.n_bought == 0
    assert shopper.excluded("c0") == shopper.excluded("web-1") == frozenset()
    later = tmp_path / "later.db"
    append(later, purchase(4, "c1", "a6", price=1.0))
    keeping = FeatureUpdater(toy.repo, open_log_reader(str(later)))
    keeping.run_until_caught_up()
    keeping.close()
    assert shopper.excluded("c1") == frozenset()
    shopper.close()


def test_updater_follows_erasure_and_restarts_from_its_position(
    toy: ToyStore, tmp_path: Path
) -> None:
    log = tmp_path / "events.db"
    append(log, purchase(1, "c3", "a0", price=1.0), purchase(2, "web-9", "a1", price=1.0))
    updater = FeatureUpdater(toy.repo, open_log_reader(str(log)))
    updater.run_until_caught_up()
    position = read_position(current_dir(toy.repo))
    assert position == updater.position > 0
    updater.close()

    async def erase() -> None:
        writer = open_event_log(str(log))
        await writer.erase_customer("web-9")
        await writer.close()

    asyncio.run(erase())
    OnlineWriter(toy.repo).delete(s.CUSTOMER_ID, ["web-9"])  # what the gateway does at erasure
    append(log, purchase(3, "c3", "a1", price=1.0))
    again = FeatureUpdater(toy.repo, open_log_reader(str(log)))
    assert again.position == position  # resumed, not replayed from the snapshot
    again.run_until_caught_up()
    again.close()
    expected = rebuild(toy, log, tmp_path / "rebuild")
    assert "web-9" not in expected
    # The gateway deleted web-9's row at erasure; the updater did not write it back.
    found, _ = stored(toy, ["web-9"])
    assert not found[0]
    assert_store_equals_rebuild(toy, {k: v for k, v in expected.items() if k.startswith("c")})


def test_killed_updater_resumes_and_matches_a_rebuild(toy: ToyStore, tmp_path: Path) -> None:
    """SIGKILL the updater process mid-stream, restart it, and compare with a rebuild."""
    log = tmp_path / "events.db"
    append(log, purchase(0, "c0", "a0", price=1.0))  # creates the log file
    env = {
        **os.environ,
        "SHOPREC_FEATURE_REPO": str(toy.repo),
        "SHOPREC_EVENT_LOG": str(log),
        "SHOPREC_LOG_LEVEL": "WARNING",
    }
    out = (tmp_path / "updater.log").open("ab")
    command = [sys.executable, "-m", "shoprec.updater.main"]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)

    customers = [f"c{i}" for i in range(6)] + [f"web-{i}" for i in range(4)]
    articles = [f"a{i}" for i in range(8)]
    process = start()
    try:
        n = 1
        for batch in range(30):
            events = []
            for _ in range(10):
                cid, aid = customers[n % len(customers)], articles[(n * 3) % len(articles)]
                events.append(purchase(n, cid, aid, day=2 + batch % 5, price=float(n % 7)))
                n += 1
            append(log, *events)
            if batch == 15:  # mid-stream, once the updater has stored a position
                wait_for(
                    lambda: (read_position(current_dir(toy.repo)) or 0) > 1, 30, "updater started"
                )
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                process = start()
        head = open_log_reader(str(log)).head()
        wait_for(lambda: read_position(current_dir(toy.repo)) == head, 60, "updater caught up")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        out.close()
    assert process.returncode == 0, (tmp_path / "updater.log").read_text()[-2000:]
    expected = rebuild(toy, log, tmp_path / "rebuild")
    assert_store_equals_rebuild(toy, expected)


def test_updater_follows_a_new_materialization(toy: ToyStore, tmp_path: Path) -> None:
    """A new version (materialized from canonical tables that do not hold the log) starts
    empty of the log's effects; the updater switches to it and applies the log again."""
    log = tmp_path / "events.db"
    append(log, purchase(1, "c4", "a1", price=2.0), purchase(2, "web-5", "a6", price=2.0))
    updater = FeatureUpdater(toy.repo, open_log_reader(str(log)))
    updater.run_until_caught_up()
    first = updater.version
    dataset = toy.root / "data" / "toy" / "dataset"
    materialize(toy.models_dir, dataset, toy.canonical_dir)
    assert not stored(toy, ["web-5"])[0][0]  # the new version has only the snapshot
    updater.run_until_caught_up()
    assert updater.version != first
    updater.close()
    assert_store_equals_rebuild(toy, rebuild(toy, log, tmp_path / "rebuild"))
