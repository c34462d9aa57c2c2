"""The write API over real HTTP: uvicorn on a free loopback port serving the production app
(``create_app`` with the Feast reader and writer of ``shoprec.gateway.main``) over a toy
feature store materialized by Feast (SQLite) and a real event log (SQLite, and Redis on a
redis-server of the module's own); only Triton is replaced, by :class:`FakeRecommender`.

Each test gets a fresh event log; the feature store is shared by the module, so tests that
change it use articles and customers no other test reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy.typing as npt
import pytest

from servers import (
    READ_KEY,
    TEST_KEYS,
    WRITE_KEY,
    RedisServer,
    ThreadedServer,
    ToyStore,
    build_toy_store,
)
from shoprec import schema as s
from shoprec.events import (
    ArticleState,
    Customer,
    EntryKind,
    Erasure,
    Event,
    LogEntry,
    LogReader,
    customer_hash,
    open_log_reader,
)
from shoprec.featurestore import OnlineFeatures
from shoprec.featurestore.store import ENTITY_KEY_VERSION
from shoprec.featurestore.versions import current_dir
from shoprec.gateway import Settings, create_app
from shoprec.gateway.deps import RankedBatch, UpstreamUnavailableError
from shoprec.gateway.main import event_log, feast_store, feast_writer
from shoprec.gateway.writes import ERASURE_REMAINS

WRITE = {"X-API-Key": WRITE_KEY}
READ = {"X-API-Key": READ_KEY}
POPULAR = ["a1", "a4", "a0", "a2", "a3", "a5", "a6", "a7"]  # the toy store's cold-start list
RANKED = ["a1", "a2", "a3", "a4", "a5", "a6"]  # what the fake model ranks for any customer
SIMILAR = ["a2", "a3", "a0", "a6"]
WHEN = "2026-11-29T10:00:00Z"


class FakeRecommender:
    """Triton's stand-in: fixed lists, records the k each call asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def recommend(self, features: Mapping[str, npt.NDArray[Any]], k: int) -> RankedBatch:
        self.asked.append(("recommend", k))
        ids = RANKED[:k]
        return RankedBatch([ids], [[float(len(RANKED) - i) for i in range(len(ids))]])

    async def similar(self, article_ids: Sequence[str], k: int) -> RankedBatch:
        self.asked.append(("similar", k))
        if not set(article_ids) <= set(POPULAR):  # Triton fails ids outside its table
            raise UpstreamUnavailableError(f"unknown article_id {article_ids}")
        ids = SIMILAR[:k]
        return RankedBatch([ids], [[1.0 - 0.1 * i for i in range(len(ids))]])

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


@dataclass
class Gateway:
    """A running gateway: its HTTP client, event log URL and fake recommender."""

    http: httpx.Client
    log_url: str
    recommender: FakeRecommender
    settings: Settings
    readers: list[LogReader] = field(default_factory=list)

    def entries(self) -> list[LogEntry]:
        reader = open_log_reader(self.log_url, namespace=self.settings.event_log_namespace)
        self.readers.append(reader)
        return reader.read_after(0, 10_000)

    def ids(self, path: str, **params: Any) -> list[str]:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return [str(item[s.ARTICLE_ID]) for item in response.json()["items"]]


def event(
    event_id: str, customer_id: str = "c0", article_id: str = "a1", **extra: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer_id,
        "article_id": article_id,
        "timestamp": WHEN,
        **extra,
    }


def event_ids(entries: list[LogEntry]) -> list[str]:
    """The event ids of the entries, which must all be events."""
    assert all(isinstance(e.record, Event) for e in entries)
    return [e.record.event_id for e in entries if isinstance(e.record, Event)]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ToyStore:
    return build_toy_store(tmp_path_factory.mktemp("write_api"))


@pytest.fixture(scope="module")
def redis_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis_log")).start()
    yield server
    server.stop()


