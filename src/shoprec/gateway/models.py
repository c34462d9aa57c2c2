"""Response models of the gateway's routes.

Field names are the canonical column names of :mod:`shoprec.schema` (``article_id``, ``name``,
the five article attributes, ``description``); ``tests/test_gateway.py`` pins that they match.
A list item carries the name and attributes; the description only comes with an article's page.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class Source(StrEnum):
    """Where a customer's recommendations came from."""

    PERSONALISED = "personalised"  # the Triton ``recommend`` ensemble, scores are ranker scores
    POPULAR = "popular"  # cold start: recent popularity, no score (the order is the rank)
    SESSION = "session"  # neighbours of the session's recent views, blended with popularity


class ArticleSummary(BaseModel):
    """An article as a list shows it; display fields are ``None`` where the store has none."""

    article_id: str
    name: str | None = None
    product_type: str | None = None
    product_group: str | None = None
    department: str | None = None
    section: str | None = None
    variant: str | None = None


class Item(ArticleSummary):
    """One recommended or similar article, listed best first."""

    score: float | None = Field(
        description="Model score, higher is better; null for popularity (cold-start) items, "
        "whose rank is their position in the list."
    )


class Article(ArticleSummary):
    """An article's display fields."""

    description: str | None = None


RECOMMENDATION_ID_DESCRIPTION = (
    "Unique id of this answer (32 hex characters); send it as an event's recommendation_id "
    "to attribute a view or purchase to it."
)


class Recommendations(BaseModel):
    """``GET /v1/customers/{customer_id}/recommendations``."""

    customer_id: str
    source: Source
    recommendation_id: str = Field(description=RECOMMENDATION_ID_DESCRIPTION)
    items: list[Item]


class SessionRecommendations(BaseModel):
    """``GET /v1/sessions/{session_id}/recommendations``: the customer answer's shape with the
    session id in place of the customer id."""

    session_id: str
    source: Source
    recommendation_id: str = Field(description=RECOMMENDATION_ID_DESCRIPTION)
    items: list[Item]


class SimilarArticles(BaseModel):
    """``GET /v1/articles/{article_id}/similar``."""

    article_id: str
    recommendation_id: str = Field(description=RECOMMENDATION_ID_DESCRIPTION)
    items: list[Item]


class PopularArticles(BaseModel):
    """``GET /v1/popular``: the recent popularity list (the cold-start list), most sold
    first; ``score`` is null (the order is the rank)."""

    source: Source = Source.POPULAR
    recommendation_id: str = Field(description=RECOMMENDATION_ID_DESCRIPTION)
    items: list[Item]


class ArticleList(BaseModel):
    """``GET /v1/articles``: articles matching a search or a department / product group."""

    total: int = Field(description="Matching articles in all (``items`` holds at most limit).")
    items: list[ArticleSummary]


class ProductGroupCount(BaseModel):
    """A product group of a department and its number of articles."""

    product_group: str
    n_articles: int


class Department(BaseModel):
    """A department, its number of articles and its product groups (name order)."""

    department: str
    n_articles: int
    product_groups: list[ProductGroupCount]


class Departments(BaseModel):
    """``GET /v1/catalog/departments``: every department of the served articles."""

    departments: list[Department]


class ErrorDetail(BaseModel):
    """Body of every 4xx/5xx answer; ``detail`` is a stable string clients may match."""

    detail: str


class Status(BaseModel):
    """``GET /healthz`` and ``GET /readyz``."""

    status: Literal["ok"] = "ok"
