"""Configuration dataclasses for every offline stage, and the artifact layout on disk.

Every random step takes ``seed``; the same config gives the same artifacts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class IndexKind(StrEnum):
    """FAISS index family for inner-product search."""

    AUTO = "auto"  # flat below ``IndexConfig.flat_max_items``, HNSW above
    FLAT = "flat"
    IVF = "ivf"
    HNSW = "hnsw"


class HistoryOrder(StrEnum):
    """Which N distinct past purchases form a customer's history list, and in what order."""

    FREQUENCY = "frequency"  # most purchased first, ties by most recent (grocery-like data)
    RECENCY = "recency"  # most recently purchased first, ties by count (fashion-like data)


class RankerNegatives(StrEnum):
    """What the ranker is trained to tell purchases apart from."""

    CANDIDATES = "candidates"  # retrieved (ANN + history) but not purchased: serving's task
    SAMPLED = "sampled"  # the labelled dataset's popularity-sampled negatives


class RankerKind(StrEnum):
    """Which ranking model scores the candidates (``ranking.models.build_ranker``)."""

    DLRM = "dlrm"  # Naumov et al. 2019: the pipeline's ranker
    WIDE_DEEP = "wide_deep"  # Cheng et al. 2016
    DCN = "dcn"  # DCN-v2, Wang et al. 2021
    MLP = "mlp"  # embeddings + dense features through one MLP
    RF = "rf"  # scikit-learn random forest
    GBDT = "gbdt"  # LightGBM gradient-boosted trees

    @property
    def is_tree(self) -> bool:
        """Tree ensembles (not PyTorch modules; trained on ``ranking.trees.tree_features``)."""
        return self in (RankerKind.RF, RankerKind.GBDT)


class TextEncoderKind(StrEnum):
    """Which text encoder embeds article text for item similarity."""

    MINILM = "minilm"  # packaged all-MiniLM-L6-v2 (offline default)
    OPEN_CLIP = "open_clip"  # FashionCLIP or any open_clip checkpoint


@dataclass(frozen=True)
class DatasetConfig:
    """Chronological split and negative sampling.

    The test window is the last ``window_days`` days of the data, the validation window the
    ``window_days`` before it, and ``train_windows`` windows before that are training windows.
    Features of a window are computed from transactions strictly before its first day.
    """

    window_days: int = 7
    train_windows: int = 8
    negatives_per_positive: int = 1
    popularity_days: int = 28  # negatives are drawn by article popularity over these days
    history_length: int = 64  # N distinct purchased articles kept per customer
    history_order: HistoryOrder = HistoryOrder.FREQUENCY
    seed: int = 42


@dataclass(frozen=True)
class WorkflowConfig:
    """Preprocessing: categorical vocabularies and numeric normalisation."""

    min_frequency: int = 2  # a category seen fewer times in training becomes out-of-vocabulary
    article_min_frequency: int = 1


@dataclass(frozen=True)
class TwoTowerConfig:
    """Two-Tower retrieval model and its training (in-batch sampled softmax, logQ correction)."""

    embedding_dim: int = 64
    feature_dim: int = 16
    hidden_dims: tuple[int, ...] = (128,)
    temperature: float = 0.05
    logq_correction: bool = True
    batch_size: int = 1024
    epochs: int = 4
    learning_rate: float = 3e-3
    weight_decay: float = 1e-6
    seed: int = 42


@dataclass(frozen=True)
class DLRMConfig:
    """DLRM ranking model (Naumov et al. 2019) and its training (binary cross-entropy)."""

    embedding_dim: int = 16
    bottom_mlp: tuple[int, ...] = (64, 16)
    top_mlp: tuple[int, ...] = (128, 64)
    batch_size: int = 2048
    epochs: int = 2
    learning_rate: float = 2e-3
    weight_decay: float = 1e-6
    negatives: RankerNegatives = RankerNegatives.CANDIDATES
    candidate_negatives: int = 32  # per customer and window, with RankerNegatives.CANDIDATES
    max_customers_per_window: int = 20_000  # seeded sample of customers above this (scale cap)
    seed: int = 42


