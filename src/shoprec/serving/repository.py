"""The layout of an exported Triton model repository, and what it serves, read without loading
a model: json and numpy only (no torch, FAISS or tritonclient), so that tools outside Triton
(the load benchmark) can read it cheaply.

:func:`shoprec.export.triton.export_triton_repository` writes the repository; the Triton steps
(:mod:`shoprec.serving.runtime`) and the readers below read it::

    <repository>/manifest.json          MANIFEST_FILE: dims, K, article counts, export config
    <repository>/<model>/config.pbtxt   CONFIG_FILE: the model's Triton config
    <repository>/<model>/1/             VERSION: the step's files (the ``*_FILE`` names below)

Shape letters: A = articles of the served table, V = article vocabulary size, T = articles
with a text embedding (the rows ``similar_items`` answers for), G = groups of identical text,
K = neighbours kept per group.

Example::

    manifest = read_repository_manifest(Path("triton_repo"))
    manifest["dims"]["served_articles"]  # A
    similar_items_article_ids(Path("triton_repo"))[:3]  # the first of T article ids
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np

from shoprec import schema as s
from shoprec.errors import ArtifactError

MANIFEST_FILE: Final = "manifest.json"  # at the repository root
CONFIG_FILE: Final = "config.pbtxt"  # a model's Triton config, in ``<repository>/<model>/``
VERSION: Final = "1"  # the one version directory of every model

# ---- files of each step's version directory (``<model>/1/``) ------------------------------
HISTORY_ROWS_FILE: Final = "history_rows.npy"  # int64 (V,) vocab id -> served row, -1 = none
COPURCHASE_NEIGHBOURS_FILE: Final = "copurchase_neighbours.npy"  # int64 (V, K) vocab ids
COPURCHASE_WEIGHTS_FILE: Final = "copurchase_weights.npy"  # float32 (V, K), 0 = none
POPULAR_ROWS_FILE: Final = "popular_rows.npy"  # int64 (P,) served rows, best first
POPULAR_SCORES_FILE: Final = "popular_scores.npy"  # float32 (P,) log1p(last-week sales)
ARTICLE_IDS_FILE: Final = "article_ids.npy"  # str (A,) served table ids, article-id order
ARTICLE_SPARSE_FILE: Final = "article_sparse.npy"  # int64 (A, Fa) encoded ARTICLE_SPARSE
ARTICLE_DENSE_FILE: Final = "article_dense.npy"  # float32 (A, Fda) encoded ARTICLE_DENSE
ATTRIBUTES_FILE: Final = "attributes.npy"  # int64 (V, 3) from features.encode.attribute_table
TEXT_ARTICLE_IDS_FILE: Final = "text_article_ids.npy"  # str (T,) article id of each text row
TEXT_GROUPS_FILE: Final = "text_groups.npy"  # int32 (T,) group of identical text vectors
TEXT_NEIGHBOURS_FILE: Final = "text_neighbours.npy"  # int32 (G, K) nearest other groups
TEXT_NEIGHBOUR_SCORES_FILE: Final = "text_neighbour_scores.npy"  # float32 (G, K) cosine
TEXT_GROUP_VECTORS_FILE: Final = "text_group_vectors.npy"  # float32 (G, Dt) one per group
TEXT_ENCODER_FILE: Final = "text_encoder.json"  # the run's TextConfig (article_encoder)


def export_id(version_dir: Path) -> str:
    """The ``export_id`` of the repository a model's version directory
    (``<repository>/<model>/<version>``) belongs to; "" for a repository exported before it
    existed. The article delta is scoped by it (:mod:`shoprec.serving.article_delta`)."""
    path = version_dir.parent.parent / MANIFEST_FILE
    if not path.is_file():
        return ""
    return str(json.loads(path.read_text()).get("export_id", ""))


def read_repository_manifest(repo: Path) -> dict[str, Any]:
    """The manifest at the root of the exported repository ``repo``, as written by the export:
    ``format_version``, ``models``, ``dims`` (``served_articles`` = A, ``max_k`` = K, ...),
    ``text_articles`` (T), ``text_groups`` (G), ``serving_cutoff`` (ISO date) and
    ``export_config`` (batching, per-model tuning, ranker).

    Raises:
        ArtifactError: the manifest is missing (the repository was not exported there).
    """
    path = repo / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found: export the Triton repository first")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def similar_items_article_ids(repo: Path) -> list[str]:
    """The T article ids the ``similar_items`` model of ``repo`` answers for (the articles with
    a text embedding), in its text-row order.

    Raises:
        ArtifactError: the file is missing (the repository was not exported there).
    """
    path = repo / s.TRITON_SIMILAR_ITEMS / VERSION / TEXT_ARTICLE_IDS_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found: export the Triton repository first")
    ids: list[str] = np.load(path, allow_pickle=False).astype(str).tolist()
    return ids
