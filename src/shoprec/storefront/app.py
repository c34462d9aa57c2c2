"""The storefront's pages (FastAPI + Jinja2, rendered on the server).

Pages: ``/`` (home: "Selected for you" for the picked customer, "Popular now" for an
anonymous visitor, "Because you viewed ..." from the visitor's session), ``/articles/{id}``
(display fields, "You may also like"), ``/browse`` (departments and product groups),
``/search?q=``, ``/basket``. Forms post to ``/customer`` (the demo's customer picker),
``/basket/add``, ``/basket/remove``, ``/basket/buy`` (purchase events) and
``/not-interested`` (a ``not_interested`` event); each answers 303 back to a page.

State lives in cookies (no server-side session store): ``shoprec_session`` (a random
session id, sent with ``view`` events), ``shoprec_customer`` (the picked customer),
``shoprec_basket`` and ``shoprec_viewed`` (article ids). An anonymous visitor's events carry
the customer id ``visitor-<session id>``.

When the gateway is down or slow (:class:`~shoprec.storefront.gateway.GatewayUnavailableError`)
a page still renders (HTTP 200) with a message and the last popular list this process got;
an unexpected error renders the error page (HTTP 500) without a trace.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoprec.storefront.gateway import (
    ArticleList,
    EventsRejectedError,
    GatewayClient,
    GatewayUnavailableError,
    NotFoundError,
    event,
)
from shoprec.storefront.settings import StorefrontSettings

logger = logging.getLogger(__name__)

HERE: Final = Path(__file__).parent
SESSION_COOKIE: Final = "shoprec_session"
CUSTOMER_COOKIE: Final = "shoprec_customer"
BASKET_COOKIE: Final = "shoprec_basket"
VIEWED_COOKIE: Final = "shoprec_viewed"
MAX_BASKET: Final = 20
MAX_VIEWED: Final = 5
MAX_ID_CHARS: Final = 128
COOKIE_AGE_S: Final = 30 * 24 * 3600
GATEWAY_DOWN: Final = (
    "The recommendation service is not answering right now, so this page shows the popular "
    "list instead of your own. Please try again in a moment."
)
# Messages a redirect may ask a page to show (by code: nothing from the URL is echoed).
NOTICES: Final = {
    "bought": "Thank you for your purchase.",
    "not-interested": "Noted: we will show you fewer articles like this one.",
    "pick-customer": "Pick a customer first: a purchase needs a customer.",
    "empty-basket": "Your basket is empty.",
    "no-write": "This storefront cannot record events (no write key is configured).",
    "write-failed": "The shop could not record that just now; please try again.",
    "signed-in": "Signed in.",
    "signed-out": "Signed out: you are browsing as an anonymous visitor.",
}


def _ids(raw: str | None, limit: int) -> list[str]:
    """Article ids of a cookie (comma-separated), at most ``limit``, no empty or long ones."""
    if not raw:
        return []
    return [a for a in raw.split(",") if a and len(a) <= MAX_ID_CHARS][:limit]


def _safe_next(target: str | None, default: str = "/") -> str:
    """A local path to redirect to (never another site)."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return default


