"""The rankers compared in ``shoprec compare-rankers``, one factory, and their files.

Neural rankers (PyTorch, ``forward(dense, sparse, hist_ids) -> logits (B,)``, so that
``ranking.train`` trains and scores them and ``ranking.rerank`` ranks with them):

* ``DLRM`` (``ranking.dlrm``): dot-product interaction of per-feature vectors.
* :class:`WideAndDeep` (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS
  2016, arXiv:1606.07792): a linear model over one-hot ids and dense features (the "wide"
  part; our cross-product transformations are the history x candidate features in
  ``schema.CROSS_DENSE``) plus an MLP over the embeddings, logits summed, trained jointly.
* :class:`DCNv2` (Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons
  for Web-scale Learning to Rank Systems", WWW 2021, arXiv:2008.13535): L full-rank cross
  layers, then an MLP (the "stacked" structure), after TorchRec's ``modules/crossnet.py``.
* :class:`MLPRanker`: embeddings and dense features through one MLP (the plain baseline).

All four embed the sparse features with the same :class:`~shoprec.models.modules.SparseArch` (one
table per feature, mean-pooled purchase history over the article table) and take the same
``RankingInputs``; Wide&Deep, DCN-v2 and the MLP flatten them with :class:`FlatFeatureArch`.

Tree rankers (``ranking.trees.TreeRanker``): random forest and LightGBM GBDT.

Shape letters: B = batch, F = sparse features, K = F (+1 with history) embedded vectors,
D = embedding dim, Fd = dense features, N = history length, X = K * D + Fd.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import torch
from torch import nn

from shoprec.config import (
    DLRMConfig,
    PipelineConfig,
    RankerConfig,
    RankerKind,
    RankersConfig,
    from_plain,
    to_plain,
)
from shoprec.errors import ArtifactError
from shoprec.features.assemble import RANKING_HISTORY_FEATURE
from shoprec.models.dlrm import DLRM
from shoprec.models.modules import SparseArch, load_checkpoint, logit_head, save_model
from shoprec.models.trees import TreeRanker
from shoprec.models.trees import ranker_files as tree_ranker_files

__all__ = [
    "DLRM",
    "CrossNet",
    "DCNv2",
    "FlatFeatureArch",
    "MLPRanker",
    "NeuralRanker",
    "Ranker",
    "RankerKind",
    "TreeRanker",
    "WideAndDeep",
    "WideArch",
    "build_ranker",
    "load_neural_ranker",
    "load_ranker",
    "ranker_files",
    "save_ranker",
]


class FlatFeatureArch(nn.Module):
    """Sparse embeddings (and pooled history), flattened, next to the raw dense features.

    Args:
        cardinalities: rows of the F embedding tables.
        num_dense: Fd.
        dim: D.
        history_feature: table whose embeddings pool the history (None: no history).

    Example::

        arch = FlatFeatureArch([5, 7], num_dense=3, dim=4, history_feature=1)
        x = arch(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.long),
                 torch.zeros(2, 6, dtype=torch.long))  # (2, 3 * 4 + 3)
    """

    def __init__(
        self, cardinalities: Sequence[int], num_dense: int, dim: int, history_feature: int | None
    ):
        super().__init__()
        self.sparse_arch = SparseArch(cardinalities, dim, history_feature)
        self.out_dim = self.sparse_arch.num_outputs * dim + num_dense

    def forward(
        self, dense: torch.Tensor, sparse: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """dense float32 (B, Fd), sparse int64 (B, F), hist_ids int64 (B, N) -> (B, X)."""
        return torch.cat([self.sparse_arch(sparse, hist_ids).flatten(1), dense], dim=1)


class WideArch(nn.Module):
    """The wide part of Wide&Deep: ``sum_f w_f[id_f] + v . dense + b``.

    The per-id weights ``w_f`` are a :class:`SparseArch` with D = 1 (a linear model over the
    one-hot ids; padding id 0 weighs 0).

    Example::

        wide = WideArch([5, 7], num_dense=3)
        logit = wide(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.long))  # (2,)
    """

    def __init__(self, cardinalities: Sequence[int], num_dense: int):
        super().__init__()
        self.sparse_arch = SparseArch(cardinalities, 1)
        self.dense_arch = nn.Linear(num_dense, 1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense float32 (B, Fd), sparse int64 (B, F) -> logits (B,)."""
        sparse_logit: torch.Tensor = self.sparse_arch(sparse)  # (B, F, 1)
        dense_logit: torch.Tensor = self.dense_arch(dense)  # (B, 1)
        return sparse_logit.sum((1, 2)) + dense_logit.squeeze(-1)


class FlatRanker(nn.Module):
    """Base of the rankers over :class:`FlatFeatureArch` (Wide&Deep, DCN-v2, MLP): the widths
    they were built with and their embeddings, ``sparse_arch`` (the front end shared with
    DLRM). Subclasses set ``feature_arch``; this class creates no parameters, so a
    subclass's initialisation order (and a seed's weights) is its own."""

    feature_arch: FlatFeatureArch

    def __init__(self, cardinalities: Sequence[int], num_dense: int):
        super().__init__()
        self.cardinalities = list(cardinalities)
        self.num_dense = num_dense

    @property
    def sparse_arch(self) -> SparseArch:
        """The embeddings (the front end shared with DLRM)."""
        return self.feature_arch.sparse_arch


