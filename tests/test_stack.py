"""Integration: the whole online stack (Feast on SQLite + tritonserver + the gateway) over HTTP.

The tiny trained artifacts of ``test_export.tiny_run`` are exported through ``shoprec export``
(K = :data:`EXPORT`.max_k) and materialized through ``shoprec materialize`` into a copy of the
models folder; one :class:`ServingStack` on free loopback ports serves the module, and every
request goes over real HTTP (httpx). Expected answers come from the canonical tables, the
feature repo's popular list, and the Triton steps run in process (``serving.runtime``).

Order matters: the last stack test stops Triton (the 503 path) and then the whole stack. The
``shoprec serve`` test runs its own stack in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.cli import app
from shoprec.config import Paths
from shoprec.data.dataset import load_dataset
from shoprec.data.ingest.canonical import read_canonical
from shoprec.export import ExportConfig
from shoprec.features.encode import EncodedCustomers, encode_customers
from shoprec.features.workflow import Workflow
from shoprec.featurestore.store import repo_dir
from shoprec.featurestore.tables import ONLINE_DATA_DIR, POPULAR_FILE, encoded_columns
from shoprec.featurestore.versions import current_dir
from shoprec.serving.runtime import load_step
from shoprec.serving.stack import (
    ServingStack,
    StackConfig,
    StackError,
)
from shoprec.serving.supervisor import group_alive
from shoprec.serving.tritonserver import LOOPBACK, free_port
from test_export import TinyRun, tiny_run

NAME = "syn"  # tiny_run's dataset name: data/syn, models/syn
EXPORT = ExportConfig(max_k=12, candidates=20, max_batch_size=8)
KS = (1, 5, 12)
MAX_K = 100  # the gateway's default Settings.max_k
UNKNOWN_CUSTOMER = "new-customer-0001"
UNKNOWN_ARTICLE = "no-such-article"
ITEM_FIELDS = (s.NAME, *s.ARTICLE_ATTRIBUTES)  # display fields of a list item
RECOMMEND = "/v1/customers/{customer_id}/recommendations"
SIMILAR = "/v1/articles/{article_id}/similar"
ARTICLE = "/v1/articles/{article_id}"
UNAVAILABLE_WITHIN_S = 3.0  # gateway's Triton timeout is 1 s
STARTUP_S = 180.0
SERVE_EXIT_S = 20.0
RECOMMEND_STEPS = (s.TRITON_QUERY_TOWER, s.TRITON_RETRIEVAL, s.TRITON_RANKING)


@dataclass(frozen=True)
class Served:
    """What the stack serves: the Triton repo, the feature repo, and the tables behind them."""

    paths: Paths
    repo: Path
    feature_repo: Path
    articles: dict[str, dict[str, str | None]]  # canonical display fields by article id
    popular: list[str]  # the feature repo's cold-start list, most popular first
    customers: EncodedCustomers  # the serving snapshot, encoded as the store holds it
    regulars: list[str]  # known customers, most purchases first


def _cli(*args: str | Path) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def served(tiny: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> Served:
    return build_served(tiny, tmp_path_factory)


def build_served(
    tiny: TinyRun, tmp_path_factory: pytest.TempPathFactory, export: ExportConfig = EXPORT
) -> Served:
    """``shoprec export`` (with ``export``) and ``shoprec materialize`` on a copy of the tiny
    models (the session's shared models folder is left as it is); also used by
    test_storefront_browser."""
    root = tmp_path_factory.mktemp("stack")
    data_root, models_root = tiny.dataset_dir.parents[1], root / "models"
    paths = Paths.for_name(NAME, data_root, models_root)
    shutil.copytree(tiny.models_dir, paths.models_dir)
    export_config = root / "export.json"
    export_config.write_text(json.dumps(export.to_dict()))
    repo = root / "triton_repo"
    common = ("--name", NAME, "--data-root", data_root, "--models-root", models_root)
    _cli("export", *common, "--triton-repo", repo, "--export-config", export_config)
    _cli("materialize", *common)

    canonical = read_canonical(paths.canonical).articles
    articles = {row[s.ARTICLE_ID]: row for row in canonical.iter_rows(named=True)}
    feature_repo = repo_dir(paths.models_dir)
    popular = (
        pl.read_parquet(current_dir(feature_repo) / ONLINE_DATA_DIR / POPULAR_FILE)
        .get_column(s.ARTICLE_ID)
        .to_list()
    )
    data = load_dataset(paths.dataset)
    latest = data.latest_customers
    history = A.read_json(paths.models_dir / A.CONFIG_FILE)["dataset"]["history_length"]
    customers = encode_customers(
        Workflow.load(paths.models_dir / A.WORKFLOW_FILE), latest, history, data.repurchase_length
    )
    regulars = (
        latest.sort([s.N_PURCHASES, s.CUSTOMER_ID], descending=[True, False])
        .get_column(s.CUSTOMER_ID)
        .head(3)
        .to_list()
    )
    assert len(popular) >= max(KS)
    assert UNKNOWN_CUSTOMER not in set(customers.ids)
    return Served(paths, repo, feature_repo, articles, popular, customers, regulars)


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``LOOPBACK:port`` now (TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: pid -> command line (from /proc)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # the process exited meanwhile
            continue
        if int(fields[1]) == pid:
            out[int(stat.parent.name)] = cmdline
    return out


GATEWAY_MODULE = "-m shoprec.gateway"  # the gateway server's command line (uvicorn inside)


def _is_server(cmdline: str) -> str | None:
    """Which server of a stack a command line runs: "tritonserver", "gateway" or None."""
    if "tritonserver" in cmdline:
        return "tritonserver"
    return "gateway" if GATEWAY_MODULE in cmdline else None


def _gateway_pid(stack: ServingStack) -> int:
    """The uvicorn child of this process serving ``stack``'s gateway port."""
    (pid,) = [
        p
        for p, cmd in _children(os.getpid()).items()
        if GATEWAY_MODULE in cmd and f"--port {stack.config.gateway_port}" in cmd
    ]
    return pid


def stack_config(
    served: Served, log_dir: Path, gateway_settings: Mapping[str, Any] | None = None
) -> StackConfig:
    """The served repos on free loopback ports (also used by test_storefront_browser)."""
    gateway, http, grpc, metrics = _free_ports(4)
    return StackConfig(
        served.repo,
        served.feature_repo,
        gateway_port=gateway,
        triton_http_port=http,
        triton_grpc_port=grpc,
        triton_metrics_port=metrics,
        log_dir=log_dir,
        ready_timeout_s=STARTUP_S,
        gateway_settings=gateway_settings or {},
    )


@pytest.fixture(scope="module")
def stack(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    with ServingStack(stack_config(served, tmp_path_factory.mktemp("stack-logs"))) as st:
        yield st


@pytest.fixture(scope="module")
def http(stack: ServingStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30.0) as client:
        yield client


def _in_process(served: Served, customer_id: str) -> tuple[list[str], np.ndarray]:
    """Top-K of the recommend steps run in process on the customer's encoded features."""
    (row,) = np.flatnonzero(served.customers.ids == customer_id)
    c = served.customers.take(np.array([row]))
    qt, ret, rank = (load_step(served.repo / m) for m in RECOMMEND_STEPS)
    inputs = encoded_columns(c)
    cands = ret({**qt(inputs), **inputs})
    out = rank({**inputs, **cands})
    return [a.decode() for a in out[s.T_ARTICLE_IDS][0]], out[s.T_SCORES][0]


def _check_items(served: Served, items: list[dict[str, Any]], k: int) -> list[str]:
    """k distinct catalog articles whose display fields are the canonical ones; their ids."""
    ids = [it[s.ARTICLE_ID] for it in items]
    assert len(ids) == len(set(ids)) == k
    for it in items:
        assert it[s.ARTICLE_ID] in served.articles
        assert set(it) == {s.ARTICLE_ID, *ITEM_FIELDS, "score"}
        canonical = served.articles[it[s.ARTICLE_ID]]
        assert {f: it[f] for f in ITEM_FIELDS} == {f: canonical[f] for f in ITEM_FIELDS}
    return ids


def _requests_total(http: httpx.Client, endpoint: str, status: int) -> float:
    """``shoprec_gateway_requests_total`` of one route template, GET, one status code."""
    response = http.get("/metrics")
    assert response.status_code == 200
    labels = {"endpoint": endpoint, "method": "GET", "status": str(status)}
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "shoprec_gateway_requests_total" and sample.labels == labels
    )


# ---- a running stack -----------------------------------------------------------------------


def test_known_customer_gets_the_in_process_ranking(http: httpx.Client, served: Served) -> None:
    """Feast features -> Triton ensemble -> gateway equals the steps run in process."""
    for customer_id in served.regulars:
        ref_ids, ref_scores = _in_process(served, customer_id)
        assert len(ref_ids) == EXPORT.max_k
        for k in KS:
            url = RECOMMEND.format(customer_id=customer_id)
            response = http.get(url, params={"k": k})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["customer_id"] == customer_id
            assert body["source"] == "personalised"
            ids = _check_items(served, body["items"], k)
            scores = [it["score"] for it in body["items"]]
            assert scores == sorted(scores, reverse=True)
            assert ids == ref_ids[:k]
            np.testing.assert_allclose(scores, ref_scores[:k], rtol=1e-6)
            again = http.get(url, params={"k": k}).json()  # same request, same answer
            assert again.pop("recommendation_id") != body["recommendation_id"]  # but a new id
            assert again == {key: v for key, v in body.items() if key != "recommendation_id"}


def test_default_k_is_twelve_and_k_past_the_exported_k_is_capped(
    http: httpx.Client, served: Served
) -> None:
    url = RECOMMEND.format(customer_id=served.regulars[0])
    default = http.get(url).json()["items"]
    assert [it[s.ARTICLE_ID] for it in default] == _in_process(served, served.regulars[0])[0][:12]
    assert http.get(url, params={"k": MAX_K}).json()["items"] == default  # K = 12 exported


def test_unknown_customer_gets_the_popular_list(http: httpx.Client, served: Served) -> None:
    for k in KS:
        response = http.get(RECOMMEND.format(customer_id=UNKNOWN_CUSTOMER), params={"k": k})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["customer_id"], body["source"]) == (UNKNOWN_CUSTOMER, "popular")
        assert _check_items(served, body["items"], k) == served.popular[:k]
        assert [it["score"] for it in body["items"]] == [None] * k


