"""File layout of the trained artifacts under ``models/<name>/`` and loading them back.

Imports no model library at module level: online steps read the file names here and load
only what they serve (:class:`TrainedModels` imports torch, FAISS and polars when used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shoprec import schema as s
from shoprec.config import PipelineConfig, RankerKind
from shoprec.errors import ArtifactError

if TYPE_CHECKING:
    import faiss

    from shoprec.features.workflow import Workflow
    from shoprec.models.rankers import Ranker
    from shoprec.models.two_tower import TwoTower

CONFIG_FILE = "config.json"
WORKFLOW_FILE = "workflow.json"
TWO_TOWER_FILE = "two_tower.pt"
ITEM_INDEX_FILE = "item_index.faiss"
ITEM_IDS_FILE = "item_index_ids.parquet"  # article id of each index row
TEXT_INDEX_FILE = "text_index.faiss"
TEXT_IDS_FILE = "text_index_ids.parquet"
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
TRAIN_SUMMARY_FILE = "train_summary.json"
EXPORTED_POLICY_FILE = "exported_policy.json"  # written by `shoprec export`, read by materialize
RANKERS_DIR = "rankers"  # written by `shoprec compare-rankers`
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"


def write_ids(ids: npt.NDArray[Any], path: Path) -> None:
    """Write article ids (A,) as a one-column Parquet file (``ARTICLE_ID``)."""
    import polars as pl

    pl.DataFrame({s.ARTICLE_ID: ids.astype(str)}).write_parquet(path)


def read_ids(path: Path) -> npt.NDArray[np.object_]:
    """The article ids :func:`write_ids` wrote, object array of str (A,).

    Raises:
        ArtifactError: ``path`` is missing.
    """
    import polars as pl

    if not path.exists():
        raise ArtifactError(f"{path} not found (run `shoprec train` first)")
    return pl.read_parquet(path).get_column(s.ARTICLE_ID).to_numpy().astype(object)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))


def trained_exclusion(models_dir: Path) -> bool:
    """Whether the trained pipeline excludes already-bought articles: what ``shoprec train``
    decided (``EvalConfig.exclude_purchased`` resolved on the training period's repurchase
    share) and wrote to its summary; False for models trained before the policy existed.

    Raises:
        ArtifactError: the summary is missing.
    """
    path = models_dir / TRAIN_SUMMARY_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found (run `shoprec train` first)")
    return bool(read_json(path).get("exclude_purchased", False))


def write_exported_policy(models_dir: Path, exclude_purchased: bool) -> Path:
    """Record the exclusion policy ``shoprec export`` served (the trained one or the export
    config's override) for ``shoprec materialize`` (the shopper state's bought sets)."""
    path = models_dir / EXPORTED_POLICY_FILE
    write_json({"exclude_purchased": bool(exclude_purchased)}, path)
    return path


def exported_exclusion(models_dir: Path) -> bool:
    """Whether the served stack excludes already-bought articles: what ``shoprec export``
    last recorded (:func:`write_exported_policy`), else what training decided
    (:func:`trained_exclusion`), else False (models without a summary, e.g. a bare workflow).
    """
    path = models_dir / EXPORTED_POLICY_FILE
    if path.is_file():
        return bool(read_json(path).get("exclude_purchased", False))
    if (models_dir / TRAIN_SUMMARY_FILE).is_file():
        return trained_exclusion(models_dir)
    return False


def trained_served(models_dir: Path) -> str:
    """What ``shoprec train``'s guardrail chose to serve: ``"ranker"`` (the two-stage pipeline)
    or a ``models.rules.RuleKind`` value; ``"ranker"`` for models trained before the guardrail.

    Raises:
        ArtifactError: the summary is missing.
    """
    path = models_dir / TRAIN_SUMMARY_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found (run `shoprec train` first)")
    return str(read_json(path).get("served", {}).get("recommender", "ranker"))


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ArtifactError(f"{path} not found (run `shoprec train` first)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def ranker_dir(models_dir: Path, kind: RankerKind, trained: RankerKind) -> Path:
    """Where the files of a ranker of ``kind`` lie.

    The ranker ``shoprec train`` trained (``trained``, ``RankerConfig.kind``) lies in
    ``models/<name>/``; the others in ``models/<name>/rankers/``, written by ``shoprec
    compare-rankers`` (the first seed's model).
    """
    return models_dir if RankerKind(kind) is RankerKind(trained) else models_dir / RANKERS_DIR


@dataclass
class TrainedModels:
    """Everything ``shoprec train`` writes, loaded; the ranker on demand (:meth:`load_ranker`),
    so that exporting another ranker never loads the trained one."""

    models_dir: Path
    config: PipelineConfig
    workflow: Workflow
    two_tower: TwoTower
    item_index: faiss.Index
    item_ids: npt.NDArray[np.object_]  # article id of each item-index row
    text_index: faiss.Index
    text_ids: npt.NDArray[np.object_]

    @classmethod
    def load(cls, models_dir: Path) -> TrainedModels:
        """Load from ``models/<name>``. Raises ``ArtifactError`` naming a missing file."""
        from shoprec.features.workflow import Workflow
        from shoprec.inference.index import load_index
        from shoprec.models.two_tower import load_two_tower

        return cls(
            models_dir=models_dir,
            config=PipelineConfig.from_dict(read_json(models_dir / CONFIG_FILE)),
            workflow=Workflow.load(models_dir / WORKFLOW_FILE),
            two_tower=load_two_tower(models_dir / TWO_TOWER_FILE),
            item_index=load_index(models_dir / ITEM_INDEX_FILE),
            item_ids=read_ids(models_dir / ITEM_IDS_FILE),
            text_index=load_index(models_dir / TEXT_INDEX_FILE),
            text_ids=read_ids(models_dir / TEXT_IDS_FILE),
        )

    @property
    def ranker_kind(self) -> RankerKind:
        """The ranker ``shoprec train`` trained (``config.ranker.kind``)."""
        return self.config.ranker.kind

    def ranker_dir(self, kind: RankerKind | None = None) -> Path:
        """:func:`ranker_dir` of ``kind`` (default: the trained ranker)."""
        return ranker_dir(self.models_dir, kind or self.ranker_kind, self.ranker_kind)

    def load_ranker(self, kind: RankerKind | None = None, threads: int = 0) -> Ranker:
        """The ranker of ``kind`` (default: the trained one) from :meth:`ranker_dir`.

        Raises:
            ArtifactError: its files are missing (another kind: run ``shoprec
                compare-rankers`` or ``shoprec train --ranker`` first).
        """
        from shoprec.models.rankers import load_ranker

        return load_ranker(self.ranker_dir(kind), kind or self.ranker_kind, threads)
