"""Configuration dataclasses for every offline stage, and the artifact layout on disk.

Every random step takes ``seed``; the same config gives the same artifacts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import Enum, StrEnum
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

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


class ExcludePurchased(StrEnum):
    """Whether recommendations may hold articles the customer already bought."""

    AUTO = "auto"  # exclude when the training data's repurchase share is below the threshold
    ALWAYS = "always"
    NEVER = "never"

    def resolve(self, repurchase_share: float, threshold: float) -> bool:
        """Whether to exclude already-bought articles, given the training window's share of
        purchases that are repurchases (``features.popular.repurchase_share``)."""
        if self is ExcludePurchased.AUTO:
            return repurchase_share < threshold
        return self is ExcludePurchased.ALWAYS


class RankerNegatives(StrEnum):
    """What the ranker is trained to tell purchases apart from."""

    CANDIDATES = "candidates"  # retrieved (ANN + history) but not purchased: serving's task
    SAMPLED = "sampled"  # the labelled dataset's popularity-sampled negatives


class RankerKind(StrEnum):
    """Which ranking model scores the candidates (``models.rankers.build_ranker``)."""

    DLRM = "dlrm"  # Naumov et al. 2019: the pipeline's ranker
    WIDE_DEEP = "wide_deep"  # Cheng et al. 2016
    DCN = "dcn"  # DCN-v2, Wang et al. 2021
    MLP = "mlp"  # embeddings + dense features through one MLP
    RF = "rf"  # scikit-learn random forest
    GBDT = "gbdt"  # LightGBM gradient-boosted trees, binary objective
    LAMBDARANK = "lambdarank"  # LightGBM LambdaRank (Burges 2010), grouped by customer

    @property
    def label(self) -> str:
        """The name tables and reports show (``DCN-v2``, ``GBDT (LightGBM)``)."""
        return _RANKER_LABELS[self]

    @property
    def is_tree(self) -> bool:
        """Tree ensembles (not PyTorch modules; trained on ``models.trees.tree_features``)."""
        return self in (RankerKind.RF, RankerKind.GBDT, RankerKind.LAMBDARANK)


_RANKER_LABELS = {
    RankerKind.DLRM: "DLRM",
    RankerKind.WIDE_DEEP: "Wide&Deep",
    RankerKind.DCN: "DCN-v2",
    RankerKind.MLP: "MLP",
    RankerKind.RF: "Random Forest",
    RankerKind.GBDT: "GBDT (LightGBM)",
    RankerKind.LAMBDARANK: "GBDT LambdaRank (LightGBM)",
}


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
    # R distinct purchased articles the history (repurchase) candidate source reads per
    # customer, in history order; None = chosen from the training data
    # (``data.dataset.choose_repurchase_length``)
    repurchase_length: int | None = None
    test_start: str | None = None  # ISO date of the test window's first day; None = the last days
    min_test_customers: int = 1  # fewer customers buying in the test window is an error
    copurchase_days: int = 56  # the co-purchase table of a cutoff reads these days before it
    copurchase_neighbours: int = 20  # K articles kept per article in that table
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
    # stop after this many epochs without a better validation candidate recall (0 = never);
    # the best epoch is kept either way
    patience: int = 1
    learning_rate: float = 3e-3
    weight_decay: float = 1e-6
    seed: int = 42
    # torch intra-op threads while training: its ops are small (B x a few hundred), and on
    # shared cores two threads cost ten times the CPU time of one (README, "The offline
    # pipeline"); 0 = torch's default (the CPUs this process may use)
    num_threads: int = 1


@dataclass(frozen=True)
class RankerConfig:
    """The ranker ``shoprec train`` trains, and the settings every ranker shares.

    Attributes:
        kind: which ranker scores the candidates (``models.rankers.build_ranker``); what
            ``shoprec train`` trains and ``shoprec export`` serves by default.
        embedding_dim: D of every neural ranker's embedding tables.
        batch_size, epochs, learning_rate, weight_decay: neural rankers' training (Adam,
            binary cross-entropy; the epoch with the best validation MAP@12 is kept).
        negatives: what the ranker learns to tell purchases apart from.
        candidate_negatives: retrieved, not purchased candidates per customer and window
            (``RankerNegatives.CANDIDATES``).
        max_customers_per_window: seeded sample of customers above this (scale cap).
        seed: weights, batch order, example sampling, or the trees' random state.
    """

    # GBDT: on Complete Journey the trees beat DLRM on these features (README, "Ranking")
    kind: RankerKind = RankerKind.GBDT
    embedding_dim: int = 16
    batch_size: int = 2048
    epochs: int = 2
    learning_rate: float = 2e-3
    weight_decay: float = 1e-6
    negatives: RankerNegatives = RankerNegatives.CANDIDATES
    candidate_negatives: int = 32
    max_customers_per_window: int = 20_000
    seed: int = 42


@dataclass(frozen=True)
class DLRMConfig:
    """DLRM's layers (Naumov et al. 2019); its training is ``RankerConfig``'s.

    Attributes:
        bottom_mlp: dense arch widths; the last is forced to ``RankerConfig.embedding_dim``.
        top_mlp: over arch widths before the logit.
    """

    bottom_mlp: tuple[int, ...] = (64, 16)
    top_mlp: tuple[int, ...] = (128, 64)


@dataclass(frozen=True)
class RankersConfig:
    """The other rankers' architectures: Wide&Deep, DCN-v2, MLP, random forest, LightGBM.

    The neural rankers take ``RankerConfig.embedding_dim`` and train like DLRM (``RankerConfig``
    batch size, epochs, learning rate, weight decay, negatives); the trees see the same
    examples through ``models.trees.tree_features``.

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
    # encode the texts in a second process with one torch thread while ``shoprec train`` fits
    # the models (``pipeline.text_job``); false: in the train process, after the models
    concurrent: bool = True