@dataclass(frozen=True)
class RankersConfig:
    """The rankers compared with DLRM (``shoprec compare-rankers``): architectures and trees.

    The neural rankers take ``DLRMConfig.embedding_dim`` and train exactly like DLRM
    (``DLRMConfig`` batch size, epochs, learning rate, weight decay, negatives); the trees see
    the same examples through ``ranking.trees.tree_features``.

    Attributes:
        deep_mlp: hidden widths of the MLP ranker, of Wide&Deep's deep part and of the deep
            part DCN-v2 stacks on its cross network.
        cross_layers: L, cross layers of DCN-v2.
        rf_trees: trees of the random forest.
        rf_min_samples_leaf: smallest leaf of the random forest (its regulariser).
        rf_max_samples: share of the training examples each forest tree bootstraps.
        gbdt_rounds: most boosting rounds of LightGBM (early stopping on validation AUC).
        gbdt_early_stopping: rounds without a better validation AUC before stopping.
        gbdt_learning_rate, gbdt_num_leaves, gbdt_min_child_samples: LightGBM's.
        max_categorical: sparse features with at most this many ids are LightGBM categorical
            features; larger ones (article ids) stay ordinal (frequency ranks).
        tree_max_examples: seeded sample of the training examples the trees fit on (0 = all).
    """

    deep_mlp: tuple[int, ...] = (128, 64)
    cross_layers: int = 3
    rf_trees: int = 100
    rf_min_samples_leaf: int = 20
    rf_max_samples: float = 0.5
    gbdt_rounds: int = 500
    gbdt_early_stopping: int = 30
    gbdt_learning_rate: float = 0.05
    gbdt_num_leaves: int = 63
    gbdt_min_child_samples: int = 50
    max_categorical: int = 256
    tree_max_examples: int = 0


@dataclass(frozen=True)
class IndexConfig:
    """FAISS ANN index (inner product on L2-normalised vectors)."""

    kind: IndexKind = IndexKind.AUTO
    flat_max_items: int = 200_000
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    ivf_nlist: int = 1024
    ivf_nprobe: int = 32
    use_gpu: bool = True  # use faiss-gpu when a GPU is present; ignored otherwise


@dataclass(frozen=True)
class TextConfig:
    """Article text embeddings for item similarity."""

    encoder: TextEncoderKind = TextEncoderKind.MINILM
    open_clip_model: str = "ViT-B-16"
    # FashionCLIP in open_clip format (the original patrickjohncyh/fashion-clip is a
    # transformers checkpoint that open_clip cannot load by hub id).
    open_clip_pretrained: str | None = "hf-hub:Marqo/marqo-fashionCLIP"
    batch_size: int = 256


@dataclass(frozen=True)
class EvalConfig:
    """Offline evaluation on the test window."""

    k: int = 12
    candidates: int = 100  # N retrieved by the ANN index before ranking
    history_candidates: bool = True  # also rank the customer's own recent purchases
    als_factors: int = 64
    als_iterations: int = 15
    seed: int = 42


@dataclass(frozen=True)
class PipelineConfig:
    """All offline stages."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    workflow: WorkflowConfig = field(default_factory=WorkflowConfig)
    two_tower: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    dlrm: DLRMConfig = field(default_factory=DLRMConfig)
    rankers: RankersConfig = field(default_factory=RankersConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    text: TextConfig = field(default_factory=TextConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (Enums as their values, tuples as lists)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """Inverse of :meth:`to_dict`. Unknown sections or keys raise ``KeyError``."""
        names = {f.name: type(getattr(cls(), f.name)) for f in fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise KeyError(f"unknown config section(s): {sorted(unknown)}")
        return cls(**{k: section_from_dict(names[k], v, k) for k, v in data.items()})


def to_plain(section: Any) -> dict[str, Any]:
    """A config dataclass as JSON-ready values (Enums as values, tuples as lists)."""
    return json.loads(json.dumps(asdict(section), default=lambda o: o.value))


def section_from_dict(cls: type[T], data: dict[str, Any], name: str = "") -> T:
    """Rebuild a config dataclass from ``to_plain`` output, restoring Enums and tuples.

    Raises:
        KeyError: a key that ``cls`` does not have (named with the section ``name``).
        ValueError: a value not among an Enum field's choices.
    """
    defaults = cls()
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise KeyError(f"unknown {name or cls.__name__} config key(s): {sorted(unknown)}")
    kwargs = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        if isinstance(default, Enum):
            value = type(default)(value)
        elif isinstance(default, tuple):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes, under one data root and one models root.

    ``data/<name>/canonical``: ingested tables; ``data/<name>/dataset``: labelled dataset and
    features; ``models/<name>``: workflow, models, indexes, evaluation report.
    """

    data_dir: Path
    models_dir: Path

    @classmethod
    def for_name(
        cls, name: str, data_root: Path = Path("data"), models_root: Path = Path("models")
    ) -> Paths:
        return cls(data_dir=data_root / name, models_dir=models_root / name)

    @property
    def canonical(self) -> Path:
        return self.data_dir / "canonical"

    @property
    def dataset(self) -> Path:
        return self.data_dir / "dataset"
