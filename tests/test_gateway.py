"""Tests for shoprec.gateway: routes over a fake feature store and a fake Triton gRPC client.

The recommender in most tests is the real :class:`TritonRecommender` over
:class:`FakeTritonClient`, which answers with real ``tritonclient`` ``InferResult`` objects
padded to the exported K, so tensor building, padding, slicing and error mapping run for real.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from tritonclient.grpc import (
    InferInput,
    InferRequestedOutput,
    InferResult,
    service_pb2,
    service_pb2_grpc,
)
from tritonclient.utils import (
    InferenceServerException,
    deserialize_bytes_tensor,
    serialize_byte_tensor,
)
from typing_extensions import override

from shoprec import schema
from shoprec.gateway import Settings, create_app
from shoprec.gateway.deps import RankedBatch, UpstreamUnavailableError
from shoprec.gateway.models import Article, Item
from shoprec.gateway.triton import (
    SERVED_MODELS,
    TritonRecommender,
    decode_ranked,
    recommend_inputs,
    similar_inputs,
)

EXPORTED_K = 100
ITEM_DISPLAY_FIELDS = (schema.NAME, *schema.ARTICLE_ATTRIBUTES)
RECOMMEND_PATH = "/v1/customers/{customer_id}/recommendations"
SIMILAR_PATH = "/v1/articles/{article_id}/similar"
ARTICLE_PATH = "/v1/articles/{article_id}"


def display(article_id: str) -> dict[str, str | None]:
    """Display fields of a catalogue article: every field names its article."""
    fields: dict[str, str | None] = {
        field: f"{field} of {article_id}" for field in ITEM_DISPLAY_FIELDS
    }
    fields[schema.DESCRIPTION] = f"about {article_id}"
    return fields


CATALOGUE = {article_id: display(article_id) for article_id in ("a1", "a2", "a3", "a4", "a5")}
POPULAR = ["a4", "a2", "a5", "a1"]
KNOWN_CUSTOMER = "c1"
CUSTOMER_FEATURES: dict[str, np.ndarray] = {
    schema.T_CUSTOMER_SPARSE: np.array([3, 0, 7], dtype=np.int64),
    schema.T_CUSTOMER_DENSE: np.linspace(-1, 1, len(schema.CUSTOMER_DENSE), dtype=np.float32),
    schema.T_HIST_IDS: np.array([5, 2, 0, 0], dtype=np.int64),
    schema.T_HIST_COUNTS: np.array([3, 1, 0, 0], dtype=np.float32),
    schema.T_HIST_LAST_DAYS: np.array([2, 9, 0, 0], dtype=np.float32),
    schema.T_HIST_FIRST_DAYS: np.array([30, 9, 0, 0], dtype=np.float32),
    schema.T_REPURCHASE_IDS: np.array([5, 2, 7, 0, 0, 0], dtype=np.int64),
    schema.T_REPURCHASE_COUNTS: np.array([3, 1, 1, 0, 0, 0], dtype=np.float32),
}
# Best first; "zz" is an article the model knows but the store does not.
RECOMMENDED = [("a3", 2.5), ("a1", 1.25), ("zz", 0.75), ("a2", -0.5)]
SIMILAR = [("a5", 0.875), ("a4", 0.625)]  # exact in FP32


# ---- fakes ----------------------------------------------------------------------------------
class FakeStore:
    """In-memory FeatureStore. ``errors[method]`` makes a method raise; a method named in
    ``blocking`` waits until ``release`` is set (at most 5 s), standing in for a hung store."""

    def __init__(self) -> None:
        self.customers = {KNOWN_CUSTOMER: CUSTOMER_FEATURES}
        self.errors: dict[str, Exception] = {}
        self.blocking: set[str] = set()
        self.release = threading.Event()
        self.calls: list[tuple[str, Any]] = []
        self.snapshot: set[str] = {KNOWN_CUSTOMER}  # customers of the materialized snapshot
        self.refreshes = 0
        # Shopper-state exclusions (not_interested + bought set) by customer.
        self.shopper: dict[str, frozenset[str]] = {}

    def _enter(self, method: str, argument: Any) -> None:
        self.calls.append((method, argument))
        if method in self.blocking:
            self.release.wait(timeout=5)
        if method in self.errors:
            raise self.errors[method]

    def get_customers(self, ids: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self._enter("get_customers", list(ids))
        found = np.array([customer_id in self.customers for customer_id in ids])
        rows = [self.customers.get(customer_id, CUSTOMER_FEATURES) for customer_id in ids]
        features = {
            name: np.stack([row[name] for row in rows]) for name in schema.ENCODED_CUSTOMER_FEATURES
        }
        return found, features

    def get_articles(self, ids: Sequence[str]) -> list[dict[str, str | None] | None]:
        self._enter("get_articles", list(ids))
        return [CATALOGUE.get(article_id) for article_id in ids]

    def all_articles(self) -> dict[str, dict[str, str | None]]:
        self._enter("all_articles", None)
        return CATALOGUE

    def popular(self, k: int) -> list[str]:
        self._enter("popular", k)
        return POPULAR[:k]

    def ping(self) -> None:
        self._enter("ping", None)

    def known_customers(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([customer_id in self.snapshot for customer_id in ids], dtype=bool)

    # The shopper state (not_interested, sessions) is tested over the real store in
    # tests/test_nrt.py; not recorded in ``calls`` so the call lists here stay about Feast.
    def excluded(self, customer_id: str) -> frozenset[str]:
        return self.shopper.get(customer_id, frozenset())

    def session_views(self, session_id: str) -> list[str]:
        return []

    def refresh(self) -> bool:
        self.refreshes += 1
        return False


def ranked_response(
    rows: list[list[tuple[str, float]]], width: int = EXPORTED_K
) -> service_pb2.ModelInferResponse:
    """Triton's gRPC answer of a ranked model: rows padded to ``width`` with b"" and -inf."""
    ids = np.full((len(rows), width), b"", dtype=np.object_)
    scores = np.full((len(rows), width), -np.inf, dtype=np.float32)
    for b, row in enumerate(rows):
        for j, (article_id, score) in enumerate(row):
            ids[b, j], scores[b, j] = article_id.encode(), score
    response = service_pb2.ModelInferResponse()
    for name, datatype, array in (
        (schema.T_ARTICLE_IDS, "BYTES", ids),
        (schema.T_SCORES, "FP32", scores),
    ):
        output = response.outputs.add()
        output.name, output.datatype = name, datatype
        output.shape.extend(array.shape)
    response.raw_output_contents.extend([serialize_byte_tensor(ids).item(), scores.tobytes()])
    return response


