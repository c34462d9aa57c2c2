"""Training and scoring rankers on ``RankingInputs`` with binary cross-entropy.

Any ``nn.Module`` with ``forward(dense, sparse, hist_ids) -> logits (B,)`` trains here, on
examples given as ``RankingInputs`` or as ``training.examples.ExampleRows`` (assembled a
batch at a time); the model of the epoch with the best validation MAP@k over the customers'
candidate groups is kept (early stopping by selection; the best AUC when no groups are given).
Tree rankers (``ranking.trees.TreeRanker``) fit and score through their own methods;
:func:`fit_ranker` and :func:`predict` take either.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from shoprec.config import RankerConfig
from shoprec.features.assemble import ExampleBlocks
from shoprec.inference.scoring import predict
from shoprec.models.trees import TreeRanker


def grouped_map_at_k(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = 12
) -> float:
    """MAP@k of ranking each group's examples by ``scores``, in [0, 1]; NaN without a group
    holding a positive.

    Args:
        labels: 0/1 (M,), scores: float (M,), groups: int (G,) sizes of the runs of
            consecutive rows forming one query (a customer's candidates in one window,
            ``training.examples.example_groups``), summing to M.
        k: list length (>= 1).

    Returns:
        The mean over groups with at least one positive of ``AP@k = (1 / min(P, k)) *
        sum_{i<=k} precision@i * label_i`` (P = the group's positives; the H&M competition's
        AP with the group's positives as the relevant set, as LightGBM's ``map@k``); ties in
        score keep the rows' order.

    Raises:
        ValueError: ``k < 1`` or the group sizes do not sum to M.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if int(np.sum(groups)) != len(labels) or len(scores) != len(labels):
        raise ValueError(
            f"group sizes sum to {int(np.sum(groups))}, labels have {len(labels)} rows, "
            f"scores {len(scores)}"
        )
    aps = []
    start = 0
    for size in groups:
        y = labels[start : start + size]
        positives = int(y.sum())
        if positives:
            top = np.argsort(-scores[start : start + size], kind="stable")[:k]
            hits = y[top].astype(np.float64)
            precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            aps.append(float((precision * hits).sum() / min(positives, k)))
        start += size
    return float(np.mean(aps)) if aps else float("nan")


def train_ranker(
    model: nn.Module,
    train: ExampleBlocks,
    train_labels: np.ndarray,
    val: ExampleBlocks,
    val_labels: np.ndarray,
    config: RankerConfig,
    on_epoch: Callable[[int, float, float, float], None] | None = None,
    val_groups: np.ndarray | None = None,
    k: int = 12,
) -> list[tuple[float, float, float]]:
    """Train in place; afterwards ``model`` holds the epoch with the best validation MAP@k
    (:func:`grouped_map_at_k` over ``val_groups``), or the best validation AUC when
    ``val_groups`` is None (or MAP@k is undefined).

    Args:
        train_labels, val_labels: 0/1 arrays (M,).
        on_epoch: called with (epoch, mean train loss, validation AUC, validation MAP@k).
        val_groups: int (G,) query-group sizes of ``val`` (a customer's candidates).

    Returns:
        (mean train loss, validation AUC, validation MAP@k (NaN without groups)) per epoch.
    """
    if len(train) != len(train_labels) or len(val) != len(val_labels):
        raise ValueError("inputs and labels differ in length")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    # torch's fused Adam: the same algorithm (not the same rounding) in one pass over each
    # parameter; the multi-tensor default's passes over the embedding tables were most of a
    # Two-Tower step at H&M size (47.7 of 82.1 CPU ms; fused 6.1 of 38.1:
    # scripts/bench_two_tower_step.py)
    opt = torch.optim.Adam(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=True,
    )
    y = torch.from_numpy(train_labels.astype(np.float32))
    history: list[tuple[float, float, float]] = []
    best, best_state = -1.0, copy.deepcopy(model.state_dict())
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(len(train))
        total, batches = 0.0, 0
        for start in range(0, len(train), config.batch_size):
            idx = order[start : start + config.batch_size]
            batch = train.take(idx)
            logits = model(
                torch.from_numpy(batch.dense),
                torch.from_numpy(batch.sparse),
                torch.from_numpy(batch.hist_ids),
            )
            loss = F.binary_cross_entropy_with_logits(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        val_scores = predict(model, val)
        auc = (
            float(roc_auc_score(val_labels, val_scores))
            if len(set(val_labels)) > 1
            else float("nan")
        )
        val_map = (
            float("nan")
            if val_groups is None
            else grouped_map_at_k(val_labels, val_scores, val_groups, k)
        )
        history.append((total / max(batches, 1), auc, val_map))
        if on_epoch is not None:
            on_epoch(epoch, *history[-1])
        score = val_map if np.isfinite(val_map) else auc
        if score > best or not np.isfinite(score):
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return history


def fit_ranker(
    model: nn.Module | TreeRanker,
    train: ExampleBlocks,
    train_labels: np.ndarray,
    val: ExampleBlocks,
    val_labels: np.ndarray,
    config: RankerConfig,
    seed: int,
    on_epoch: Callable[[int, float, float, float], None] | None = None,
    groups: tuple[np.ndarray, np.ndarray] | None = None,
    k: int = 12,
) -> list[tuple[float, float, float]]:
    """Fit any ranker on the same examples: :func:`train_ranker` with ``config`` (its seed
    replaced by ``seed``) for a neural one, ``TreeRanker.fit`` for a tree (seeded when built).
    ``groups``: (train, validation) group sizes (``training.examples.example_groups``), which
    LambdaRank needs and by which a neural ranker's best epoch is chosen (validation MAP@k).

    Returns:
        (mean train loss, validation AUC, validation MAP@k) per epoch; one (nan, validation
        AUC, validation MAP@k) for a tree (NaN without groups).
    """
    train_groups, val_groups = groups if groups is not None else (None, None)
    if isinstance(model, TreeRanker):
        auc = model.fit(train, train_labels, val, val_labels, train_groups, val_groups)["val_auc"]
        val_map = (
            float("nan")
            if val_groups is None
            else grouped_map_at_k(val_labels, model.predict(val), val_groups, k)
        )
        return [(float("nan"), float("nan") if auc is None else auc, val_map)]
    return train_ranker(
        model,
        train,
        train_labels,
        val,
        val_labels,
        dataclasses.replace(config, seed=seed),
        on_epoch,
        val_groups,
        k,
    )
