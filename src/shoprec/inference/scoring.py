"""Ranking: score candidates with any ranker and keep the top k.

The same functions run in offline evaluation and inside the Triton ``ranking`` step.
Shape letters: B = customers, C = candidates per customer, M = (customer, article) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from shoprec import schema as s
from shoprec.features.assemble import ExampleBlocks, ranking_inputs
from shoprec.features.encode import EncodedArticles, EncodedCustomers
from shoprec.models.rules import RuleRanker
from shoprec.models.trees import TreeRanker


@torch.no_grad()
def predict(
    model: nn.Module | TreeRanker | RuleRanker, inputs: ExampleBlocks, batch_size: int = 16384
) -> npt.NDArray[np.float32]:
    """Purchase probabilities (a rule ranker: its scores), float32 (M,)."""
    if isinstance(model, TreeRanker):
        return model.predict(inputs)
    if not isinstance(model, RuleRanker):
        model.eval()
    out = []
    for i in range(0, len(inputs), batch_size):
        b = inputs.slice(i, i + batch_size)
        if isinstance(model, RuleRanker):
            out.append(model.predict(b))
            continue
        logits = model(
            torch.from_numpy(b.dense), torch.from_numpy(b.sparse), torch.from_numpy(b.hist_ids)
        )
        out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def purchased_mask(
    candidate_vocab: npt.NDArray[np.int64], hist_ids: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """bool (B, C): whether each candidate (article vocabulary id, (B, C)) is in the
    customer's history (int64 (B, N)); unknown ids (< 2) never are. The one exclusion rule
    of ``exclude_purchased``, offline and in the Triton ranking step."""
    same = (candidate_vocab[:, :, None] == hist_ids[:, None, :]).any(-1)
    result: npt.NDArray[np.bool_] = same & (candidate_vocab >= 2)
    return result


def bought_mask(
    candidate_ids: npt.NDArray[np.object_], bought: Sequence[Set[str]]
) -> npt.NDArray[np.bool_]:
    """bool (B, C): whether each candidate (article id str, object (B, C); anything not a
    bought id, e.g. "" for an empty slot, never matches) is among the articles its customer
    ever bought (``bought[b]``, article ids, every purchase before the cutoff, not only the N
    history slots).

    Exclusion by article identity: unlike :func:`purchased_mask` it needs no vocabulary, so
    purchases beyond the history list and articles outside the workflow's vocabulary (first
    sold after it was fitted) are excluded too. The ``exclude_purchased`` rule of offline
    evaluation, the guardrail and ``compare-rankers``.

    Raises:
        ValueError: ``len(bought)`` differs from B.
    """
    if len(bought) != candidate_ids.shape[0]:
        raise ValueError(
            f"bought sets for {len(bought)} customers, candidates for {candidate_ids.shape[0]}"
        )
    mask = np.zeros(candidate_ids.shape, dtype=np.bool_)
    for b, items in enumerate(bought):
        if items:
            mask[b] = [a in items for a in candidate_ids[b]]
    return mask


def rank_candidates(
    model: nn.Module | TreeRanker | RuleRanker,
    customers: EncodedCustomers,
    customer_rows: npt.NDArray[np.int64],
    articles: EncodedArticles,
    attributes: npt.NDArray[np.int64],
    candidates: npt.NDArray[np.int64],
    k: int,
    exclude: npt.NDArray[np.bool_] | None = None,
    source_features: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Score every candidate with the ranker and keep the top k.

    Args:
        model: a neural ranker (``forward(dense, sparse, hist_ids) -> logits``) or a tree.
        customer_rows: int64 (B,) rows of ``customers``.
        candidates: int64 (B, C) article rows, -1 where empty.
        k: results per customer (>= 1).
        exclude: optional bool (B, C), True = never return this candidate.
        source_features: optional float32 (B, C, len(schema.SOURCE_DENSE)) per candidate
            (``inference.sources.union_candidates``); None = all 0.

    Returns:
        (article rows int64 (B, k), probabilities float32 (B, k)), best first; -1 / -inf pad
        when fewer than k valid candidates.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    valid = candidates != s.NO_CANDIDATE
    if exclude is not None:
        valid &= ~exclude
    b_idx, c_idx = np.nonzero(valid)
    scores = np.full(candidates.shape, -np.inf, dtype=np.float32)
    if len(b_idx):
        inputs = ranking_inputs(
            customers,
            articles,
            attributes,
            customer_rows[b_idx],
            candidates[b_idx, c_idx],
            None if source_features is None else source_features[b_idx, c_idx],
        )
        scores[b_idx, c_idx] = predict(model, inputs)
    kk = min(k, candidates.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    top_scores = np.take_along_axis(scores, top, axis=1)
    top_rows = np.where(
        np.isfinite(top_scores), np.take_along_axis(candidates, top, axis=1), s.NO_CANDIDATE
    )
    if kk < k:
        top_rows = np.pad(top_rows, ((0, 0), (0, k - kk)), constant_values=s.NO_CANDIDATE)
        top_scores = np.pad(top_scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return top_rows, top_scores
