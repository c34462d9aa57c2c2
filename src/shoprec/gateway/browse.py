"""Browse and text search over the served articles (``GET /v1/articles``,
``GET /v1/catalog/departments``): what a storefront's category pages and search box call.

:class:`ArticleIndex` is built once per served feature-store version from the display fields
of every article (:meth:`shoprec.gateway.deps.FeatureStore.all_articles`) and kept in memory.
Search is a plain case-insensitive match: an article matches when its name contains every
word of the query (a word is a maximal run of letters and digits), as a prefix of one of
the name's words. Results are ordered by the number of name words (shorter names first: the
closer match), then by name and id. A linear scan over precomputed word tuples; there is no
relevance model (ranking the results is not this route's job).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from shoprec import schema

_WORD: Final = re.compile(r"[^\W_]+")


def words(text: str) -> tuple[str, ...]:
    """Lower-cased words of ``text`` (runs of letters and digits), in order."""
    return tuple(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class DepartmentCount:
    """A department, its article count and the counts of its product groups (name order)."""

    department: str
    n_articles: int
    product_groups: list[tuple[str, int]]


class ArticleIndex:
    """Search and browse over ``{article_id: display fields}`` (see the module docstring).

    Args:
        articles: display fields by article id (``name``, ``department``, ``product_group``
            may be None; such an article is not found by that field).
    """

    def __init__(self, articles: Mapping[str, Mapping[str, str | None]]) -> None:
        rows = []
        for article_id, fields in articles.items():
            name = fields.get(schema.NAME) or ""
            rows.append(
                (
                    len(words(name)),
                    name,
                    article_id,
                    words(name),
                    fields.get(schema.DEPARTMENT),
                    fields.get(schema.PRODUCT_GROUP),
                )
            )
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        self._rows = [(article_id, w, d, g) for _, _, article_id, w, d, g in rows]
        departments: Counter[str] = Counter()
        groups: Counter[tuple[str, str]] = Counter()
        for _, _, department, group in self._rows:
            if department is not None:
                departments[department] += 1
                if group is not None:
                    groups[department, group] += 1
        self._departments = [
            DepartmentCount(
                department,
                n,
                sorted((g, c) for (d, g), c in groups.items() if d == department),
            )
            for department, n in sorted(departments.items())
        ]

    def __len__(self) -> int:
        return len(self._rows)

    def departments(self) -> list[DepartmentCount]:
        """Every department with its product groups, in name order."""
        return self._departments

    def search(
        self,
        query: str | None,
        department: str | None,
        product_group: str | None,
        limit: int,
        excluded: frozenset[str] = frozenset(),
    ) -> tuple[list[str], int]:
        """Article ids matching all the given filters, and how many match in all.

        Args:
            query: words the name must contain (as word prefixes); None or blank: no filter.
            department / product_group: exact field value; None: no filter.
            limit: at most this many ids are returned (>= 1).
            excluded: ids never returned nor counted (hidden or deleted articles).

        Returns:
            (ids in the module docstring's order, at most ``limit``; total matches).

        Raises:
            ValueError: ``limit < 1``.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        wanted = words(query or "")
        out: list[str] = []
        total = 0
        for article_id, name_words, d, g in self._rows:
            if department is not None and d != department:
                continue
            if product_group is not None and g != product_group:
                continue
            if wanted and not all(any(w.startswith(q) for w in name_words) for q in wanted):
                continue
            if article_id in excluded:
                continue
            total += 1
            if len(out) < limit:
                out.append(article_id)
        return out, total
