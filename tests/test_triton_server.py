"""Integration: the exported tiny repository served by the real tritonserver (nvidia-pytriton).

One server on free loopback ports for the module; requests go over gRPC with tritonclient.
The last test stops it and checks that its whole process group is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.data.dataset import load_dataset
from shoprec.export.triton import MODELS
from shoprec.features.encode import EncodedCustomers, encode_customers
from shoprec.features.workflow import Workflow
from shoprec.featurestore.tables import encoded_columns
from shoprec.serving.ranking import RankingStep
from shoprec.serving.runtime import load_step
from shoprec.serving.supervisor import group_alive
from shoprec.serving.tritonserver import LOOPBACK, TritonServer, TritonServerError
from test_export import TINY_EXPORT, TinyRun, tiny_run

K = TINY_EXPORT.max_k
TIMEOUT_S = 30  # per request: an error must come back as a response, not a hang


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


ADMIN_KEY = "test-admin-key"


@pytest.fixture(scope="module")
def server(tiny: TinyRun) -> Iterator[TritonServer]:
    with TritonServer(tiny.repo, admin_key=ADMIN_KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def customers(tiny: TinyRun) -> EncodedCustomers:
    """Encoded serving-snapshot customers (what the feature store hands the gateway)."""
    wf = Workflow.load(tiny.models_dir / A.WORKFLOW_FILE)
    data = load_dataset(tiny.dataset_dir)
    return encode_customers(
        wf,
        data.latest_customers,
        A.read_json(tiny.models_dir / A.CONFIG_FILE)["dataset"]["history_length"],
        data.repurchase_length,
    )


def _recommend(
    client: grpcclient.InferenceServerClient, c: EncodedCustomers
) -> tuple[np.ndarray, np.ndarray]:
    inputs = []
    for name, array in encoded_columns(c).items():
        tensor = grpcclient.InferInput(name, list(array.shape), s.TENSORS[name].triton)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(s.TRITON_RECOMMEND, inputs, client_timeout=TIMEOUT_S)
    return result.as_numpy(s.T_ARTICLE_IDS), result.as_numpy(s.T_SCORES)


def _similar(
    client: grpcclient.InferenceServerClient, article_ids: list[bytes]
) -> tuple[np.ndarray, np.ndarray]:
    tensor = grpcclient.InferInput(s.T_ARTICLE_ID, [len(article_ids), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[a] for a in article_ids], dtype=object))
    result = client.infer(s.TRITON_SIMILAR_ITEMS, [tensor], client_timeout=TIMEOUT_S)
    return result.as_numpy(s.T_ARTICLE_IDS), result.as_numpy(s.T_SCORES)


def _in_process(tiny: TinyRun, c: EncodedCustomers) -> tuple[np.ndarray, np.ndarray]:
    qt, ret, rank = (
        load_step(tiny.repo / m)
        for m in (s.TRITON_QUERY_TOWER, s.TRITON_RETRIEVAL, s.TRITON_RANKING)
    )
    q = qt({s.T_CUSTOMER_SPARSE: c.sparse, s.T_CUSTOMER_DENSE: c.dense, s.T_HIST_IDS: c.hist_ids})
    inputs = encoded_columns(c)
    cands = ret({**q, **inputs})
    out = rank({**inputs, **cands})
    return out[s.T_ARTICLE_IDS], out[s.T_SCORES]


def test_server_listens_on_loopback_and_serves_every_model(
    server: TritonServer, client: grpcclient.InferenceServerClient
) -> None:
    assert server.host == LOOPBACK
    assert len({server.http_port, server.grpc_port, server.metrics_port}) == 3
    for model in (
        s.TRITON_RECOMMEND,
        s.TRITON_QUERY_TOWER,
        s.TRITON_RETRIEVAL,
        s.TRITON_RANKING,
        s.TRITON_SIMILAR_ITEMS,
    ):
        assert client.is_model_ready(model), model


def test_recommend_over_grpc_matches_the_steps_in_process(
    tiny: TinyRun, client: grpcclient.InferenceServerClient, customers: EncodedCustomers
) -> None:
    catalog = {a.encode() for a in A.read_ids(tiny.models_dir / A.ITEM_IDS_FILE)}
    for row in (0, 7, 42):
        one = customers.take(np.array([row]))
        ids, scores = _recommend(client, one)
        assert ids.shape == scores.shape == (1, K)
        assert set(ids[0]) <= catalog
        assert len(set(ids[0])) == K  # 20 + 24 candidates: always K distinct articles
        assert (np.diff(scores[0]) <= 0).all()
        ref_ids, ref_scores = _in_process(tiny, one)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)


def test_recommend_batch_of_two_equals_two_single_requests(
    client: grpcclient.InferenceServerClient, customers: EncodedCustomers
) -> None:
    pair = customers.take(np.array([3, 11]))
    ids, scores = _recommend(client, pair)
    assert ids.shape == (2, K)
    for b, row in enumerate((3, 11)):
        one_ids, one_scores = _recommend(client, customers.take(np.array([row])))
        np.testing.assert_array_equal(ids[b], one_ids[0])
        np.testing.assert_allclose(scores[b], one_scores[0], rtol=1e-6)
    assert not np.array_equal(ids[0], ids[1])


def test_ranking_model_rejects_a_candidate_outside_the_table(
    tiny: TinyRun, client: grpcclient.InferenceServerClient, customers: EncodedCustomers
) -> None:
    step = load_step(tiny.repo / s.TRITON_RANKING)
    assert isinstance(step, RankingStep)
    c = customers.take(np.array([0]))
    width = 20 + 24 + TINY_EXPORT.copurchase_candidates + TINY_EXPORT.popular_candidates
    cands = np.full((1, width), -1, dtype=np.int64)
    cands[0, 0] = len(step.articles.ids)
    feats = np.zeros((1, width * len(s.SOURCE_DENSE)), dtype=np.float32)
    arrays = {**encoded_columns(c), s.T_CANDIDATES: cands, s.T_SOURCE_FEATURES: feats}
    inputs = []
    for name in step.inputs:
        array = arrays[name]
        tensor = grpcclient.InferInput(name, list(array.shape), s.TENSORS[name].triton)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    with pytest.raises(InferenceServerException, match=f"candidates: id {len(step.articles.ids)}"):
        client.infer(s.TRITON_RANKING, inputs, client_timeout=TIMEOUT_S)


def test_similar_items_returns_k_neighbours_without_the_query(
    tiny: TinyRun, client: grpcclient.InferenceServerClient
) -> None:
    text_ids = [a.encode() for a in A.read_ids(tiny.models_dir / A.TEXT_IDS_FILE)]
    ids, scores = _similar(client, text_ids[:2])
    assert ids.shape == scores.shape == (2, K)
    for b in range(2):
        assert text_ids[b] not in set(ids[b])
        assert set(ids[b]) <= set(text_ids)
        assert (np.diff(scores[b]) <= 1e-6).all()
    step = load_step(tiny.repo / s.TRITON_SIMILAR_ITEMS)
    np.testing.assert_array_equal(
        ids,
        step({s.T_ARTICLE_ID: np.array([[a] for a in text_ids[:2]], dtype=object)})[
            s.T_ARTICLE_IDS
        ],
    )


def test_unknown_article_is_an_error_response(
    client: grpcclient.InferenceServerClient, tiny: TinyRun
) -> None:
    with pytest.raises(InferenceServerException) as error:
        _similar(client, [b"nope"])
    # a client error (gRPC INVALID_ARGUMENT = HTTP 400) that does not echo the id
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert error.value.message() == "unknown article_id (4 bytes)"
    # the model still serves afterwards
    first = A.read_ids(tiny.models_dir / A.TEXT_IDS_FILE)[0].encode()
    assert _similar(client, [first])[0].shape == (1, K)


def test_server_that_cannot_load_a_model_fails_with_its_log(tiny: TinyRun, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny.repo / s.TRITON_SIMILAR_ITEMS, repo / s.TRITON_SIMILAR_ITEMS)
    (repo / s.TRITON_SIMILAR_ITEMS / "1" / "text_article_ids.npy").unlink()
    server = TritonServer(repo, work_dir=tmp_path / "work")
    with (
        pytest.raises(TritonServerError, match=r"exited with code 1(.|\n)*text_article_ids"),
        server,
    ):
        pass
    assert server.pid is not None and not group_alive(server.pid)


def _http(
    server: TritonServer, method: str, path: str, body: bytes = b"", key: str | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["shoprec-admin-key"] = key
    request = urllib.request.Request(
        f"http://{server.http_url}{path}", data=body or None, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_admin_apis_are_restricted_to_the_key(server: TritonServer) -> None:
    """Repository, shared-memory, logging and trace APIs need the admin key (403 without it);
    health, metadata and inference stay open."""
    region = json.dumps({"key": "/anything", "offset": 0, "byte_size": 64}).encode()
    for method, path, body in (
        ("POST", "/v2/repository/index", b"{}"),
        ("POST", "/v2/logging", b'{"log_info": false}'),
        ("GET", "/v2/logging", b""),
        ("POST", "/v2/systemsharedmemory/region/r0/register", region),
        ("GET", "/v2/trace/setting", b""),
    ):
        status, answer = _http(server, method, path, body)
        assert status == 403, (path, answer)
        assert b"restricted" in answer
        assert _http(server, method, path, body, key="wrong")[0] == 403
    assert _http(server, "POST", "/v2/repository/index", b"{}", key=ADMIN_KEY)[0] == 200
    assert _http(server, "GET", "/v2/health/ready")[0] == 200
    assert _http(server, "GET", f"/v2/models/{s.TRITON_SIMILAR_ITEMS}")[0] == 200
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
        index = client.get_model_repository_index(
            headers={"triton-grpc-protocol-shoprec-admin-key": ADMIN_KEY}
        )
        assert len(index.models) == len(MODELS)
        assert client.is_server_ready()


def test_a_huge_bad_input_is_a_400_that_does_not_echo_it(
    server: TritonServer, tiny: TinyRun
) -> None:
    huge = "9" * 1_000_000
    body = {
        "inputs": [{"name": s.T_ARTICLE_ID, "shape": [1, 1], "datatype": "BYTES", "data": [huge]}]
    }
    path = f"/v2/models/{s.TRITON_SIMILAR_ITEMS}/infer"
    status, answer = _http(server, "POST", path, json.dumps(body).encode())
    assert status == 400
    assert json.loads(answer) == {"error": "unknown article_id (1000000 bytes)"}
    body["inputs"][0]["shape"] = [1]  # wrong rank: Triton's own check, also a 400
    assert _http(server, "POST", path, json.dumps(body).encode())[0] == 400


def test_python_backend_regions_carry_the_server_prefix(server: TritonServer) -> None:
    regions = server.shm_regions()
    assert regions  # the stubs' regions, named with this server's prefix only
    assert all(r.name.startswith(server.shm_prefix) for r in regions)


def test_killed_server_leaves_no_stub_and_no_shm_region(tiny: TinyRun, tmp_path: Path) -> None:
    """kill -9 of tritonserver alone orphans its stubs and its /dev/shm regions; stop() ends
    the whole group and removes the regions."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny.repo / s.TRITON_SIMILAR_ITEMS, repo / s.TRITON_SIMILAR_ITEMS)
    server = TritonServer(repo)
    with server:
        pid = server.pid
        assert pid is not None and len(_group_members(pid)) == 2  # server + one stub
        assert server.shm_regions()
        os.kill(pid, signal.SIGKILL)  # the leader only
        server.wait(TIMEOUT_S)
        assert _group_members(pid)  # the stub is orphaned, still in the group
    assert _group_members(pid) == []
    assert server.shm_regions() == []


def test_stop_leaves_no_process_behind(server: TritonServer) -> None:
    """Runs last in this module: stops the shared server."""
    pid = server.pid
    assert pid is not None and group_alive(pid)
    # tritonserver + one Python-backend stub per step model (the ensemble has none)
    assert len(_group_members(pid)) == 1 + len(MODELS) - 1
    assert server.stop() == 0
    assert not group_alive(pid)
    assert _group_members(pid) == []
    assert server.shm_regions() == []
    assert server.work_dir is not None and not server.work_dir.exists()
    assert server.stop() == 0  # idempotent


def _group_members(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid`` (from /proc/<pid>/stat, field 5)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited meanwhile
            continue
        if int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members
