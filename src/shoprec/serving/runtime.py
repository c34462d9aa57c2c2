"""Online serving steps: numpy in, numpy out, each loaded from one exported model directory.

These are the Triton models of the online serving contract (``schema``, last section); the
generated ``model.py`` of every step model only calls :func:`step_from_model_config` and
:func:`execute_requests`, so everything here runs and is tested without Triton. This module
holds what every step shares (the :class:`Step` interface, parameters, file names, request
checks, the Triton glue) and imports numpy only; each step lives in its own module, imported
when a model asks for it, so a Triton process loads only its step's libraries (``similar_items``
no torch, ``query_tower`` no FAISS).

Shape letters: B = requests in a batch, Fc / Fdc = customer sparse / dense widths,
N = history length, D = embedding dim, C = candidates, K = results (the exported ``max_k``),
A = articles of the served table, V = article vocabulary size.

Steps (the ``recommend`` ensemble chains the first three):

* ``query_tower.QueryTowerStep`` (``query_tower``): customer features -> query embedding (B, D).
* ``retrieval.RetrievalStep`` (``retrieval``): query embedding + history -> candidates (B, C), rows
  of the served article table from the item ANN index plus the customer's own history.
* ``ranking.RankingStep`` (``ranking``): ranker scores of the candidates -> top-K article ids
  (DLRM by default; any ``RankerKind`` exported with ``ExportConfig.ranker``).
* ``similar_items.SimilarItemsStep`` (``similar_items``): article id -> K nearest articles by text
  embedding, the query article excluded (a lookup in the neighbour table computed at export).
* ``article_encoder.ArticleEncoderStep`` (``article_encoder``): a new article's fields -> its
  item-tower and text embeddings and encoded attributes (called by the near-real-time updater;
  the results go into the article delta, ``article_delta``, that retrieval, ranking and
  similar_items merge at query time).

The served article table is the serving snapshot's articles with a first sale, in article-id
order: row i of it is row i of the item index (see ``pipeline.steps.run_train``). The names
of the files each step reads are those of the repository layout,
:mod:`shoprec.serving.repository`.
"""

from __future__ import annotations

import importlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from shoprec import schema as s
from shoprec.config import RankerKind
from shoprec.errors import ArtifactError, ShoprecError
from shoprec.serving.repository import CONFIG_FILE, VERSION

# ---- config.pbtxt ``parameters`` keys (string values; written by shoprec.export.triton) ----
P_STEP: Final = "step"  # which step class serves the model (a schema.TRITON_* model name)
P_THREADS: Final = "intra_op_threads"  # torch and FAISS (OpenMP) threads per instance
P_MAX_K: Final = "max_k"
P_CANDIDATES: Final = "candidates"
P_HISTORY_CANDIDATES: Final = "history_candidates"
P_COPURCHASE_CANDIDATES: Final = "copurchase_candidates"
P_POPULAR_CANDIDATES: Final = "popular_candidates"
P_EXCLUDE_PURCHASED: Final = "exclude_purchased"
P_SERVED: Final = "served"  # "ranker" or a models.rules.RuleKind value (the guardrail's pick)
P_RANKER: Final = "ranker"  # a RankerKind value: which ranker's files the ranking step loads

EMPTY_ID: Final = b""


class RequestError(ShoprecError, ValueError):
    """A request the step cannot serve (bad shape, id out of range, unknown article).

    Inside Triton it becomes that request's error response with code ``INVALID_ARG`` (HTTP
    400, gRPC INVALID_ARGUMENT: a client error, not a server failure). The message names the
    tensor and the problem but never repeats client-supplied strings (a 1 MB id would come
    back 1 MB long), e.g. ``unknown article_id (4 bytes)``, ``candidates: id 99 outside
    [0, 40)``.
    """


def candidate_width(
    candidates: int,
    served_articles: int,
    repurchase_length: int,
    history_candidates: bool,
    copurchase_candidates: int = 0,
    popular_candidates: int = 0,
) -> int:
    """C, the width of the ``candidates`` tensor: the union of the candidate sources
    (``inference.sources``) in order ANN, history, co-purchase, popular.

    The ANN part is ``min(candidates, served_articles)`` wide (FAISS returns at most the index
    size); the history part is R (the repurchase list) wide when history candidates are on;
    co-purchase and popular are as wide as asked (0 = off).
    """
    return (
        min(candidates, served_articles)
        + (repurchase_length if history_candidates else 0)
        + copurchase_candidates
        + popular_candidates
    )


class Step(ABC):
    """One serving step: named numpy tensors in, named numpy tensors out.

    ``inputs`` / ``outputs`` are the Triton tensor names (``schema.T_*``) in config order;
    ``__call__`` raises :class:`RequestError` for a request it cannot serve.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]]

    @abstractmethod
    def __call__(self, tensors: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run on a batch: every input (B, ...) -> every output (B, ...)."""

    @classmethod
    @abstractmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> Step:
        """Load from a version directory with the model's config.pbtxt ``parameters``."""


# Step model name -> "module:class" of its step, imported on first use.
STEP_CLASSES: Final[dict[str, str]] = {
    s.TRITON_QUERY_TOWER: "shoprec.serving.query_tower:QueryTowerStep",
    s.TRITON_RETRIEVAL: "shoprec.serving.retrieval:RetrievalStep",
    s.TRITON_RANKING: "shoprec.serving.ranking:RankingStep",
    s.TRITON_SIMILAR_ITEMS: "shoprec.serving.similar_items:SimilarItemsStep",
    s.TRITON_ARTICLE_ENCODER: "shoprec.serving.article_encoder:ArticleEncoderStep",
}


