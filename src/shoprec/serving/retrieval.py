"""The ``retrieval`` step: the candidate sources' union (FAISS ANN, history, co-purchase,
popular) and each candidate's per-source features."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.inference.index import load_index
from shoprec.inference.sources import (
    PAD,
    AnnSource,
    CandidateSource,
    CoPurchaseSource,
    HistorySource,
    PopularSource,
    QueryWidths,
    SourceQuery,
    union_candidates,
    union_width,
)
from shoprec.serving.article_delta import DeltaView, delta_view
from shoprec.serving.repository import (
    COPURCHASE_NEIGHBOURS_FILE,
    COPURCHASE_WEIGHTS_FILE,
    HISTORY_ROWS_FILE,
    POPULAR_ROWS_FILE,
    POPULAR_SCORES_FILE,
)
from shoprec.serving.runtime import (
    P_CANDIDATES,
    P_COPURCHASE_CANDIDATES,
    P_HISTORY_CANDIDATES,
    P_POPULAR_CANDIDATES,
    Step,
    as_float32,
    as_int64,
    batch_size_of,
    bool_param,
    check_range,
    check_width,
    int_param,
    load_array,
)


class DeltaAnnSource(AnnSource):
    """The ANN source over the item index plus the article delta: the index's top n merged by
    score with a brute-force inner product over the delta's live item vectors (delta slot m is
    served row ``A + m``, A = the index size). Same width as :class:`AnnSource`; with an empty
    delta it returns exactly what :class:`AnnSource` returns.
    """

    def __init__(self, index: faiss.Index, index_rows: npt.NDArray[Any], n: int, delta: DeltaView):
        super().__init__(index, index_rows, n)
        self.delta = delta

    def generate(self, query: SourceQuery) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        rows, scores = super().generate(query)
        delta = self.delta.current()
        live = np.flatnonzero(delta.live)
        if live.size == 0:
            return rows, scores
        extra = query.queries @ delta.item[live].T  # (B, M)
        all_rows = np.concatenate(
            [rows, np.broadcast_to(int(self.index.ntotal) + live, extra.shape)], axis=1
        )
        all_scores = np.concatenate([np.where(rows != PAD, scores, -np.inf), extra], axis=1)
        top = np.argsort(-all_scores, axis=1, kind="stable")[:, : rows.shape[1]]
        best = np.take_along_axis(all_scores, top, axis=1)
        merged = np.where(np.isfinite(best), np.take_along_axis(all_rows, top, axis=1), PAD)
        return merged.astype(np.int64), np.where(np.isfinite(best), best, 0).astype(np.float32)


class RetrievalStep(Step):
    """Candidate retrieval: ``inference.sources.union_candidates`` over the exported sources.

    Index id i = served row i; history and co-purchase articles are mapped to served rows by
    ``history_rows`` (``inference.candidates.vocab_to_row`` over the served table).

    Inputs: query_embedding float32 (B, D), hist_ids int64 (B, N), hist_counts float32 (B, N),
    repurchase_ids int64 (B, R), repurchase_counts float32 (B, R).
    Outputs: candidates int64 (B, C) served-table rows, ``candidate_width`` wide, PAD (-1) for
    none and duplicates; source_features float32 (B, C * len(schema.SOURCE_DENSE)).
    """

    name = s.TRITON_RETRIEVAL
    inputs = (
        s.T_QUERY_EMBEDDING,
        s.T_HIST_IDS,
        s.T_HIST_COUNTS,
        s.T_REPURCHASE_IDS,
        s.T_REPURCHASE_COUNTS,
    )
    outputs = (s.T_CANDIDATES, s.T_SOURCE_FEATURES)

    def __init__(
        self,
        index: faiss.Index,
        history_rows: npt.NDArray[Any],
        candidates: int,
        history_candidates: bool,
        copurchase: tuple[npt.NDArray[Any], npt.NDArray[Any], int] | None = None,
        popular: tuple[npt.NDArray[Any], npt.NDArray[Any], int] | None = None,
        delta: DeltaView | None = None,
    ):
        """``copurchase`` = (neighbours (V, K), weights (V, K), n), ``popular`` = (rows (P,),
        scores (P,), n); None = that source is off. ``delta``: the article delta merged into
        the ANN source (:class:`DeltaAnnSource`); None = the index alone."""
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.index = index
        self.history_rows = as_int64(history_rows)
        rows = np.arange(index.ntotal, dtype=np.int64)
        self.sources: list[CandidateSource] = [
            AnnSource(index, rows, candidates)
            if delta is None
            else DeltaAnnSource(index, rows, candidates, delta)
        ]
        if history_candidates:
            self.sources.append(HistorySource(self.history_rows))
        if copurchase is not None:
            nb, w, n = copurchase
            self.sources.append(CoPurchaseSource(as_int64(nb), as_float32(w), self.history_rows, n))
        if popular is not None:
            p_rows, p_scores, n = popular
            self.sources.append(PopularSource(as_int64(p_rows), as_float32(p_scores), n))

    @classmethod
    def load(
        cls,
        directory: Path,
        candidates: int,
        history_candidates: bool,
        copurchase_candidates: int = 0,
        popular_candidates: int = 0,
    ) -> RetrievalStep:
        """Load the index and the sources' arrays; ``ArtifactError`` if one is missing. The
        article delta named by ``SHOPREC_ARTICLE_DELTA`` is merged when the variable is set."""
        copurchase = popular = None
        if copurchase_candidates > 0:
            copurchase = (
                load_array(directory / COPURCHASE_NEIGHBOURS_FILE),
                load_array(directory / COPURCHASE_WEIGHTS_FILE),
                copurchase_candidates,
            )
        if popular_candidates > 0:
            popular = (
                load_array(directory / POPULAR_ROWS_FILE),
                load_array(directory / POPULAR_SCORES_FILE),
                popular_candidates,
            )
        return cls(
            load_index(directory / A.ITEM_INDEX_FILE),
            load_array(directory / HISTORY_ROWS_FILE),
            candidates,
            history_candidates,
            copurchase,
            popular,
            delta_view(directory),
        )

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> RetrievalStep:
        return cls.load(
            directory,
            int_param(params, P_CANDIDATES),
            bool_param(params, P_HISTORY_CANDIDATES),
            int_param(params, P_COPURCHASE_CANDIDATES),
            int_param(params, P_POPULAR_CANDIDATES),
        )

    def retrieve(
        self,
        query: npt.NDArray[Any],
        hist_ids: npt.NDArray[Any],
        hist_counts: npt.NDArray[Any],
        repurchase_ids: npt.NDArray[Any],
        repurchase_counts: npt.NDArray[Any],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(candidate rows int64 (B, C), source features float32 (B, C * len(SOURCE_DENSE))).

        Raises:
            RequestError: bad shapes or ids.
        """
        batch = batch_size_of(
            {
                s.T_QUERY_EMBEDDING: query,
                s.T_HIST_IDS: hist_ids,
                s.T_HIST_COUNTS: hist_counts,
                s.T_REPURCHASE_IDS: repurchase_ids,
                s.T_REPURCHASE_COUNTS: repurchase_counts,
            }
        )
        check_width(s.T_QUERY_EMBEDDING, query, self.index.d)
        check_width(s.T_HIST_COUNTS, hist_counts, hist_ids.shape[1])
        check_width(s.T_REPURCHASE_COUNTS, repurchase_counts, repurchase_ids.shape[1])
        check_range(s.T_HIST_IDS, hist_ids, len(self.history_rows))
        check_range(s.T_REPURCHASE_IDS, repurchase_ids, len(self.history_rows))
        width = union_width(self.sources, QueryWidths(hist_ids.shape[1], repurchase_ids.shape[1]))
        if batch == 0:
            return (
                np.zeros((0, width), dtype=np.int64),
                np.zeros((0, width * len(s.SOURCE_DENSE)), dtype=np.float32),
            )
        cands, feats, _ = union_candidates(
            self.sources,
            SourceQuery(
                as_float32(query),
                as_int64(hist_ids),
                as_float32(hist_counts),
                as_int64(repurchase_ids),
                as_float32(repurchase_counts),
            ),
        )
        return cands, feats.reshape(batch, -1)

    def __call__(self, tensors: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        cands, feats = self.retrieve(*(tensors[name] for name in self.inputs))
        return {s.T_CANDIDATES: cands, s.T_SOURCE_FEATURES: feats}