@pytest.fixture
def start(toy: ToyStore, tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Starts gateways (sharing ``tmp_path/events.db`` unless ``event_log`` is given)."""
    servers: list[ThreadedServer] = []
    gateways: list[Gateway] = []

    def run(**overrides: Any) -> Gateway:
        fields: dict[str, Any] = {
            "feature_repo": toy.repo,
            "api_keys": TEST_KEYS,
            "event_log": str(tmp_path / "events.db"),
            **overrides,
        }
        settings = Settings(**fields)
        recommender = FakeRecommender()
        app = create_app(
            settings,
            store_factory=feast_store,
            recommender_factory=lambda _: recommender,
            event_log_factory=event_log,
            store_writer_factory=feast_writer,
        )
        server = ThreadedServer(app).start()
        servers.append(server)
        gateway = Gateway(
            httpx.Client(base_url=server.url, timeout=30.0),
            settings.event_log_url(),
            recommender,
            settings,
        )
        gateways.append(gateway)
        return gateway

    yield run
    for gateway in gateways:
        gateway.http.close()
        for reader in gateway.readers:
            reader.close()
    for server in servers:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def gateway(
    request: pytest.FixtureRequest, start: Callable[..., Gateway], tmp_path: Path
) -> Gateway:
    """A gateway on a fresh SQLite log, or on a fresh namespace of the module's Redis log."""
    if request.param == "sqlite":
        return start()
    server: RedisServer = request.getfixturevalue("redis_log")
    return start(event_log=server.url, event_log_namespace=tmp_path.name)


def store_reader(toy: ToyStore) -> OnlineFeatures:
    return OnlineFeatures(toy.repo, article_display="store")


# ---- customers -------------------------------------------------------------------------------
def test_put_customer_creates_then_replaces(gateway: Gateway) -> None:
    first = gateway.http.put("/v1/customers/new-1", json={"age": 31, "segment": "A"}, headers=WRITE)
    assert first.status_code == 201
    assert first.json() == {"customer_id": "new-1", "created": True, "offset": 1}
    again = gateway.http.put("/v1/customers/new-1", json={"household": "H"}, headers=WRITE)
    assert again.status_code == 200
    assert again.json() == {"customer_id": "new-1", "created": False, "offset": 2}
    known = gateway.http.put("/v1/customers/c0", json={"age": 26}, headers=WRITE)
    assert known.status_code == 200  # in the served snapshot already
    assert known.json()["created"] is False
    entries = gateway.entries()
    assert [(e.offset, e.kind) for e in entries] == [(n, EntryKind.CUSTOMER_PUT) for n in (1, 2, 3)]
    assert entries[1].record == Customer(customer_id="new-1", household="H")  # replaced, not merged


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/v1/customers/has space", {"age": 3}, ["path", "customer_id"]),
        ("/v1/customers/" + "x" * 129, {"age": 3}, ["path", "customer_id"]),
        ("/v1/customers/ok", {"age": -1}, ["body", "age"]),
        ("/v1/customers/ok", {"age": 30, "colour": "red"}, ["body", "colour"]),
        ("/v1/articles/ok", {"department": "no name"}, ["body", "name"]),
        ("/v1/articles/ok", {"name": ""}, ["body", "name"]),
    ],
)
def test_invalid_customer_and_article_writes_are_422(
    start: Callable[..., Gateway], path: str, body: dict[str, Any], loc: list[str]
) -> None:
    gateway = start()
    response = gateway.http.put(path, json=body, headers=WRITE)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert gateway.entries() == []


# ---- articles --------------------------------------------------------------------------------
def test_put_article_creates_replaces_and_is_shown(gateway: Gateway, toy: ToyStore) -> None:
    article_id = f"n-{gateway.log_url[-6:].replace('/', '')}-{id(gateway) % 1000}"
    fields = {"name": "Oat drink", "product_type": "milk", "department": "grocery"}
    created = gateway.http.put(f"/v1/articles/{article_id}", json=fields, headers=WRITE)
    assert created.status_code == 201
    assert created.json() == {
        "article_id": article_id, "created": True, "hidden": False, "deleted": False, "version": 1,
    }  # fmt: skip
    shown = gateway.http.get(f"/v1/articles/{article_id}")
    assert shown.status_code == 200
    assert shown.json() == {
        s.ARTICLE_ID: article_id,
        s.NAME: "Oat drink",
        s.PRODUCT_TYPE: "milk",
        s.PRODUCT_GROUP: None,
        s.DEPARTMENT: "grocery",
        s.SECTION: None,
        s.VARIANT: None,
        s.DESCRIPTION: None,
    }
    similar = gateway.http.get(f"/v1/articles/{article_id}/similar")  # unknown to the model
    assert similar.status_code == 200 and similar.json()["items"] == []
    replaced = gateway.http.put(f"/v1/articles/{article_id}", json={"name": "Oat"}, headers=WRITE)
    assert replaced.status_code == 200
    assert replaced.json()["created"] is False
    assert gateway.http.get(f"/v1/articles/{article_id}").json()[s.DEPARTMENT] is None
    # The online store holds the latest fields (written twice within one second: Feast's
    # Redis store would drop the second write without the growing timestamps).
    [display] = store_reader(toy).get_articles([article_id])
    assert display is not None and display[s.NAME] == "Oat"
    [first, second] = gateway.entries()
    assert (first.kind, second.kind) == (EntryKind.ARTICLE_PUT, EntryKind.ARTICLE_PUT)
    assert isinstance(second.record, ArticleState) and second.record.version == 2
    assert isinstance(first.record, ArticleState)
    assert second.record.online_ts > first.record.online_ts


