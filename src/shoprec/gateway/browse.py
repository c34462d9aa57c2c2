"""Browse and text search over the served articles (``GET /v1/articles``,
``GET /v1/catalog/departments``): what a storefront's category pages and search box call.

:class:`ArticleIndex` is built once per served feature-store version from the display fields
of every article (:meth:`shoprec.gateway.deps.FeatureStore.all_articles`) and kept in memory.
Search is a plain case-insensitive match: an article matches when its name contains every
word of the query (a word is a maximal run of letters and digits), as a prefix of one of
the name's words. Results are ordered by the number of name words (shorter names first: the
closer match), then by name and id; there is no relevance model (ranking the results is not
this route's job). An inverted index (sorted vocabulary -> ascending row positions) finds
the words with a query word as prefix by binary search, and the matches are the
intersection of their postings; department and product group have postings of their own.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
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
        self._ids = [article_id for _, _, article_id, _, _, _ in rows]
        postings: defaultdict[str, list[int]] = defaultdict(list)
        self._by_department: defaultdict[str, list[int]] = defaultdict(list)
        self._by_group: defaultdict[str, list[int]] = defaultdict(list)
        departments: Counter[str] = Counter()
        groups: Counter[tuple[str, str]] = Counter()
        for position, (_, _, _, name_words, department, group) in enumerate(rows):
            for word in dict.fromkeys(name_words):
                postings[word].append(position)
            if department is not None:
                self._by_department[department].append(position)
                departments[department] += 1
            if group is not None:
                self._by_group[group].append(position)
                if department is not None:
                    groups[department, group] += 1
        self._vocabulary = sorted(postings)
        self._postings = [postings[word] for word in self._vocabulary]
        self._departments = [
            DepartmentCount(
                department,
                n,
                sorted((g, c) for (d, g), c in groups.items() if d == department),
            )
            for department, n in sorted(departments.items())
        ]

    def __len__(self) -> int:
        return len(self._ids)

    def _prefixed(self, prefix: str) -> set[int]:
        """Positions of the articles with a name word starting with ``prefix``."""
        start = bisect_left(self._vocabulary, prefix)
        out: set[int] = set()
        for i in range(start, len(self._vocabulary)):
            if not self._vocabulary[i].startswith(prefix):
                break
            out.update(self._postings[i])
        return out

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
        filters: list[Collection[int]] = [self._prefixed(q) for q in dict.fromkeys(wanted)]
        if department is not None:
            filters.append(self._by_department.get(department, []))
        if product_group is not None:
            filters.append(self._by_group.get(product_group, []))
        positions: Sequence[int]
        if not filters:
            positions = range(len(self._ids))
        elif len(filters) == 1 and isinstance(filters[0], list):
            positions = filters[0]  # one posting list: already ascending
        else:
            filters.sort(key=len)
            positions = sorted(set(filters[0]).intersection(*filters[1:]))
        out: list[str] = []
        total = 0
        for position in positions:
            article_id = self._ids[position]
            if article_id in excluded:
                continue
            total += 1
            if len(out) < limit:
                out.append(article_id)
        return out, total