def ranked_result(rows: list[list[tuple[str, float]]], width: int = EXPORTED_K) -> InferResult:
    """:func:`ranked_response` as the client library hands it over."""
    return InferResult(ranked_response(rows, width))


class FakeTritonClient:
    """Stands in for ``tritonclient.grpc.aio.InferenceServerClient``: records every infer call
    and answers with :func:`ranked_result`. ``error`` is raised by every call; ``delay_s`` makes
    ``infer`` sleep first (ignoring ``client_timeout``, as a stuck server would)."""

    def __init__(self) -> None:
        self.responses = {
            schema.TRITON_RECOMMEND: RECOMMENDED,
            schema.TRITON_SIMILAR_ITEMS: SIMILAR,
        }
        self.error: Exception | None = None
        self.delay_s = 0.0
        self.live = True
        self.ready_models = set(SERVED_MODELS)
        self.calls: list[tuple[str, list[InferInput], list[str], float | None]] = []
        self.closed = False

    async def infer(
        self,
        model_name: str,
        inputs: list[InferInput],
        *,
        outputs: list[InferRequestedOutput] | None = None,
        client_timeout: float | None = None,
    ) -> InferResult:
        names = [output.name() for output in outputs or []]
        self.calls.append((model_name, inputs, names, client_timeout))
        await anyio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return ranked_result([self.responses[model_name]] * inputs[0].shape()[0])

    async def is_server_live(self, *, client_timeout: float | None = None) -> bool:
        if self.error is not None:
            raise self.error
        return self.live

    async def is_model_ready(self, model_name: str, *, client_timeout: float | None = None) -> bool:
        return model_name in self.ready_models

    async def close(self) -> None:
        self.closed = True


class FakeTritonServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's gRPC service, just enough of it: live, both models ready, ranked answers.
    ``delay_s`` makes ``ModelInfer`` wait first (until ``release`` is set)."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.release = threading.Event()
        self.requests: list[service_pb2.ModelInferRequest] = []

    @override
    def ServerLive(self, request: Any, context: Any) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    @override
    def ModelReady(self, request: Any, context: Any) -> service_pb2.ModelReadyResponse:
        return service_pb2.ModelReadyResponse(ready=request.name in SERVED_MODELS)

    @override
    def ModelInfer(
        self, request: service_pb2.ModelInferRequest, context: Any
    ) -> service_pb2.ModelInferResponse:
        self.requests.append(request)
        self.release.wait(self.delay_s)
        rows = {schema.TRITON_RECOMMEND: RECOMMENDED, schema.TRITON_SIMILAR_ITEMS: SIMILAR}
        return ranked_response([rows[request.model_name]] * request.inputs[0].shape[0])


def tensor_values(tensor: InferInput) -> np.ndarray:
    """The array an InferInput sends on the wire (its raw content, decoded)."""
    raw = tensor._get_content()  # what the gRPC request carries
    if tensor.datatype() == "BYTES":
        values = deserialize_bytes_tensor(raw)
    else:
        values = np.frombuffer(
            raw, dtype={"INT64": np.int64, "FP32": np.float32}[tensor.datatype()]
        )
    return values.reshape(tensor.shape())


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# ---- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def triton() -> FakeTritonClient:
    return FakeTritonClient()


