"""Two-Tower retrieval model: a query tower for customers and an item tower for articles.

Both towers end in L2-normalised D-dimensional vectors, so the score is a cosine similarity
and item vectors can be served from an inner-product ANN index (Covington et al. 2016;
Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations",
RecSys 2019). The query tower mean-pools the item tower's article-id embeddings over the
customer's recent purchases, so history and candidates live in one space.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shoprec.config import TwoTowerConfig, from_plain
from shoprec.models.modules import SparseArch, load_checkpoint, mlp


class ItemTower(nn.Module):
    """Article features -> L2-normalised embedding.

    Inputs: sparse int64 (B, Fa) with column 0 = article id, dense float32 (B, Fda), of which
    the tower reads the columns ``dense_columns`` (``schema.ITEM_TOWER_DENSE``).
    Output: float32 (B, D).
    """

    dense_columns: torch.Tensor  # int64 (Fi,) buffer, saved with the weights

    def __init__(
        self, cardinalities: Sequence[int], dense_columns: Sequence[int], config: TwoTowerConfig
    ):
        super().__init__()
        self.sparse_arch = SparseArch(cardinalities, config.feature_dim)
        self.register_buffer("dense_columns", torch.tensor(list(dense_columns), dtype=torch.long))
        width = len(cardinalities) * config.feature_dim + len(dense_columns)
        self.mlp = nn.Sequential(
            mlp(width, config.hidden_dims), nn.Linear(config.hidden_dims[-1], config.embedding_dim)
        )

    @property
    def article_table(self) -> nn.Embedding:
        return self.sparse_arch.embeddings[0]

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.sparse_arch(sparse).flatten(1), dense[:, self.dense_columns]], dim=1)
        return F.normalize(self.mlp(x), dim=-1)


class QueryTower(nn.Module):
    """Customer features + pooled purchase history -> L2-normalised embedding.

    Inputs: sparse int64 (B, Fc), dense float32 (B, Fdc), hist_ids int64 (B, N) article ids
    (0 = padding). Output: float32 (B, D).
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        num_dense: int,
        config: TwoTowerConfig,
        article_table: nn.Embedding,
    ):
        super().__init__()
        self.sparse_arch = SparseArch(cardinalities, config.feature_dim)
        self.article_table = article_table  # shared with the item tower
        width = (len(cardinalities) + 1) * config.feature_dim + num_dense
        self.mlp = nn.Sequential(
            mlp(width, config.hidden_dims), nn.Linear(config.hidden_dims[-1], config.embedding_dim)
        )

    def forward(
        self, sparse: torch.Tensor, dense: torch.Tensor, hist_ids: torch.Tensor
    ) -> torch.Tensor:
        mask = (hist_ids > 0).unsqueeze(-1).float()
        pooled = (self.article_table(hist_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        x = torch.cat([self.sparse_arch(sparse).flatten(1), pooled, dense], dim=1)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTower(nn.Module):
    """Query tower + item tower sharing the article-id embedding table; the item tower reads
    the ``article_dense_columns`` of the encoded article dense features."""

    def __init__(
        self,
        customer_cardinalities: Sequence[int],
        customer_dense: int,
        article_cardinalities: Sequence[int],
        article_dense_columns: Sequence[int],
        config: TwoTowerConfig,
    ):
        super().__init__()
        self.embedding_dim = config.embedding_dim
        self.item_tower = ItemTower(article_cardinalities, article_dense_columns, config)
        self.query_tower = QueryTower(
            customer_cardinalities, customer_dense, config, self.item_tower.article_table
        )


def load_two_tower(path: Path) -> TwoTower:
    """Load a Two-Tower saved with ``models.modules.save_model`` (eval mode).

    Raises:
        ArtifactError: the file is missing.
    """
    ckpt = load_checkpoint(path)
    h = ckpt["hparams"]
    model = TwoTower(
        h["customer_cardinalities"],
        h["customer_dense"],
        h["article_cardinalities"],
        h["article_dense_columns"],
        from_plain(TwoTowerConfig, h["config"], "two_tower"),
    )
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
