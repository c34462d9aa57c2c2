"""Fault and abuse tests: the whole stack under real failures and hostile clients.

One supervised stack for the module (:class:`ServingStack`: tritonserver + the gateway process,
as ``shoprec serve`` runs them) over the tiny trained artifacts, with the feature store in a
password-protected ``redis-server`` of this module's own (AOF on, free loopback port, temporary
folder, stopped by pid). Clients are real HTTP clients and raw sockets.

* schemathesis over the gateway's OpenAPI, bounded (a few examples per operation);
* huge, many and slow headers and idle sockets: 431 / 408 / closed within about a second,
  while a well-behaved client keeps getting answers;
* ``kill -9`` of tritonserver under load: only 200 or a 503 within the timeout, Triton back and
  serving within 30 s, no orphaned stub, no leaked ``/dev/shm`` region, bounded logs;
* Redis killed and restarted (AOF): 503 while it is down, the same answers after, nothing lost;
  Redis restarted empty: not ready (503) and no popular list for known customers until
  materialized again;
* re-materializing under load: no fallback, no error.

Each fault test prints its timeline (``pytest tests/test_faults.py -s``). Order matters: the
tests share the stack and run top to bottom.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from typer.testing import CliRunner

from shoprec import schema as s
from shoprec.cli import app
from shoprec.config import Paths
from shoprec.featurestore.tables import ONLINE_DATA_DIR, read_customer_ids
from shoprec.featurestore.versions import current_dir, current_version, list_versions
from shoprec.serving.stack import ServingStack, StackConfig
from shoprec.serving.supervisor import Backoff, group_alive
from shoprec.serving.tritonserver import LOOPBACK, free_port
from test_export import TinyRun, tiny_run
from test_stack import EXPORT, NAME

REDIS_PASSWORD = "faults-secret"
TRITON_TIMEOUT_S = 1.0
HEADER_TIMEOUT_S = 1.0
RECOVERY_BOUND_S = 30.0
RECOMMEND = "/v1/customers/{customer_id}/recommendations"
SIMILAR = "/v1/articles/{article_id}/similar"
UNKNOWN_CUSTOMER = "new-visitor-0001"
STARTUP_S = 180.0


class RedisServer:
    """A ``redis-server`` of this module on a free loopback port, password-protected, stopped
    by pid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Feast's / the gateway's form: ``host:port,password=...``."""
        return f"{LOOPBACK}:{self.port},password={REDIS_PASSWORD}"

    def client(self) -> redis.Redis:
        return redis.Redis(LOOPBACK, self.port, password=REDIS_PASSWORD, socket_timeout=2)

    def start(self, folder: str = "data", aof: bool = True) -> None:
        """Start on ``root/folder`` (AOF ``everysec`` or no persistence); wait until it serves
        (an AOF is loaded by then)."""
        data = self.root / folder
        data.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(data),
            "--requirepass", REDIS_PASSWORD, "--save", "", "--appendfsync", "everysec",
            "--appendonly", "yes" if aof else "no",
        ]  # fmt: skip
        with (self.root / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            assert self.process.poll() is None, (self.root / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Faults:
    stack: ServingStack
    redis: RedisServer
    paths: Paths
    feature_repo: Path
    known: list[str]  # customers of the snapshot
    article: str  # an article similar_items serves


def _cli(*args: str | Path) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def faults(tiny: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    root = tmp_path_factory.mktemp("faults")
    server = RedisServer(root / "redis")
    server.start()
    data_root, models_root = tiny.dataset_dir.parents[1], root / "models"
    paths = Paths.for_name(NAME, data_root, models_root)
    shutil.copytree(tiny.models_dir, paths.models_dir)
    (root / "export.json").write_text(json.dumps(EXPORT.to_dict()))
    common = ("--name", NAME, "--data-root", data_root, "--models-root", models_root)
    _cli("export", *common, "--triton-repo", root / "repo", "--export-config", root / "export.json")
    materialize = ("materialize", *common, "--online-store", "redis", "--redis-url", server.url)
    _cli(*materialize)
    feature_repo = paths.models_dir / "feature_repo"
    ports = [free_port() for _ in range(4)]
    config = StackConfig(
        root / "repo",
        feature_repo,
        gateway_port=ports[0],
        triton_http_port=ports[1],
        triton_grpc_port=ports[2],
        triton_metrics_port=ports[3],
        log_dir=root / "logs",
        ready_timeout_s=STARTUP_S,
        gateway_settings={
            "redis_url": server.url,
            "triton_timeout_s": TRITON_TIMEOUT_S,
            "header_timeout_s": HEADER_TIMEOUT_S,
            "body_timeout_s": HEADER_TIMEOUT_S,
            "store_refresh_s": 0.5,
            "log_interval_s": 5.0,
        },
        backoff=Backoff(initial_s=0.5),
    )
    known = read_customer_ids(current_dir(feature_repo) / ONLINE_DATA_DIR)
    stack = ServingStack(config)
    try:
        stack.start()
        with httpx.Client(base_url=stack.gateway_url, timeout=10) as http:
            personalised = [
                c
                for c in known[:20]
                if http.get(RECOMMEND.format(customer_id=c)).json()["source"] == "personalised"
            ]
            article = http.get(RECOMMEND.format(customer_id=UNKNOWN_CUSTOMER)).json()["items"][0]
        assert len(personalised) >= 3
        yield Faults(stack, server, paths, feature_repo, personalised[:5], article[s.ARTICLE_ID])
    finally:
        stack.stop()
        server.stop()


# ---- load ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    start: float  # monotonic seconds
    seconds: float
    kind: str  # "known" | "unknown" | "similar"
    status: int | None  # None: no HTTP answer (connection refused, timeout)
    source: str | None = None  # recommendations: personalised | popular
    error: str | None = None


@dataclass
class Load:
    """Threads sending a mix of requests in a loop until stopped; every outcome recorded."""

    url: str
    known: list[str]
    article: str
    threads: int = 2
    pause_s: float = 0.01
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self, worker: int) -> None:
        kinds = ("known", "similar", "unknown")
        with httpx.Client(base_url=self.url, timeout=10) as http:
            i = worker
            while not self._stop.is_set():
                kind = kinds[i % len(kinds)]
                path = {
                    "known": RECOMMEND.format(customer_id=self.known[i % len(self.known)]),
                    "unknown": RECOMMEND.format(customer_id=UNKNOWN_CUSTOMER),
                    "similar": SIMILAR.format(article_id=self.article),
                }[kind]
                start = time.monotonic()
                try:
                    response = http.get(path, params={"k": 5})
                    body = response.json()
                    source = body.get("source") if response.status_code == 200 else None
                    outcome = Outcome(start, 0.0, kind, response.status_code, source)
                except httpx.HTTPError as exc:
                    outcome = Outcome(start, 0.0, kind, None, error=repr(exc))
                outcome.seconds = time.monotonic() - start
                self.outcomes.append(outcome)
                i += 1
                time.sleep(self.pause_s)

    def __enter__(self) -> Load:
        for worker in range(self.threads):
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(15)


def _wait_for(condition: Any, within_s: float, poll_s: float = 0.05) -> float:
    """Poll ``condition()`` until true; the monotonic time it became true."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {within_s} s"
        time.sleep(poll_s)
    return time.monotonic()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