@dataclass(frozen=True)
class EvalConfig:
    """Offline evaluation on the test window."""

    k: int = 12
    candidates: int = 100  # N retrieved by the ANN index before ranking
    history_candidates: bool = True  # also rank the customer's own recent purchases
    copurchase_candidates: int = 50  # bought the same day as history articles (0 = off)
    popular_candidates: int = 20  # most sold in the last 7 days (0 = off)
    exclude_purchased: ExcludePurchased = ExcludePurchased.AUTO
    repurchase_threshold: float = 0.05  # AUTO excludes below this repurchase share
    als_factors: int = 64
    als_iterations: int = 15
    # the guardrail scores a seeded sample of at most this many validation-window customers
    # (0 = all); the test window's evaluation always scores every customer
    guardrail_customers: int = 50_000
    seed: int = 42


@dataclass(frozen=True)
class MemoryConfig:
    """The offline steps' memory budget (``pipeline.budget``).

    Attributes:
        ceiling_gib: the most resident memory (GiB) a step may need. ``build-dataset``,
            ``train`` and ``evaluate`` estimate their peak from the data's sizes before the
            heavy allocations and stop with an error naming the step, the estimate, this
            ceiling and the config keys that lower the estimate when it is above. 0 = no check.
    """

    ceiling_gib: float = 16.0


@dataclass(frozen=True)
class PipelineConfig:
    """All offline stages."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    workflow: WorkflowConfig = field(default_factory=WorkflowConfig)
    two_tower: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    dlrm: DLRMConfig = field(default_factory=DLRMConfig)
    rankers: RankersConfig = field(default_factory=RankersConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    text: TextConfig = field(default_factory=TextConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (Enums as their values, tuples as lists)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        """Inverse of :meth:`to_dict` (:func:`from_plain`); a section may be left out."""
        return from_plain(cls, data)


def to_plain(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON-ready values (Enums as values, tuples as lists)."""
    plain: dict[str, Any] = json.loads(json.dumps(asdict(config), default=lambda o: o.value))
    return plain


def from_plain(cls: type[T], data: Mapping[str, Any], name: str = "") -> T:
    """Rebuild a config dataclass from JSON-ready values (the inverse of :func:`to_plain`).

    The one way every config is read from JSON (``--config``, ``--export-config``, the
    ``config.json`` of a trained model, checkpoints): nested dataclasses, Enums (by value),
    tuples, ``X | None`` and ``Mapping[str, dataclass]`` fields are rebuilt from their
    annotations; keys left out keep their defaults.

    Args:
        cls: the config dataclass.
        data: a JSON object.
        name: where ``data`` sits, for messages (e.g. ``"two_tower"``).

    Raises:
        KeyError: a key ``cls`` does not have, named with its path (``two_tower.epochz``).
        ValueError: ``data`` (or a nested section) is not an object, or a value is not one
            of an Enum's choices (the choices are listed); the dataclass's own checks too.
    """
    where = name or cls.__name__
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {data!r}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise KeyError(f"unknown config key(s) in {where}: {unknown}")
    hints = get_type_hints(cls)
    kwargs = {
        key: _from_plain_value(hints[key], value, f"{name}.{key}" if name else key)
        for key, value in data.items()
    }
    return cls(**kwargs)


def _from_plain_value(tp: Any, value: Any, where: str) -> Any:
    if value is None:
        return None
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) in (UnionType, Union) and len(args) == 1:
        tp = args[0]
    origin = get_origin(tp)
    if isinstance(tp, type) and is_dataclass(tp):
        return from_plain(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not one of {[e.value for e in tp]}") from None
    if origin is tuple:
        return tuple(value)
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        value_type = get_args(tp)[1]
        return {k: _from_plain_value(value_type, v, f"{where}.{k}") for k, v in value.items()}
    return value


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