class Shop:
    """What the routes share: settings, the gateway client and the templates."""

    def __init__(self, settings: StorefrontSettings, gateway: GatewayClient) -> None:
        self.settings = settings
        self.gateway = gateway
        self.templates = Jinja2Templates(directory=HERE / "templates")

    def render(
        self, request: Request, template: str, context: dict[str, Any], status_code: int = 200
    ) -> HTMLResponse:
        customer = request.cookies.get(CUSTOMER_COOKIE) or None
        notice = NOTICES.get(request.query_params.get("notice", ""))
        base = {
            "customer": customer,
            "demo_customers": self.settings.demo_customers,
            "basket_count": len(_ids(request.cookies.get(BASKET_COOKIE), MAX_BASKET)),
            "notice": notice,
            "path": _here(request),
        }
        response = self.templates.TemplateResponse(
            request, template, {**base, **context}, status_code=status_code
        )
        if SESSION_COOKIE not in request.cookies:
            response.set_cookie(
                SESSION_COOKIE,
                session_id(request),
                max_age=COOKIE_AGE_S,
                httponly=True,
                samesite="lax",
            )
        return response

    def cached_popular(self) -> ArticleList | None:
        """The last popular list this process got (None if never): what a page shows while
        the gateway is down, without asking it again (a slow gateway would cost another
        timeout)."""
        cached = self.gateway.last_popular
        return None if cached is None else cached.articles

    async def popular(self) -> ArticleList | None:
        """The popular list now, or :meth:`cached_popular` when the gateway does not answer."""
        try:
            return await self.gateway.popular(self.settings.k)
        except (GatewayUnavailableError, NotFoundError):
            return self.cached_popular()


def session_id(request: Request) -> str:
    """The visitor's session id (cookie), made on the first request (kept in
    ``request.state`` so that the page and the cookie agree)."""
    existing = request.cookies.get(SESSION_COOKIE)
    if existing:
        return existing
    if not hasattr(request.state, "new_session"):
        request.state.new_session = f"s-{secrets.token_hex(8)}"
    new: str = request.state.new_session
    return new


def visitor_id(request: Request) -> str:
    """The customer id events carry: the picked customer, else ``visitor-<session id>``."""
    return request.cookies.get(CUSTOMER_COOKIE) or f"visitor-{session_id(request)}"


