"""Training and scoring rankers on ``RankingInputs`` with binary cross-entropy.

Any ``nn.Module`` with ``forward(dense, sparse, hist_ids) -> logits (B,)`` trains here, on
examples given as ``RankingInputs`` or as ``training.examples.ExampleRows`` (assembled a
batch at a time); the
model with the best validation AUC over the epochs is kept (early stopping by selection).
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


def train_ranker(
    model: nn.Module,
    train: ExampleBlocks,
    train_labels: np.ndarray,
    val: ExampleBlocks,
    val_labels: np.ndarray,
    config: RankerConfig,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> list[tuple[float, float]]:
    """Train in place; afterwards ``model`` holds the epoch with the best validation AUC.

    Args:
        train_labels, val_labels: 0/1 arrays (M,).
        on_epoch: called with (epoch, mean train loss, validation AUC).

    Returns:
        (mean train loss, validation AUC) per epoch.
    """
    if len(train) != len(train_labels) or len(val) != len(val_labels):
        raise ValueError("inputs and labels differ in length")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    y = torch.from_numpy(train_labels.astype(np.float32))
    history: list[tuple[float, float]] = []
    best_auc, best_state = -1.0, copy.deepcopy(model.state_dict())
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
        auc = (
            float(roc_auc_score(val_labels, predict(model, val)))
            if len(set(val_labels)) > 1
            else float("nan")
        )
        history.append((total / max(batches, 1), auc))
        if on_epoch is not None:
            on_epoch(epoch, *history[-1])
        if auc > best_auc or not np.isfinite(auc):
            best_auc, best_state = auc, copy.deepcopy(model.state_dict())
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
    on_epoch: Callable[[int, float, float], None] | None = None,
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[tuple[float, float]]:
    """Fit any ranker on the same examples: :func:`train_ranker` with ``config`` (its seed
    replaced by ``seed``) for a neural one, ``TreeRanker.fit`` for a tree (seeded when built).
    ``groups``: (train, validation) group sizes (``training.examples.example_groups``), which
    LambdaRank needs.

    Returns:
        (mean train loss, validation AUC) per epoch; one (nan, validation AUC) for a tree.
    """
    if isinstance(model, TreeRanker):
        train_groups, val_groups = groups if groups is not None else (None, None)
        auc = model.fit(train, train_labels, val, val_labels, train_groups, val_groups)["val_auc"]
        return [(float("nan"), float("nan") if auc is None else auc)]
    return train_ranker(
        model,
        train,
        train_labels,
        val,
        val_labels,
        dataclasses.replace(config, seed=seed),
        on_epoch,
    )
