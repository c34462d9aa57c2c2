"""Candidate retrieval: ANN top-n from the item index plus the customer's history.

The same functions run in offline evaluation and inside the Triton ``retrieval`` step.
Shape letters: B = customers, C = candidates per customer, N = history length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from shoprec import schema as s
from shoprec.inference.index import search

if TYPE_CHECKING:
    import faiss

    from shoprec.features.encode import EncodedArticles

PAD: Final = s.NO_CANDIDATE  # padding of candidate rows


def vocab_to_row(
    articles: EncodedArticles, rows: npt.NDArray[np.int64], cardinality: int
) -> npt.NDArray[np.int64]:
    """int64 (V,) map article vocabulary id -> row in ``articles`` (among ``rows``), -1 if none."""
    out = np.full(cardinality, PAD, dtype=np.int64)
    vocab = articles.sparse[rows, 0]
    keep = vocab >= 2
    out[vocab[keep]] = rows[keep]
    return out


def dedupe_rows(candidates: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Replace repeats within each row by PAD, keeping first occurrences. int64 (B, C)."""
    out = candidates.copy()
    order = np.argsort(out, axis=1, kind="stable")
    sorted_ = np.take_along_axis(out, order, axis=1)
    repeat = np.zeros_like(sorted_, dtype=bool)
    repeat[:, 1:] = (sorted_[:, 1:] == sorted_[:, :-1]) & (sorted_[:, 1:] != PAD)
    np.put_along_axis(out, order, np.where(repeat, PAD, sorted_), axis=1)
    return out


def retrieve_candidates(
    index: faiss.Index,
    queries: npt.NDArray[np.float32],
    n: int,
    index_rows: npt.NDArray[np.int64],
    hist_ids: npt.NDArray[np.int64] | None = None,
    history_rows: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Candidate retrieval.

    Args:
        index: ANN index whose id i is article row ``index_rows[i]``.
        queries: float32 (B, D) query-tower embeddings.
        n: candidates from the ANN index.
        hist_ids: int64 (B, N) history article vocabulary ids, to add the customer's own recent
            purchases as candidates (repurchase source); None for ANN only.
        history_rows: int64 (V,) from ``vocab_to_row``; required with ``hist_ids``.

    Returns:
        (candidates int64 (B, n[+N]) article rows with PAD for none/duplicates, ANN scores
        float32 (B, n)).
    """
    scores, ids = search(index, queries, n)
    cands = np.where(ids >= 0, index_rows[np.clip(ids, 0, None)], PAD)
    if hist_ids is not None:
        if history_rows is None:
            raise ValueError("history_rows is required with hist_ids")
        cands = np.concatenate([cands, history_rows[hist_ids]], axis=1)
    return dedupe_rows(cands), scores
