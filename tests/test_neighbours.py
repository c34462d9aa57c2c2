"""The item-to-item neighbour table (``similarity.neighbours``) against brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoprec.config import IndexConfig, IndexKind
from shoprec.inference.neighbours import TextNeighbours, text_neighbours


def _vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# (vectors float32 (T, D), the distinct text of each row int64 (T,))
Catalog = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    """300 distinct texts, 120 extra articles copying one of them; the group of each row."""
    rng = np.random.default_rng(7)
    distinct = _vectors(rng, 300, 16)
    copies = rng.integers(0, 300, 120)
    rows = np.concatenate([np.arange(300), copies])
    order = rng.permutation(len(rows))  # copies anywhere in the catalog, not at the end
    return distinct[rows[order]], rows[order]


def test_exact_table_equals_brute_force_over_distinct_texts(catalog: Catalog) -> None:
    vectors, text_of_row = catalog
    k = 10
    table = text_neighbours(vectors, k)
    assert table.neighbours.shape == table.scores.shape == (300, k)
    assert table.neighbours.dtype == np.int32 and table.scores.dtype == np.float32
    # rows share a group exactly when they share a text
    for a in range(0, len(vectors), 7):
        same = text_of_row == text_of_row[a]
        np.testing.assert_array_equal(table.groups == table.groups[a], same)
    reps = table.representatives
    assert (np.diff(reps) > 0).all()  # groups numbered by first row
    np.testing.assert_array_equal(reps, [np.flatnonzero(table.groups == g)[0] for g in range(300)])
    distinct = vectors[reps]
    sims = distinct @ distinct.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(table.neighbours, expected)
    np.testing.assert_allclose(
        table.scores, np.take_along_axis(sims, expected, axis=1), rtol=1e-5, atol=1e-6
    )
    assert (np.diff(table.scores, axis=1) <= 1e-6).all()


def test_fewer_other_texts_than_k_leaves_empty_slots() -> None:
    x = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    table = text_neighbours(x, k=4)
    np.testing.assert_array_equal(table.groups, [0, 1, 0, 2])
    np.testing.assert_array_equal(table.neighbours[0], [2, 1, -1, -1])
    np.testing.assert_allclose(table.scores[0], [0.6, 0.0, -np.inf, -np.inf], atol=1e-6)
    single = text_neighbours(np.ones((3, 2), dtype=np.float32), k=2)
    np.testing.assert_array_equal(single.neighbours, [[-1, -1]])


def test_hnsw_table_is_close_to_exact_and_never_holds_the_group_itself(catalog: Catalog) -> None:
    vectors, _ = catalog
    exact = text_neighbours(vectors, 10)
    approx = text_neighbours(vectors, 10, IndexConfig(kind=IndexKind.HNSW), batch=64)
    g = len(approx.neighbours)
    assert not (approx.neighbours == np.arange(g)[:, None]).any()
    pairs = zip(approx.neighbours, exact.neighbours, strict=True)
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in pairs])
    assert overlap > 0.9, overlap


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        text_neighbours(np.ones((2, 2), dtype=np.float32), 0)
    with pytest.raises(ValueError, match=r"non-empty \(T, D\) matrix, got \(0, 2\)"):
        text_neighbours(np.ones((0, 2), dtype=np.float32), 3)
    empty = np.full((2, 1), -1, dtype=np.int32)
    no_scores = np.full((2, 1), -np.inf, dtype=np.float32)
    for groups in ([0, 0, 3], [0, 0, 0]):  # a value out of range; a group that never occurs
        with pytest.raises(ValueError, match="groups must take every value 0..1 and no other"):
            TextNeighbours(groups=np.array(groups), neighbours=empty, scores=no_scores)
    with pytest.raises(ValueError, match="neighbours must lie in -1..1"):
        TextNeighbours(np.array([0, 1]), np.array([[1], [2]], dtype=np.int32), no_scores)
    with pytest.raises(ValueError, match="scores has dtype float64, expected float32"):
        TextNeighbours(np.array([0, 1]), empty, no_scores.astype(np.float64))


def test_similar_items_step_rejects_an_inconsistent_table(tmp_path: Path) -> None:
    from shoprec.errors import ArtifactError
    from shoprec.serving.similar_items import SimilarItemsStep

    x = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    step = SimilarItemsStep(text_neighbours(x, 2), ["a", "b", "c"], max_k=2)
    step.save(tmp_path)
    assert SimilarItemsStep.load(tmp_path, 2).similar(np.array([[b"a"]], dtype=object))[0][
        0
    ].tolist() == [b"c", b"b"]
    with pytest.raises(ArtifactError, match="holds 2 neighbours, max_k is 3"):
        SimilarItemsStep.load(tmp_path, 3)
    np.save(tmp_path / "text_groups.npy", np.array([0, 2, 2], dtype=np.int32))
    with pytest.raises(ArtifactError, match="groups must take every value"):
        SimilarItemsStep.load(tmp_path, 2)
    with pytest.raises(ArtifactError, match="an article id is empty"):
        SimilarItemsStep(text_neighbours(x, 2), ["a", "", "c"], max_k=2)