def test_hidden_article_is_never_listed_from_the_next_request_on(
    start: Callable[..., Gateway],
) -> None:
    gateway = start()
    other_worker = start()  # a second gateway process on the same log
    assert gateway.ids("/v1/customers/c0/recommendations", k=3) == ["a1", "a2", "a3"]
    assert other_worker.ids("/v1/customers/c0/recommendations", k=3) == ["a1", "a2", "a3"]
    hidden = gateway.http.patch("/v1/articles/a2", json={"hidden": True}, headers=WRITE)
    assert hidden.status_code == 200
    assert hidden.json() == {
        "article_id": "a2", "created": False, "hidden": True, "deleted": False, "version": 1,
    }  # fmt: skip
    for worker in (gateway, other_worker):
        worker.recommender.asked.clear()
        assert worker.ids("/v1/customers/c0/recommendations", k=3) == ["a1", "a3", "a4"]
        assert worker.recommender.asked == [("recommend", 4)]  # k + 1 hidden
        assert worker.ids("/v1/customers/stranger/recommendations", k=4) == ["a1", "a4", "a0", "a3"]
        assert worker.ids("/v1/articles/a0/similar", k=2) == ["a3", "a0"]
        # Still shown on its own page.
        assert worker.http.get("/v1/articles/a2").status_code == 200
    shown = other_worker.http.patch("/v1/articles/a2", json={"hidden": False}, headers=WRITE)
    assert shown.json()["hidden"] is False
    assert gateway.ids("/v1/customers/c0/recommendations", k=3) == ["a1", "a2", "a3"]


def test_hidden_popular_articles_are_skipped_in_the_fallback(start: Callable[..., Gateway]) -> None:
    gateway = start()
    for article_id in ("a1", "a4", "a0"):
        assert (
            gateway.http.patch(
                f"/v1/articles/{article_id}", json={"hidden": True}, headers=WRITE
            ).status_code
            == 200
        )
    assert gateway.ids("/v1/customers/stranger/recommendations", k=3) == ["a2", "a3", "a5"]


def test_deleted_article_leaves_catalog_lists_and_store(
    start: Callable[..., Gateway], toy: ToyStore
) -> None:
    gateway = start()
    put = gateway.http.put("/v1/articles/gone-1", json={"name": "Gone"}, headers=WRITE)
    assert put.status_code == 201
    deleted = gateway.http.delete("/v1/articles/gone-1", headers=WRITE)
    assert deleted.status_code == 200
    assert deleted.json() == {
        "article_id": "gone-1", "created": False, "hidden": False, "deleted": True, "version": 2,
    }  # fmt: skip
    assert store_reader(toy).get_articles(["gone-1"]) == [None]
    for method, path in (
        ("GET", "/v1/articles/gone-1"),
        ("GET", "/v1/articles/gone-1/similar"),
        ("DELETE", "/v1/articles/gone-1"),
        ("PATCH", "/v1/articles/gone-1"),
        ("PATCH", "/v1/articles/never-existed"),
    ):
        body = {"hidden": True} if method == "PATCH" else None
        answer = gateway.http.request(method, path, json=body, headers=WRITE)
        assert (answer.status_code, answer.json()) == (404, {"detail": "article not found"})
    # A snapshot article deleted through the API leaves every list at once.
    assert gateway.http.delete("/v1/articles/a6", headers=WRITE).status_code == 200
    assert "a6" not in gateway.ids("/v1/customers/c0/recommendations", k=6)
    assert "a6" not in gateway.ids("/v1/articles/a0/similar", k=4)
    assert gateway.http.get("/v1/articles/a6").status_code == 404
    recreated = gateway.http.put("/v1/articles/gone-1", json={"name": "Back"}, headers=WRITE)
    assert recreated.status_code == 201
    assert gateway.http.get("/v1/articles/gone-1").json()[s.NAME] == "Back"