def test_similar_items_are_k_other_articles_best_first(http: httpx.Client, served: Served) -> None:
    step = load_step(served.repo / s.TRITON_SIMILAR_ITEMS)
    for query in (served.popular[0], served.popular[1]):
        ref = step({s.T_ARTICLE_ID: np.array([[query.encode()]], dtype=object)})
        ref_ids = [a.decode() for a in ref[s.T_ARTICLE_IDS][0]]
        for k in KS:
            response = http.get(SIMILAR.format(article_id=query), params={"k": k})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["article_id"] == query
            ids = _check_items(served, body["items"], k)
            assert query not in ids
            scores = np.array([it["score"] for it in body["items"]])
            assert (np.diff(scores) <= 1e-6).all()
            assert ids == ref_ids[:k]
            np.testing.assert_allclose(scores, ref[s.T_SCORES][0][:k], rtol=1e-6)


def test_unknown_article_is_404(http: httpx.Client) -> None:
    for path in (SIMILAR, ARTICLE):
        response = http.get(path.format(article_id=UNKNOWN_ARTICLE))
        assert response.status_code == 404
        assert response.json() == {"detail": "article not found"}


def test_article_page_has_the_canonical_fields(http: httpx.Client, served: Served) -> None:
    for article_id in (*served.popular[:3], sorted(served.articles)[-1]):
        response = http.get(ARTICLE.format(article_id=article_id))
        assert response.status_code == 200
        assert response.json() == {c: served.articles[article_id][c] for c in s.ARTICLE_COLUMNS}