class WideAndDeep(FlatRanker):
    """Wide & Deep (Cheng et al. 2016): ``logit = wide(x) + deep(x)``, trained jointly.

    The paper trains the wide part with FTRL + L1 and the deep part with AdaGrad; here one
    Adam optimiser trains both (``ranking.train``), like every other neural ranker.

    Example::

        m = WideAndDeep([5, 7], num_dense=3, dim=4, deep_mlp=(8,), history_feature=1)
        logits = m(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.long),
                   torch.zeros(2, 6, dtype=torch.long))  # (2,)
    """

    kind: ClassVar[RankerKind] = RankerKind.WIDE_DEEP

    def __init__(
        self,
        cardinalities: Sequence[int],
        num_dense: int,
        dim: int,
        deep_mlp: Sequence[int],
        history_feature: int | None = None,
    ):
        super().__init__(cardinalities, num_dense)
        self.wide = WideArch(cardinalities, num_dense)
        self.feature_arch = FlatFeatureArch(cardinalities, num_dense, dim, history_feature)
        self.over_arch = logit_head(self.feature_arch.out_dim, deep_mlp)

    def forward(
        self, dense: torch.Tensor, sparse: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """dense float32 (B, Fd), sparse int64 (B, F), hist_ids int64 (B, N) -> logits (B,)."""
        deep: torch.Tensor = self.over_arch(self.feature_arch(dense, sparse, hist_ids))
        wide: torch.Tensor = self.wide(dense, sparse)
        return wide + deep.squeeze(-1)


class CrossNet(nn.Module):
    """DCN-v2 cross network: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``, l = 0 .. L-1.

    Wang et al. 2021, eq. (1), full-rank ``W_l`` (X, X); ``*`` is the element-wise product.

    Example::

        cross = CrossNet(in_dim=6, layers=2)
        y = cross(torch.randn(4, 6))  # (4, 6)
    """

    def __init__(self, in_dim: int, layers: int):
        super().__init__()
        if layers < 1:
            raise ValueError(f"cross_layers must be >= 1, got {layers}")
        self.layers = nn.ModuleList(nn.Linear(in_dim, in_dim) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 float32 (B, X) -> (B, X)."""
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNv2(FlatRanker):
    """DCN-v2, stacked: flat features -> :class:`CrossNet` -> MLP -> logit.

    Example::

        m = DCNv2([5, 7], num_dense=3, dim=4, cross_layers=2, deep_mlp=(8,), history_feature=1)
        logits = m(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.long),
                   torch.zeros(2, 6, dtype=torch.long))  # (2,)
    """

    kind: ClassVar[RankerKind] = RankerKind.DCN

    def __init__(
        self,
        cardinalities: Sequence[int],
        num_dense: int,
        dim: int,
        cross_layers: int,
        deep_mlp: Sequence[int],
        history_feature: int | None = None,
    ):
        super().__init__(cardinalities, num_dense)
        self.feature_arch = FlatFeatureArch(cardinalities, num_dense, dim, history_feature)
        self.interaction = CrossNet(self.feature_arch.out_dim, cross_layers)
        self.over_arch = logit_head(self.feature_arch.out_dim, deep_mlp)

    def forward(
        self, dense: torch.Tensor, sparse: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """dense float32 (B, Fd), sparse int64 (B, F), hist_ids int64 (B, N) -> logits (B,)."""
        x0 = self.feature_arch(dense, sparse, hist_ids)
        logits: torch.Tensor = self.over_arch(self.interaction(x0))
        return logits.squeeze(-1)


class MLPRanker(FlatRanker):
    """Flat features through one MLP to a logit (no explicit feature interactions).

    Example::

        m = MLPRanker([5, 7], num_dense=3, dim=4, deep_mlp=(8,), history_feature=1)
        logits = m(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.long),
                   torch.zeros(2, 6, dtype=torch.long))  # (2,)
    """

    kind: ClassVar[RankerKind] = RankerKind.MLP

    def __init__(
        self,
        cardinalities: Sequence[int],
        num_dense: int,
        dim: int,
        deep_mlp: Sequence[int],
        history_feature: int | None = None,
    ):
        super().__init__(cardinalities, num_dense)
        self.feature_arch = FlatFeatureArch(cardinalities, num_dense, dim, history_feature)
        self.over_arch = logit_head(self.feature_arch.out_dim, deep_mlp)

    def forward(
        self, dense: torch.Tensor, sparse: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """dense float32 (B, Fd), sparse int64 (B, F), hist_ids int64 (B, N) -> logits (B,)."""
        logits: torch.Tensor = self.over_arch(self.feature_arch(dense, sparse, hist_ids))
        return logits.squeeze(-1)


NeuralRanker: TypeAlias = DLRM | WideAndDeep | DCNv2 | MLPRanker
Ranker: TypeAlias = NeuralRanker | TreeRanker


def build_ranker(
    kind: RankerKind,
    cardinalities: Sequence[int],
    num_dense: int,
    config: PipelineConfig,
    seed: int,
) -> Ranker:
    """A fresh, untrained ranker of ``kind`` for ``RankingInputs`` of these widths.

    Args:
        kind: which ranker.
        cardinalities: F sparse table sizes (customer sparse, then article sparse).
        num_dense: Fd.
        config: ``config.ranker`` (the shared embedding dim), ``config.dlrm`` (DLRM's
            layers) and ``config.rankers`` (the other architectures, the trees).
        seed: torch's seed before the weights are drawn (neural), the estimator's random
            state (trees).

    Example::

        ranker = build_ranker(RankerKind.DCN, [5, 7], 3, PipelineConfig(), seed=42)
    """
    kind = RankerKind(kind)
    if kind.is_tree:
        return TreeRanker(kind, cardinalities, num_dense, config.rankers, seed)
    return _build_neural(kind, cardinalities, num_dense, config, seed)


def _build_neural(
    kind: RankerKind,
    cardinalities: Sequence[int],
    num_dense: int,
    config: PipelineConfig,
    seed: int | None,
) -> NeuralRanker:
    """``seed`` None: draw the initial weights from torch's current state (before a load)."""
    if seed is not None:
        torch.manual_seed(seed)
    dim, rk, hist = config.ranker.embedding_dim, config.rankers, RANKING_HISTORY_FEATURE
    if kind is RankerKind.DLRM:
        return DLRM(cardinalities, num_dense, dim, config.dlrm, hist)
    if kind is RankerKind.WIDE_DEEP:
        return WideAndDeep(cardinalities, num_dense, dim, rk.deep_mlp, hist)
    if kind is RankerKind.DCN:
        return DCNv2(cardinalities, num_dense, dim, rk.cross_layers, rk.deep_mlp, hist)
    if kind is RankerKind.MLP:
        return MLPRanker(cardinalities, num_dense, dim, rk.deep_mlp, hist)
    raise ValueError(f"{kind.value} is not a neural ranker")


