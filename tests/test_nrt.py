"""Near-real-time over real processes: tritonserver, the gateway and the feature updater under
one ``ServingStack`` (the tiny trained run of ``test_export.tiny_run``, exported with
``exclude_purchased`` and materialized through the CLI), events posted over HTTP.

Each effect is polled for (at most :data:`EFFECT_WITHIN_S`): how fast it arrives is measured by
``shoprec bench --nrt``, not asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from servers import TEST_KEYS, WRITE_KEY, GatewayProcess
from shoprec import schema as s
from shoprec.artifacts import WORKFLOW_FILE
from shoprec.cli import app
from shoprec.config import Paths
from shoprec.data.ingest.canonical import read_canonical
from shoprec.export import ExportConfig
from shoprec.features.workflow import OOV_ID, Workflow
from shoprec.featurestore import OnlineFeatures
from shoprec.featurestore.shopper import open_shopper_state
from shoprec.featurestore.store import repo_dir
from shoprec.featurestore.tables import ONLINE_DATA_DIR, read_customer_ids
from shoprec.featurestore.versions import current_dir
from shoprec.serving.article_delta import open_article_delta
from shoprec.serving.repository import read_repository_manifest
from shoprec.serving.stack import ServingStack, StackConfig
from shoprec.serving.tritonserver import free_port
from test_export import TinyRun, tiny_run

NAME = "syn"
FIRST_ID = OOV_ID + 1  # vocabulary ids below are padding (0) and unknown (1)
EXPORT = ExportConfig(max_k=12, candidates=20, max_batch_size=8, exclude_purchased=True)
EFFECT_WITHIN_S = 20.0
WRITE = {"X-API-Key": WRITE_KEY}
K = 8
EXPORT_HISTORY = 16  # the tiny run's history length N (test_pipeline.FAST)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def stack(tiny: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    root = tmp_path_factory.mktemp("nrt")
    data_root, models_root = tiny.dataset_dir.parents[1], root / "models"
    paths = Paths.for_name(NAME, data_root, models_root)
    shutil.copytree(tiny.models_dir, paths.models_dir)
    (root / "export.json").write_text(json.dumps(EXPORT.to_dict()))
    repo = root / "triton_repo"
    common = ("--name", NAME, "--data-root", str(data_root), "--models-root", str(models_root))
    runner = CliRunner()
    for args in (
        (
            "export",
            *common,
            "--triton-repo",
            str(repo),
            "--export-config",
            str(root / "export.json"),
        ),
        ("materialize", *common),
    ):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    gateway, http, grpc, metrics = sorted(ports)
    config = StackConfig(
        repo,
        repo_dir(paths.models_dir),
        gateway_port=gateway,
        triton_http_port=http,
        triton_grpc_port=grpc,
        triton_metrics_port=metrics,
        log_dir=root / "logs",
        ready_timeout_s=180.0,
        gateway_settings={"api_keys": TEST_KEYS},
    )
    with ServingStack(config) as st:
        yield st


@pytest.fixture(scope="module")
def http(stack: ServingStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30.0) as client:
        yield client


def recommend(http: httpx.Client, customer_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/customers/{customer_id}/recommendations", params={"k": K})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [item[s.ARTICLE_ID] for item in body["items"]]


def post_events(http: httpx.Client, *events: dict[str, Any]) -> None:
    now = datetime.now(UTC).isoformat()
    batch = [{"event_id": uuid.uuid4().hex, "timestamp": now, **e} for e in events]
    response = http.post("/v1/events", json={"events": batch}, headers=WRITE)
    assert response.status_code == 202, response.text
    assert response.json()["stored"] == len(batch)


def until(check: Callable[[], Any], what: str, within_s: float = EFFECT_WITHIN_S) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not within {within_s} s: {what}")


def regular(stack: ServingStack, http: httpx.Client, n: int) -> str:
    """A customer of the snapshot with a personalised list (the n-th such one by id)."""
    customers = read_customer_ids(current_dir(stack.config.feature_repo) / ONLINE_DATA_DIR)
    personalised = [c for c in customers[:50] if recommend(http, c)["source"] == "personalised"]
    return personalised[n]


def stored_history(stack: ServingStack, customer_id: str) -> np.ndarray:
    reader = OnlineFeatures(stack.config.feature_repo)
    try:
        _, features = reader.get_customers([customer_id])
        return features[s.T_HIST_IDS][0]
    finally:
        reader.close()


def test_a_purchase_changes_the_next_recommendation(
    tiny: TinyRun, stack: ServingStack, http: httpx.Client
) -> None:
    customer = regular(stack, http, 0)
    before = recommend(http, customer)
    history = stored_history(stack, customer)
    # The first listed article the model's vocabulary knows, so that it can enter the stored
    # history. Both the ranking step (history, by vocabulary id) and the gateway (bought set,
    # by identity) drop it; the bought set is written before the features, so the history is
    # waited for on its own.
    workflow = Workflow.load(tiny.models_dir / WORKFLOW_FILE)
    listed = ids(before)
    known = workflow.categorical(s.ARTICLE_ID, listed) >= FIRST_ID
    assert known.any(), listed
    bought = listed[int(np.argmax(known))]
    # Bought more often than any article of the history: it heads the frequency-ordered
    # history, so the exported policy (exclude_purchased) must drop it.
    purchase = {"type": "purchase", "customer_id": customer, "article_id": bought}
    post_events(http, *[purchase] * (int(history.size) + 2))
    after = until(
        lambda: (b := recommend(http, customer)) and bought not in ids(b) and b,
        "the bought article leaves the list",
    )
    assert after["source"] == "personalised"
    [vocab_id] = workflow.categorical(s.ARTICLE_ID, [bought])
    until(
        lambda: vocab_id in stored_history(stack, customer),
        "the bought article enters the stored history",
    )
    assert not np.array_equal(stored_history(stack, customer), history)
    final = recommend(http, customer)
    assert final["source"] == "personalised" and bought not in ids(final)


def test_a_new_customer_goes_from_popular_to_personalised(
    stack: ServingStack, http: httpx.Client
) -> None:
    customer = f"web-{uuid.uuid4().hex[:8]}"
    put = http.put(f"/v1/customers/{customer}", json={"age": 30}, headers=WRITE)
    assert put.status_code == 201, put.text
    first = recommend(http, customer)
    assert first["source"] == "popular"
    post_events(http, {"type": "purchase", "customer_id": customer, "article_id": ids(first)[0]})
    until(
        lambda: recommend(http, customer)["source"] == "personalised",
        "personalised after the first purchase",
    )


def test_not_interested_leaves_the_list_from_the_next_request_on(
    stack: ServingStack, http: httpx.Client
) -> None:
    customer = regular(stack, http, 1)
    unwanted = ids(recommend(http, customer))[1]
    post_events(http, {"type": "not_interested", "customer_id": customer, "article_id": unwanted})
    until(lambda: unwanted not in ids(recommend(http, customer)), "not_interested excluded")


def test_materialize_loads_every_purchase_and_none_is_listed(
    tiny: TinyRun, stack: ServingStack, http: httpx.Client
) -> None:
    """The export excludes: ``shoprec materialize`` loaded every snapshot purchase into the
    bought sets (history slots or not) and the gateway lists none of them."""
    canonical = read_canonical(Paths.for_name(NAME, tiny.dataset_dir.parents[1]).canonical)
    pairs = canonical.transactions.select(s.CUSTOMER_ID, s.ARTICLE_ID).unique()
    customers = read_customer_ids(current_dir(stack.config.feature_repo) / ONLINE_DATA_DIR)[:20]
    shopper = open_shopper_state(stack.config.feature_repo)
    try:
        for customer in customers:
            bought = set(pairs.filter(pl.col(s.CUSTOMER_ID) == customer).get_column(s.ARTICLE_ID))
            assert bought <= shopper.excluded(customer), customer
            assert not bought & set(ids(recommend(http, customer))), customer
    finally:
        shopper.close()


def test_a_bought_article_outside_the_history_slots_is_never_listed(
    tiny: TinyRun, stack: ServingStack, http: httpx.Client
) -> None:
    customer = regular(stack, http, 4)
    listed = ids(recommend(http, customer))
    # What materialize writes for a purchase beyond the N history slots (or of an article the
    # vocabulary does not know): the ranking step cannot see it, the gateway filters it.
    workflow = Workflow.load(tiny.models_dir / WORKFLOW_FILE)
    [vocab_id] = workflow.categorical(s.ARTICLE_ID, listed[:1])
    assert vocab_id < FIRST_ID or vocab_id not in stored_history(stack, customer)
    shopper = open_shopper_state(stack.config.feature_repo)
    try:
        shopper.add_bought(customer, [listed[0]])
    finally:
        shopper.close()
    after = recommend(http, customer)
    assert after["source"] == "personalised"
    assert ids(after)[: K - 1] == listed[1:]  # the same ranking, less the bought article
    assert len(ids(after)) == K and listed[0] not in ids(after)


def test_a_purchase_through_the_api_leaves_the_list_and_the_popular_fallback(
    stack: ServingStack, http: httpx.Client
) -> None:
    customer = regular(stack, http, 5)
    bought = ids(recommend(http, customer))[-1]
    post_events(http, {"type": "purchase", "customer_id": customer, "article_id": bought})
    until(lambda: bought not in ids(recommend(http, customer)), "the bought article leaves")
    fresh = f"web-{uuid.uuid4().hex[:8]}"
    put = http.put(f"/v1/customers/{fresh}", json={"age": 30}, headers=WRITE)
    assert put.status_code == 201, put.text
    first = recommend(http, fresh)
    assert first["source"] == "popular"
    top = ids(first)[0]
    post_events(http, {"type": "purchase", "customer_id": fresh, "article_id": top})
    shopper = open_shopper_state(stack.config.feature_repo)
    try:
        until(lambda: top in shopper.excluded(fresh), "the purchase joins the bought set")
    finally:
        shopper.close()
    # From then on, popular (before the updater writes the features) or personalised: never.
    for _ in range(20):
        body = recommend(http, fresh)
        assert top not in ids(body) and len(ids(body)) == K, body
        time.sleep(0.05)


def test_session_recommendations_follow_the_views(stack: ServingStack, http: httpx.Client) -> None:
    path = "/v1/sessions/{}/recommendations"
    unknown = http.get(path.format("no-such-session"), params={"k": K})
    assert unknown.status_code == 200
    assert unknown.json()["source"] == "popular" and len(unknown.json()["items"]) == K
    session = f"s-{uuid.uuid4().hex[:8]}"
    viewed = ids(recommend(http, regular(stack, http, 2)))[:2]
    post_events(
        http,
        *[
            {"type": "view", "customer_id": "anon-1", "article_id": a, "session_id": session}
            for a in viewed
        ],
    )
    body = until(
        lambda: (
            (r := http.get(path.format(session), params={"k": K}).json())["source"] == "session"
            and r
        ),
        "session recommendations",
    )
    got = ids(body)
    assert len(got) == K and not set(got) & set(viewed)
    neighbours = set()
    for a in viewed:
        similar = http.get(f"/v1/articles/{a}/similar", params={"k": K}).json()
        neighbours |= set(ids(similar))
    assert got[0] in neighbours  # the first items are neighbours of the views
    assert body["items"][0]["score"] is not None
    assert set(body) == {"session_id", "source", "recommendation_id", "items"}


def test_a_second_gateway_process_sees_the_same_updates(
    stack: ServingStack, http: httpx.Client, tmp_path: Path
) -> None:
    """Another gateway process (as a second uvicorn worker would be) over the same stores: an
    event posted through the first is reflected by the second (no per-worker copy)."""
    other = GatewayProcess(stack.gateway_env(), tmp_path / "gateway-2.log").start()
    try:
        with httpx.Client(base_url=other.url, timeout=30.0) as second:
            customer = regular(stack, http, 3)
            unwanted = ids(recommend(second, customer))[0]
            post_events(
                http, {"type": "not_interested", "customer_id": customer, "article_id": unwanted}
            )
            until(
                lambda: unwanted not in ids(recommend(second, customer)),
                "excluded by the second process",
            )
            fresh = f"web-{uuid.uuid4().hex[:8]}"
            post_events(http, {"type": "purchase", "customer_id": fresh, "article_id": unwanted})
            until(
                lambda: recommend(second, fresh)["source"] == "personalised",
                "the new customer personalised by the second process",
            )
    finally:
        other.stop()


def test_a_new_article_is_similar_retrievable_and_survives_a_triton_restart(
    stack: ServingStack, http: httpx.Client
) -> None:
    """A copy of an existing article under a new id (``PUT /v1/articles``): the updater encodes
    it with Triton's ``article_encoder`` into the article delta; it heads ``/similar`` of the
    existing article, has similar items itself, is a candidate of Triton's ``retrieval`` for
    its own item vector, and all of it after tritonserver is killed and restarted."""
    existing = ids(recommend(http, regular(stack, http, 4)))[0]
    shown = http.get(f"/v1/articles/{existing}")
    assert shown.status_code == 200, shown.text
    fields = {k: v for k, v in shown.json().items() if k in s.ARTICLE_FIELDS and v}
    new_id = f"new-{uuid.uuid4().hex[:8]}"
    put = http.put(f"/v1/articles/{new_id}", json=fields, headers=WRITE)
    assert put.status_code == 201, put.text

    def similar_ids(article_id: str) -> list[str]:
        response = http.get(f"/v1/articles/{article_id}/similar", params={"k": K})
        assert response.status_code == 200, response.text
        return ids(response.json())

    until(lambda: new_id in similar_ids(existing), "the new article similar to its original")
    own = similar_ids(new_id)
    assert len(own) == K and new_id not in own

    delta = open_article_delta(stack.article_delta)
    try:
        export = read_repository_manifest(stack.config.triton_repo)["export_id"]
        rows = delta.load(export)
    finally:
        delta.close()
    slot = rows.ids.index(new_id)
    served = read_repository_manifest(stack.config.triton_repo)["dims"]["served_articles"]
    query = rows.item[slot : slot + 1]
    assert served + slot in retrieval_candidates(stack, query)

    os.killpg(_pid(stack), signal.SIGKILL)  # the delta is in the store, not in Triton's memory
    until(stack.triton.answers_ready, "tritonserver restarted", within_s=180.0)
    until(lambda: _similar_or_none(http, existing, new_id), "similar after the restart")
    assert served + slot in retrieval_candidates(stack, query)


def _pid(stack: ServingStack) -> int:
    pid = stack.pid("triton")
    assert pid is not None
    return pid


def _similar_or_none(http: httpx.Client, article_id: str, wanted: str) -> bool:
    response = http.get(f"/v1/articles/{article_id}/similar", params={"k": K})
    return response.status_code == 200 and wanted in ids(response.json())


def retrieval_candidates(stack: ServingStack, query: np.ndarray) -> set[int]:
    """Triton ``retrieval``'s candidate rows for one query embedding and an empty history."""
    import tritonclient.grpc as grpcclient

    n = EXPORT_HISTORY
    r = read_repository_manifest(stack.config.triton_repo)["dims"]["repurchase_length"]
    arrays: dict[str, np.ndarray] = {
        s.T_QUERY_EMBEDDING: query.astype(np.float32),
        s.T_HIST_IDS: np.zeros((1, n), dtype=np.int64),
        s.T_HIST_COUNTS: np.zeros((1, n), dtype=np.float32),
        s.T_REPURCHASE_IDS: np.zeros((1, r), dtype=np.int64),
        s.T_REPURCHASE_COUNTS: np.zeros((1, r), dtype=np.float32),
    }
    client = grpcclient.InferenceServerClient(stack.triton.grpc_url)
    try:
        inputs = []
        for name, array in arrays.items():
            tensor = grpcclient.InferInput(name, list(array.shape), s.TENSORS[name].triton)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(s.TRITON_RETRIEVAL, inputs)
        return set(result.as_numpy(s.T_CANDIDATES)[0].tolist())
    finally:
        client.close()