@pytest.fixture
def make_client(store: FakeStore, triton: FakeTritonClient) -> Iterator[Callable[..., TestClient]]:
    """Builds started apps over the ``store`` and ``triton`` fakes with the given settings."""
    with ExitStack() as stack:

        def make(settings: Settings | None = None) -> TestClient:
            app = create_app(
                settings or Settings(),
                store_factory=lambda _: store,
                recommender_factory=lambda s: TritonRecommender(triton, s.triton_timeout_s),
            )
            return stack.enter_context(TestClient(app))

        yield make
        store.release.set()  # let an abandoned store thread finish before shutdown


@pytest.fixture
def triton_server() -> Iterator[tuple[str, FakeTritonServicer]]:
    """A :class:`FakeTritonServicer` on a loopback port: (``host:port``, servicer)."""
    servicer = FakeTritonServicer()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    servicer.release.set()
    server.stop(grace=None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def answer(response: Any) -> dict[str, Any]:
    """A list answer's JSON without its ``recommendation_id``, which must be 32 hex digits."""
    body: dict[str, Any] = response.json()
    recommendation_id = body.pop("recommendation_id")
    assert len(recommendation_id) == 32 and int(recommendation_id, 16) >= 0
    return body


def expected_item(article_id: str, score: float | None) -> dict[str, Any]:
    fields = CATALOGUE.get(article_id, {})
    return {
        schema.ARTICLE_ID: article_id,
        "score": score,
        **{field: fields.get(field) for field in ITEM_DISPLAY_FIELDS},
    }


# ---- personalised and cold-start recommendations ---------------------------------------------
def test_personalised_recommendations_are_sliced_to_k_in_model_order(
    client: TestClient, triton: FakeTritonClient
) -> None:
    response = client.get(f"/v1/customers/{KNOWN_CUSTOMER}/recommendations", params={"k": 2})
    assert response.status_code == 200
    assert answer(response) == {
        "customer_id": KNOWN_CUSTOMER,
        "source": "personalised",
        "items": [expected_item("a3", 2.5), expected_item("a1", 1.25)],
    }
    [(model, inputs, outputs, timeout)] = triton.calls
    assert model == schema.TRITON_RECOMMEND
    assert outputs == [schema.T_ARTICLE_IDS, schema.T_SCORES]
    assert timeout == Settings().triton_timeout_s
    sent = {tensor.name(): tensor_values(tensor) for tensor in inputs}
    assert list(sent) == list(schema.ENCODED_CUSTOMER_FEATURES)
    for name, row in CUSTOMER_FEATURES.items():
        np.testing.assert_array_equal(sent[name], row[None, :])


def test_padding_is_dropped_and_unknown_display_fields_are_null(client: TestClient) -> None:
    # Default k (12) exceeds the 4 real results; the other 96 of K are padding.
    response = client.get(f"/v1/customers/{KNOWN_CUSTOMER}/recommendations")
    assert response.status_code == 200
    assert response.json()["items"] == [expected_item(a, s) for a, s in RECOMMENDED]
    assert response.json()["items"][2]["name"] is None  # "zz" is not in the store


def test_unknown_customer_gets_popular_list_without_scores(
    client: TestClient, store: FakeStore, triton: FakeTritonClient
) -> None:
    response = client.get("/v1/customers/stranger/recommendations", params={"k": 3})
    assert response.status_code == 200
    assert answer(response) == {
        "customer_id": "stranger",
        "source": "popular",
        "items": [expected_item(article_id, None) for article_id in POPULAR[:3]],
    }
    assert triton.calls == []
    assert store.calls == [
        ("get_customers", ["stranger"]),
        ("popular", 3),
        ("get_articles", POPULAR[:3]),
    ]


def test_known_customer_with_no_ranked_articles_falls_back_to_popular(
    client: TestClient, triton: FakeTritonClient
) -> None:
    triton.responses[schema.TRITON_RECOMMEND] = []  # e.g. every candidate excluded
    response = client.get(f"/v1/customers/{KNOWN_CUSTOMER}/recommendations", params={"k": 2})
    assert response.status_code == 200
    assert response.json()["source"] == "popular"
    assert response.json()["items"] == [expected_item(a, None) for a in POPULAR[:2]]
    assert len(triton.calls) == 1


def test_bought_articles_leave_the_ranked_list_and_popular_fills_it(
    client: TestClient, store: FakeStore
) -> None:
    store.shopper[KNOWN_CUSTOMER] = frozenset({"a3", "a1"})  # e.g. bought beyond N slots
    response = client.get(f"/v1/customers/{KNOWN_CUSTOMER}/recommendations", params={"k": 3})
    assert response.status_code == 200
    assert response.json()["source"] == "personalised"
    # The ensemble's other two, then the popular list without the bought and listed ones.
    assert response.json()["items"] == [
        expected_item("zz", 0.75),
        expected_item("a2", -0.5),
        expected_item("a4", None),
    ]
    # The ensemble lists only 4: the list is as long as without exclusions, never longer.
    response = client.get(f"/v1/customers/{KNOWN_CUSTOMER}/recommendations", params={"k": 12})
    assert [i["article_id"] for i in response.json()["items"]] == ["zz", "a2", "a4", "a5"]


def test_bought_articles_leave_the_popular_fallback(client: TestClient, store: FakeStore) -> None:
    store.shopper["stranger"] = frozenset({"a4", "a5"})
    response = client.get("/v1/customers/stranger/recommendations", params={"k": 2})
    assert response.status_code == 200
    assert response.json()["source"] == "popular"
    assert response.json()["items"] == [expected_item(a, None) for a in ("a2", "a1")]


@pytest.mark.parametrize("path", [RECOMMEND_PATH, SIMILAR_PATH])
@pytest.mark.parametrize("k", ["0", "101", "twelve", "1.5"])
def test_k_outside_1_to_max_k_is_422(client: TestClient, path: str, k: str) -> None:
    url = path.format(customer_id=KNOWN_CUSTOMER, article_id="a1")
    response = client.get(url, params={"k": k})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "k"]


