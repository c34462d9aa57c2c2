"""The storefront in a real browser (Playwright driving Debian's chromium) against the real
stack: tritonserver + the gateway (``ServingStack``, the tiny trained models of
``test_stack.served``) + ``python -m shoprec.storefront``, all on free loopback ports.

Expected answers come from the gateway's own REST answers and the canonical article table.
Every page visited is checked for accessibility basics (:func:`check_accessibility`).

The buy / not-interested / session tests go through the near-real-time updater that the stack
runs and the gateway's session route.
The last test stops the gateway: the module's stack is not usable after it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from servers import TEST_KEYS, WRITE_KEY
from shoprec import schema as s
from shoprec.artifacts import WORKFLOW_FILE
from shoprec.features.workflow import OOV_ID, Workflow
from shoprec.serving.stack import ServingStack
from shoprec.storefront.app import GATEWAY_DOWN
from test_export import tiny_run
from test_stack import EXPORT, Served, _free_ports, build_served, stack_config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

K = 12
CHANGE_WITHIN_S = 5.0  # the issue asks for a second or two; polled, not timed


# Debian's chromium: `playwright install` cannot download its own browser here, so `make test`
# installs chromium with apt-get; the tests skip where it is missing.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for this module only: Playwright's sync API runs an asyncio loop in the main
    thread while it is started, so it is stopped before the next module's tests."""
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium not installed (make test installs it with apt-get where it can)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) per test."""
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    # Bought articles leave the lists (the policy a fashion catalog gets), so that buying
    # has an effect the page can show.
    export = dataclasses.replace(EXPORT, exclude_purchased=True)
    return build_served(tiny_run(tmp_path_factory), tmp_path_factory, export)


@pytest.fixture(scope="module")
def stack(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    """The stack of test_stack with a write key for the storefront."""
    logs = tmp_path_factory.mktemp("storefront-stack-logs")
    config = stack_config(served, logs, {"api_keys": TEST_KEYS})
    with ServingStack(config) as st:
        yield st


@pytest.fixture(scope="module")
def shop(
    stack: ServingStack, served: Served, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``python -m shoprec.storefront`` in its own process group; its base URL."""
    (port,) = _free_ports(1)
    customers = [{"customer_id": c, "label": f"regular {i}"} for i, c in enumerate(served.regulars)]
    env = {
        **os.environ,
        "SHOPREC_STOREFRONT_GATEWAY_URL": stack.gateway_url,
        "SHOPREC_STOREFRONT_WRITE_KEY": WRITE_KEY,
        "SHOPREC_STOREFRONT_TIMEOUT_S": "5",  # a loaded 2-core machine; the down test is a refusal
        "SHOPREC_STOREFRONT_DEMO_CUSTOMERS": json.dumps(customers),
    }
    log = tmp_path_factory.mktemp("storefront") / "storefront.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "shoprec.storefront", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=15)
    assert WRITE_KEY not in log.read_text()


@pytest.fixture(scope="module")
def gateway(stack: ServingStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30.0) as client:
        yield client


def check_accessibility(page: Page) -> None:
    """A title, an h1, alt text on every image, a name on every button and labelled inputs."""
    problems = page.evaluate(
        """() => {
        const out = [];
        if (!document.title.trim()) out.push("no title");
        if (!document.querySelector("h1")) out.push("no h1");
        for (const img of document.querySelectorAll("img"))
            if (!(img.getAttribute("alt") || "").trim()) out.push("img without alt: " + img.src);
        for (const b of document.querySelectorAll("button"))
            if (!(b.getAttribute("aria-label") || b.textContent || "").trim())
                out.push("button without a name: " + b.outerHTML);
        for (const i of document.querySelectorAll("input:not([type=hidden])"))
            if (!(i.labels && i.labels.length) && !i.getAttribute("aria-label"))
                out.push("input without a label: " + i.outerHTML);
        return out;
    }"""
    )
    assert problems == []


def sign_in(page: Page, shop: str, customer: str) -> None:
    page.goto(shop)
    page.fill("#customer_id", customer)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".notice")).to_have_text("Signed in.")


def listed(page: Page, list_id: str) -> tuple[str | None, list[str]]:
    """(source, article ids) of the list ``list-<list_id>`` shown now."""
    section = page.locator(f"#list-{list_id}")
    ids = section.locator("li.card").evaluate_all("els => els.map(e => e.dataset.articleId)")
    return section.get_attribute("data-source"), ids


def test_home_as_the_longest_history_customer_shows_12_named_articles(
    page: Page, shop: str, served: Served, gateway: httpx.Client
) -> None:
    regular = served.regulars[0]
    page.goto(shop)
    check_accessibility(page)
    page.get_by_role("button", name="regular 0").click()  # the demo picker
    expect(page.locator("#h-main")).to_contain_text("Selected for you")
    source, ids = listed(page, "main")
    assert source == "personalised"
    expected = gateway.get(f"/v1/customers/{regular}/recommendations", params={"k": K}).json()
    assert ids == [item["article_id"] for item in expected["items"]]
    assert len(ids) == K
    names = page.locator("#list-main li.card .name").all_inner_texts()
    assert names == [served.articles[a]["name"] for a in ids]
    assert all(names)
    expect(page.locator("#h-main .source")).to_have_text("source: personalised")
    check_accessibility(page)


def test_anonymous_visitor_sees_popular_now(page: Page, shop: str, served: Served) -> None:
    page.goto(shop)
    source, ids = listed(page, "main")
    assert source == "popular"
    assert ids == served.popular[:K]