# ---- events ----------------------------------------------------------------------------------
def test_event_batch_keeps_valid_events_and_reports_each_invalid_one(gateway: Gateway) -> None:
    batch = [
        event("e-1", quantity=2, price=3.5, session_id="s-1", recommendation_id="r1"),
        event("e-2", article_id="no-such-article"),
        {"event_id": "e-3", "type": "buy", "customer_id": "c0", "article_id": "a1"},
        event("e-4", timestamp="2999-01-01T00:00:00Z"),
        event("e-5", type="view", customer_id="visitor-9"),
        event("e-1"),  # repeated within the batch
        "not an object",
        event("e-8", timestamp="2026-11-29T10:00:00"),  # no UTC offset
    ]
    response = gateway.http.post("/v1/events", json={"events": batch}, headers=WRITE)
    assert response.status_code == 202
    body = response.json()
    assert (body["stored"], body["duplicates"], body["rejected"]) == (2, 1, 5)
    results = body["results"]
    assert [
        (r["index"], r["event_id"], r["status"], r["offset"], r["detail"]) for r in results
    ] == [
        (0, "e-1", "stored", 1, None),
        (1, "e-2", "rejected", None, "article not found"),
        (2, "e-3", "rejected", None, "invalid event"),
        (3, "e-4", "rejected", None, "timestamp in the future"),
        (4, "e-5", "stored", 2, None),
        (5, "e-1", "duplicate", None, None),
        (6, None, "rejected", None, "invalid event"),
        (7, "e-8", "rejected", None, "invalid event"),
    ]
    assert results[2]["errors"] == [
        {
            "loc": ["type"],
            "msg": "Input should be 'purchase', 'view', 'add_to_cart' or 'not_interested'",
            "type": "enum",
        },
        {"loc": ["timestamp"], "msg": "Field required", "type": "missing"},
    ]
    assert results[7]["errors"][0]["type"] == "timezone_aware"
    entries = gateway.entries()
    assert [(e.offset, e.kind) for e in entries] == [(1, EntryKind.EVENT), (2, EntryKind.EVENT)]
    assert entries[0].record == Event.model_validate(batch[0])
    assert entries[1].record == Event.model_validate(batch[4])


def test_replayed_events_are_acknowledged_and_stored_once(gateway: Gateway) -> None:
    batch = [event(f"r-{i}", article_id=f"a{i}") for i in range(5)]
    first = gateway.http.post("/v1/events", json={"events": batch}, headers=WRITE)
    assert first.status_code == 202
    assert [r["offset"] for r in first.json()["results"]] == [1, 2, 3, 4, 5]
    replay = gateway.http.post("/v1/events", json={"events": batch}, headers=WRITE)
    assert replay.status_code == 202
    assert replay.json()["stored"] == 0
    assert [r["status"] for r in replay.json()["results"]] == ["duplicate"] * 5
    mixed = gateway.http.post(
        "/v1/events", json={"events": [batch[0], event("r-new")]}, headers=WRITE
    )
    assert [(r["status"], r["offset"]) for r in mixed.json()["results"]] == [
        ("duplicate", None),
        ("stored", 6),
    ]
    assert event_ids(gateway.entries()) == [f"r-{i}" for i in range(5)] + ["r-new"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"events": []}, ["body", "events"]),
        ({"events": [event(f"x{i}") for i in range(1001)]}, ["body", "events"]),
        ({"event": [event("x")]}, ["body", "events"]),
        ([event("x")], ["body"]),
    ],
)
def test_malformed_batches_are_422(
    start: Callable[..., Gateway], body: Any, loc: list[str]
) -> None:
    gateway = start()
    response = gateway.http.post("/v1/events", json=body, headers=WRITE)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert gateway.entries() == []


def test_a_batch_without_a_valid_event_is_422_with_every_reason(
    start: Callable[..., Gateway],
) -> None:
    gateway = start()
    batch = [event("z-1", article_id="nope"), {"event_id": "z-2"}]
    response = gateway.http.post("/v1/events", json={"events": batch}, headers=WRITE)
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "no valid event in the batch"
    assert [r["detail"] for r in body["results"]] == ["article not found", "invalid event"]
    assert gateway.entries() == []