def ranker_files(kind: RankerKind) -> tuple[str, ...]:
    """The files a ranker of ``kind`` is saved as (``<kind>.pt`` for the neural ones)."""
    kind = RankerKind(kind)
    return tree_ranker_files(kind) if kind.is_tree else (f"{kind.value}.pt",)


def save_ranker(ranker: Ranker, config: PipelineConfig, directory: Path) -> list[Path]:
    """Write ``ranker_files(ranker.kind)`` into ``directory``; returns their paths.

    A neural ranker's checkpoint holds the widths and ``config.ranker`` / ``config.dlrm`` /
    ``config.rankers`` it was built with, so :func:`load_ranker` rebuilds it without the
    pipeline config.
    """
    if isinstance(ranker, TreeRanker):
        return ranker.save(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ranker_files(ranker.kind)[0]
    hparams: dict[str, Any] = {
        "kind": ranker.kind.value,
        "cardinalities": ranker.cardinalities,
        "num_dense": int(ranker.num_dense),
        "ranker": to_plain(config.ranker),
        "dlrm": to_plain(config.dlrm),
        "rankers": to_plain(config.rankers),
    }
    save_model(ranker, hparams, path)
    return [path]


def load_ranker(directory: Path, kind: RankerKind, threads: int = 0) -> Ranker:
    """Load a ranker of ``kind`` saved by :func:`save_ranker` into ``directory``.

    Args:
        threads: tree rankers' prediction threads (0 = every core); neural rankers use
            torch's setting.

    Raises:
        ArtifactError: a missing file, or a file of another kind.
    """
    kind = RankerKind(kind)
    if kind.is_tree:
        return TreeRanker.load(directory, kind, threads)
    return load_neural_ranker(directory / ranker_files(kind)[0], kind)


def load_neural_ranker(path: Path, kind: RankerKind) -> NeuralRanker:
    """Load a neural ranker checkpoint (eval mode).

    Raises:
        ArtifactError: a missing file, a checkpoint of another kind, or one written by an
            older shoprec (no ``ranker`` settings: train again).
    """
    ckpt = load_checkpoint(path)
    h = ckpt["hparams"]
    if "kind" not in h or "ranker" not in h:
        raise ArtifactError(f"{path} was written by an older shoprec: run `shoprec train` again")
    saved = RankerKind(h["kind"])
    if saved is not kind:
        raise ArtifactError(f"{path} holds a {saved.value} ranker, expected {kind.value}")
    config = PipelineConfig(
        ranker=from_plain(RankerConfig, h["ranker"], "ranker"),
        dlrm=from_plain(DLRMConfig, h["dlrm"], "dlrm"),
        rankers=from_plain(RankersConfig, h["rankers"], "rankers"),
    )
    model = _build_neural(kind, h["cardinalities"], int(h["num_dense"]), config, seed=None)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