def test_k_bounds_come_from_settings(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Settings(max_k=20, default_k=3))
    url = RECOMMEND_PATH.format(customer_id=KNOWN_CUSTOMER)
    assert client.get(url, params={"k": 21}).status_code == 422
    assert client.get(url, params={"k": 20}).status_code == 200
    assert len(client.get(url).json()["items"]) == 3
    k_param = next(
        param
        for param in client.get("/openapi.json").json()["paths"][
            url.replace(KNOWN_CUSTOMER, "{customer_id}")
        ]["get"]["parameters"]
        if param["name"] == "k"
    )
    assert k_param["schema"]["maximum"] == 20
    assert k_param["schema"]["default"] == 3


# ---- similar items and article display -------------------------------------------------------
def test_similar_articles(client: TestClient, triton: FakeTritonClient) -> None:
    response = client.get("/v1/articles/a1/similar", params={"k": 5})
    assert response.status_code == 200
    assert answer(response) == {
        "article_id": "a1",
        "items": [expected_item(a, s) for a, s in SIMILAR],
    }
    [(model, [tensor], _, _)] = triton.calls
    assert model == schema.TRITON_SIMILAR_ITEMS
    assert (tensor.name(), tensor.datatype(), tensor.shape()) == (
        schema.T_ARTICLE_ID,
        "BYTES",
        [1, 1],
    )
    np.testing.assert_array_equal(tensor_values(tensor), np.array([[b"a1"]], dtype=np.object_))


def test_article_display(client: TestClient) -> None:
    response = client.get("/v1/articles/a2")
    assert response.status_code == 200
    assert response.json() == {schema.ARTICLE_ID: "a2", **CATALOGUE["a2"]}


def summary(article_id: str) -> dict[str, Any]:
    """An article as ``GET /v1/articles`` lists it (no description, no score)."""
    return {
        schema.ARTICLE_ID: article_id,
        **{f: CATALOGUE[article_id][f] for f in ITEM_DISPLAY_FIELDS},
    }


def test_search_matches_word_prefixes_of_the_name(client: TestClient) -> None:
    response = client.get("/v1/articles", params={"q": "A3"})
    assert response.status_code == 200
    assert response.json() == {"total": 1, "items": [summary("a3")]}
    every = client.get("/v1/articles", params={"q": "nam o", "limit": 2}).json()
    assert every == {"total": 5, "items": [summary("a1"), summary("a2")]}
    assert client.get("/v1/articles", params={"q": "ame"}).json() == {"total": 0, "items": []}


def test_browse_by_department_and_product_group(client: TestClient) -> None:
    department = CATALOGUE["a4"][schema.DEPARTMENT]
    group = CATALOGUE["a4"][schema.PRODUCT_GROUP]
    by_department = client.get("/v1/articles", params={"department": department}).json()
    assert by_department == {"total": 1, "items": [summary("a4")]}
    wrong_group = client.get(
        "/v1/articles", params={"department": department, "product_group": "other"}
    ).json()
    assert wrong_group["total"] == 0
    both = client.get("/v1/articles", params={"department": department, "product_group": group})
    assert both.json()["items"] == [summary("a4")]


@pytest.mark.parametrize("limit", ["0", "101"])
def test_search_limit_outside_1_to_100_is_422(client: TestClient, limit: str) -> None:
    assert client.get("/v1/articles", params={"limit": limit}).status_code == 422


