"""The ``similar_items`` step: a lookup in the text neighbour table (numpy only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shoprec import schema as s
from shoprec.config import IndexConfig
from shoprec.errors import ArtifactError
from shoprec.inference.neighbours import TextNeighbours, text_neighbours
from shoprec.serving.article_delta import DeltaArticles, DeltaView, delta_view
from shoprec.serving.repository import (
    TEXT_ARTICLE_IDS_FILE,
    TEXT_GROUP_VECTORS_FILE,
    TEXT_GROUPS_FILE,
    TEXT_NEIGHBOUR_SCORES_FILE,
    TEXT_NEIGHBOURS_FILE,
)
from shoprec.serving.runtime import (
    EMPTY_ID,
    P_MAX_K,
    RequestError,
    Step,
    batch_size_of,
    check_width,
    int_param,
    load_array,
)

if TYPE_CHECKING:
    import faiss


class SimilarItemsStep(Step):
    """Item-to-item similarity: the K nearest articles by text embedding, looked up in the
    neighbour table ``shoprec export`` computed with FAISS
    (:func:`shoprec.inference.neighbours.text_neighbours`).

    Articles with identical text (identical vectors) form one group: a list never holds the
    query's own text nor one text twice; each neighbour group is returned as its first article
    in catalog order.

    Articles of the article delta (put through the write API after the export,
    :mod:`shoprec.serving.article_delta`) are merged at query time when the step has the
    groups' text vectors (``group_vectors``, float32 (G, Dt)): an exported article's list is
    its table row merged by score with the inner products of its text vector and the delta's
    live text vectors; a delta article's list is a brute-force search of its text vector over
    the G group vectors and the other delta articles. Delta articles are compared vector by
    vector: one with the same text as an exported article is listed as its neighbour (it is
    another id of the catalog), and the other way round.

    Input: article_id bytes (B, 1). Outputs: article_ids bytes (B, K) most similar first
    (b"" = none), scores float32 (B, K) cosine similarities (-inf = none).
    """

    name = s.TRITON_SIMILAR_ITEMS
    inputs = (s.T_ARTICLE_ID,)
    outputs = (s.T_ARTICLE_IDS, s.T_SCORES)

    def __init__(
        self,
        table: TextNeighbours,
        article_ids: Sequence[str],
        max_k: int,
        group_vectors: npt.NDArray[np.float32] | None = None,
        delta: DeltaView | None = None,
    ):
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}")
        if len(table.groups) != len(article_ids):
            raise ArtifactError(
                f"the neighbour table has {len(table.groups)} text rows but there are "
                f"{len(article_ids)} article ids"
            )
        if table.k < max_k:
            raise ArtifactError(f"the neighbour table holds {table.k} neighbours, max_k is {max_k}")
        if any(a == "" for a in article_ids):
            raise ArtifactError("an article id is empty (b'' marks 'no neighbour')")
        if group_vectors is not None and len(group_vectors) != len(table.neighbours):
            raise ArtifactError(
                f"{len(group_vectors)} group vectors for {len(table.neighbours)} text groups"
            )
        self.max_k = max_k
        self.table = table
        self.group_vectors = group_vectors
        self.delta = delta if group_vectors is not None else None
        self.article_ids = list(article_ids)
        self.rows = {a: i for i, a in enumerate(self.article_ids)}
        self._groups = table.groups
        self._neighbours = table.neighbours[:, :max_k]
        self._scores = table.scores[:, :max_k]
        # each group's shown article id; index G (from neighbour -1) is the empty id
        reps = table.representatives
        self._group_ids = np.array(
            [article_ids[r].encode() for r in reps] + [EMPTY_ID], dtype=object
        )

    @classmethod
    def build(
        cls,
        index: faiss.Index,
        article_ids: Sequence[str],
        max_k: int,
        config: IndexConfig | None = None,
    ) -> SimilarItemsStep:
        """Compute the neighbour table from a text index (row i = ``article_ids[i]``)."""
        if index.ntotal != len(article_ids):
            raise ArtifactError(
                f"text index holds {index.ntotal} vectors but {len(article_ids)} article ids"
            )
        vectors = index.reconstruct_n(0, index.ntotal)
        table = text_neighbours(vectors, max_k, config)
        group_vectors = np.ascontiguousarray(vectors[table.representatives], dtype=np.float32)
        return cls(table, article_ids, max_k, group_vectors)

    def save(self, directory: Path) -> list[Path]:
        """Write the step's files (what :meth:`load` reads) into ``directory``."""
        arrays = {
            TEXT_ARTICLE_IDS_FILE: np.array(self.article_ids, dtype=str),
            TEXT_GROUPS_FILE: self.table.groups,
            TEXT_NEIGHBOURS_FILE: self.table.neighbours,
            TEXT_NEIGHBOUR_SCORES_FILE: self.table.scores,
        }
        if self.group_vectors is not None:
            arrays[TEXT_GROUP_VECTORS_FILE] = self.group_vectors
        for name, array in arrays.items():
            np.save(directory / name, array, allow_pickle=False)
        return [directory / name for name in arrays]

    @classmethod
    def load(cls, directory: Path, max_k: int) -> SimilarItemsStep:
        """Load the neighbour table; ``ArtifactError`` if a file is missing or inconsistent.
        The article delta named by ``SHOPREC_ARTICLE_DELTA`` is merged when the variable is
        set and the export holds the group vectors."""
        ids = load_array(directory / TEXT_ARTICLE_IDS_FILE).astype(str).tolist()
        try:
            table = TextNeighbours(
                groups=load_array(directory / TEXT_GROUPS_FILE),
                neighbours=load_array(directory / TEXT_NEIGHBOURS_FILE),
                scores=load_array(directory / TEXT_NEIGHBOUR_SCORES_FILE),
            )
        except ValueError as exc:
            raise ArtifactError(f"{directory}: {exc}") from exc
        vectors_file = directory / TEXT_GROUP_VECTORS_FILE
        vectors = load_array(vectors_file) if vectors_file.exists() else None
        return cls(table, ids, max_k, vectors, delta_view(directory))

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> SimilarItemsStep:
        return cls.load(directory, int_param(params, P_MAX_K))

    def similar(
        self, article_ids: npt.NDArray[Any]
    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]:
        """(article ids bytes (B, K), scores float32 (B, K)) for article ids (B, 1).

        Raises:
            RequestError: an id not in the catalog (``unknown article_id '<id>'``) or a shape
                other than (B, 1).
        """
        batch_size_of({s.T_ARTICLE_ID: article_ids})
        check_width(s.T_ARTICLE_ID, article_ids, 1)
        delta = self.delta.current() if self.delta is not None else None
        vectors = self.group_vectors
        if delta is None or vectors is None or not delta.live.any():
            rows = np.array([self._row(v) for v in article_ids[:, 0]], dtype=np.int64)
            return self._table_rows(rows)
        keys = [_key(v) for v in article_ids[:, 0]]
        slots = {a: m for m, a in enumerate(delta.ids) if delta.live[m]}
        rows = np.array([self.rows.get(k, -1) for k in keys], dtype=np.int64)
        for key, row in zip(keys, rows, strict=True):
            if row < 0 and key not in slots:
                self._row(key)  # raises: unknown article
        ids, scores = self._table_rows(np.maximum(rows, 0))
        for b, (key, row) in enumerate(zip(keys, rows, strict=True)):
            if row >= 0:
                query = vectors[self._groups[row]]
            else:
                query = delta.text[slots[key]]
                found = vectors @ query
                top = np.argsort(-found, kind="stable")[: self.max_k]
                ids[b] = EMPTY_ID
                scores[b] = -np.inf
                ids[b, : len(top)], scores[b, : len(top)] = self._group_ids[top], found[top]
            ids[b], scores[b] = self._merge(ids[b], scores[b], query, key, delta)
        return ids, scores

    def _table_rows(
        self, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]:
        groups = self._groups[rows]
        neighbours = self._neighbours[groups]
        shown = np.where(neighbours >= 0, neighbours, len(self._group_ids) - 1)
        return self._group_ids[shown], self._scores[groups].copy()

    def _merge(
        self,
        ids: npt.NDArray[np.object_],
        scores: npt.NDArray[np.float32],
        query: npt.NDArray[np.float32],
        own: str,
        delta: DeltaArticles,
    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]:
        """One list (K,) merged by score with the delta's live articles other than ``own``."""
        others = [m for m, a in enumerate(delta.ids) if delta.live[m] and a != own]
        if not others:
            return ids, scores
        extra = delta.text[others] @ query
        all_ids = np.concatenate([ids, np.array([delta.ids[m].encode() for m in others])])
        all_scores = np.concatenate([scores, extra.astype(np.float32)])
        top = np.argsort(-all_scores, kind="stable")[: self.max_k]
        return all_ids[top].astype(object), all_scores[top].astype(np.float32)

    def _row(self, value: object) -> int:
        key = _key(value)
        row = self.rows.get(key)
        if row is None:
            # The value is not echoed back: a client error never carries client input.
            raise RequestError(f"unknown {s.T_ARTICLE_ID} ({len(key.encode())} bytes)")
        return row

    def __call__(self, tensors: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        ids, scores = self.similar(tensors[s.T_ARTICLE_ID])
        return {s.T_ARTICLE_IDS: ids, s.T_SCORES: scores}


def _key(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
