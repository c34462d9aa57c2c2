"""Training the Two-Tower model: in-batch negatives with sampled softmax and logQ correction.

Loss (Yi et al., RecSys 2019): for a batch of B (query, positive item) pairs the logits are
``s_ij = <q_i, v_j> / temperature - log Q(j)`` where Q(j) is item j's sampling probability
(its share of the training positives, the in-batch sampling distribution); the target of row i
is column i. Columns that hold the same article as row i's positive are masked (they are not
negatives).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shoprec.config import IndexConfig, IndexKind, TwoTowerConfig
from shoprec.evaluation.metrics import mean_recall_at_k
from shoprec.features.encode import EncodedArticles, EncodedCustomers
from shoprec.inference.index import build_index, search
from shoprec.models.modules import torch_threads
from shoprec.models.two_tower import TwoTower
from shoprec.training.encoded import EncodedDataset


class InBatchSoftmaxTask(nn.Module):
    """Sampled-softmax loss over in-batch negatives with optional logQ correction.

    Args:
        log_q: float32 (V,) log sampling probability per article vocabulary id (or None).
        temperature: divides the cosine similarities (> 0).
    """

    def __init__(self, log_q: torch.Tensor | None, temperature: float):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.log_q = log_q

    def forward(
        self, queries: torch.Tensor, items: torch.Tensor, item_ids: torch.Tensor
    ) -> torch.Tensor:
        """queries, items: float32 (B, D) L2-normalised; item_ids: int64 (B,). Returns scalar."""
        logits = queries @ items.T / self.temperature  # (B, B)
        if self.log_q is not None:
            logits = logits - self.log_q[item_ids].unsqueeze(0)
        duplicate = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
        duplicate.fill_diagonal_(False)
        logits = logits.masked_fill(duplicate, -1e9)
        return F.cross_entropy(logits, torch.arange(len(logits)))


@dataclass
class RetrievalExamples:
    """Training pairs: row ``customer_rows[m]`` of customers bought ``article_rows[m]``."""

    customers: EncodedCustomers
    articles: EncodedArticles
    customer_rows: np.ndarray  # int64 (M,)
    article_rows: np.ndarray  # int64 (M,)


def sampling_log_q(article_ids: np.ndarray, cardinality: int) -> torch.Tensor:
    """log Q(j): log of each article id's share of ``article_ids`` (unseen ids get 1 count)."""
    counts = np.bincount(article_ids, minlength=cardinality).astype(np.float64) + 1.0
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def build_two_tower(
    customer_cards: list[int],
    customer_dense: int,
    article_cards: list[int],
    article_dense_columns: list[int],
    config: TwoTowerConfig,
) -> TwoTower:
    """A seeded :class:`TwoTower` whose item tower reads ``article_dense_columns`` of the
    encoded article dense features (``Workflow.dense_columns``)."""
    torch.manual_seed(config.seed)
    return TwoTower(customer_cards, customer_dense, article_cards, article_dense_columns, config)


def train_two_tower(
    model: TwoTower,
    examples: RetrievalExamples,
    config: TwoTowerConfig,
    on_epoch: Callable[[int, float], bool | None] | None = None,
) -> list[float]:
    """Train in place with Adam, with ``config.num_threads`` torch threads (restored after);
    returns the mean loss of each epoch.

    ``on_epoch(epoch, mean_loss)`` is called after each epoch (progress, validation); a
    true return stops training there (early stopping).

    Raises:
        ValueError: ``config.num_threads`` is negative.
    """
    if config.num_threads < 0:
        raise ValueError(f"two_tower.num_threads must be >= 0, got {config.num_threads}")
    with torch_threads(config.num_threads or None):
        return _train(model, examples, config, on_epoch)


def _train(
    model: TwoTower,
    examples: RetrievalExamples,
    config: TwoTowerConfig,
    on_epoch: Callable[[int, float], bool | None] | None,
) -> list[float]:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cards = model.item_tower.article_table.num_embeddings
    art_ids = examples.articles.sparse[examples.article_rows, 0]
    task = InBatchSoftmaxTask(
        sampling_log_q(art_ids, cards) if config.logq_correction else None, config.temperature
    )
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
    c, a = examples.customers, examples.articles
    losses = []
    n = len(examples.customer_rows)
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(n)
        total, batches = 0.0, 0
        for start in range(0, n - 1, config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:
                continue
            cr, ar = examples.customer_rows[idx], examples.article_rows[idx]
            q = model.query_tower(
                torch.from_numpy(c.sparse[cr]),
                torch.from_numpy(c.dense[cr]),
                torch.from_numpy(c.hist_ids[cr]),
            )
            ids = torch.from_numpy(a.sparse[ar])
            v = model.item_tower(ids, torch.from_numpy(a.dense[ar]))
            loss = task(q, v, ids[:, 0])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        losses.append(total / max(batches, 1))
        if on_epoch is not None and on_epoch(epoch, losses[-1]):
            break
    if losses and not all(math.isfinite(x) for x in losses):
        raise FloatingPointError(f"two-tower training diverged: epoch losses {losses}")
    return losses


@torch.no_grad()
def embed_items(
    model: TwoTower, articles: EncodedArticles, rows: np.ndarray, batch_size: int = 8192
) -> np.ndarray:
    """Item-tower embeddings of ``articles`` rows. Returns float32 (len(rows), D)."""
    model.eval()
    out = [
        model.item_tower(
            torch.from_numpy(articles.sparse[rows[i : i + batch_size]]),
            torch.from_numpy(articles.dense[rows[i : i + batch_size]]),
        ).numpy()
        for i in range(0, len(rows), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.embedding_dim), dtype=np.float32)


@torch.no_grad()
def embed_queries(
    model: TwoTower, customers: EncodedCustomers, rows: np.ndarray, batch_size: int = 8192
) -> np.ndarray:
    """Query-tower embeddings of ``customers`` rows. Returns float32 (len(rows), D)."""
    model.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        r = rows[i : i + batch_size]
        out.append(
            model.query_tower(
                torch.from_numpy(customers.sparse[r]),
                torch.from_numpy(customers.dense[r]),
                torch.from_numpy(customers.hist_ids[r]),
            ).numpy()
        )
    return np.concatenate(out) if out else np.zeros((0, model.embedding_dim), dtype=np.float32)


def ann_recall(
    model: Any,
    enc: EncodedDataset,
    window: int,
    index_rows: np.ndarray,
    truth: dict[str, set[str]],
    n: int,
) -> float:
    cust_rows = enc.window_customers(window)
    index = build_index(embed_items(model, enc.articles, index_rows), _flat())
    _, ids = search(index, embed_queries(model, enc.customers, cust_rows), n)
    art_ids = enc.articles.ids
    recs = [[art_ids[index_rows[j]] for j in row if j >= 0] for row in ids]
    rel = [truth[c] for c in enc.customers.ids[cust_rows]]
    return mean_recall_at_k(recs, rel, n)


def _flat() -> IndexConfig:
    return IndexConfig(kind=IndexKind.FLAT, use_gpu=False)
