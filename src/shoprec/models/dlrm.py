"""DLRM ranking model.

Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation
Systems", 2019 (arXiv:1906.00091); module split after TorchRec's ``torchrec/models/dlrm.py``:
a dense arch (bottom MLP) maps dense features to D, a sparse arch embeds each sparse feature
to D, the interaction arch takes the pairwise dot products of those F+1 vectors (upper
triangle, no diagonal) and concatenates the dense vector, and an over arch (top MLP) maps the
result to one logit. Probabilities are ``sigmoid(logit)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from shoprec.config import DLRMConfig, RankerKind
from shoprec.models.modules import SparseArch, logit_head, mlp


class DotInteraction(nn.Module):
    """Pairwise dot products: (B, K, D) -> (B, K(K-1)/2), upper triangle, row-major."""

    def __init__(self, num_vectors: int):
        super().__init__()
        self.rows: torch.Tensor
        self.cols: torch.Tensor
        rows, cols = torch.triu_indices(num_vectors, num_vectors, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(vectors, vectors.transpose(1, 2))
        return gram[:, self.rows, self.cols]


class DLRM(nn.Module):
    """DLRM over dense features, sparse features and the pooled purchase history.

    Args:
        cardinalities: embedding-table sizes of the F sparse features.
        num_dense: Fd.
        dim: D, the embedding dim (``RankerConfig.embedding_dim``).
        config: layer widths; ``bottom_mlp[-1]`` is forced to ``dim``.
        history_feature: index of the article-id table to pool the history with.

    Example::

        m = DLRM([5, 7], num_dense=3, dim=4, config=DLRMConfig(), history_feature=1)
        logits = m(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.long),
                   torch.zeros(2, 4, dtype=torch.long))  # (2,)
    """

    kind: ClassVar[RankerKind] = RankerKind.DLRM

    def __init__(
        self,
        cardinalities: Sequence[int],
        num_dense: int,
        dim: int,
        config: DLRMConfig,
        history_feature: int | None = None,
    ):
        super().__init__()
        self.cardinalities = list(cardinalities)
        self.num_dense = num_dense
        d = dim
        self.sparse_arch = SparseArch(cardinalities, d, history_feature)
        self.dense_arch = mlp(num_dense, (*config.bottom_mlp[:-1], d))
        k = self.sparse_arch.num_outputs + 1
        self.interaction = DotInteraction(k)
        self.over_arch = logit_head(d + k * (k - 1) // 2, config.top_mlp)

    def forward(
        self, dense: torch.Tensor, sparse: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """dense float32 (B, Fd), sparse int64 (B, F), hist_ids int64 (B, N) -> logits (B,)."""
        dense_vec = self.dense_arch(dense)  # (B, D)
        vectors = torch.cat([dense_vec.unsqueeze(1), self.sparse_arch(sparse, hist_ids)], dim=1)
        features = torch.cat([dense_vec, self.interaction(vectors)], dim=1)
        logits: torch.Tensor = self.over_arch(features)
        return logits.squeeze(-1)