# ---- access control and limits ---------------------------------------------------------------
WRITE_CALLS = (
    ("PUT", "/v1/customers/c0", {"age": 3}),
    ("DELETE", "/v1/customers/c0", None),
    ("PUT", "/v1/articles/a0", {"name": "x"}),
    ("PATCH", "/v1/articles/a0", {"hidden": True}),
    ("DELETE", "/v1/articles/a0", None),
    ("POST", "/v1/events", {"events": [event("k-1")]}),
)


@pytest.mark.parametrize(("method", "path", "body"), WRITE_CALLS)
def test_writes_need_a_write_key(
    start: Callable[..., Gateway], method: str, path: str, body: Any
) -> None:
    gateway = start()
    for headers, status, detail in (
        ({}, 401, "API key required"),
        ({"X-API-Key": "not-a-key"}, 401, "invalid API key"),
        ({"X-API-Key": WRITE_KEY + "x"}, 401, "invalid API key"),
        (READ, 403, "write key required"),
    ):
        response = gateway.http.request(method, path, json=body, headers=headers)
        assert (response.status_code, response.json()) == (status, {"detail": detail})
        if status == 401:
            assert response.headers["www-authenticate"] == 'APIKey header="X-API-Key"'
    assert gateway.entries() == []


def test_read_key_when_required_guards_reads_docs_and_metrics(
    start: Callable[..., Gateway],
) -> None:
    gateway = start(require_read_key=True)
    guarded = (
        "/v1/customers/c0/recommendations", "/v1/articles/a0/similar", "/v1/articles/a0",
        "/metrics", "/docs", "/openapi.json",
    )  # fmt: skip
    for path in guarded:
        assert gateway.http.get(path).json() == {"detail": "API key required"}
        assert gateway.http.get(path, headers={"X-API-Key": "x"}).status_code == 401
        assert gateway.http.get(path, headers=READ).status_code == 200
        assert gateway.http.get(path, headers=WRITE).status_code == 200  # write implies read
    for path in ("/healthz", "/readyz"):  # probes stay open
        assert gateway.http.get(path).status_code == 200
    open_gateway = start()
    for path in guarded:
        assert open_gateway.http.get(path).status_code == 200


def test_api_keys_file_is_read_and_keys_are_never_logged(
    start: Callable[..., Gateway], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([k.model_dump(mode="json") for k in TEST_KEYS]))
    gateway = start(api_keys=[], api_keys_file=keys_file)
    with caplog.at_level("DEBUG"):
        ok = gateway.http.post("/v1/events", json={"events": [event("f-1")]}, headers=WRITE)
        bad = gateway.http.post("/v1/events", json={"events": [event("f-2")]}, headers=READ)
    assert (ok.status_code, bad.status_code) == (202, 403)
    assert WRITE_KEY not in caplog.text and READ_KEY not in caplog.text


def test_body_over_the_cap_is_413(start: Callable[..., Gateway]) -> None:
    gateway = start(max_body_bytes=4096)
    big = {"events": [event(f"b-{i}") for i in range(40)]}  # about 6 kB
    declared = gateway.http.post("/v1/events", json=big, headers=WRITE)
    assert (declared.status_code, declared.json()) == (413, {"detail": "request body too large"})

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    streamed = gateway.http.post("/v1/events", content=chunks(), headers=WRITE)
    assert (streamed.status_code, streamed.json()) == (413, {"detail": "request body too large"})
    small = gateway.http.post("/v1/events", json={"events": big["events"][:5]}, headers=WRITE)
    assert small.status_code == 202
    assert len(gateway.entries()) == 5


def test_rate_limits_are_per_key_with_retry_after(start: Callable[..., Gateway]) -> None:
    gateway = start(
        rate_limit_reads="3/minute", rate_limit_writes="2/minute", rate_limit_events="1500/minute"
    )
    path = "/v1/articles/a0"
    assert [gateway.http.get(path).status_code for _ in range(3)] == [200, 200, 200]
    limited = gateway.http.get(path)
    assert (limited.status_code, limited.json()) == (429, {"detail": "rate limit exceeded"})
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert gateway.http.get(path, headers=READ).status_code == 200  # another identity
    puts = [
        gateway.http.put("/v1/customers/q", json={}, headers=WRITE).status_code for _ in range(3)
    ]
    assert puts == [201, 200, 429]
    batch = [event(f"q-{i}") for i in range(1000)]
    assert gateway.http.post("/v1/events", json={"events": batch}, headers=WRITE).status_code == 202
    # The events budget counts events: 1000 spent, 600 more do not fit, 500 do.
    too_many = gateway.http.post("/v1/events", json={"events": batch[:600]}, headers=WRITE)
    assert too_many.status_code == 429 and int(too_many.headers["retry-after"]) >= 1
    fits = gateway.http.post("/v1/events", json={"events": batch[:500]}, headers=WRITE)
    assert fits.status_code == 202


