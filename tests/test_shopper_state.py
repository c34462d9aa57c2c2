"""The shopper state (not-interested sets, session views) on SQLite and on a redis-server of the
test's own: the same answers from both, idempotent writes, TTL, erasure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import RedisServer
from shoprec.featurestore.shopper import (
    SESSION_LENGTH,
    RedisShopperState,
    ShopperState,
    SqliteShopperState,
)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("shopper_redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def state(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SqliteShopperState | RedisShopperState]:
    made: SqliteShopperState | RedisShopperState
    if request.param == "sqlite":
        made = SqliteShopperState(tmp_path / "shopper.db", ttl_s=2)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = RedisShopperState(server.client(), f"test:{tmp_path.name}", ttl_s=2)
    yield made
    made.close()


def test_exclusions_are_a_set_per_customer(state: ShopperState) -> None:
    assert state.excluded("c1") == frozenset()
    state.exclude("c1", ["a1", "a2"])
    state.exclude("c1", ["a2"])  # the updater re-applies after a restart
    state.exclude("c2", ["a3"])
    assert state.excluded("c1") == {"a1", "a2"}
    assert state.excluded("c2") == {"a3"}


def test_session_views_are_distinct_most_recent_first_and_idempotent(state: ShopperState) -> None:
    now = time.time()
    for offset, article in [(10, "a1"), (11, "a2"), (12, "a1"), (13, "a3")]:
        state.add_view("s1", offset, article, now)
    state.add_view("s1", 11, "a2", now)  # the same log entry again
    assert state.session_views("s1") == ["a3", "a1", "a2"]
    assert state.session_views("s1", limit=2) == ["a3", "a1"]
    assert state.session_views("unknown") == []
    for offset in range(100, 100 + 2 * SESSION_LENGTH):
        state.add_view("s2", offset, f"b{offset}", now)
    assert len(state.session_views("s2")) == SESSION_LENGTH


def test_sessions_expire_after_the_ttl(state: ShopperState) -> None:
    state.add_view("old", 1, "a1", time.time())
    assert state.session_views("old") == ["a1"]
    time.sleep(2.2)
    assert state.session_views("old") == []


def test_forget_drops_a_customers_exclusions_and_sessions(state: ShopperState) -> None:
    state.exclude("c9", ["a1"])
    state.add_view("s9", 1, "a1", time.time())
    state.add_view("s10", 2, "a2", time.time())
    state.forget("c9", ["s9"])
    assert state.excluded("c9") == frozenset()
    assert state.session_views("s9") == []
    assert state.session_views("s10") == ["a2"]


def test_bought_sets_join_the_exclusions_in_one_read(state: ShopperState) -> None:
    state.exclude("c1", ["a1"])
    state.add_bought("c1", ["a2"])
    customers = ["c1", "c1", "c2", "c3", "c3", "c3"]
    articles = ["a2", "a3", "a1", "a4", "a5", "a6"]
    assert state.load_bought(customers, articles) == len(customers)
    state.load_bought(customers[:2], articles[:2])  # a second materialize adds nothing new
    assert state.excluded("c1") == {"a1", "a2", "a3"}
    assert state.excluded("c2") == {"a1"}
    assert state.excluded("c3") == {"a4", "a5", "a6"}
    with pytest.raises(ValueError, match="2 customer ids but 1 article ids"):
        state.load_bought(["c1", "c2"], ["a1"])
    state.clear_bought()  # a policy that keeps bought articles
    assert state.excluded("c1") == {"a1"}
    assert state.excluded("c3") == frozenset()


def test_bulk_bought_load_spans_batches(
    state: ShopperState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shoprec.featurestore.shopper.BULK_ROWS", 3)
    customers = sorted(f"c{i // 4}" for i in range(20))  # runs cross the batch edges
    articles = [f"a{i % 4}" for i in range(20)]
    assert state.load_bought(customers, articles) == 20
    assert all(state.excluded(f"c{j}") == {"a0", "a1", "a2", "a3"} for j in range(5))


def test_forget_drops_the_bought_set(state: ShopperState) -> None:
    state.add_bought("c8", ["a1"])
    state.add_bought("c7", ["a2"])
    state.forget("c8", [])
    assert state.excluded("c8") == frozenset()
    assert state.excluded("c7") == {"a2"}
