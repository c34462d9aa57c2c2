"""The ``query_tower`` step: the Two-Tower query tower (torch)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.models.modules import SparseArch
from shoprec.models.two_tower import QueryTower, load_two_tower
from shoprec.serving.runtime import (
    Step,
    as_float32,
    as_int64,
    batch_size_of,
    check_range,
    check_sparse,
    check_width,
)


class QueryTowerStep(Step):
    """Two-Tower query tower (``retrieval.two_tower.QueryTower``), torch, no grad.

    Inputs: customer_sparse int64 (B, Fc), customer_dense float32 (B, Fdc), hist_ids int64
    (B, N) article vocabulary ids (0 = padding). Output: query_embedding float32 (B, D),
    L2-normalised.

    Example::

        step = QueryTowerStep.load(repo / "query_tower" / "1")
        q = step.embed(sparse, dense, hist_ids)  # (B, D)
    """

    name = s.TRITON_QUERY_TOWER
    inputs = (s.T_CUSTOMER_SPARSE, s.T_CUSTOMER_DENSE, s.T_HIST_IDS)
    outputs = (s.T_QUERY_EMBEDDING,)

    def __init__(self, tower: QueryTower):
        self.tower = tower.eval()
        self.sparse_cards = _table_sizes(tower.sparse_arch)
        self.vocab_size = tower.article_table.num_embeddings
        linears = _linears(tower.mlp)
        self.dense_width = linears[0].in_features - tower.sparse_arch.dim * (
            len(self.sparse_cards) + 1
        )
        self.embedding_dim = linears[-1].out_features

    @classmethod
    def load(cls, directory: Path) -> QueryTowerStep:
        """Load ``two_tower.pt`` from ``directory``. Raises ``ArtifactError`` if missing."""
        return cls(load_two_tower(directory / A.TWO_TOWER_FILE).query_tower)

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> QueryTowerStep:
        return cls.load(directory)

    def embed(
        self, sparse: npt.NDArray[Any], dense: npt.NDArray[Any], hist_ids: npt.NDArray[Any]
    ) -> npt.NDArray[np.float32]:
        """Query embeddings, float32 (B, D). Raises ``RequestError`` on bad shapes or ids."""
        batch = batch_size_of(
            {s.T_CUSTOMER_SPARSE: sparse, s.T_CUSTOMER_DENSE: dense, s.T_HIST_IDS: hist_ids}
        )
        check_width(s.T_CUSTOMER_SPARSE, sparse, len(self.sparse_cards))
        check_width(s.T_CUSTOMER_DENSE, dense, self.dense_width)
        check_sparse(s.T_CUSTOMER_SPARSE, sparse, self.sparse_cards)
        check_range(s.T_HIST_IDS, hist_ids, self.vocab_size)
        if batch == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        with torch.inference_mode():
            out: torch.Tensor = self.tower(
                torch.from_numpy(as_int64(sparse)),
                torch.from_numpy(as_float32(dense)),
                torch.from_numpy(as_int64(hist_ids)),
            )
        return out.numpy().astype(np.float32, copy=False)

    def __call__(self, tensors: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        q = self.embed(
            tensors[s.T_CUSTOMER_SPARSE], tensors[s.T_CUSTOMER_DENSE], tensors[s.T_HIST_IDS]
        )
        return {s.T_QUERY_EMBEDDING: q}


def _table_sizes(arch: SparseArch) -> list[int]:
    return [t.num_embeddings for t in arch.embeddings]


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]
