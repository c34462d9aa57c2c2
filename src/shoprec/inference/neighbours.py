"""Item-to-item neighbour table: the K most similar articles of every article, computed once.

"You may also like" asks the same question for every request on an article: which articles
have the nearest text embeddings. The answer only changes when the catalog or the embeddings
do, so it is computed when the Triton repository is exported (FAISS k-NN over the text
vectors, the standard precomputed item-to-item table of e-commerce recommenders, e.g.
Linden, Smith and York, "Amazon.com recommendations: item-to-item collaborative filtering",
IEEE Internet Computing 2003) and serving is a table lookup.

Catalogs list one product under several ids with the same text (Complete Journey: one milk
under dozens of UPCs); their vectors are identical. The table is built over the distinct
vectors ("groups"): an article's neighbours are other groups, each returned as its first
article in catalog order, so a list never shows the query's own text nor the same text twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shoprec.config import IndexConfig


@dataclass(frozen=True)
class TextNeighbours:
    """The neighbour table of T text rows (articles) with G distinct vectors.

    Attributes:
        groups: int32 (T,) the group of each text row; groups are numbered in the order of
            their first row.
        neighbours: int32 (G, K) each group's nearest other groups, best first; -1 = none
            (fewer than K other groups).
        scores: float32 (G, K) their inner products (cosine similarity for L2-normalised
            vectors); -inf where ``neighbours`` is -1.
    """

    groups: npt.NDArray[np.signedinteger[Any]]
    neighbours: npt.NDArray[np.signedinteger[Any]]
    scores: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        g = len(self.neighbours)
        if self.scores.shape != self.neighbours.shape or self.neighbours.ndim != 2:
            raise ValueError(
                f"neighbours {self.neighbours.shape} and scores {self.scores.shape} must be "
                "the same (G, K) shape"
            )
        if self.groups.ndim != 1 or len(self.groups) < g:
            raise ValueError(f"groups {self.groups.shape} must be (T,) with T >= G = {g}")
        for name, array, kind in (
            ("groups", self.groups, "i"),
            ("neighbours", self.neighbours, "i"),
            ("scores", self.scores, "f"),
        ):
            if array.dtype.kind != kind:
                raise ValueError(f"{name} has dtype {array.dtype}, expected {kind!r} kind")
        if self.scores.dtype != np.float32:
            raise ValueError(f"scores has dtype {self.scores.dtype}, expected float32")
        if not np.array_equal(np.unique(self.groups), np.arange(g)):
            raise ValueError(f"groups must take every value 0..{g - 1} and no other")
        if self.neighbours.size and (self.neighbours.min() < -1 or self.neighbours.max() >= g):
            raise ValueError(f"neighbours must lie in -1..{g - 1}")

    @property
    def representatives(self) -> npt.NDArray[np.int64]:
        """int64 (G,) the first text row of each group (what a list shows for the group)."""
        first: npt.NDArray[np.int64] = np.unique(self.groups, return_index=True)[1]
        return first

    @property
    def k(self) -> int:
        return int(self.neighbours.shape[1])


def text_neighbours(
    vectors: npt.NDArray[np.floating[Any]],
    k: int,
    config: IndexConfig | None = None,
    batch: int = 8192,
) -> TextNeighbours:
    """The K nearest other groups of every group of identical vectors.

    Args:
        vectors: float32 (T, D) text embeddings, row i = article i (L2-normalised: scores are
            cosine similarities).
        k: neighbours per group, >= 1.
        config: the FAISS index over the G distinct vectors (``retrieval.index.build_index``:
            exact flat search up to ``IndexConfig.flat_max_items`` groups, HNSW above, where
            the table is approximate and may differ between runs). Default
            ``IndexConfig()``. Cost: G searches of that index; exact, G^2 * D multiply-adds
            (Complete Journey, G = 20,699, D = 384: a few seconds on 2 cores).
        batch: groups searched per FAISS call (bounds memory).

    Raises:
        ValueError: ``k < 1`` or ``vectors`` not a non-empty (T, D) matrix.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"vectors must be a non-empty (T, D) matrix, got {vectors.shape}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    _, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # groups in the order of their first row
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    groups = rank[inverse.reshape(-1)].astype(np.int32)
    distinct = x[first[order]]
    g = len(distinct)
    from shoprec.inference.index import build_index, search  # FAISS: only to build

    index = build_index(distinct, config or IndexConfig())
    neighbours = np.full((g, k), -1, dtype=np.int32)
    scores = np.full((g, k), -np.inf, dtype=np.float32)
    for start in range(0, g, batch):
        stop = min(start + batch, g)
        got_scores, got_ids = search(index, distinct[start:stop], k + 1)
        own = np.arange(start, stop)[:, None]
        keep = (got_ids >= 0) & (got_ids != own)
        # move the kept entries to the front of each row, in their order, then cut to k
        pos = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        kept = np.take_along_axis(keep, pos, axis=1)
        width = pos.shape[1]
        neighbours[start:stop, :width] = np.where(
            kept, np.take_along_axis(got_ids, pos, axis=1), -1
        )
        scores[start:stop, :width] = np.where(
            kept, np.take_along_axis(got_scores, pos, axis=1), -np.inf
        )
    return TextNeighbours(groups=groups, neighbours=neighbours, scores=scores)
