"""FAISS ANN indexes for inner-product search over L2-normalised embeddings.

Flat (exact) below ``IndexConfig.flat_max_items`` items, HNSW (Malkov & Yashunin 2018) or
IVF-Flat (Jégou et al. 2011) above; faiss-gpu is used when the installed faiss has GPU
support and a GPU is visible. Item ids are the row positions of the embedding matrix; the
caller keeps the id -> article mapping next to the index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from shoprec.config import IndexConfig, IndexKind
from shoprec.errors import ArtifactError


def gpu_count() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def resolve_kind(n_items: int, config: IndexConfig) -> IndexKind:
    """The concrete index kind for ``n_items`` under ``config`` (AUTO -> FLAT or HNSW)."""
    if config.kind is IndexKind.AUTO:
        return IndexKind.FLAT if n_items <= config.flat_max_items else IndexKind.HNSW
    return config.kind


def build_index(embeddings: npt.NDArray[np.floating[Any]], config: IndexConfig) -> faiss.Index:
    """Build an inner-product index over ``embeddings``.

    Args:
        embeddings: float32 (V, D) item vectors (L2-normalised for cosine similarity).

    Returns:
        A CPU ``faiss.Index`` (moved to GPU only by ``to_search_device``); row i of
        ``embeddings`` has id i.

    Raises:
        ValueError: ``embeddings`` is not a non-empty 2-D float array.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (V, D) matrix, got {embeddings.shape}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x.shape
    kind = resolve_kind(n, config)
    index: faiss.Index
    if kind is IndexKind.FLAT:
        index = faiss.IndexFlatIP(d)
    elif kind is IndexKind.HNSW:
        hnsw = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = config.hnsw_ef_search
        index = hnsw
    else:
        nlist = max(1, min(config.ivf_nlist, n // 39))  # faiss wants >= 39 points per centroid
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(x)
        ivf.nprobe = min(config.ivf_nprobe, nlist)
        index = ivf
    index.add(x)
    return index


def to_search_device(index: faiss.Index, config: IndexConfig) -> faiss.Index:
    """Move a flat or IVF index to GPU 0 when allowed and possible; otherwise return it as is."""
    if config.use_gpu and gpu_count() > 0 and not isinstance(index, faiss.IndexHNSWFlat):
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def search(
    index: faiss.Index, queries: npt.NDArray[np.floating[Any]], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Top-k inner-product search.

    Args:
        queries: float32 (B, D).
        k: neighbours per query, >= 1 (clipped to the index size).

    Returns:
        (scores float32 (B, k'), ids int64 (B, k')), best first, k' = min(k, ntotal).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    return index.search(q, min(k, index.ntotal))


def save_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def load_index(path: Path) -> faiss.Index:
    if not path.exists():
        raise ArtifactError(f"FAISS index not found: {path} (run `shoprec train` first)")
    return faiss.read_index(str(path))