@pytest.mark.parametrize("k", [0, MAX_K + 1])
def test_k_outside_1_to_max_k_is_422(http: httpx.Client, served: Served, k: int) -> None:
    for url in (
        RECOMMEND.format(customer_id=served.regulars[0]),
        RECOMMEND.format(customer_id=UNKNOWN_CUSTOMER),
        SIMILAR.format(article_id=served.popular[0]),
    ):
        response = http.get(url, params={"k": k})
        assert response.status_code == 422, url
        assert response.json()["detail"][0]["loc"] == ["query", "k"]


def test_similar_items_for_an_article_that_never_sold(http: httpx.Client, served: Served) -> None:
    """Never-sold catalog articles are not retrievable for recommendations (item index) but
    are in the text index, so "you may also like" works for them too."""
    sold = set(A.read_ids(served.paths.models_dir / A.ITEM_IDS_FILE))
    unsold = sorted(set(served.articles) - sold)
    assert unsold  # the tiny catalog lists articles without a sale
    assert set(unsold) <= set(A.read_ids(served.paths.models_dir / A.TEXT_IDS_FILE))
    assert http.get(ARTICLE.format(article_id=unsold[0])).status_code == 200
    response = http.get(SIMILAR.format(article_id=unsold[0]), params={"k": 5})
    assert response.status_code == 200, response.text
    assert unsold[0] not in {it[s.ARTICLE_ID] for it in response.json()["items"]}