def test_departments_list_their_product_groups(client: TestClient) -> None:
    body = client.get("/v1/catalog/departments").json()
    assert [d["department"] for d in body["departments"]] == sorted(
        str(CATALOGUE[a][schema.DEPARTMENT]) for a in CATALOGUE
    )
    first = body["departments"][0]
    assert first == {
        "department": CATALOGUE["a1"][schema.DEPARTMENT],
        "n_articles": 1,
        "product_groups": [
            {"product_group": CATALOGUE["a1"][schema.PRODUCT_GROUP], "n_articles": 1}
        ],
    }


def test_popular_route_is_the_cold_start_list(client: TestClient) -> None:
    body = answer(client.get("/v1/popular", params={"k": 3}))
    assert body == {
        "source": "popular",
        "items": [expected_item(a, None) for a in POPULAR[:3]],
    }


def test_browse_answers_503_when_the_store_fails(client: TestClient, store: FakeStore) -> None:
    store.errors["all_articles"] = OSError("table gone")
    response = client.get("/v1/articles", params={"q": "a1"})
    assert response.status_code == 503
    assert response.json() == {"detail": "feature store unavailable"}


@pytest.mark.parametrize("path", [SIMILAR_PATH, ARTICLE_PATH])
def test_unknown_article_is_404_before_triton(
    client: TestClient, triton: FakeTritonClient, path: str
) -> None:
    response = client.get(path.format(article_id="nope"))
    assert response.status_code == 404
    assert response.json() == {"detail": "article not found"}
    assert triton.calls == []


def test_response_fields_are_the_schema_columns() -> None:
    listed = {schema.ARTICLE_ID, *ITEM_DISPLAY_FIELDS}
    assert set(Item.model_fields) == {*listed, "score"}
    assert set(Article.model_fields) == {*listed, schema.DESCRIPTION}


# ---- upstream failures -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "error", [InferenceServerException("StatusCode.UNAVAILABLE"), ConnectionRefusedError(111)]
)
@pytest.mark.parametrize("path", [RECOMMEND_PATH, SIMILAR_PATH])
def test_triton_failure_is_503(
    client: TestClient, triton: FakeTritonClient, error: Exception, path: str
) -> None:
    triton.error = error
    response = client.get(path.format(customer_id=KNOWN_CUSTOMER, article_id="a1"))
    assert response.status_code == 503
    assert response.json() == {"detail": "recommendation service unavailable"}


def test_recommender_raising_upstream_unavailable_is_503(store: FakeStore) -> None:
    class DownRecommender:
        async def recommend(self, features: Any, k: int) -> RankedBatch:
            raise UpstreamUnavailableError("down")

        async def similar(self, article_ids: Sequence[str], k: int) -> RankedBatch:
            raise UpstreamUnavailableError("down")

        async def ready(self) -> bool:
            return False

        async def close(self) -> None:
            return None

    app = create_app(
        Settings(), store_factory=lambda _: store, recommender_factory=lambda _: DownRecommender()
    )
    with TestClient(app) as client:
        response = client.get("/v1/articles/a1/similar")
    assert response.status_code == 503
    assert response.json() == {"detail": "recommendation service unavailable"}


@pytest.mark.parametrize("path", [RECOMMEND_PATH, SIMILAR_PATH])
def test_stuck_triton_is_503_within_the_timeout(
    make_client: Callable[..., TestClient], triton: FakeTritonClient, path: str
) -> None:
    client = make_client(Settings(triton_timeout_s=0.2))
    triton.delay_s = 10.0
    start = time.perf_counter()
    response = client.get(path.format(customer_id=KNOWN_CUSTOMER, article_id="a1"))
    elapsed = time.perf_counter() - start
    assert response.status_code == 503
    assert response.json() == {"detail": "recommendation service unavailable"}
    assert 0.2 <= elapsed < 0.7


@pytest.mark.parametrize("method", ["get_customers", "popular", "get_articles"])
def test_store_failure_is_503(client: TestClient, store: FakeStore, method: str) -> None:
    store.errors[method] = ConnectionError("redis is down")
    response = client.get("/v1/customers/stranger/recommendations")
    assert response.status_code == 503
    assert response.json() == {"detail": "feature store unavailable"}


@pytest.mark.parametrize("path", [RECOMMEND_PATH, ARTICLE_PATH])
def test_stuck_store_is_503_within_the_timeout(
    make_client: Callable[..., TestClient], store: FakeStore, path: str
) -> None:
    client = make_client(Settings(store_timeout_s=0.2))
    store.blocking = {"get_customers", "get_articles"}
    start = time.perf_counter()
    response = client.get(path.format(customer_id=KNOWN_CUSTOMER, article_id="a1"))
    elapsed = time.perf_counter() - start
    assert response.status_code == 503
    assert response.json() == {"detail": "feature store unavailable"}
    # The store never answers: the bound shows the timeout fired (with room for a busy machine).
    assert 0.2 <= elapsed < 3.0