def _timeline(title: str, rows: dict[str, Any]) -> None:
    print(f"\nTIMELINE {title}")
    for key, value in rows.items():
        print(f"  {key:<48} {value}")


# ---- the API under schemathesis ------------------------------------------------------------


FUZZ_EXAMPLES = 20  # per operation: the bounded budget


def test_api_answers_every_generated_request_by_its_schema(faults: Faults) -> None:
    """schemathesis, every check, :data:`FUZZ_EXAMPLES` generated requests per operation: no
    5xx (Triton and the store are up) and every answer matches the OpenAPI document."""
    api = schemathesis.openapi.from_url(f"{faults.stack.gateway_url}/openapi.json")
    results = list(api.get_all_operations())
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) == len(results)  # the document parses into operations
    assert {op.label for op in operations} >= {
        f"GET {RECOMMEND}",
        f"GET {SIMILAR}",
        "GET /v1/articles/{article_id}",
        "GET /readyz",
    }
    examples: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            examples[case.operation.label] = examples.get(case.operation.label, 0) + 1
            case.call_and_validate()

        check()
    assert set(examples) == {op.label for op in operations}
    print(f"\nschemathesis: {sum(examples.values())} requests over {len(examples)} operations")


# ---- hostile clients -----------------------------------------------------------------------