def test_health_readiness_and_request_counters(http: httpx.Client, served: Served) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    before = {
        (RECOMMEND, 200): _requests_total(http, RECOMMEND, 200),
        (SIMILAR, 404): _requests_total(http, SIMILAR, 404),
    }
    for _ in range(3):
        http.get(RECOMMEND.format(customer_id=served.regulars[0]), params={"k": 5})
    http.get(RECOMMEND.format(customer_id=UNKNOWN_CUSTOMER), params={"k": 5})
    http.get(SIMILAR.format(article_id=UNKNOWN_ARTICLE))
    assert _requests_total(http, RECOMMEND, 200) == before[RECOMMEND, 200] + 4
    assert _requests_total(http, SIMILAR, 404) == before[SIMILAR, 404] + 1
    assert _requests_total(http, "/healthz", 200) >= 1


def test_start_fails_when_the_gateway_port_is_taken(stack: ServingStack, tmp_path: Path) -> None:
    empty_repo = tmp_path / "repo"  # a Triton with no models is ready in a second
    empty_repo.mkdir()
    http_port, grpc_port, metrics_port = _free_ports(3)
    other = ServingStack(
        StackConfig(
            empty_repo,
            stack.config.feature_repo,
            gateway_port=stack.config.gateway_port,  # the module stack's gateway answers there
            triton_http_port=http_port,
            triton_grpc_port=grpc_port,
            triton_metrics_port=metrics_port,
            ready_timeout_s=60.0,
        )
    )
    try:
        with pytest.raises(StackError):
            other.start()
    finally:
        other.stop()


def _timed_get(http: httpx.Client, url: str, **params: int) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = http.get(url, params=params)
    return response, time.monotonic() - start


def _assert_triton_unavailable(http: httpx.Client, served: Served) -> None:
    """Triton-backed routes answer 503 within the bound; the rest still answers."""
    url = RECOMMEND.format(customer_id=served.regulars[0])
    for path in (url, SIMILAR.format(article_id=served.popular[0]), "/readyz"):
        response, elapsed = _timed_get(http, path)
        assert response.status_code == 503, path
        # readyz names Triton only: the feature store is up
        assert response.json() == {"detail": "recommendation service unavailable"}, path
        assert elapsed < UNAVAILABLE_WITHIN_S, (path, elapsed)
    cold = http.get(RECOMMEND.format(customer_id=UNKNOWN_CUSTOMER), params={"k": 5})
    assert (cold.status_code, cold.json()["source"]) == (200, "popular")
    assert http.get(ARTICLE.format(article_id=served.popular[0])).status_code == 200


