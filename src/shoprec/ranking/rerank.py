"""Two-stage recommendation: candidate retrieval (ANN + history) then ranking, top-k.

The same functions run in offline evaluation and inside the Triton ensemble steps.
Shape letters: B = customers, C = candidates per customer, N = history length.
"""

from __future__ import annotations

import faiss
import numpy as np
from torch import nn

from shoprec.features.assemble import ranking_inputs
from shoprec.features.encode import EncodedArticles, EncodedCustomers
from shoprec.ranking.train import predict
from shoprec.ranking.trees import TreeRanker
from shoprec.retrieval.index import search

PAD = -1


def vocab_to_row(articles: EncodedArticles, rows: np.ndarray, cardinality: int) -> np.ndarray:
    """int64 (V,) map article vocabulary id -> row in ``articles`` (among ``rows``), -1 if none."""
    out = np.full(cardinality, PAD, dtype=np.int64)
    vocab = articles.sparse[rows, 0]
    keep = vocab >= 2
    out[vocab[keep]] = rows[keep]
    return out


def dedupe_rows(candidates: np.ndarray) -> np.ndarray:
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
    queries: np.ndarray,
    n: int,
    index_rows: np.ndarray,
    hist_ids: np.ndarray | None = None,
    history_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
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


def rank_candidates(
    model: nn.Module | TreeRanker,
    customers: EncodedCustomers,
    customer_rows: np.ndarray,
    articles: EncodedArticles,
    attributes: np.ndarray,
    candidates: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every candidate with the ranker and keep the top k.

    Args:
        model: a neural ranker (``forward(dense, sparse, hist_ids) -> logits``) or a tree.
        customer_rows: int64 (B,) rows of ``customers``.
        candidates: int64 (B, C) article rows, PAD where empty.
        k: results per customer (>= 1).
        exclude: optional bool (B, C), True = never return this candidate.

    Returns:
        (article rows int64 (B, k), probabilities float32 (B, k)), best first; PAD / -inf pad
        when fewer than k valid candidates.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    valid = candidates != PAD
    if exclude is not None:
        valid &= ~exclude
    b_idx, c_idx = np.nonzero(valid)
    scores = np.full(candidates.shape, -np.inf, dtype=np.float32)
    if len(b_idx):
        inputs = ranking_inputs(customers, articles, attributes, customer_rows[b_idx],
                                candidates[b_idx, c_idx])
        scores[b_idx, c_idx] = predict(model, inputs)
    kk = min(k, candidates.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    top_scores = np.take_along_axis(scores, top, axis=1)
    top_rows = np.where(np.isfinite(top_scores), np.take_along_axis(candidates, top, axis=1), PAD)
    if kk < k:
        top_rows = np.pad(top_rows, ((0, 0), (0, k - kk)), constant_values=PAD)
        top_scores = np.pad(top_scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return top_rows, top_scores
