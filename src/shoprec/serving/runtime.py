"""Online serving steps: numpy in, numpy out, each loaded from one exported model directory.

These are the Triton models of the online serving contract (``schema``, last section); the
generated ``model.py`` of every step model only calls :func:`step_from_model_config` and
:func:`execute_requests`, so everything here runs and is tested without Triton.

Shape letters: B = requests in a batch, Fc / Fdc = customer sparse / dense widths,
N = history length, D = embedding dim, C = candidates, K = results (the exported ``max_k``),
A = articles of the served table, V = article vocabulary size.

Steps (the ``recommend`` ensemble chains the first three):

* :class:`QueryTowerStep` (``query_tower``): customer features -> query embedding (B, D).
* :class:`RetrievalStep` (``retrieval``): query embedding + history -> candidates (B, C), rows
  of the served article table from the item ANN index plus the customer's own history.
* :class:`RankingStep` (``ranking``): ranker scores of the candidates -> top-K article ids
  (DLRM by default; any ``RankerKind`` exported with ``ExportConfig.ranker``).
* :class:`SimilarItemsStep` (``similar_items``): article id -> K nearest articles by text
  embedding, the query article excluded (a lookup in the neighbour table computed at export).

The served article table is the serving snapshot's articles with a first sale, in article-id
order: row i of it is row i of the item index (see ``pipeline.run_train``). The names of the
files each step reads are those of the repository layout, :mod:`shoprec.serving.repository`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, cast

import faiss
import numpy as np
import torch
from torch import nn

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.config import IndexConfig, RankerKind
from shoprec.errors import ArtifactError, ShoprecError
from shoprec.features.encode import CROSS_ATTRIBUTES, EncodedArticles, EncodedCustomers
from shoprec.features.workflow import FIRST_ID
from shoprec.inference.candidates import PAD, retrieve_candidates
from shoprec.inference.index import load_index
from shoprec.inference.neighbours import TextNeighbours, text_neighbours
from shoprec.inference.scoring import rank_candidates
from shoprec.models.modules import SparseArch
from shoprec.models.rankers import Ranker, load_ranker
from shoprec.models.two_tower import QueryTower
from shoprec.serving.repository import (
    ARTICLE_DENSE_FILE,
    ARTICLE_IDS_FILE,
    ARTICLE_SPARSE_FILE,
    ATTRIBUTES_FILE,
    CONFIG_FILE,
    HISTORY_ROWS_FILE,
    TEXT_ARTICLE_IDS_FILE,
    TEXT_GROUPS_FILE,
    TEXT_NEIGHBOUR_SCORES_FILE,
    TEXT_NEIGHBOURS_FILE,
    VERSION,
)

# ---- config.pbtxt ``parameters`` keys (string values; written by shoprec.export.triton) ----
P_STEP: Final = "step"  # which step class serves the model (a schema.TRITON_* model name)
P_THREADS: Final = "intra_op_threads"  # torch and FAISS (OpenMP) threads per instance
P_MAX_K: Final = "max_k"
P_CANDIDATES: Final = "candidates"
P_HISTORY_CANDIDATES: Final = "history_candidates"
P_EXCLUDE_PURCHASED: Final = "exclude_purchased"
P_RANKER: Final = "ranker"  # a RankerKind value: which ranker's files the ranking step loads

_EMPTY_ID: Final = b""


class RequestError(ShoprecError, ValueError):
    """A request the step cannot serve (bad shape, id out of range, unknown article).

    Inside Triton it becomes that request's error response; the message names the tensor and
    the offending value, e.g. ``unknown article_id '0123'``.
    """


def candidate_width(
    candidates: int, served_articles: int, history_length: int, history_candidates: bool
) -> int:
    """C, the width of the ``candidates`` tensor: ANN results then history articles.

    The ANN part is ``min(candidates, served_articles)`` wide (FAISS returns at most the index
    size); the history part is N wide when history candidates are on.
    """
    return min(candidates, served_articles) + (history_length if history_candidates else 0)


class Step(ABC):
    """One serving step: named numpy tensors in, named numpy tensors out.

    ``inputs`` / ``outputs`` are the Triton tensor names (``schema.T_*``) in config order;
    ``__call__`` raises :class:`RequestError` for a request it cannot serve.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]]

    @abstractmethod
    def __call__(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on a batch: every input (B, ...) -> every output (B, ...)."""

    @classmethod
    @abstractmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> Step:
        """Load from a version directory with the model's config.pbtxt ``parameters``."""


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
        return cls(A.load_two_tower(directory / A.TWO_TOWER_FILE).query_tower)

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> QueryTowerStep:
        return cls.load(directory)

    def embed(self, sparse: np.ndarray, dense: np.ndarray, hist_ids: np.ndarray) -> np.ndarray:
        """Query embeddings, float32 (B, D). Raises ``RequestError`` on bad shapes or ids."""
        batch = _batch_size(
            {s.T_CUSTOMER_SPARSE: sparse, s.T_CUSTOMER_DENSE: dense, s.T_HIST_IDS: hist_ids}
        )
        _check_width(s.T_CUSTOMER_SPARSE, sparse, len(self.sparse_cards))
        _check_width(s.T_CUSTOMER_DENSE, dense, self.dense_width)
        _check_sparse(s.T_CUSTOMER_SPARSE, sparse, self.sparse_cards)
        _check_range(s.T_HIST_IDS, hist_ids, self.vocab_size)
        if batch == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        with torch.inference_mode():
            out = self.tower(
                torch.from_numpy(_int64(sparse)),
                torch.from_numpy(_float32(dense)),
                torch.from_numpy(_int64(hist_ids)),
            )
        return out.numpy().astype(np.float32, copy=False)

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        q = self.embed(
            tensors[s.T_CUSTOMER_SPARSE], tensors[s.T_CUSTOMER_DENSE], tensors[s.T_HIST_IDS]
        )
        return {s.T_QUERY_EMBEDDING: q}


class RetrievalStep(Step):
    """Candidate retrieval: item-index ANN top-n plus the customer's history articles.

    ``ranking.rerank.retrieve_candidates`` with index id i = served row i and the history
    mapped by ``history_rows`` (``ranking.rerank.vocab_to_row`` over the served table).

    Inputs: query_embedding float32 (B, D), hist_ids int64 (B, N). Output: candidates int64
    (B, C) served-table rows, ``candidate_width`` wide, PAD (-1) for none and duplicates.
    """

    name = s.TRITON_RETRIEVAL
    inputs = (s.T_QUERY_EMBEDDING, s.T_HIST_IDS)
    outputs = (s.T_CANDIDATES,)

    def __init__(
        self,
        index: faiss.Index,
        history_rows: np.ndarray,
        candidates: int,
        history_candidates: bool,
    ):
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.index = index
        self.history_rows = _int64(history_rows)
        self.candidates = candidates
        self.history_candidates = history_candidates
        self.index_rows = np.arange(index.ntotal, dtype=np.int64)

    @classmethod
    def load(cls, directory: Path, candidates: int, history_candidates: bool) -> RetrievalStep:
        """Load ``item_index.faiss`` and ``history_rows.npy``; ``ArtifactError`` if missing."""
        return cls(
            load_index(directory / A.ITEM_INDEX_FILE),
            _load_array(directory / HISTORY_ROWS_FILE),
            candidates,
            history_candidates,
        )

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> RetrievalStep:
        return cls.load(
            directory, _int_param(params, P_CANDIDATES), _bool_param(params, P_HISTORY_CANDIDATES)
        )

    def retrieve(self, query: np.ndarray, hist_ids: np.ndarray) -> np.ndarray:
        """Candidate rows int64 (B, C). Raises ``RequestError`` on bad shapes or ids."""
        batch = _batch_size({s.T_QUERY_EMBEDDING: query, s.T_HIST_IDS: hist_ids})
        _check_width(s.T_QUERY_EMBEDDING, query, self.index.d)
        _check_range(s.T_HIST_IDS, hist_ids, len(self.history_rows))
        width = candidate_width(
            self.candidates, self.index.ntotal, hist_ids.shape[1], self.history_candidates
        )
        if batch == 0:
            return np.zeros((0, width), dtype=np.int64)
        hist = _int64(hist_ids) if self.history_candidates else None
        cands, _ = retrieve_candidates(
            self.index, _float32(query), self.candidates, self.index_rows, hist, self.history_rows
        )
        return cands

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {s.T_CANDIDATES: self.retrieve(tensors[s.T_QUERY_EMBEDDING], tensors[s.T_HIST_IDS])}


class RankingStep(Step):
    """Ranker scoring of the candidates (``inference.scoring.rank_candidates``), top K.

    The ranker is any ``RankerKind`` (parameter ``ranker``; its files, ``ranker_files``, lie
    in the version directory): a neural one runs in torch, a tree in scikit-learn/LightGBM,
    both in this Python-backend process. Holds the encoded served article table in memory;
    the customer x article features are built by ``features.assemble.ranking_inputs``, the
    same code as training and evaluation. With ``exclude_purchased`` a candidate whose
    article is in the customer's ``hist_ids`` is never returned.

    Inputs: customer_sparse int64 (B, Fc), customer_dense float32 (B, Fdc), hist_ids int64
    (B, N), hist_counts float32 (B, N), candidates int64 (B, C) served rows (-1 = none).
    Outputs: article_ids bytes (B, K) best first (b"" = none), scores float32 (B, K) purchase
    probabilities (-inf = none).
    """

    name = s.TRITON_RANKING
    inputs = (
        s.T_CUSTOMER_SPARSE,
        s.T_CUSTOMER_DENSE,
        s.T_HIST_IDS,
        s.T_HIST_COUNTS,
        s.T_CANDIDATES,
    )
    outputs = (s.T_ARTICLE_IDS, s.T_SCORES)

    def __init__(
        self,
        model: Ranker,
        articles: EncodedArticles,
        attributes: np.ndarray,
        max_k: int,
        exclude_purchased: bool,
    ):
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}")
        if attributes.ndim != 2 or attributes.shape[1] != len(CROSS_ATTRIBUTES):
            raise ArtifactError(
                f"attribute table has shape {attributes.shape}, expected "
                f"(V, {len(CROSS_ATTRIBUTES)})"
            )
        self.model = model.eval() if isinstance(model, nn.Module) else model
        self.articles = articles
        self.attributes = _int64(attributes)
        self.max_k = max_k
        self.exclude_purchased = exclude_purchased
        self.customer_cards = model.cardinalities[: len(s.CUSTOMER_SPARSE)]
        self.dense_width = model.num_dense - articles.dense.shape[1] - len(s.CROSS_DENSE)
        # Row -1 (PAD) of these lookups is the extra last element: b"" / vocabulary id 0.
        self._ids = np.array([a.encode() for a in articles.ids] + [_EMPTY_ID], dtype=object)
        self._vocab = np.append(articles.sparse[:, 0], 0).astype(np.int64)

    @classmethod
    def load(
        cls,
        directory: Path,
        max_k: int,
        exclude_purchased: bool,
        ranker: RankerKind = RankerKind.DLRM,
        threads: int = 0,
    ) -> RankingStep:
        """Load the ranker's files and the served article table; ``ArtifactError`` if missing.

        ``threads``: a tree ranker's prediction threads (0 = every core).
        """
        ids = _load_array(directory / ARTICLE_IDS_FILE).astype(str).astype(object)
        articles = EncodedArticles(
            ids,
            _load_array(directory / ARTICLE_SPARSE_FILE),
            _load_array(directory / ARTICLE_DENSE_FILE),
        )
        return cls(
            load_ranker(directory, ranker, threads),
            articles,
            _load_array(directory / ATTRIBUTES_FILE),
            max_k,
            exclude_purchased,
        )

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> RankingStep:
        return cls.load(
            directory,
            _int_param(params, P_MAX_K),
            _bool_param(params, P_EXCLUDE_PURCHASED),
            _ranker_param(params),
            _int_param(params, P_THREADS),
        )

    def rank(
        self,
        sparse: np.ndarray,
        dense: np.ndarray,
        hist_ids: np.ndarray,
        hist_counts: np.ndarray,
        candidates: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(article ids bytes (B, K), scores float32 (B, K)), best first.

        Raises:
            RequestError: inconsistent shapes, ids outside the vocabularies, candidate rows
                outside the served table.
        """
        batch = _batch_size(
            {
                s.T_CUSTOMER_SPARSE: sparse,
                s.T_CUSTOMER_DENSE: dense,
                s.T_HIST_IDS: hist_ids,
                s.T_HIST_COUNTS: hist_counts,
                s.T_CANDIDATES: candidates,
            }
        )
        _check_width(s.T_CUSTOMER_SPARSE, sparse, len(self.customer_cards))
        _check_width(s.T_CUSTOMER_DENSE, dense, self.dense_width)
        _check_width(s.T_HIST_COUNTS, hist_counts, hist_ids.shape[1])
        _check_sparse(s.T_CUSTOMER_SPARSE, sparse, self.customer_cards)
        _check_range(s.T_HIST_IDS, hist_ids, len(self.attributes))
        _check_range(s.T_CANDIDATES, candidates, len(self.articles.ids), lower=PAD)
        if batch == 0:
            return (
                np.zeros((0, self.max_k), dtype=object),
                np.zeros((0, self.max_k), dtype=np.float32),
            )
        hist = _int64(hist_ids)
        cands = _int64(candidates)
        customers = EncodedCustomers(
            np.zeros(batch, dtype=object),
            _int64(sparse),
            _float32(dense),
            hist,
            _float32(hist_counts),
        )
        exclude = None
        if self.exclude_purchased:
            vocab = self._vocab[cands]
            exclude = (vocab[:, :, None] == hist[:, None, :]).any(-1) & (vocab >= FIRST_ID)
        rows, scores = rank_candidates(
            self.model,
            customers,
            np.arange(batch),
            self.articles,
            self.attributes,
            cands,
            self.max_k,
            exclude,
        )
        return self._ids[rows], scores.astype(np.float32, copy=False)

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, scores = self.rank(*(tensors[name] for name in self.inputs))
        return {s.T_ARTICLE_IDS: ids, s.T_SCORES: scores}


class SimilarItemsStep(Step):
    """Item-to-item similarity: the K nearest articles by text embedding, looked up in the
    neighbour table ``shoprec export`` computed with FAISS
    (:func:`shoprec.inference.neighbours.text_neighbours`).

    Articles with identical text (identical vectors) form one group: a list never holds the
    query's own text nor one text twice; each neighbour group is returned as its first article
    in catalog order.

    Input: article_id bytes (B, 1). Outputs: article_ids bytes (B, K) most similar first
    (b"" = none), scores float32 (B, K) cosine similarities (-inf = none).
    """

    name = s.TRITON_SIMILAR_ITEMS
    inputs = (s.T_ARTICLE_ID,)
    outputs = (s.T_ARTICLE_IDS, s.T_SCORES)

    def __init__(self, table: TextNeighbours, article_ids: Sequence[str], max_k: int):
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}")
        if len(table.groups) != len(article_ids):
            raise ArtifactError(
                f"the neighbour table has {len(table.groups)} text rows but there are "
                f"{len(article_ids)} article ids"
            )
        if table.k < max_k:
            raise ArtifactError(f"the neighbour table holds {table.k} neighbours, max_k is {max_k}")
        if any(a == "" for a in article_ids):
            raise ArtifactError("an article id is empty (b'' marks 'no neighbour')")
        self.max_k = max_k
        self.table = table
        self.article_ids = list(article_ids)
        self.rows = {a: i for i, a in enumerate(self.article_ids)}
        self._groups = table.groups
        self._neighbours = table.neighbours[:, :max_k]
        self._scores = table.scores[:, :max_k]
        # each group's shown article id; index G (from neighbour -1) is the empty id
        reps = table.representatives
        self._group_ids = np.array(
            [article_ids[r].encode() for r in reps] + [_EMPTY_ID], dtype=object
        )

    @classmethod
    def build(
        cls,
        index: faiss.Index,
        article_ids: Sequence[str],
        max_k: int,
        config: IndexConfig | None = None,
    ) -> SimilarItemsStep:
        """Compute the neighbour table from a text index (row i = ``article_ids[i]``)."""
        if index.ntotal != len(article_ids):
            raise ArtifactError(
                f"text index holds {index.ntotal} vectors but {len(article_ids)} article ids"
            )
        vectors = index.reconstruct_n(0, index.ntotal)
        return cls(text_neighbours(vectors, max_k, config), article_ids, max_k)

    def save(self, directory: Path) -> list[Path]:
        """Write the step's files (what :meth:`load` reads) into ``directory``."""
        arrays = {
            TEXT_ARTICLE_IDS_FILE: np.array(self.article_ids, dtype=str),
            TEXT_GROUPS_FILE: self.table.groups,
            TEXT_NEIGHBOURS_FILE: self.table.neighbours,
            TEXT_NEIGHBOUR_SCORES_FILE: self.table.scores,
        }
        for name, array in arrays.items():
            np.save(directory / name, array, allow_pickle=False)
        return [directory / name for name in arrays]

    @classmethod
    def load(cls, directory: Path, max_k: int) -> SimilarItemsStep:
        """Load the neighbour table; ``ArtifactError`` if a file is missing or inconsistent."""
        ids = _load_array(directory / TEXT_ARTICLE_IDS_FILE).astype(str).tolist()
        try:
            table = TextNeighbours(
                groups=_load_array(directory / TEXT_GROUPS_FILE),
                neighbours=_load_array(directory / TEXT_NEIGHBOURS_FILE),
                scores=_load_array(directory / TEXT_NEIGHBOUR_SCORES_FILE),
            )
        except ValueError as exc:
            raise ArtifactError(f"{directory}: {exc}") from exc
        return cls(table, ids, max_k)

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> SimilarItemsStep:
        return cls.load(directory, _int_param(params, P_MAX_K))

    def similar(self, article_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(article ids bytes (B, K), scores float32 (B, K)) for article ids (B, 1).

        Raises:
            RequestError: an id not in the catalog (``unknown article_id '<id>'``) or a shape
                other than (B, 1).
        """
        _batch_size({s.T_ARTICLE_ID: article_ids})
        _check_width(s.T_ARTICLE_ID, article_ids, 1)
        rows = np.array([self._row(v) for v in article_ids[:, 0]], dtype=np.int64)
        groups = self._groups[rows]
        neighbours = self._neighbours[groups]
        shown = np.where(neighbours >= 0, neighbours, len(self._group_ids) - 1)
        return self._group_ids[shown], self._scores[groups].copy()

    def _row(self, value: object) -> int:
        key = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
        row = self.rows.get(key)
        if row is None:
            raise RequestError(f"unknown {s.T_ARTICLE_ID} {key!r}")
        return row

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, scores = self.similar(tensors[s.T_ARTICLE_ID])
        return {s.T_ARTICLE_IDS: ids, s.T_SCORES: scores}


STEPS: Final[dict[str, type[Step]]] = {
    cls.name: cls for cls in (QueryTowerStep, RetrievalStep, RankingStep, SimilarItemsStep)
}


# ---- Triton glue (the generated model.py calls these two) -----------------------------------


def step_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """The ``parameters`` of a model config (Triton's JSON form) as ``{key: string_value}``."""
    return {k: str(v["string_value"]) for k, v in model_config.get("parameters", {}).items()}


def configure_threads(threads: int) -> None:
    """Set torch intra-op and FAISS OpenMP threads of this process (one Triton instance)."""
    if threads < 1:
        raise ValueError(f"{P_THREADS} must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def step_from_model_config(
    version_dir: Path, model_config: Mapping[str, Any], set_threads: bool = True
) -> Step:
    """The step a model config asks for, loaded from its version directory.

    Args:
        version_dir: ``<repository>/<model>/<version>``.
        model_config: the model's config as Triton passes it to ``initialize`` (parsed JSON).
        set_threads: apply ``intra_op_threads`` to this process (Triton: yes, one process per
            instance; in-process use: usually no).

    Raises:
        ArtifactError: a missing file or parameter, or an unknown step name.
    """
    params = step_parameters(model_config)
    name = params.get(P_STEP)
    if name not in STEPS:
        raise ArtifactError(
            f"{version_dir}: parameter {P_STEP!r} is {name!r}, expected one of {sorted(STEPS)}"
        )
    if set_threads:
        configure_threads(_int_param(params, P_THREADS))
    return STEPS[name].from_parameters(version_dir, params)


def load_step(model_dir: Path, version: str = VERSION) -> Step:
    """Load a step from an exported model directory (``<repository>/<model>``), as Triton would.

    Parses ``config.pbtxt`` with Triton's ``ModelConfig`` protobuf, so an invalid file fails
    here too. Does not change the process's thread settings.
    """
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    path = model_dir / CONFIG_FILE
    if not path.exists():
        raise ArtifactError(f"model config not found: {path}")
    proto = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    config = json_format.MessageToDict(proto, preserving_proto_field_name=True)
    return step_from_model_config(model_dir / version, config, set_threads=False)


def execute_requests(step: Step, requests: Sequence[Any], pb_utils: Any) -> list[Any]:
    """Serve a batch of Triton requests: exactly one ``InferenceResponse`` per request.

    The requests' inputs are concatenated along the batch axis and run once; when that raises
    :class:`RequestError`, each request runs alone so that only the bad ones get an error
    response (``pb_utils.TritonError`` with the message). Other exceptions propagate (Triton
    then fails the whole batch and logs the traceback).

    Args:
        pb_utils: the ``triton_python_backend_utils`` module (passed in, so that this module
            imports without Triton).
    """
    if not requests:
        return []
    arrays = [
        {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in step.inputs}
        for r in requests
    ]
    results: list[dict[str, np.ndarray] | RequestError]
    try:
        results = [
            *_split(step(_concat(arrays, step.inputs)), [len(a[step.inputs[0]]) for a in arrays])
        ]
    except RequestError:
        results = []
        for one in arrays:
            try:
                results.append(step(one))
            except RequestError as exc:
                results.append(exc)
    responses = []
    for res in results:
        if isinstance(res, RequestError):
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(res)))
            )
        else:
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, res[name]) for name in step.outputs]
                )
            )
    return responses


