"""File layout of the trained artifacts under ``models/<name>/`` and loading them back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import polars as pl

from shoprec import schema as s
from shoprec.config import PipelineConfig, RankerKind, TwoTowerConfig, section_from_dict
from shoprec.errors import ArtifactError
from shoprec.features.workflow import Workflow
from shoprec.inference.index import load_index
from shoprec.models.dlrm import DLRM
from shoprec.models.modules import load_checkpoint
from shoprec.models.rankers import load_neural_ranker
from shoprec.models.two_tower import TwoTower

CONFIG_FILE = "config.json"
WORKFLOW_FILE = "workflow.json"
TWO_TOWER_FILE = "two_tower.pt"
DLRM_FILE = "dlrm.pt"
ITEM_INDEX_FILE = "item_index.faiss"
ITEM_IDS_FILE = "item_index_ids.parquet"  # article id of each index row
TEXT_INDEX_FILE = "text_index.faiss"
TEXT_IDS_FILE = "text_index_ids.parquet"
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
TRAIN_SUMMARY_FILE = "train_summary.json"
RANKERS_DIR = "rankers"  # written by `shoprec compare-rankers`
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"


def write_ids(ids: np.ndarray, path: Path) -> None:
    pl.DataFrame({s.ARTICLE_ID: ids.astype(str)}).write_parquet(path)


def read_ids(path: Path) -> np.ndarray:
    if not path.exists():
        raise ArtifactError(f"{path} not found (run `shoprec train` first)")
    return pl.read_parquet(path).get_column(s.ARTICLE_ID).to_numpy().astype(object)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ArtifactError(f"{path} not found (run `shoprec train` first)")
    return json.loads(path.read_text())


def load_two_tower(path: Path) -> TwoTower:
    ckpt = load_checkpoint(path)
    h = ckpt["hparams"]
    model = TwoTower(
        h["customer_cardinalities"],
        h["customer_dense"],
        h["article_cardinalities"],
        h["article_dense"],
        section_from_dict(TwoTowerConfig, h["config"]),
    )
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def ranker_dir(models_dir: Path, kind: RankerKind) -> Path:
    """Where the ranker of ``kind`` exported by ``shoprec export --ranker`` lies.

    DLRM: ``models/<name>/dlrm.pt``, written by ``shoprec train`` (the ranker ``evaluate``
    reports). The others: ``models/<name>/rankers/``, written by ``shoprec compare-rankers``
    (the first seed's model).
    """
    return models_dir if RankerKind(kind) is RankerKind.DLRM else models_dir / RANKERS_DIR


def load_dlrm(path: Path) -> DLRM:
    """The pipeline's DLRM (``dlrm.pt``). Raises ``ArtifactError`` if missing or not a DLRM."""
    model = load_neural_ranker(path, RankerKind.DLRM)
    if not isinstance(model, DLRM):
        raise ArtifactError(f"{path} does not hold a DLRM")
    return model


@dataclass
class TrainedModels:
    """Everything ``shoprec train`` writes, loaded."""

    config: PipelineConfig
    workflow: Workflow
    two_tower: TwoTower
    ranker: DLRM
    item_index: faiss.Index
    item_ids: np.ndarray  # article id of each item-index row
    text_index: faiss.Index
    text_ids: np.ndarray

    @classmethod
    def load(cls, models_dir: Path) -> TrainedModels:
        return cls(
            config=PipelineConfig.from_dict(read_json(models_dir / CONFIG_FILE)),
            workflow=Workflow.load(models_dir / WORKFLOW_FILE),
            two_tower=load_two_tower(models_dir / TWO_TOWER_FILE),
            ranker=load_dlrm(models_dir / DLRM_FILE),
            item_index=load_index(models_dir / ITEM_INDEX_FILE),
            item_ids=read_ids(models_dir / ITEM_IDS_FILE),
            text_index=load_index(models_dir / TEXT_INDEX_FILE),
            text_ids=read_ids(models_dir / TEXT_IDS_FILE),
        )