def _recv_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_huge_and_slow_headers_are_cut_off_while_others_are_served(faults: Faults) -> None:
    port = faults.stack.config.gateway_port
    with Load(faults.stack.gateway_url, faults.known, faults.article) as load:
        time.sleep(0.5)
        idle = [socket.create_connection((LOOPBACK, port)) for _ in range(50)]
        slow = [socket.create_connection((LOOPBACK, port)) for _ in range(10)]
        try:
            for sock in slow:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            started = time.monotonic()
            with socket.create_connection((LOOPBACK, port)) as big:
                big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 1_000_000)
                assert _recv_status(big) == 431
                big_s = time.monotonic() - started
            for sock in slow:  # a byte now and then does not extend the deadline
                sock.sendall(b"s")
            time.sleep(0.3)
            for sock in slow:
                sock.sendall(b"s")
            statuses = []
            for sock in slow:
                sock.settimeout(3)
                statuses.append(_recv_status(sock))
            slow_s = time.monotonic() - started
            for sock in idle:
                sock.settimeout(3)
                assert sock.recv(10) == b""
            idle_s = time.monotonic() - started
        finally:
            for sock in idle + slow:
                sock.close()
        time.sleep(0.3)
    assert statuses == [408] * len(slow)
    assert big_s < 1.0
    assert slow_s < HEADER_TIMEOUT_S + 1.0 and idle_s < HEADER_TIMEOUT_S + 1.0
    during = [o for o in load.outcomes if o.start >= started]
    assert during and all(o.status == 200 for o in during), {o.status for o in during}
    assert max(o.seconds for o in during) < 1.0
    _timeline(
        "hostile clients (50 idle sockets, 10 slow headers, one 1 MB header)",
        {
            "1 MB header answered 431 after s": round(big_s, 3),
            "slow headers answered 408 after s": round(slow_s, 3),
            "idle sockets closed after s": round(idle_s, 3),
            "other clients: requests / non-200": (len(during), 0),
            "other clients: max latency s": round(max(o.seconds for o in during), 3),
        },
    )


# ---- Triton dies -----------------------------------------------------------------------------


def _known_fallbacks(outcomes: list[Outcome]) -> list[Outcome]:
    """Known customers served the popular list: a silent fallback."""
    return [o for o in outcomes if o.kind == "known" and o.source == "popular"]


def test_triton_killed_under_load_is_restarted_and_nothing_hangs(faults: Faults) -> None:
    stack = faults.stack
    old_pid = stack.pid("triton")
    assert old_pid is not None
    regions_before = {p.name for p in stack.triton.shm_regions()}
    assert regions_before
    log = stack.log_dir / "gateway.log"
    log_before = log.stat().st_size
    with Load(stack.gateway_url, faults.known, faults.article) as load:
        time.sleep(1.0)
        killed = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)  # the server only: its stubs are orphaned
        first_503 = _wait_for(lambda: _status(f"{stack.gateway_url}/readyz") == 503, 5)
        gone = _wait_for(lambda: not group_alive(old_pid), 10)
        restarted = _wait_for(lambda: stack.pid("triton") not in (None, old_pid), 10)
        ready = _wait_for(
            lambda: _status(f"{stack.gateway_url}/readyz") == 200, RECOVERY_BOUND_S, 0.1
        )
        time.sleep(1.0)
    outcomes = [o for o in load.outcomes if o.start >= killed]
    failed = [o for o in outcomes if o.status != 200]
    served_after = [o for o in outcomes if o.start >= ready]
    assert ready - killed < RECOVERY_BOUND_S
    assert not [o for o in outcomes if o.status not in (200, 503)]  # no refusal, no hang
    assert max(o.seconds for o in outcomes) < TRITON_TIMEOUT_S + 1.0
    assert not _known_fallbacks(outcomes)
    assert {o.kind for o in failed} <= {"known", "similar"}  # cold start needs no Triton
    assert served_after and all(o.status == 200 for o in served_after)
    assert stack.pid("triton") not in (None, old_pid)
    assert not group_alive(old_pid)  # no orphaned stub
    regions_after = {p.name for p in stack.triton.shm_regions()}
    assert regions_after and not regions_after & regions_before  # the dead server's are gone
    log_growth = log.stat().st_size - log_before
    assert log_growth < 20_000, log.read_text()[-3000:]
    _timeline(
        "kill -9 tritonserver under load (2 clients)",
        {
            "first /readyz 503 after kill, s": round(first_503 - killed, 2),
            "old process group gone after, s": round(gone - killed, 2),
            "restarted (new tritonserver process) after, s": round(restarted - killed, 2),
            "ready again (/readyz 200) after, s": round(ready - killed, 2),
            "requests during the fault": len(outcomes),
            "answered 503 (Triton-backed, within timeout)": len(failed),
            "answered 200": sum(o.status == 200 for o in outcomes),
            "no answer / other status": 0,
            "known customers given the popular list": 0,
            "max latency s": round(max(o.seconds for o in outcomes), 3),
            "gateway log growth, bytes": log_growth,
        },
    )


# ---- Redis dies ------------------------------------------------------------------------------


def _recommendations(url: str, customer: str) -> tuple[int, Any]:
    """Status and body of a recommendation request, without the per-answer
    ``recommendation_id`` (every answer gets a new one)."""
    response = httpx.get(f"{url}{RECOMMEND.format(customer_id=customer)}", timeout=10)
    body = response.json()
    if isinstance(body, dict):
        body.pop("recommendation_id", None)
    return response.status_code, body


