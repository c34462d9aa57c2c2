"""The ``retrieval`` step: item-index ANN top-n plus the customer's history (FAISS)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.inference.candidates import retrieve_candidates
from shoprec.inference.index import load_index
from shoprec.serving.repository import (
    HISTORY_ROWS_FILE,
)
from shoprec.serving.runtime import (
    P_CANDIDATES,
    P_HISTORY_CANDIDATES,
    Step,
    as_float32,
    as_int64,
    batch_size_of,
    bool_param,
    candidate_width,
    check_range,
    check_width,
    int_param,
    load_array,
)


class RetrievalStep(Step):
    """Candidate retrieval: item-index ANN top-n plus the customer's history articles.

    ``ranking.rerank.retrieve_candidates`` with index id i = served row i and the history
    mapped by ``history_rows`` (``ranking.rerank.vocab_to_row`` over the served table).

    Inputs: query_embedding float32 (B, D), hist_ids int64 (B, N). Output: candidates int64
    (B, C) served-table rows, ``candidate_width`` wide, PAD (-1) for none and duplicates.
    """

    name = s.TRITON_RETRIEVAL
    inputs = (s.T_QUERY_EMBEDDING, s.T_HIST_IDS)
    outputs = (s.T_CANDIDATES,)

    def __init__(
        self,
        index: faiss.Index,
        history_rows: npt.NDArray[Any],
        candidates: int,
        history_candidates: bool,
    ):
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.index = index
        self.history_rows = as_int64(history_rows)
        self.candidates = candidates
        self.history_candidates = history_candidates
        self.index_rows = np.arange(index.ntotal, dtype=np.int64)

    @classmethod
    def load(cls, directory: Path, candidates: int, history_candidates: bool) -> RetrievalStep:
        """Load ``item_index.faiss`` and ``history_rows.npy``; ``ArtifactError`` if missing."""
        return cls(
            load_index(directory / A.ITEM_INDEX_FILE),
            load_array(directory / HISTORY_ROWS_FILE),
            candidates,
            history_candidates,
        )

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> RetrievalStep:
        return cls.load(
            directory, int_param(params, P_CANDIDATES), bool_param(params, P_HISTORY_CANDIDATES)
        )

    def retrieve(
        self, query: npt.NDArray[Any], hist_ids: npt.NDArray[Any]
    ) -> npt.NDArray[np.int64]:
        """Candidate rows int64 (B, C). Raises ``RequestError`` on bad shapes or ids."""
        batch = batch_size_of({s.T_QUERY_EMBEDDING: query, s.T_HIST_IDS: hist_ids})
        check_width(s.T_QUERY_EMBEDDING, query, self.index.d)
        check_range(s.T_HIST_IDS, hist_ids, len(self.history_rows))
        width = candidate_width(
            self.candidates, self.index.ntotal, hist_ids.shape[1], self.history_candidates
        )
        if batch == 0:
            return np.zeros((0, width), dtype=np.int64)
        hist = as_int64(hist_ids) if self.history_candidates else None
        cands, _ = retrieve_candidates(
            self.index, as_float32(query), self.candidates, self.index_rows, hist, self.history_rows
        )
        return cands

    def __call__(self, tensors: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        return {s.T_CANDIDATES: self.retrieve(tensors[s.T_QUERY_EMBEDDING], tensors[s.T_HIST_IDS])}