def _here(request: Request) -> str:
    """This page's path and query without ``notice`` (where a form sends the visitor back)."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "notice"])
    return request.url.path + (f"?{query}" if query else "")


def _redirect(target: str, notice: str | None = None) -> RedirectResponse:
    if notice is not None:
        target += ("&" if "?" in target else "?") + f"notice={notice}"
    return RedirectResponse(target, status_code=303)


def create_app(
    settings: StorefrontSettings | None = None, gateway: GatewayClient | None = None
) -> FastAPI:
    """The storefront app.

    Args:
        settings: None reads ``SHOPREC_STOREFRONT_*``.
        gateway: a client (tests); None builds one from the settings.

    Raises:
        OSError: a key file cannot be read.
    """
    settings = settings or StorefrontSettings()
    gateway = gateway or GatewayClient(
        settings.gateway_url,
        settings.timeout_s,
        write_key=settings.write_secret(),
        read_key=settings.read_secret(),
    )
    shop = Shop(settings, gateway)
    k = settings.k

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:  # warm the fallback list; the shop also starts while the gateway is down
            await gateway.popular(k)
        except (GatewayUnavailableError, NotFoundError):
            logger.warning("gateway not answering at start; no popular list cached yet")
        yield
        await gateway.close()

    app = FastAPI(title="shoprec storefront", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        title = "Not found" if exc.status_code == 404 else "Something went wrong"
        return shop.render(
            request, "error.html", {"title": title, "message": title}, exc.status_code
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("storefront page failed")
        message = "The shop could not show this page. Please try again."
        return shop.render(
            request, "error.html", {"title": "Something went wrong", "message": message}, 500
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> HTMLResponse:
        customer = request.cookies.get(CUSTOMER_COOKIE) or None
        lists: list[dict[str, Any]] = []
        down: str | None = None
        main: ArticleList | None = None
        try:
            if customer is not None:
                main = await gateway.recommendations(customer, k)
            else:
                main = await gateway.popular(k)
        except (GatewayUnavailableError, NotFoundError):
            down = GATEWAY_DOWN
            main = shop.cached_popular()
        if main is not None:
            personal = main.source == "personalised"
            title = "Selected for you" if personal else "Popular now"
            lists.append({"id": "main", "title": title, "list": main})
        viewed = _ids(request.cookies.get(VIEWED_COOKIE), MAX_VIEWED)
        if viewed and down is None:
            session = await _session_list(request, viewed[0])
            if session is not None:
                lists.append(session)
        return shop.render(request, "home.html", {"title": "Home", "lists": lists, "down": down})

    async def _session_list(request: Request, last_viewed: str) -> dict[str, Any] | None:
        """The "Because you viewed ..." list: the session route, popular when it answers
        404 (a gateway without the route, or a session it does not know)."""
        try:
            name = (await gateway.article(last_viewed)).get("name") or last_viewed
        except (GatewayUnavailableError, NotFoundError):
            name = last_viewed
        found: ArticleList | None = None
        try:
            found = await gateway.session_recommendations(session_id(request), k)
        except NotFoundError:
            found = await shop.popular()
        except GatewayUnavailableError:
            return None
        if found is None:
            return None
        return {"id": "session", "title": f"Because you viewed {name}", "list": found}

    @app.get("/articles/{article_id}", response_class=HTMLResponse)
    async def article_page(request: Request, article_id: str) -> HTMLResponse:
        down: str | None = None
        article: dict[str, Any] | None = None
        lists: list[dict[str, Any]] = []
        try:
            article = await gateway.article(article_id)
        except NotFoundError:
            raise StarletteHTTPException(404) from None
        except GatewayUnavailableError:
            down = GATEWAY_DOWN
        if article is not None:
            try:
                similar = await gateway.similar(article_id, k)
                lists.append({"id": "similar", "title": "You may also like", "list": similar})
            except (GatewayUnavailableError, NotFoundError):
                down = GATEWAY_DOWN
        if down is not None:
            fallback = shop.cached_popular()
            if fallback is not None:
                lists.append({"id": "main", "title": "Popular now", "list": fallback})
        title = (article or {}).get("name") or article_id
        response = shop.render(
            request,
            "article.html",
            {"title": title, "article": article, "lists": lists, "down": down},
        )
        if article is not None:
            await _post_quietly(
                [
                    event(
                        "view",
                        visitor_id(request),
                        article_id,
                        session_id=session_id(request),
                        timestamp=shop.settings.event_time(),
                    )
                ]
            )
            viewed = [article_id, *_ids(request.cookies.get(VIEWED_COOKIE), MAX_VIEWED)]
            viewed = list(dict.fromkeys(viewed))[:MAX_VIEWED]
            response.set_cookie(
                VIEWED_COOKIE, ",".join(viewed), max_age=COOKIE_AGE_S, samesite="lax"
            )
        return response

    async def _post_quietly(events: list[dict[str, Any]]) -> bool:
        """Post events; False (logged) when they could not be recorded."""
        try:
            await gateway.post_events(events)
        except (EventsRejectedError, GatewayUnavailableError) as exc:
            logger.warning("events not recorded: %s", exc)
            return False
        return True

    @app.get("/browse", response_class=HTMLResponse)
    async def browse(
        request: Request, department: str | None = None, product_group: str | None = None
    ) -> HTMLResponse:
        departments: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        total = 0
        down: str | None = None
        try:
            departments = await gateway.departments()
            if department:
                items, total = await gateway.search(
                    department=department, product_group=product_group or None, limit=48
                )
        except (GatewayUnavailableError, NotFoundError):
            down = GATEWAY_DOWN
        heading = product_group or department or "All departments"
        return shop.render(
            request,
            "browse.html",
            {
                "title": f"Browse: {heading}",
                "heading": heading,
                "departments": departments,
                "department": department,
                "product_group": product_group,
                "items": items,
                "total": total,
                "down": down,
            },
        )

    @app.get("/search", response_class=HTMLResponse)
    async def search(request: Request, q: str = "") -> HTMLResponse:
        items: list[dict[str, Any]] = []
        total = 0
        down: str | None = None
        query = q.strip()[:200]
        if query:
            try:
                items, total = await gateway.search(q=query, limit=48)
            except (GatewayUnavailableError, NotFoundError):
                down = GATEWAY_DOWN
        return shop.render(
            request,
            "search.html",
            {
                "title": f"Search: {query}" if query else "Search",
                "q": query,
                "items": items,
                "total": total,
                "down": down,
            },
        )

    @app.get("/basket", response_class=HTMLResponse)
    async def basket(request: Request) -> HTMLResponse:
        ids = _ids(request.cookies.get(BASKET_COOKIE), MAX_BASKET)
        items: list[dict[str, Any]] = []
        down: str | None = None
        for article_id in ids:
            try:
                items.append(await gateway.article(article_id))
            except NotFoundError:
                continue
            except GatewayUnavailableError:
                down = GATEWAY_DOWN
                items.append({"article_id": article_id, "name": None})
        return shop.render(
            request, "basket.html", {"title": "Your basket", "items": items, "down": down}
        )

    @app.post("/customer")
    async def pick_customer(customer_id: Annotated[str, Form()] = "") -> RedirectResponse:
        customer_id = customer_id.strip()[:MAX_ID_CHARS]
        response = _redirect("/", "signed-in" if customer_id else "signed-out")
        if customer_id:
            response.set_cookie(CUSTOMER_COOKIE, customer_id, max_age=COOKIE_AGE_S, samesite="lax")
        else:
            response.delete_cookie(CUSTOMER_COOKIE)
        return response

    def _basket_response(target: str, ids: list[str], notice: str | None = None) -> Response:
        response = _redirect(target, notice)
        response.set_cookie(BASKET_COOKIE, ",".join(ids), max_age=COOKIE_AGE_S, samesite="lax")
        return response

    @app.post("/basket/add")
    async def basket_add(
        request: Request,
        article_id: Annotated[str, Form(max_length=MAX_ID_CHARS)],
        next: Annotated[str | None, Form()] = None,
    ) -> Response:
        ids = _ids(request.cookies.get(BASKET_COOKIE), MAX_BASKET)
        ids = list(dict.fromkeys([*ids, article_id]))[-MAX_BASKET:]
        return _basket_response(_safe_next(next, "/basket"), ids)

    @app.post("/basket/remove")
    async def basket_remove(
        request: Request, article_id: Annotated[str, Form(max_length=MAX_ID_CHARS)]
    ) -> Response:
        ids = [a for a in _ids(request.cookies.get(BASKET_COOKIE), MAX_BASKET) if a != article_id]
        return _basket_response("/basket", ids)

    @app.post("/basket/buy")
    async def basket_buy(request: Request) -> Response:
        customer = request.cookies.get(CUSTOMER_COOKIE)
        ids = _ids(request.cookies.get(BASKET_COOKIE), MAX_BASKET)
        if not customer:
            return _redirect("/basket", "pick-customer")
        if not ids:
            return _redirect("/basket", "empty-basket")
        if not gateway.can_write:
            return _redirect("/basket", "no-write")
        sid = session_id(request)
        at = shop.settings.event_time()
        events = [
            event("purchase", customer, a, session_id=sid, quantity=1, timestamp=at) for a in ids
        ]
        if not await _post_quietly(events):
            return _redirect("/basket", "write-failed")
        return _basket_response("/", [], "bought")

    @app.post("/not-interested")
    async def not_interested(
        request: Request,
        article_id: Annotated[str, Form(max_length=MAX_ID_CHARS)],
        recommendation_id: Annotated[str | None, Form(max_length=MAX_ID_CHARS)] = None,
        next: Annotated[str | None, Form()] = None,
    ) -> Response:
        target = _safe_next(next)
        if not gateway.can_write:
            return _redirect(target, "no-write")
        posted = await _post_quietly(
            [
                event(
                    "not_interested",
                    visitor_id(request),
                    article_id,
                    session_id=session_id(request),
                    recommendation_id=recommendation_id or None,
                    timestamp=shop.settings.event_time(),
                )
            ]
        )
        return _redirect(target, "not-interested" if posted else "write-failed")

    app.state.shop = shop
    return app