def test_unreachable_triton_server_is_503_and_not_ready(store: FakeStore) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(triton_url=f"127.0.0.1:{port}", triton_timeout_s=2.0)
    with TestClient(create_app(settings, store_factory=lambda _: store)) as client:
        start = time.perf_counter()
        response = client.get(f"/v1/customers/{KNOWN_CUSTOMER}/recommendations")
        assert time.perf_counter() - start < 2.5
        assert response.status_code == 503
        assert response.json() == {"detail": "recommendation service unavailable"}
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"detail": "recommendation service unavailable"}


def test_over_grpc_with_the_real_triton_client(
    store: FakeStore, triton_server: tuple[str, FakeTritonServicer]
) -> None:
    url, servicer = triton_server
    settings = Settings(triton_url=url, triton_timeout_s=0.3)
    with TestClient(create_app(settings, store_factory=lambda _: store)) as client:
        assert client.get("/readyz").json() == {"status": "ok"}
        response = client.get(f"/v1/customers/{KNOWN_CUSTOMER}/recommendations", params={"k": 3})
        assert response.status_code == 200
        assert response.json()["items"] == [expected_item(a, s) for a, s in RECOMMENDED[:3]]
        [request] = servicer.requests
        assert request.model_name == schema.TRITON_RECOMMEND
        assert [output.name for output in request.outputs] == [
            schema.T_ARTICLE_IDS,
            schema.T_SCORES,
        ]
        assert [tensor.name for tensor in request.inputs] == list(schema.ENCODED_CUSTOMER_FEATURES)
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            expected = CUSTOMER_FEATURES[tensor.name]
            assert list(tensor.shape) == [1, expected.size]
            np.testing.assert_array_equal(np.frombuffer(raw, dtype=expected.dtype), expected)

        servicer.delay_s = 10.0
        start = time.perf_counter()
        response = client.get("/v1/articles/a1/similar")
        assert time.perf_counter() - start < 0.8
        assert response.status_code == 503
        assert response.json() == {"detail": "recommendation service unavailable"}


# ---- health and readiness --------------------------------------------------------------------
def test_healthz_answers_even_when_dependencies_are_down(
    client: TestClient, store: FakeStore, triton: FakeTritonClient
) -> None:
    store.errors["ping"] = ConnectionError("down")
    triton.live = False
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_ok_when_both_dependencies_answer(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("store_up", "live", "ready_models", "detail"),
    [
        (False, True, SERVED_MODELS, "feature store unavailable"),
        (True, False, SERVED_MODELS, "recommendation service unavailable"),
        (True, True, (schema.TRITON_RECOMMEND,), "recommendation service unavailable"),
        (True, True, (schema.TRITON_SIMILAR_ITEMS,), "recommendation service unavailable"),
        (False, False, (), "recommendation service unavailable; feature store unavailable"),
    ],
)
def test_readyz_names_what_is_down(
    client: TestClient,
    store: FakeStore,
    triton: FakeTritonClient,
    store_up: bool,
    live: bool,
    ready_models: tuple[str, ...],
    detail: str,
) -> None:
    if not store_up:
        store.errors["ping"] = ConnectionError("down")
    triton.live, triton.ready_models = live, set(ready_models)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"detail": detail}


def test_readyz_with_a_stuck_store_answers_within_the_timeout(
    make_client: Callable[..., TestClient], store: FakeStore
) -> None:
    client = make_client(Settings(store_timeout_s=0.2))
    store.blocking = {"ping"}
    start = time.perf_counter()
    response = client.get("/readyz")
    assert time.perf_counter() - start < 0.7
    assert response.status_code == 503
    assert response.json() == {"detail": "feature store unavailable"}


