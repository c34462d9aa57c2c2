"""The storefront's pages against a fake gateway (an httpx mock transport): what each page
asks the gateway, what it renders, which events it posts, and the fallback when the gateway
is down. The same pages in a real browser against the real stack: test_storefront_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from servers import ThreadedServer
from shoprec import schema as s
from shoprec.cli import NEW_CUSTOMER, demo_customers
from shoprec.config import Paths
from shoprec.data.dataset import LATEST_CUSTOMERS_FILE
from shoprec.storefront.app import GATEWAY_DOWN, create_app
from shoprec.storefront.gateway import KEY_HEADER, GatewayClient
from shoprec.storefront.settings import DemoCustomer, StorefrontSettings

WRITE_KEY = "storefront-write-key-0123456789abcdefghijkl"
CUSTOMER = "c-42"


def item(article_id: str, score: float | None = None) -> dict[str, Any]:
    return {
        "article_id": article_id,
        "name": f"Name {article_id}",
        "department": "GROCERY",
        "product_group": "SOUP",
        "score": score,
    }


POPULAR = [item(a) for a in ("p1", "p2", "p3")]
PERSONAL = [item(a, 1.0 - i / 10) for i, a in enumerate(("r1", "r2"))]
SIMILAR = [item("s1", 0.9)]
SESSION = [item("v1", 0.5)]


@dataclass
class FakeGateway:
    """Answers the gateway routes the storefront calls; records every request."""

    down: bool = False
    session_route: bool = False
    requests: list[httpx.Request] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for r in self.requests:
            if r.method == "POST" and r.url.path == "/v1/events":
                out.extend(json.loads(r.content)["events"])
        return out

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        rid = {"recommendation_id": "f" * 32}
        if path == "/v1/popular":
            return httpx.Response(200, json={"source": "popular", "items": POPULAR, **rid})
        if path == f"/v1/customers/{CUSTOMER}/recommendations":
            body = {"customer_id": CUSTOMER, "source": "personalised", "items": PERSONAL}
            return httpx.Response(200, json={**body, **rid})
        if path.startswith("/v1/sessions/"):
            if not self.session_route:
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, json={"source": "session", "items": SESSION, **rid})
        if path == "/v1/articles/a1/similar":
            return httpx.Response(200, json={"article_id": "a1", "items": SIMILAR, **rid})
        if path == "/v1/articles/a1":
            return httpx.Response(200, json={**item("a1"), "description": "A tin of soup"})
        if path.startswith("/v1/articles/"):
            return httpx.Response(404, json={"detail": "article not found"})
        if path == "/v1/articles":
            return httpx.Response(200, json={"total": 1, "items": [item("a1")]})
        if path == "/v1/catalog/departments":
            groups = [{"product_group": "SOUP", "n_articles": 1}]
            department: dict[str, Any] = {
                "department": "GROCERY",
                "n_articles": 1,
                "product_groups": groups,
            }
            return httpx.Response(200, json={"departments": [department]})
        if path == "/v1/events":
            if request.headers.get(KEY_HEADER) != WRITE_KEY:
                return httpx.Response(401, json={"detail": "invalid API key"})
            n = len(json.loads(request.content)["events"])
            return httpx.Response(202, json={"stored": n, "duplicates": 0, "rejected": 0})
        return httpx.Response(404, json={"detail": "Not Found"})


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def shop(gateway: FakeGateway) -> Iterator[TestClient]:
    settings = StorefrontSettings(
        gateway_url="http://gateway.test",
        demo_customers=[DemoCustomer(customer_id=CUSTOMER, label="longest history")],
    )
    client = GatewayClient(
        settings.gateway_url,
        1.0,
        write_key=WRITE_KEY,
        transport=httpx.MockTransport(gateway.handle),
    )
    with TestClient(create_app(settings, client), follow_redirects=False) as test_client:
        yield test_client


def section(html: str, list_id: str) -> tuple[str, list[str]]:
    """(source, article ids) of the list section ``list-<list_id>`` of a page."""
    match = re.search(
        rf'<section class="list" id="list-{list_id}" data-source="(\w+)"(.*?)</section>',
        html,
        re.S,
    )
    assert match is not None, f"no list {list_id}"
    return match.group(1), re.findall(r'data-article-id="([^"]+)"', match.group(2))


def test_anonymous_home_shows_the_popular_list(shop: TestClient) -> None:
    page = shop.get("/")
    assert page.status_code == 200
    assert section(page.text, "main") == ("popular", ["p1", "p2", "p3"])
    assert "Popular now" in page.text and "Name p2" in page.text
    assert "list-session" not in page.text  # nothing viewed yet


def test_picked_customer_gets_the_personalised_list(shop: TestClient) -> None:
    picked = shop.post("/customer", data={"customer_id": CUSTOMER})
    assert picked.status_code == 303
    page = shop.get("/")
    assert section(page.text, "main") == ("personalised", ["r1", "r2"])
    assert "Selected for you" in page.text


def test_article_page_shows_fields_and_similar_items_and_posts_a_view(
    shop: TestClient, gateway: FakeGateway
) -> None:
    shop.get("/")  # sets the session cookie
    page = shop.get("/articles/a1")
    assert page.status_code == 200
    assert "<title>Name a1 · shoprec storefront</title>" in page.text
    assert "A tin of soup" in page.text
    assert section(page.text, "similar") == ("similar", ["s1"])
    (view,) = gateway.events()
    session = shop.cookies["shoprec_session"]
    assert view["type"] == "view" and view["article_id"] == "a1"
    assert view["session_id"] == session and view["customer_id"] == f"visitor-{session}"


def test_session_list_falls_back_to_popular_when_the_route_answers_404(
    shop: TestClient, gateway: FakeGateway
) -> None:
    shop.get("/articles/a1")
    page = shop.get("/")
    assert "Because you viewed Name a1" in page.text
    assert section(page.text, "session") == ("popular", ["p1", "p2", "p3"])
    gateway.session_route = True
    assert section(shop.get("/").text, "session") == ("session", ["v1"])


def test_not_interested_posts_the_event_with_the_recommendation_id(
    shop: TestClient, gateway: FakeGateway
) -> None:
    shop.post("/customer", data={"customer_id": CUSTOMER})
    answer = shop.post(
        "/not-interested",
        data={"article_id": "r1", "recommendation_id": "f" * 32, "next": "/"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/?notice=not-interested"
    (sent,) = gateway.events()
    assert {k: sent[k] for k in ("type", "customer_id", "article_id", "recommendation_id")} == {
        "type": "not_interested",
        "customer_id": CUSTOMER,
        "article_id": "r1",
        "recommendation_id": "f" * 32,
    }


def test_buy_posts_one_purchase_per_basket_article_and_empties_the_basket(
    shop: TestClient, gateway: FakeGateway
) -> None:
    for article_id in ("a1", "p2", "a1"):
        shop.post("/basket/add", data={"article_id": article_id})
    basket = shop.get("/basket")
    assert re.findall(r'<li data-article-id="([^"]+)"', basket.text) == ["a1"]  # p2 unknown
    assert shop.post("/basket/buy").headers["location"] == "/basket?notice=pick-customer"
    assert gateway.events() == []
    shop.post("/customer", data={"customer_id": CUSTOMER})
    bought = shop.post("/basket/buy")
    assert bought.headers["location"] == "/?notice=bought"
    sent = gateway.events()
    assert [(e["type"], e["customer_id"], e["article_id"]) for e in sent] == [
        ("purchase", CUSTOMER, "a1"),
        ("purchase", CUSTOMER, "p2"),
    ]
    assert len({e["event_id"] for e in sent}) == 2
    assert "Basket (0)" in shop.get("/").text


def test_the_write_key_goes_to_the_gateway_only(shop: TestClient, gateway: FakeGateway) -> None:
    pages = [shop.get(p).text for p in ("/", "/articles/a1", "/basket", "/browse", "/search")]
    shop.post("/not-interested", data={"article_id": "p1"})
    assert all(WRITE_KEY not in page for page in pages)
    assert all(WRITE_KEY not in value for value in shop.cookies.values())
    posts = [r for r in gateway.requests if r.method == "POST"]
    gets = [r for r in gateway.requests if r.method == "GET"]
    assert posts and all(r.headers[KEY_HEADER] == WRITE_KEY for r in posts)
    assert gets and all(KEY_HEADER not in r.headers for r in gets)


def test_gateway_down_renders_the_cached_popular_list_with_a_message(
    shop: TestClient, gateway: FakeGateway
) -> None:
    shop.post("/customer", data={"customer_id": CUSTOMER})
    gateway.down = True  # the popular list was cached when the app started
    for path in ("/", "/articles/a1"):
        page = shop.get(path)
        assert page.status_code == 200
        assert GATEWAY_DOWN in page.text
        assert section(page.text, "main") == ("popular", ["p1", "p2", "p3"])
        assert "Traceback" not in page.text
    assert GATEWAY_DOWN in shop.get("/search", params={"q": "soup"}).text


def test_browse_and_search_list_articles(shop: TestClient, gateway: FakeGateway) -> None:
    browse = shop.get("/browse", params={"department": "GROCERY"})
    assert "SOUP" in browse.text and 'data-article-id="a1"' in browse.text
    asked = [r for r in gateway.requests if r.url.path == "/v1/articles"][-1]
    assert asked.url.params["department"] == "GROCERY"
    found = shop.get("/search", params={"q": "soup"})
    assert "Search results for “soup”" in found.text and "Name a1" in found.text
    assert [r for r in gateway.requests if r.url.path == "/v1/articles"][-1].url.params[
        "q"
    ] == "soup"


def test_unknown_article_is_a_404_page(shop: TestClient) -> None:
    page = shop.get("/articles/nope")
    assert page.status_code == 404
    assert "<h1>Not found</h1>" in page.text


def test_redirects_stay_on_this_site(shop: TestClient) -> None:
    answer = shop.post("/basket/add", data={"article_id": "a1", "next": "//evil.example/x"})
    assert answer.headers["location"] == "/basket"


def test_demo_customers_are_the_longest_history_typical_ones_and_a_new_one(
    tmp_path: Path,
) -> None:
    paths = Paths.for_name("shop", tmp_path / "data", tmp_path / "models")
    assert demo_customers(paths) == [{"customer_id": NEW_CUSTOMER, "label": "new customer"}]
    paths.dataset.mkdir(parents=True)
    counts = {"c1": 5, "c2": 40, "c3": 7, "c4": 9, "c5": 2, "c6": 40, "c7": 1}
    pl.DataFrame({s.CUSTOMER_ID: list(counts), s.N_PURCHASES: list(counts.values())}).write_parquet(
        paths.dataset / LATEST_CUSTOMERS_FILE
    )
    # by purchases, ties by id: c2 c6 c4 c3 c1 c5 c7; the median is c3 (index 3)
    assert demo_customers(paths, typical=3) == [
        {"customer_id": "c2", "label": "longest history (40 purchases)"},
        {"customer_id": "c4", "label": "typical (9 purchases)"},
        {"customer_id": "c3", "label": "typical (7 purchases)"},
        {"customer_id": "c1", "label": "typical (5 purchases)"},
        {"customer_id": NEW_CUSTOMER, "label": "new customer"},
    ]


def test_a_slow_gateway_is_treated_as_down(tmp_path: Path) -> None:
    """A real HTTP gateway (uvicorn) that stops answering in time: the storefront's client
    timeout ends the wait and the page is the fallback."""
    slow = {"on": False}
    fake = FastAPI()

    @fake.get("/v1/popular")
    async def popular() -> dict[str, Any]:
        return {"source": "popular", "items": POPULAR, "recommendation_id": "f" * 32}

    @fake.get("/v1/customers/{customer_id}/recommendations")
    async def recommendations(customer_id: str) -> dict[str, Any]:
        if slow["on"]:
            await asyncio.sleep(2)
        body = {"customer_id": customer_id, "source": "personalised", "items": PERSONAL}
        return {**body, "recommendation_id": "f" * 32}

    server = ThreadedServer(fake).start()
    try:
        settings = StorefrontSettings(gateway_url=server.url, timeout_s=0.3)
        with TestClient(create_app(settings)) as shop:
            shop.post("/customer", data={"customer_id": CUSTOMER})
            assert section(shop.get("/").text, "main") == ("personalised", ["r1", "r2"])
            slow["on"] = True
            page = shop.get("/")
            assert page.status_code == 200
            assert GATEWAY_DOWN in page.text
            assert section(page.text, "main") == ("popular", ["p1", "p2", "p3"])
    finally:
        server.stop()


def test_a_read_key_goes_with_reads_and_the_write_key_with_events(gateway: FakeGateway) -> None:
    read_key = "storefront-read-key-0123456789abcdefghijklm"
    client = GatewayClient(
        "http://gateway.test",
        1.0,
        write_key=WRITE_KEY,
        read_key=read_key,
        transport=httpx.MockTransport(gateway.handle),
    )
    with TestClient(create_app(StorefrontSettings(), client)) as shop:
        shop.get("/articles/a1")  # a read, and a view event
    reads = [r for r in gateway.requests if r.method == "GET"]
    (post,) = [r for r in gateway.requests if r.method == "POST"]
    assert reads and all(r.headers[KEY_HEADER] == read_key for r in reads)
    assert post.headers[KEY_HEADER] == WRITE_KEY


def test_keys_are_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "write").write_text(WRITE_KEY + "\n")
    settings = StorefrontSettings(write_key_file=tmp_path / "write")
    assert (settings.write_secret(), settings.read_secret()) == (WRITE_KEY, None)
    assert WRITE_KEY not in repr(StorefrontSettings(write_key=SecretStr(WRITE_KEY)))


def test_events_are_stamped_on_the_configured_event_day(gateway: FakeGateway) -> None:
    """A demo on historical data stamps its events on the data's last day (``event_day``);
    without it, events are stamped now."""
    day = date(2018, 1, 1)
    before = datetime.now(UTC)
    for settings in (StorefrontSettings(event_day=day), StorefrontSettings()):
        client = GatewayClient(
            "http://gateway.test",
            1.0,
            write_key=WRITE_KEY,
            transport=httpx.MockTransport(gateway.handle),
        )
        with TestClient(create_app(settings, client)) as shop:
            shop.get("/articles/a1")  # posts a view
    first, second = (datetime.fromisoformat(e["timestamp"]) for e in gateway.events())
    assert first.date() == day and first.tzinfo is not None
    assert second >= before.replace(microsecond=0) and second.date() != day
