"""Neural building blocks shared by the Two-Tower and the rankers (TorchRec-style arches).

Shape letters: B = batch, F = sparse features, N = history length, D = embedding dim,
Fd = dense features.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from shoprec.errors import ArtifactError


def mlp(in_dim: int, dims: Sequence[int], final_activation: bool = True) -> nn.Sequential:
    """Linear layers of widths ``dims`` with ReLU between (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, d in enumerate(dims):
        layers.append(nn.Linear(in_dim, d))
        if i < len(dims) - 1 or final_activation:
            layers.append(nn.ReLU())
        in_dim = d
    return nn.Sequential(*layers)


def logit_head(in_dim: int, dims: Sequence[int]) -> nn.Sequential:
    """The rankers' over arch: :func:`mlp` of widths ``dims`` (ReLU after each), then one
    linear layer to a logit: float32 (B, in_dim) -> (B, 1)."""
    return nn.Sequential(mlp(in_dim, dims), nn.Linear(dims[-1], 1))


class SparseArch(nn.Module):
    """One embedding table per sparse feature, plus optional pooled history.

    Args:
        cardinalities: rows of each table (F values); id 0 is padding (zero vector).
        dim: D.
        history_feature: index of the table (the article-id table) whose embeddings are
            mean-pooled over the history list; None for no history.

    Example::

        arch = SparseArch([10, 20], dim=4, history_feature=1)
        out = arch(torch.tensor([[2, 3]]), torch.tensor([[3, 5, 0]]))  # (1, 3, 4)
    """

    def __init__(self, cardinalities: Sequence[int], dim: int, history_feature: int | None = None):
        super().__init__()
        tables = [nn.Embedding(c, dim, padding_idx=0) for c in cardinalities]
        for t in tables:
            nn.init.normal_(t.weight, std=0.05)
            with torch.no_grad():
                t.weight[0].zero_()
        self.tables = nn.ModuleList(tables)
        self.history_feature = history_feature
        self.dim = dim

    @property
    def num_outputs(self) -> int:
        """F, plus 1 with history pooling."""
        return len(self.tables) + (self.history_feature is not None)

    @property
    def embeddings(self) -> list[nn.Embedding]:
        """The F tables, typed (``tables`` is an ``nn.ModuleList`` of ``nn.Embedding``)."""
        return [cast(nn.Embedding, t) for t in self.tables]

    def forward(self, sparse: torch.Tensor, hist_ids: torch.Tensor | None = None) -> torch.Tensor:
        """sparse: int64 (B, F); hist_ids: int64 (B, N) (0 = padding). Returns (B, F[+1], D)."""
        embs = [t(sparse[:, i]) for i, t in enumerate(self.tables)]
        if self.history_feature is not None:
            if hist_ids is None:
                raise ValueError("this SparseArch pools history: hist_ids is required")
            table = self.tables[self.history_feature]
            mask = (hist_ids > 0).unsqueeze(-1).float()  # (B, N, 1)
            summed = (table(hist_ids) * mask).sum(1)
            embs.append(summed / mask.sum(1).clamp(min=1.0))
        return torch.stack(embs, dim=1)


def save_model(model: nn.Module, hparams: dict[str, Any], path: Path) -> None:
    """Save ``{"hparams", "state_dict"}``; the class is rebuilt from ``hparams`` on load."""
    torch.save({"hparams": hparams, "state_dict": model.state_dict()}, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load what ``save_model`` wrote (CPU tensors). Raises ``ArtifactError`` if missing."""
    if not path.exists():
        raise ArtifactError(f"model file not found: {path} (run `shoprec train` first)")
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run torch CPU ops with ``num_threads`` intra-op threads (None: the current number,
    capped at the CPUs this process may use); the previous number is restored on exit."""
    previous = torch.get_num_threads()
    wanted = num_threads or min(previous, usable_cpus())
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if wanted != previous:
            torch.set_num_threads(previous)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
