"""The gateway's Triton client: builds the request tensors of the serving contract, decodes the
ranked outputs, and maps every failure to :class:`~shoprec.gateway.deps.UpstreamUnavailableError`.

The tensor names, dtypes and shapes are those of :mod:`shoprec.schema` ("online serving
contract"): B = queries in a batch, Fc / Fdc = customer sparse / dense widths, N = history
length, K = the exported maximum k.

Example::

    recommender = TritonRecommender.from_settings(Settings())  # inside a running event loop
    ranked = await recommender.similar(["0108775015"], k=12)
    ranked.ids[0], ranked.scores[0]  # best first, padding dropped
    await recommender.close()
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from shoprec import schema
from shoprec.gateway.deps import RankedBatch, UpstreamUnavailableError
from shoprec.gateway.settings import Settings

# Inputs of the ``recommend`` ensemble: name -> (Triton datatype, numpy dtype). Shapes (B, ...).
RECOMMEND_INPUTS: Final[Mapping[str, tuple[str, np.dtype[Any]]]] = {
    name: (schema.TENSORS[name].triton, np.dtype(schema.TENSORS[name].numpy))
    for name in schema.ENCODED_CUSTOMER_FEATURES
}
RANKED_OUTPUTS: Final = (schema.T_ARTICLE_IDS, schema.T_SCORES)
SERVED_MODELS: Final = (schema.TRITON_RECOMMEND, schema.TRITON_SIMILAR_ITEMS)
# What the gRPC client raises for an unreachable server, a failed call or a deadline.
_CALL_ERRORS: Final = (InferenceServerException, OSError, TimeoutError)


class InferResultLike(Protocol):
    """The part of ``tritonclient.grpc.InferResult`` the gateway reads."""

    def as_numpy(self, name: str) -> npt.NDArray[Any] | None: ...


class AsyncTritonClient(Protocol):
    """The part of ``tritonclient.grpc.aio.InferenceServerClient`` the gateway calls."""

    async def infer(
        self,
        model_name: str,
        inputs: list[InferInput],
        *,
        outputs: list[InferRequestedOutput] | None = None,
        client_timeout: float | None = None,
    ) -> InferResultLike: ...

    async def is_server_live(self, *, client_timeout: float | None = None) -> bool: ...

    async def is_model_ready(
        self, model_name: str, *, client_timeout: float | None = None
    ) -> bool: ...

    async def close(self) -> None: ...


def recommend_inputs(features: Mapping[str, npt.NDArray[Any]]) -> list[InferInput]:
    """Input tensors of ``recommend`` from a customer batch's encoded features.

    Args:
        features: :data:`shoprec.schema.ENCODED_CUSTOMER_FEATURES` -> arrays (B, width), as
            :meth:`FeatureStore.get_customers` returns them; other keys are ignored. Arrays are
            cast to the contract dtype (INT64 / FP32) where they differ.

    Raises:
        KeyError: a feature is missing.
        ValueError: an array is not 2-d, or the arrays disagree on B.
    """
    inputs = []
    batch = None
    for name, (datatype, dtype) in RECOMMEND_INPUTS.items():
        if name not in features:
            raise KeyError(f"recommend input {name!r} missing from features {sorted(features)}")
        array = np.ascontiguousarray(features[name], dtype=dtype)
        if array.ndim != 2 or (batch is not None and array.shape[0] != batch):
            raise ValueError(
                f"recommend input {name!r} has shape {array.shape}; expected (B={batch}, width)"
            )
        batch = array.shape[0]
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def similar_inputs(article_ids: Sequence[str]) -> list[InferInput]:
    """The BYTES (B, 1) ``article_id`` input of ``similar_items`` (UTF-8 encoded ids)."""
    array = np.array([article_id.encode() for article_id in article_ids], dtype=np.object_)
    array = array.reshape(-1, 1)
    tensor = InferInput(schema.T_ARTICLE_ID, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return [tensor]


def decode_ranked(result: InferResultLike, k: int, model: str) -> RankedBatch:
    """The first k real results of each row of a ranked response.

    ``article_ids`` is BYTES (B, K) and ``scores`` FP32 (B, K), best first; entries whose id is
    ``b""`` or whose score is not finite (``-inf``) are padding and are dropped.

    Raises:
        UpstreamUnavailableError: an output is missing or the two disagree in shape.
    """
    ids = result.as_numpy(schema.T_ARTICLE_IDS)
    scores = result.as_numpy(schema.T_SCORES)
    if ids is None or scores is None or ids.ndim != 2 or ids.shape != scores.shape:
        raise UpstreamUnavailableError(
            f"{model}: expected outputs {RANKED_OUTPUTS} of one shape (B, K), got "
            f"{None if ids is None else ids.shape} and {None if scores is None else scores.shape}"
        )
    batch_ids: list[list[str]] = []
    batch_scores: list[list[float]] = []
    for row_ids, row_scores in zip(ids.tolist(), scores.tolist(), strict=True):
        kept_ids: list[str] = []
        kept_scores: list[float] = []
        for article_id, score in zip(row_ids, row_scores, strict=True):
            if article_id and math.isfinite(score):
                kept_ids.append(article_id.decode())
                kept_scores.append(score)
                if len(kept_ids) == k:
                    break
        batch_ids.append(kept_ids)
        batch_scores.append(kept_scores)
    return RankedBatch(batch_ids, batch_scores)


class TritonRecommender:
    """:class:`~shoprec.gateway.deps.Recommender` over Triton's gRPC API.

    Args:
        client: an ``InferenceServerClient`` from ``tritonclient.grpc.aio`` (or a fake).
        timeout_s: deadline of every call in seconds (gRPC ``client_timeout``).
    """

    def __init__(self, client: AsyncTritonClient, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._outputs = [InferRequestedOutput(name) for name in RANKED_OUTPUTS]

    @classmethod
    def from_settings(cls, settings: Settings) -> TritonRecommender:
        """A client of ``settings.triton_url``. Call it inside the event loop that will use it
        (the app's lifespan): the gRPC channel binds to the running loop. Connects lazily."""
        client: Any = InferenceServerClient(url=settings.triton_url)
        return cls(client, settings.triton_timeout_s)

    async def recommend(self, features: Mapping[str, npt.NDArray[Any]], k: int) -> RankedBatch:
        """Top-k of the ``recommend`` ensemble for B customers; see :func:`recommend_inputs`."""
        return await self._ranked(schema.TRITON_RECOMMEND, recommend_inputs(features), k)

    async def similar(self, article_ids: Sequence[str], k: int) -> RankedBatch:
        """Top-k of ``similar_items`` for B articles."""
        return await self._ranked(schema.TRITON_SIMILAR_ITEMS, similar_inputs(article_ids), k)

    async def ready(self) -> bool:
        """True when the server is live and ``recommend`` and ``similar_items`` are ready."""
        try:
            if not await self._client.is_server_live(client_timeout=self._timeout_s):
                return False
            for model in SERVED_MODELS:
                if not await self._client.is_model_ready(model, client_timeout=self._timeout_s):
                    return False
        except _CALL_ERRORS:
            return False
        return True

    async def close(self) -> None:
        """Close the gRPC channel."""
        await self._client.close()

    async def _ranked(self, model: str, inputs: list[InferInput], k: int) -> RankedBatch:
        try:
            result = await self._client.infer(
                model, inputs, outputs=self._outputs, client_timeout=self._timeout_s
            )
        except _CALL_ERRORS as error:
            raise UpstreamUnavailableError(f"{model}: {error}") from error
        return decode_ranked(result, k, model)