def step_class(name: str) -> type[Step]:
    """The :class:`Step` subclass serving the step model ``name`` (its module is imported).

    Raises:
        ArtifactError: ``name`` is not a step model.
    """
    if name not in STEP_CLASSES:
        raise ArtifactError(f"unknown step {name!r}, expected one of {sorted(STEP_CLASSES)}")
    module, cls = STEP_CLASSES[name].split(":")
    step: type[Step] = getattr(importlib.import_module(module), cls)
    return step


# ---- Triton glue (the generated model.py calls these two) -----------------------------------


def step_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """The ``parameters`` of a model config (Triton's JSON form) as ``{key: string_value}``."""
    return {k: str(v["string_value"]) for k, v in model_config.get("parameters", {}).items()}


def configure_threads(threads: int) -> None:
    """Set torch intra-op and FAISS OpenMP threads of this process (one Triton instance), for
    whichever of the two the loaded step imported."""
    if threads < 1:
        raise ValueError(f"{P_THREADS} must be >= 1, got {threads}")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)


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
    if name not in STEP_CLASSES:
        raise ArtifactError(
            f"{version_dir}: parameter {P_STEP!r} is {name!r}, expected one of "
            f"{sorted(STEP_CLASSES)}"
        )
    threads = int_param(params, P_THREADS)
    step = step_class(name).from_parameters(version_dir, params)
    if set_threads:
        configure_threads(threads)
    return step


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
    response (``pb_utils.TritonError`` with the message and code ``INVALID_ARG``). Other
    exceptions propagate (Triton then fails the whole batch and logs the traceback).

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
    results: list[dict[str, npt.NDArray[Any]] | RequestError]
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
                pb_utils.InferenceResponse(
                    output_tensors=[],
                    error=pb_utils.TritonError(str(res), pb_utils.TritonError.INVALID_ARG),
                )
            )
        else:
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, res[name]) for name in step.outputs]
                )
            )
    return responses


def _concat(
    arrays: list[dict[str, npt.NDArray[Any]]], names: Sequence[str]
) -> dict[str, npt.NDArray[Any]]:
    if len(arrays) == 1:
        return arrays[0]
    try:
        return {n: np.concatenate([a[n] for a in arrays]) for n in names}
    except ValueError as exc:  # requests whose non-batch dims differ
        raise RequestError(f"requests cannot be batched together: {exc}") from exc


def _split(
    outputs: dict[str, npt.NDArray[Any]], sizes: list[int]
) -> list[dict[str, npt.NDArray[Any]]]:
    bounds = np.cumsum([0, *sizes])
    return [
        {n: v[bounds[i] : bounds[i + 1]] for n, v in outputs.items()} for i in range(len(sizes))
    ]


# ---- validation and loading helpers ----------------------------------------------------------


def batch_size_of(tensors: Mapping[str, npt.NDArray[Any]]) -> int:
    batch = None
    for name, x in tensors.items():
        if x.ndim != 2:
            raise RequestError(f"{name}: expected a 2-D (B, ...) tensor, got shape {x.shape}")
        if batch is not None and x.shape[0] != batch:
            raise RequestError(f"{name}: batch size {x.shape[0]} differs from {batch}")
        batch = x.shape[0]
    return int(batch or 0)


def check_width(name: str, x: npt.NDArray[Any], width: int) -> None:
    if x.shape[1] != width:
        raise RequestError(f"{name}: expected width {width}, got shape {x.shape}")


def check_range(name: str, x: npt.NDArray[Any], upper: int, lower: int = 0) -> None:
    if x.size and (x.min() < lower or x.max() >= upper):
        bad = x[(x < lower) | (x >= upper)].flat[0]
        raise RequestError(f"{name}: id {bad} outside [{lower}, {upper})")


def check_sparse(name: str, x: npt.NDArray[Any], cards: Sequence[int]) -> None:
    for j, card in enumerate(cards):
        check_range(f"{name}[:, {j}]", x[:, j], card)


def as_int64(x: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    return np.ascontiguousarray(x, dtype=np.int64)


def as_float32(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return np.ascontiguousarray(x, dtype=np.float32)


def load_array(path: Path) -> npt.NDArray[Any]:
    if not path.exists():
        raise ArtifactError(f"serving file not found: {path} (export the Triton repository first)")
    array: npt.NDArray[Any] = np.load(path, allow_pickle=False)
    return array


def int_param(params: Mapping[str, str], key: str) -> int:
    try:
        return int(_param(params, key))
    except ValueError as exc:
        raise ArtifactError(f"parameter {key!r}: {params[key]!r} is not an integer") from exc


def ranker_param(params: Mapping[str, str]) -> RankerKind:
    value = _param(params, P_RANKER)
    try:
        return RankerKind(value)
    except ValueError as exc:
        raise ArtifactError(
            f"parameter {P_RANKER!r}: {value!r} is not one of {[k.value for k in RankerKind]}"
        ) from exc


def bool_param(params: Mapping[str, str], key: str) -> bool:
    value = _param(params, key)
    if value not in ("true", "false"):
        raise ArtifactError(f"parameter {key!r}: {value!r} is not true/false")
    return value == "true"


def _param(params: Mapping[str, str], key: str) -> str:
    if key not in params:
        raise ArtifactError(f"model config has no parameter {key!r} (got {sorted(params)})")
    return params[key]
