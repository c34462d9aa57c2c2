"""What the shopper state's bought sets cost: the bulk load ``shoprec materialize`` does, the
gateway's one read of a customer's exclusions, and clearing them.

Synthetic pairs with H&M-like ids (64-hex customer ids, 10-digit article ids), sorted by
customer as ``export.online_tables.write_bought_sets`` hands them over (``BULK_ROWS`` per
call), into a fresh SQLite file and into the Redis at 127.0.0.1:6379 under a unique prefix
(cleared at the end)::

    python scripts/bench_bought_sets.py 100000 20   # customers, distinct articles each
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from shoprec.featurestore.shopper import BULK_ROWS, RedisShopperState, SqliteShopperState

READS = 2000


def main(n_customers: int, per: int) -> None:
    rng = np.random.default_rng(0)
    articles = np.array([f"{i:010d}" for i in range(100_000)])
    customer_ids: list[str] = []
    article_ids: list[str] = []
    for i in range(n_customers):
        for a in np.sort(rng.choice(articles, size=per, replace=False)):
            customer_ids.append(f"{i:064x}")
            article_ids.append(str(a))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("sqlite", "redis"):
            state: SqliteShopperState | RedisShopperState
            if kind == "sqlite":
                state = SqliteShopperState(Path(folder) / "shopper_state.db")
            else:
                client = redis.Redis(host="127.0.0.1", port=6379)
                state = RedisShopperState(client, f"bench-bought-{uuid.uuid4().hex[:8]}")
            t = time.perf_counter()
            for start in range(0, len(customer_ids), BULK_ROWS):
                stop = start + BULK_ROWS
                state.load_bought(customer_ids[start:stop], article_ids[start:stop])
            load_s = time.perf_counter() - t
            t = time.perf_counter()
            for i in range(min(READS, n_customers)):
                assert len(state.excluded(f"{i:064x}")) == per
            read_ms = (time.perf_counter() - t) / min(READS, n_customers) * 1e3
            t = time.perf_counter()
            state.clear_bought()
            clear_s = time.perf_counter() - t
            state.close()
            rows.append((kind, load_s, read_ms, clear_s))
    n = len(customer_ids)
    print(f"{n_customers:,} customers x {per} distinct articles = {n:,} pairs")
    print(f"BULK_ROWS={BULK_ROWS:,}")
    print("| store | load s | pairs/s | excluded() mean ms | clear_bought s |")
    print("|---|---:|---:|---:|---:|")
    for kind, load_s, read_ms, clear_s in rows:
        print(f"| {kind} | {load_s:.1f} | {n / load_s:,.0f} | {read_ms:.3f} | {clear_s:.1f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