def test_cors_lets_configured_origins_read_only(start: Callable[..., Gateway]) -> None:
    gateway = start(cors_origins=["https://shop.example"])
    preflight = gateway.http.options(
        "/v1/customers/c0/recommendations",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    read = gateway.http.get("/v1/articles/a0", headers={"Origin": "https://shop.example"})
    assert read.headers["access-control-allow-origin"] == "https://shop.example"
    stranger = gateway.http.get("/v1/articles/a0", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers
    write_preflight = gateway.http.options(
        "/v1/events",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert write_preflight.status_code == 400  # a browser never gets to send a write


# ---- erasure ---------------------------------------------------------------------------------
def test_erasure_leaves_no_trace_in_the_sqlite_log_or_the_store(
    start: Callable[..., Gateway], toy: ToyStore, tmp_path: Path
) -> None:
    gateway = start()
    secret = "erase-me-7f3a91"
    assert (
        gateway.http.put(
            "/v1/customers/c5", json={"postal_code": secret}, headers=WRITE
        ).status_code
        == 200
    )
    batch = [
        event("c5-1", customer_id="c5", session_id=f"sess-{secret}"),
        event("v-1", customer_id=f"visitor-{secret}", session_id=f"sess-{secret}", type="view"),
        event("c0-1", customer_id="c0", session_id="sess-other"),
    ]
    assert gateway.http.post("/v1/events", json={"events": batch}, headers=WRITE).status_code == 202
    assert store_reader(toy).get_customers(["c5"])[0].tolist() == [True]
    erased = gateway.http.delete("/v1/customers/c5", headers=WRITE)
    assert erased.status_code == 200
    assert erased.json() == {
        "customer_id": "c5",
        "offset": 5,
        "events_removed": 2,
        "sessions_removed": 1,
        "profile_removed": True,
        "online_features_removed": True,
        "remains": list(ERASURE_REMAINS),
    }
    entries = gateway.entries()
    assert [(e.offset, e.kind) for e in entries] == [
        (4, EntryKind.EVENT),
        (5, EntryKind.CUSTOMER_ERASED),
    ]
    assert entries[1].record == Erasure(customer_hash=customer_hash("c5"))
    # No byte of the customer's data in the log's files, nor the customer's key in the store.
    log_files = [p for p in tmp_path.glob("events.db*") if p.is_file()]
    assert log_files and not any(secret.encode() in p.read_bytes() for p in log_files)
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = serialize_entity_key(
        EntityKey(join_keys=[s.CUSTOMER_ID], entity_values=[Value(string_val="c5")]),
        entity_key_serialization_version=ENTITY_KEY_VERSION,
    )
    store_files = list((current_dir(toy.repo) / "data").glob("online_store.db*"))
    assert store_files and not any(key in p.read_bytes() for p in store_files)
    assert store_reader(toy).get_customers(["c5"])[0].tolist() == [False]
    assert gateway.ids("/v1/customers/c5/recommendations", k=2) == POPULAR[:2]
    again = gateway.http.delete("/v1/customers/c5", headers=WRITE)  # idempotent
    assert again.status_code == 200
    assert (again.json()["events_removed"], again.json()["online_features_removed"]) == (0, False)


def test_erasure_leaves_no_trace_in_the_redis_log(
    start: Callable[..., Gateway], redis_log: RedisServer, tmp_path: Path
) -> None:
    gateway = start(event_log=redis_log.url, event_log_namespace=f"erase-{tmp_path.name}")
    secret = "erase-me-b20c44"
    assert (
        gateway.http.put(f"/v1/customers/{secret}", json={"age": 50}, headers=WRITE).status_code
        == 201
    )
    batch = [event(f"{secret}-{i}", customer_id=secret, session_id="s-9") for i in range(300)]
    batch += [event("keep-1", customer_id="c1")]
    assert gateway.http.post("/v1/events", json={"events": batch}, headers=WRITE).status_code == 202
    erased = gateway.http.delete(f"/v1/customers/{secret}", headers=WRITE)
    assert erased.status_code == 200
    assert (erased.json()["events_removed"], erased.json()["profile_removed"]) == (300, True)
    entries = gateway.entries()
    assert [e.kind for e in entries] == [EntryKind.EVENT, EntryKind.CUSTOMER_ERASED]
    client = redis_log.client()
    namespace = f"erase-{tmp_path.name}"
    stream = f"shoprec:{{{namespace}}}:log"
    assert secret.encode() not in (client.dump(stream) or b"")  # not even in freed listpacks
    assert client.keys(f"shoprec:{{{namespace}}}:event:{secret}*") == []
    assert not client.hexists(f"shoprec:{{{namespace}}}:customers", secret)
    redis_log.wait_rewrite()
    aof = [p for p in redis_log.folder.rglob("*") if p.is_file() and "aof" in p.name]
    assert aof and not any(secret.encode() in p.read_bytes() for p in aof)


# ---- API description -------------------------------------------------------------------------
def test_openapi_describes_the_write_api_with_examples(start: Callable[..., Gateway]) -> None:
    spec = start().http.get("/openapi.json").json()
    operations = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert {
        ("/v1/customers/{customer_id}", "put"),
        ("/v1/customers/{customer_id}", "delete"),
        ("/v1/articles/{article_id}", "put"),
        ("/v1/articles/{article_id}", "patch"),
        ("/v1/articles/{article_id}", "delete"),
        ("/v1/events", "post"),
    } <= operations
    schemas = spec["components"]["schemas"]
    assert schemas["Event"]["examples"][0]["type"] == "purchase"
    assert schemas["EventBatch"]["examples"][0]["events"][0]["event_id"] == "9f1c2d3e-0001"
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    post = spec["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) >= {"202", "401", "403", "413", "422", "429", "503"}


def test_every_answer_gets_its_own_recommendation_id(start: Callable[..., Gateway]) -> None:
    gateway = start()
    ids = {
        gateway.http.get(path).json()["recommendation_id"]
        for path in ("/v1/customers/c0/recommendations",) * 3 + ("/v1/articles/a0/similar",) * 2
    }
    assert len(ids) == 5 and all(len(i) == 32 for i in ids)


def test_write_api_is_503_without_a_log(toy: ToyStore) -> None:
    app = create_app(
        Settings(feature_repo=toy.repo, api_keys=TEST_KEYS),
        store_factory=feast_store,
        recommender_factory=lambda _: FakeRecommender(),
    )
    server = ThreadedServer(app).start()
    try:
        response = httpx.post(
            f"{server.url}/v1/events", json={"events": [event("n")]}, headers=WRITE
        )
        assert (response.status_code, response.json()) == (
            503,
            {"detail": "write API not configured"},
        )
        assert httpx.get(f"{server.url}/v1/articles/a0").status_code == 200
    finally:
        server.stop()


def test_unreachable_redis_log_is_503_within_the_timeout(start: Callable[..., Gateway]) -> None:
    gateway = start(event_log="redis://127.0.0.1:9/0", write_timeout_s=1.0, store_timeout_s=1.0)
    response = gateway.http.post("/v1/events", json={"events": [event("u")]}, headers=WRITE)
    assert (response.status_code, response.json()) == (503, {"detail": "event log unavailable"})
    read = gateway.http.get("/v1/customers/c0/recommendations")
    assert (read.status_code, read.json()) == (503, {"detail": "event log unavailable"})


def test_concurrent_single_event_posts_are_all_acknowledged_once(
    start: Callable[..., Gateway],
) -> None:
    gateway = start()

    async def post_all() -> list[int]:
        async with httpx.AsyncClient(base_url=str(gateway.http.base_url), timeout=30) as http:
            answers = await asyncio.gather(
                *(
                    http.post("/v1/events", json={"events": [event(f"p-{i}")]}, headers=WRITE)
                    for i in range(200)
                )
            )
        return [a.json()["results"][0]["offset"] for a in answers if a.status_code == 202]

    offsets = asyncio.run(post_all())
    assert sorted(offsets) == list(range(1, 201))
    assert sorted(event_ids(gateway.entries())) == sorted(f"p-{i}" for i in range(200))