def _concat(arrays: list[dict[str, np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    if len(arrays) == 1:
        return arrays[0]
    try:
        return {n: np.concatenate([a[n] for a in arrays]) for n in names}
    except ValueError as exc:  # requests whose non-batch dims differ
        raise RequestError(f"requests cannot be batched together: {exc}") from exc


def _split(outputs: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    bounds = np.cumsum([0, *sizes])
    return [
        {n: v[bounds[i] : bounds[i + 1]] for n, v in outputs.items()} for i in range(len(sizes))
    ]


# ---- validation and loading helpers ----------------------------------------------------------


def _batch_size(tensors: Mapping[str, np.ndarray]) -> int:
    batch = None
    for name, x in tensors.items():
        if x.ndim != 2:
            raise RequestError(f"{name}: expected a 2-D (B, ...) tensor, got shape {x.shape}")
        if batch is not None and x.shape[0] != batch:
            raise RequestError(f"{name}: batch size {x.shape[0]} differs from {batch}")
        batch = x.shape[0]
    return int(batch or 0)


def _check_width(name: str, x: np.ndarray, width: int) -> None:
    if x.shape[1] != width:
        raise RequestError(f"{name}: expected width {width}, got shape {x.shape}")


def _check_range(name: str, x: np.ndarray, upper: int, lower: int = 0) -> None:
    if x.size and (x.min() < lower or x.max() >= upper):
        bad = x[(x < lower) | (x >= upper)].flat[0]
        raise RequestError(f"{name}: id {bad} outside [{lower}, {upper})")


def _check_sparse(name: str, x: np.ndarray, cards: Sequence[int]) -> None:
    for j, card in enumerate(cards):
        _check_range(f"{name}[:, {j}]", x[:, j], card)


def _table_sizes(arch: SparseArch) -> list[int]:
    return [cast(nn.Embedding, t).num_embeddings for t in arch.tables]


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _int64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int64)


def _float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _load_array(path: Path) -> np.ndarray:
    if not path.exists():
        raise ArtifactError(f"serving file not found: {path} (export the Triton repository first)")
    return np.load(path, allow_pickle=False)


def _int_param(params: Mapping[str, str], key: str) -> int:
    try:
        return int(_param(params, key))
    except ValueError as exc:
        raise ArtifactError(f"parameter {key!r}: {params[key]!r} is not an integer") from exc


def _ranker_param(params: Mapping[str, str]) -> RankerKind:
    value = _param(params, P_RANKER)
    try:
        return RankerKind(value)
    except ValueError as exc:
        raise ArtifactError(
            f"parameter {P_RANKER!r}: {value!r} is not one of {[k.value for k in RankerKind]}"
        ) from exc


def _bool_param(params: Mapping[str, str], key: str) -> bool:
    value = _param(params, key)
    if value not in ("true", "false"):
        raise ArtifactError(f"parameter {key!r}: {value!r} is not true/false")
    return value == "true"


def _param(params: Mapping[str, str], key: str) -> str:
    if key not in params:
        raise ArtifactError(f"model config has no parameter {key!r} (got {sorted(params)})")
    return params[key]