def test_article_page_shows_its_fields_and_similar_items(
    page: Page, shop: str, served: Served, gateway: httpx.Client
) -> None:
    page.goto(shop)
    first = page.locator("#list-main li.card a").first
    article_id = page.locator("#list-main li.card").first.get_attribute("data-article-id")
    assert article_id is not None
    first.click()
    expect(page.locator("h1")).to_have_text(str(served.articles[article_id]["name"]))
    expect(page).to_have_title(f"{served.articles[article_id]['name']} · shoprec storefront")
    source, ids = listed(page, "similar")
    expected = gateway.get(f"/v1/articles/{article_id}/similar", params={"k": K}).json()
    assert source == "similar"
    assert ids == [item["article_id"] for item in expected["items"]]
    assert ids and article_id not in ids
    check_accessibility(page)


def test_browse_a_department_and_search_by_name(page: Page, shop: str, served: Served) -> None:
    page.goto(f"{shop}/browse")
    check_accessibility(page)
    department_link = page.get_by_role("navigation", name="Departments").get_by_role("link").first
    department = department_link.inner_text()
    department_link.click()
    cards = page.locator("li.card")
    expect(cards.first).to_be_visible()
    shown = cards.evaluate_all("els => els.map(e => e.dataset.articleId)")
    assert shown and all(served.articles[a]["department"] == department for a in shown)

    name = str(served.articles[shown[0]]["name"])
    page.fill("#q", name)
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("h1")).to_contain_text("Search results")
    found = page.locator("li.card").evaluate_all("els => els.map(e => e.dataset.articleId)")
    assert shown[0] in found
    check_accessibility(page)


def _wait_for_change(page: Page, shop: str, article_id: str, before: list[str]) -> list[str]:
    """Reload home until ``article_id`` left the personalised list or moved; the list."""
    deadline = time.monotonic() + CHANGE_WITHIN_S
    while True:
        page.goto(shop)
        _, ids = listed(page, "main")
        if article_id not in ids or ids.index(article_id) != before.index(article_id):
            return ids
        if time.monotonic() > deadline:
            return ids
        time.sleep(0.25)


def test_buying_an_article_changes_the_personalised_list(
    page: Page, shop: str, served: Served
) -> None:
    # A customer whose history list has a free slot: exclusion covers the N history articles
    # the online store holds, and one purchase of a new article must enter them.
    hist = served.customers.hist_ids
    room = (hist == 0).any(axis=1) & (hist > OOV_ID).any(axis=1)
    assert room.any()
    sign_in(page, shop, str(served.customers.ids[int(np.argmax(room))]))
    _, before = listed(page, "main")
    # The first listed article the model's vocabulary knows (exclusion matches the history by
    # vocabulary id; an article first sold after the fit shares the unknown id: README
    # "Candidate sources, ranking features and the guardrail").
    workflow = Workflow.load(served.paths.models_dir / WORKFLOW_FILE)
    known = workflow.categorical(s.ARTICLE_ID, before) > OOV_ID
    assert known.any(), before
    position = int(np.argmax(known))
    bought = before[position]
    page.locator("#list-main li.card").nth(position).get_by_role("button", name="Add").click()
    page.get_by_role("link", name="Basket (1)").click()  # the card's form returns home
    expect(page.locator("h1")).to_have_text("Your basket")
    assert page.locator("ul.basket li").get_attribute("data-article-id") == bought
    check_accessibility(page)
    page.get_by_role("button", name="Buy").click()
    expect(page.locator(".notice")).to_have_text("Thank you for your purchase.")
    after = _wait_for_change(page, shop, bought, before)
    assert bought not in after  # the stack serves exclude_purchased


def test_not_interested_removes_the_article(page: Page, shop: str, served: Served) -> None:
    sign_in(page, shop, served.regulars[2])
    _, before = listed(page, "main")
    dropped = before[0]
    page.locator("#list-main li.card").first.get_by_role("button", name="Not interested").click()
    expect(page.locator(".notice")).to_contain_text("Noted")
    after = _wait_for_change(page, shop, dropped, before)
    assert dropped not in after


def test_anonymous_visitor_who_viewed_three_articles_gets_a_session_list(
    page: Page, shop: str, served: Served
) -> None:
    page.goto(shop)
    _, popular = listed(page, "main")
    for article_id in popular[:3]:
        page.goto(f"{shop}/articles/{article_id}")
    deadline = time.monotonic() + CHANGE_WITHIN_S
    while True:
        page.goto(shop)
        source, ids = listed(page, "session")
        if source == "session" or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    expect(page.locator("#h-session")).to_contain_text("Because you viewed")
    assert source == "session"
    assert ids


def test_gateway_stopped_shows_the_fallback_page(
    page: Page, shop: str, served: Served, stack: ServingStack
) -> None:
    """Runs last: stops the module's gateway (not restarted)."""
    sign_in(page, shop, served.regulars[0])
    stack.supervisor.stop_child("gateway")
    for path in ("/", f"/articles/{served.popular[0]}"):
        response = page.goto(f"{shop}{path}")
        assert response is not None and response.status == 200
        expect(page.locator(".down")).to_have_text(GATEWAY_DOWN)
        source, ids = listed(page, "main")
        assert source == "popular"
        assert ids == served.popular[:K]  # the list cached while the gateway was up
        assert "Traceback" not in page.content()
        check_accessibility(page)