# ---- metrics, lifespan, settings -------------------------------------------------------------
def test_metrics_count_requests_by_route_template_and_time_stages(
    make_client: Callable[..., TestClient], triton: FakeTritonClient
) -> None:
    client = make_client(Settings(triton_timeout_s=0.2))
    client.get(f"/v1/customers/{KNOWN_CUSTOMER}/recommendations")
    client.get(f"/v1/customers/{KNOWN_CUSTOMER}/recommendations")
    client.get("/v1/articles/nope/similar")
    client.get("/no/such/route")
    triton.delay_s = 10.0
    client.get("/v1/articles/a1/similar")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)

    def requests(endpoint: str, status: str) -> float:
        labels = frozenset({("endpoint", endpoint), ("method", "GET"), ("status", status)})
        return samples.get(("shoprec_gateway_requests_total", labels), 0.0)

    assert requests(RECOMMEND_PATH, "200") == 2
    assert requests(SIMILAR_PATH, "404") == 1
    assert requests(SIMILAR_PATH, "503") == 1
    assert requests("unmatched", "404") == 1
    assert not any(
        f"/v1/customers/{KNOWN_CUSTOMER}/" in text for text in response.text.splitlines()
    )

    def count(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert count("shoprec_gateway_request_duration_seconds_count", endpoint=RECOMMEND_PATH) == 2
    stage_count = "shoprec_gateway_stage_duration_seconds_count"
    assert count(stage_count, stage="feature_fetch") == 2
    assert count(stage_count, stage="triton_recommend") == 2
    assert count(stage_count, stage="article_display") == 4  # 2 lists + 2 existence checks
    assert count(stage_count, stage="triton_similar") == 1
    assert count(stage_count, stage="popular") == 0
    failures = "shoprec_gateway_stage_failures_total"
    assert count(failures, stage="triton_similar", reason="timeout") == 1


def test_apps_have_separate_registries(make_client: Callable[..., TestClient]) -> None:
    first, second = make_client(), make_client()
    first.get("/healthz")
    labels = frozenset({("endpoint", "/healthz"), ("method", "GET"), ("status", "200")})
    key = ("shoprec_gateway_requests_total", labels)
    assert metric_samples(first.get("/metrics").text)[key] == 1
    assert key not in metric_samples(second.get("/metrics").text)


def test_shutdown_closes_the_triton_client(store: FakeStore, triton: FakeTritonClient) -> None:
    app = create_app(
        Settings(),
        store_factory=lambda _: store,
        recommender_factory=lambda s: TritonRecommender(triton, s.triton_timeout_s),
    )
    with TestClient(app) as client:
        assert client.get("/docs").status_code == 200
        assert not triton.closed
    assert triton.closed


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPREC_TRITON_URL", "triton:9001")
    monkeypatch.setenv("SHOPREC_MAX_K", "50")
    monkeypatch.setenv("SHOPREC_STORE_TIMEOUT_S", "0.05")
    monkeypatch.setenv("SHOPREC_FEATURE_REPO", "/app/models/cj/feature_repo")
    monkeypatch.setenv("SHOPREC_REDIS_URL", "redis:6379")
    settings = Settings()
    assert (settings.triton_url, settings.max_k, settings.store_timeout_s) == (
        "triton:9001",
        50,
        0.05,
    )
    assert (settings.feature_repo, settings.redis_url) == (
        Path("/app/models/cj/feature_repo"),
        "redis:6379",
    )
    assert (settings.default_k, settings.triton_timeout_s) == (12, 1.0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"default_k": 13, "max_k": 12},
        {"triton_timeout_s": 0},
        {"store_timeout_s": -1},
        {"max_k": 0},
    ],
)
def test_invalid_settings_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)


# ---- the Triton client without a server -----------------------------------------------------
def test_recommend_inputs_follow_the_contract() -> None:
    # Wider or narrower dtypes than the contract's: they are cast.
    features: dict[str, np.ndarray] = {
        name: np.stack([row, row + 1]).astype(np.int32 if row.dtype == np.int64 else np.float64)
        for name, row in CUSTOMER_FEATURES.items()
    }
    features["unused"] = np.zeros(2)
    inputs = recommend_inputs(features)
    assert [(t.name(), t.datatype(), t.shape()) for t in inputs] == [
        (schema.T_CUSTOMER_SPARSE, "INT64", [2, 3]),
        (schema.T_CUSTOMER_DENSE, "FP32", [2, len(schema.CUSTOMER_DENSE)]),
        (schema.T_HIST_IDS, "INT64", [2, 4]),
        (schema.T_HIST_COUNTS, "FP32", [2, 4]),
        (schema.T_HIST_LAST_DAYS, "FP32", [2, 4]),
        (schema.T_HIST_FIRST_DAYS, "FP32", [2, 4]),
        (schema.T_REPURCHASE_IDS, "INT64", [2, 6]),
        (schema.T_REPURCHASE_COUNTS, "FP32", [2, 6]),
    ]
    for tensor in inputs:
        np.testing.assert_allclose(tensor_values(tensor), features[tensor.name()])


def test_recommend_inputs_reject_missing_and_ragged_features() -> None:
    features = {name: row[None, :] for name, row in CUSTOMER_FEATURES.items()}
    with pytest.raises(KeyError, match="'hist_ids' missing"):
        recommend_inputs({k: v for k, v in features.items() if k != schema.T_HIST_IDS})
    ragged = {**features, schema.T_HIST_COUNTS: np.zeros((2, 4), dtype=np.float32)}
    with pytest.raises(ValueError, match=r"'hist_counts' has shape \(2, 4\); expected \(B=1"):
        recommend_inputs(ragged)
    with pytest.raises(ValueError, match=r"'customer_sparse' has shape \(3,\)"):
        recommend_inputs({**features, schema.T_CUSTOMER_SPARSE: np.zeros(3, dtype=np.int64)})