def test_hung_triton_answers_503_in_bounded_time_and_recovers(
    stack: ServingStack, http: httpx.Client, served: Served
) -> None:
    """Triton stopped with SIGSTOP (accepts connections, never answers): the timeout path."""
    pid = stack.pid("triton")
    assert pid is not None
    url = RECOMMEND.format(customer_id=served.regulars[0])
    expected = http.get(url, params={"k": 5}).json()["items"]
    os.killpg(pid, signal.SIGSTOP)
    try:
        _assert_triton_unavailable(http, served)
    finally:
        os.killpg(pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while http.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "gateway not ready again after Triton resumed"
        time.sleep(0.1)
    assert http.get(url, params={"k": 5}).json()["items"] == expected


def test_dead_triton_answers_503_then_stop_leaves_nothing(
    stack: ServingStack, http: httpx.Client, served: Served
) -> None:
    """Runs last on the module stack: stops Triton, then the whole stack."""
    config = stack.config
    ports = (config.gateway_port, config.triton_http_port, config.triton_grpc_port,
             config.triton_metrics_port)  # fmt: skip
    assert not [p for p in ports if _port_free(p)]  # all four listen now
    gateway_pid, triton_pid = _gateway_pid(stack), stack.pid("triton")
    assert gateway_pid == stack.pid("gateway")
    assert triton_pid is not None and group_alive(triton_pid) and group_alive(gateway_pid)
    # Not its exit code: under load the Python-backend stubs can outlast --exit-timeout-secs
    # (5 s) and tritonserver then exits 1 (reported); the process group must be gone either way.
    stack.supervisor.stop_child("triton")  # stopped on purpose: not restarted
    assert not group_alive(triton_pid)
    _assert_triton_unavailable(http, served)

    stack.stop()
    assert not group_alive(gateway_pid)
    assert not [c for c in _children(os.getpid()).values() if _is_server(c)]
    assert [p for p in ports if not _port_free(p)] == []
    stack.stop()  # idempotent: the fixture stops it again


# ---- shoprec serve ------------------------------------------------------------------------


def test_serve_stops_both_servers_on_sigterm(served: Served, tmp_path: Path) -> None:
    """``shoprec serve`` in a subprocess: ready, answers, exits 0 on SIGTERM, leaves nothing."""
    port, *triton_ports = _free_ports(4)
    paths = served.paths
    cmd = [
        sys.executable, "-m", "shoprec.cli", "serve", "--name", NAME, "--port", str(port),
        "--triton-http-port", str(triton_ports[0]), "--triton-grpc-port", str(triton_ports[1]),
        "--triton-metrics-port", str(triton_ports[2]),
        "--triton-repo", str(served.repo), "--data-root", str(paths.data_dir.parent),
        "--models-root", str(paths.models_dir.parent),
    ]  # fmt: skip
    log_path = tmp_path / "serve.log"
    url = f"http://{LOOPBACK}:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    children: dict[int, str] = {}
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"serve not ready:\n{log_path.read_text()}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        children = {p: c for p, c in _children(proc.pid).items() if _is_server(c)}
        assert sorted(str(_is_server(c)) for c in children.values()) == ["gateway", "tritonserver"]
        customer_id = served.regulars[0]
        response = httpx.get(
            f"{url}{RECOMMEND.format(customer_id=customer_id)}", params={"k": 5}, timeout=30.0
        )
        assert response.status_code == 200, response.text
        ids = [it[s.ARTICLE_ID] for it in response.json()["items"]]
        assert ids == _in_process(served, customer_id)[0][:5]

        # The write API with the key serve generated: a purchase goes in, and a hidden article
        # leaves the customer's list from the next request on.
        lines = log_path.read_text().splitlines()
        announced = [i for i, line in enumerate(lines) if "header X-API-Key" in line]
        assert announced, log_path.read_text()
        key = lines[announced[0] + 1]
        headers = {"X-API-Key": key.strip()}
        purchase = {
            "event_id": "serve-1", "type": "purchase", "customer_id": customer_id,
            "article_id": ids[0], "timestamp": "2020-02-01T12:00:00Z",
            "recommendation_id": response.json()["recommendation_id"],
        }  # fmt: skip
        posted = httpx.post(f"{url}/v1/events", json={"events": [purchase]}, headers=headers)
        assert posted.status_code == 202, posted.text
        assert posted.json()["results"][0]["status"] == "stored"
        hidden = httpx.patch(f"{url}/v1/articles/{ids[0]}", json={"hidden": True}, headers=headers)
        assert hidden.status_code == 200, hidden.text
        again = httpx.get(
            f"{url}{RECOMMEND.format(customer_id=customer_id)}", params={"k": 5}, timeout=30.0
        )
        expected = [a for a in _in_process(served, customer_id)[0] if a != ids[0]][:5]
        assert [it[s.ARTICLE_ID] for it in again.json()["items"]] == expected

        assert not [p for p in (port, *triton_ports) if _port_free(p)]
        proc.send_signal(signal.SIGTERM)  # the leader only, as a process supervisor does
        assert proc.wait(timeout=SERVE_EXIT_S) == 0, log_path.read_text()
        assert "stopped" in log_path.read_text()
        for pid in (proc.pid, *children):
            assert not group_alive(pid), children.get(pid, "serve")
        assert [p for p in (port, *triton_ports) if not _port_free(p)] == []
    finally:
        for pid in (proc.pid, *children):
            if group_alive(pid):
                os.killpg(pid, signal.SIGKILL)
        proc.wait()