def test_redis_killed_and_restarted_from_its_aof_loses_nothing(faults: Faults) -> None:
    url = faults.stack.gateway_url
    before = {c: _recommendations(url, c) for c in faults.known}
    assert all(
        status == 200 and body["source"] == "personalised" for status, body in before.values()
    )
    keys = faults.redis.client().dbsize()
    with Load(url, faults.known, faults.article) as load:
        time.sleep(0.5)
        killed = time.monotonic()
        faults.redis.kill()
        not_ready = _wait_for(lambda: _status(f"{url}/readyz") == 503, 5)
        time.sleep(1.0)
        restarted = time.monotonic()
        faults.redis.start()  # same folder: its AOF
        ready = _wait_for(lambda: _status(f"{url}/readyz") == 200, RECOVERY_BOUND_S)
        time.sleep(0.5)
    outcomes = [o for o in load.outcomes if o.start >= killed]
    down = [o for o in outcomes if killed + 0.5 <= o.start < restarted]
    assert down and all(o.status == 503 for o in down if o.kind != "similar")
    assert not _known_fallbacks(outcomes)
    assert not [o for o in outcomes if o.status not in (200, 503)]
    assert faults.redis.client().dbsize() == keys
    after = {c: _recommendations(url, c) for c in faults.known}
    assert after == before
    _timeline(
        "kill -9 redis-server (AOF everysec), restart from the same folder",
        {
            "first /readyz 503 after kill, s": round(not_ready - killed, 2),
            "ready again after restart, s": round(ready - restarted, 2),
            "requests while down": len(down),
            "recommendations answered 503 while down": sum(
                o.status == 503 for o in down if o.kind != "similar"
            ),
            "known customers given the popular list": 0,
            "keys before / after": f"{keys} / {faults.redis.client().dbsize()}",
            "answers changed (data lost)": 0,
        },
    )


def test_redis_restarted_empty_is_not_ready_until_materialized_again(faults: Faults) -> None:
    url = faults.stack.gateway_url
    faults.redis.kill()
    faults.redis.start(folder="empty", aof=False)  # as if it kept nothing across the restart
    assert faults.redis.client().dbsize() == 0
    _wait_for(lambda: _status(f"{url}/readyz") == 503, 5)
    ready = httpx.get(f"{url}/readyz", timeout=5)
    assert ready.json() == {"detail": "feature store unavailable"}
    for customer in (faults.known[0], UNKNOWN_CUSTOMER):  # nothing served as if it were fresh
        assert _recommendations(url, customer) == (503, {"detail": "feature store unavailable"})
    log = (faults.stack.log_dir / "gateway.log").read_text()
    assert "password=***" in log and REDIS_PASSWORD not in log  # logged without the password

    start = time.monotonic()
    paths = faults.paths
    _cli(
        "materialize", "--name", NAME, "--data-root", paths.data_dir.parent,
        "--models-root", paths.models_dir.parent, "--online-store", "redis",
        "--redis-url", faults.redis.url,
    )  # fmt: skip
    materialized = time.monotonic()
    ready_at = _wait_for(lambda: _status(f"{url}/readyz") == 200, 10)
    status, body = _recommendations(url, faults.known[0])
    assert (status, body["source"]) == (200, "personalised")
    _timeline(
        "redis-server restarted empty (no persistence)",
        {
            "/readyz": "503 feature store unavailable",
            "known and unknown customers": "503 (no popular list)",
            "materialize took, s": round(materialized - start, 2),
            "ready after materialize, s": round(ready_at - materialized, 2),
        },
    )


def test_rematerializing_under_load_switches_without_a_fallback(faults: Faults) -> None:
    url = faults.stack.gateway_url
    paths = faults.paths
    before = current_version(faults.feature_repo)
    with Load(url, faults.known, faults.article, pause_s=0.0) as load:
        time.sleep(0.5)
        start = time.monotonic()
        _cli(
            "materialize", "--name", NAME, "--data-root", paths.data_dir.parent,
            "--models-root", paths.models_dir.parent, "--online-store", "redis",
            "--redis-url", faults.redis.url,
        )  # fmt: skip
        done = time.monotonic()
        time.sleep(1.5)  # the gateway looks for a new version every 0.5 s
    after = current_version(faults.feature_repo)
    assert after != before and list_versions(faults.feature_repo)[-1] == after
    outcomes = [o for o in load.outcomes if o.start >= start]
    assert outcomes and all(o.status == 200 for o in outcomes), {o.status for o in outcomes}
    assert not _known_fallbacks(outcomes)
    _timeline(
        "re-materialize under load",
        {
            "materialize took, s": round(done - start, 2),
            "requests during and after": len(outcomes),
            "non-200 / known customers given the popular list": "0 / 0",
        },
    )