def test_similar_inputs_are_bytes_b_by_1() -> None:
    [tensor] = similar_inputs(["0108775015", "é9"])
    assert (tensor.name(), tensor.datatype(), tensor.shape()) == (
        schema.T_ARTICLE_ID,
        "BYTES",
        [2, 1],
    )
    np.testing.assert_array_equal(
        tensor_values(tensor), np.array([[b"0108775015"], ["é9".encode()]], dtype=np.object_)
    )


def test_decode_ranked_slices_each_row_and_drops_padding() -> None:
    result = ranked_result([RECOMMENDED, [("b1", 3.0)], []], width=8)
    assert decode_ranked(result, 2, "m") == RankedBatch(
        [["a3", "a1"], ["b1"], []], [[2.5, 1.25], [3.0], []]
    )
    assert decode_ranked(result, 100, "m").ids[0] == [a for a, _ in RECOMMENDED]


def test_decode_ranked_rejects_a_response_without_scores() -> None:
    response = service_pb2.ModelInferResponse()
    output = response.outputs.add()
    output.name, output.datatype = schema.T_ARTICLE_IDS, "BYTES"
    output.shape.extend([1, 1])
    response.raw_output_contents.append(
        serialize_byte_tensor(np.array([[b"a1"]], dtype=object)).item()
    )
    with pytest.raises(UpstreamUnavailableError, match=r"recommend: expected outputs"):
        decode_ranked(InferResult(response), 12, schema.TRITON_RECOMMEND)


def test_triton_recommender_maps_call_errors(triton: FakeTritonClient) -> None:
    recommender = TritonRecommender(triton, timeout_s=0.5)
    triton.error = InferenceServerException(
        "Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED"
    )
    with pytest.raises(UpstreamUnavailableError, match="similar_items: .*Deadline Exceeded"):
        asyncio.run(recommender.similar(["a1"], 3))
    assert asyncio.run(recommender.ready()) is False
    triton.error = None
    assert asyncio.run(recommender.ready()) is True
    assert asyncio.run(recommender.similar(["a1"], 1)) == RankedBatch([["a5"]], [[0.875]])
    assert [timeout for *_, timeout in triton.calls] == [0.5, 0.5]


class InMemoryArticlesStore(FakeStore):
    """A store whose article reads are in-memory lookups (like ``ArticleDisplay.MEMORY``)
    when ``articles_in_memory``; records whether each read ran on the event loop."""

    def __init__(self, in_memory: bool) -> None:
        super().__init__()
        self.articles_in_memory = in_memory
        self.on_event_loop: list[bool] = []

    def get_articles(self, ids: Sequence[str]) -> list[dict[str, str | None] | None]:
        try:
            asyncio.get_running_loop()  # raises in a worker thread
            self.on_event_loop.append(True)
        except RuntimeError:
            self.on_event_loop.append(False)
        return super().get_articles(ids)


@pytest.fixture
def memory_client(
    triton: FakeTritonClient, request: pytest.FixtureRequest
) -> Iterator[tuple[TestClient, InMemoryArticlesStore]]:
    store = InMemoryArticlesStore(getattr(request, "param", True))
    app = create_app(
        Settings(),
        store_factory=lambda _: store,
        recommender_factory=lambda s: TritonRecommender(triton, s.triton_timeout_s),
    )
    with TestClient(app) as client:
        yield client, store


@pytest.mark.parametrize("memory_client", [True, False], indirect=True, ids=["memory", "store"])
def test_in_memory_articles_are_read_on_the_event_loop_with_metrics(
    memory_client: tuple[TestClient, InMemoryArticlesStore],
) -> None:
    client, store = memory_client
    inline = store.articles_in_memory
    response = client.get("/v1/articles/a1")
    assert response.status_code == 200
    assert response.json() == {schema.ARTICLE_ID: "a1", **CATALOGUE["a1"]}
    assert client.get("/v1/articles/nope").status_code == 404
    assert client.get("/v1/customers/stranger/recommendations").status_code == 200
    assert store.on_event_loop == [inline] * 3  # in memory: no worker thread; else one each
    samples = metric_samples(client.get("/metrics").text)
    stage = frozenset({("stage", "article_display")})
    assert samples[("shoprec_gateway_stage_duration_seconds_count", stage)] == 3


def test_in_memory_article_failure_is_503(
    memory_client: tuple[TestClient, InMemoryArticlesStore],
) -> None:
    client, store = memory_client
    store.errors["get_articles"] = KeyError("corrupt table")
    response = client.get("/v1/articles/a1/similar")
    assert response.status_code == 503
    assert response.json() == {"detail": "feature store unavailable"}
    samples = metric_samples(client.get("/metrics").text)
    labels = frozenset({("stage", "article_display"), ("reason", "error")})
    assert samples[("shoprec_gateway_stage_failures_total", labels)] == 1
