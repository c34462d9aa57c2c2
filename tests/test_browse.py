"""The gateway's article index (browse and search) against a brute-force reading of its
definition, on generated catalogues."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shoprec import schema
from shoprec.gateway.browse import ArticleIndex, words

WORD = st.text(alphabet="abcAB1", min_size=1, max_size=3)
NAME = st.lists(WORD, max_size=4).map(" ".join) | st.none()
LABEL = st.sampled_from(["x", "y"]) | st.none()
ARTICLES = st.dictionaries(
    st.text(alphabet="0123456789", min_size=1, max_size=3),
    st.fixed_dictionaries(
        {schema.NAME: NAME, schema.DEPARTMENT: LABEL, schema.PRODUCT_GROUP: LABEL}
    ),
    max_size=25,
)


def brute_force(
    articles: dict[str, dict[str, str | None]],
    query: str,
    department: str | None,
    group: str | None,
    excluded: frozenset[str],
) -> list[str]:
    def matches(article_id: str) -> bool:
        fields = articles[article_id]
        name_words = words(fields[schema.NAME] or "")
        return (
            all(any(w.startswith(q) for w in name_words) for q in words(query))
            and department in (None, fields[schema.DEPARTMENT])
            and group in (None, fields[schema.PRODUCT_GROUP])
            and article_id not in excluded
        )

    def order(article_id: str) -> tuple[int, str, str]:
        name = articles[article_id][schema.NAME] or ""
        return len(words(name)), name, article_id

    return sorted(filter(matches, articles), key=order)


@settings(max_examples=200, deadline=None)
@given(
    ARTICLES,
    st.lists(WORD, max_size=2).map(" ".join),
    LABEL,
    LABEL,
    st.integers(1, 30),
    st.data(),
)
def test_search_equals_the_brute_force_definition(
    articles: dict[str, dict[str, str | None]],
    query: str,
    department: str | None,
    group: str | None,
    limit: int,
    data: st.DataObject,
) -> None:
    excluded = frozenset(data.draw(st.lists(st.sampled_from(sorted(articles) or ["-"]))))
    expected = brute_force(articles, query, department, group, excluded)
    found = ArticleIndex(articles).search(query, department, group, limit, excluded)
    assert found == (expected[:limit], len(expected))


def test_words_are_lower_case_runs_of_letters_and_digits() -> None:
    assert words("Fluid Milk, 1/2 Gal_x") == ("fluid", "milk", "1", "2", "gal", "x")
    assert ArticleIndex({}).search("milk", None, None, 5) == ([], 0)
