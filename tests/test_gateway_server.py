"""The gateway's HTTP server limits (431 / 408 / idle close / 503 busy) and its logging.

A real uvicorn server with :class:`GuardedHttpToolsProtocol` runs in a thread on a loopback
port with short limits; clients are raw sockets, so every byte on the wire is the test's.
The app-level tests (failure-log de-duplication, known-customer misses) reuse the fakes of
``test_gateway``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from shoprec.gateway import Settings, create_app
from shoprec.gateway.logs import FailureLog, describe, logging_config
from shoprec.gateway.server import ConcurrencyLimit, ConnectionLimits, GuardedHttpToolsProtocol
from shoprec.gateway.triton import TritonRecommender
from shoprec.serving.tritonserver import free_port
from test_gateway import (
    KNOWN_CUSTOMER,
    RECOMMEND_PATH,
    SIMILAR_PATH,
    FakeStore,
    FakeTritonClient,
    metric_samples,
)

LIMITS = ConnectionLimits(
    max_header_bytes=4096, max_headers=20, header_timeout_s=0.5, body_timeout_s=0.5
)
CONCURRENCY = 2
SLOW_S = 0.6  # how long GET /slow takes


async def tiny_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /ok``, ``GET /slow`` (SLOW_S), ``POST /echo`` (answers the body length)."""
    if scope["type"] != "http":
        return
    body = b""
    if scope["path"] == "/echo":
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if message["type"] == "http.disconnect":
                return
        body = str(len(body)).encode()
    elif scope["path"] == "/slow":
        await asyncio.sleep(SLOW_S)
        body = b"slow"
    else:
        body = b"ok"
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Server:
    port: int

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return sock


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    port = free_port()
    config = uvicorn.Config(
        ConcurrencyLimit(tiny_app, CONCURRENCY),
        host="127.0.0.1",
        port=port,
        http=functools.partial(GuardedHttpToolsProtocol, limits=LIMITS),  # type: ignore[arg-type]
        log_level="warning",
        lifespan="off",
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield Server(port)
    uv.should_exit = True
    thread.join(10)


_unread: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The next HTTP/1.1 response with a content-length: (status, headers, body); bytes of a
    following response are kept for the next call."""
    data = _unread.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    _unread[sock] = rest[length:]
    return int(status_line.split()[1]), headers, rest[:length]


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within_s`` seconds, reading
    and discarding what comes before."""
    sock.settimeout(within_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def test_keep_alive_and_pipelined_requests_are_served(server: Server) -> None:
    with server.connect() as sock:
        for _ in range(3):
            sock.sendall(get("/ok"))
            assert read_response(sock)[::2] == (200, b"ok")
        sock.sendall(get("/ok") + get("/ok"))  # pipelined: two heads in one write
        assert read_response(sock)[::2] == (200, b"ok")
        assert read_response(sock)[::2] == (200, b"ok")


def _head_of_size(size: int) -> bytes:
    """A GET head of exactly ``size`` bytes (a padding header fills it)."""
    base = get("/ok", "X-Pad: \r\n")
    return get("/ok", "X-Pad: " + "a" * (size - len(base)) + "\r\n")


def test_a_head_at_the_limit_passes_one_byte_more_is_431(server: Server) -> None:
    at_limit = _head_of_size(LIMITS.max_header_bytes)
    assert len(at_limit) == LIMITS.max_header_bytes
    with server.connect() as sock:
        sock.sendall(at_limit)
        assert read_response(sock)[0] == 200
    with server.connect() as sock:
        start = time.monotonic()
        sock.sendall(_head_of_size(LIMITS.max_header_bytes + 1))
        status, headers, body = read_response(sock)
        assert (status, json.loads(body)) == (431, {"detail": "request header fields too large"})
        assert headers["connection"] == "close"
        assert time.monotonic() - start < 0.5
        assert closed_by_server(sock, 1.0)


def test_a_head_growing_past_the_limit_in_pieces_is_431_before_it_ends(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: ")
        for _ in range(10):  # 10 x 1000 bytes, never a complete head
            sock.sendall(b"b" * 1000)
            time.sleep(0.01)
        assert read_response(sock)[0] == 431
        assert closed_by_server(sock, 2.0)


def test_a_huge_header_is_cut_off_after_the_limit(server: Server) -> None:
    """A 100 MB header: the server answers 431 and closes after reading about the limit."""
    with server.connect() as sock:
        start = time.monotonic()
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Huge: ")
        sent = 0
        try:
            while sent < 100_000_000:
                sock.sendall(b"h" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < 10_000_000  # the server stopped reading long before 100 MB
        assert time.monotonic() - start < 2.0


def test_a_next_head_sent_while_a_request_is_served_is_counted_too(server: Server) -> None:
    """Bytes of the next (pipelined) head that arrive while the server is busy with a request
    count against the limit, not only those after the response."""
    with server.connect() as sock:
        sock.sendall(get("/slow"))
        time.sleep(0.1)  # /slow is in the app now
        try:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: ")
            for _ in range(20):
                sock.sendall(b"b" * 1000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_response(sock)[::2] == (200, b"slow")
        assert read_response(sock)[0] == 431


@pytest.mark.parametrize(("headers", "status"), [(LIMITS.max_headers, 200), (21, 431)])
def test_header_count_limit(server: Server, headers: int, status: int) -> None:
    extra = "".join(f"X-H{i}: v\r\n" for i in range(headers - 1))  # + Host
    with server.connect() as sock:
        sock.sendall(get("/ok", extra))
        assert read_response(sock)[0] == status


def test_a_slow_head_gets_408_at_the_deadline(server: Server) -> None:
    with server.connect() as sock:
        start = time.monotonic()
        sock.sendall(b"GET /ok HTTP/1.1\r\n")
        for byte in b"Host: t\r\nX-Slow: 1":
            sock.sendall(bytes([byte]))
            time.sleep(0.02)
            if time.monotonic() - start > 2 * LIMITS.header_timeout_s:
                break
        status, _, body = read_response(sock)
        elapsed = time.monotonic() - start
        assert (status, json.loads(body)) == (408, {"detail": "request timeout"})
        assert LIMITS.header_timeout_s - 0.05 < elapsed < LIMITS.header_timeout_s + 0.5
        assert closed_by_server(sock, 1.0)


def test_an_idle_connection_is_closed_without_an_answer(server: Server) -> None:
    with server.connect() as sock:
        start = time.monotonic()
        sock.settimeout(2)
        assert sock.recv(100) == b""
        assert time.monotonic() - start < LIMITS.header_timeout_s + 0.5


def test_the_head_deadline_restarts_after_each_response(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(get("/ok"))
        assert read_response(sock)[0] == 200
        time.sleep(0.3)
        sock.sendall(get("/ok"))  # 0.3 s later: still within a fresh 0.5 s
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /ok HTTP/1.1\r\n")  # then a head that never ends
        assert read_response(sock)[0] == 408


def test_a_slow_body_gets_408_and_a_complete_one_is_read(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123")
        start = time.monotonic()
        status, _, body = read_response(sock)
        assert (status, json.loads(body)) == (408, {"detail": "request timeout"})
        assert time.monotonic() - start < LIMITS.body_timeout_s + 0.5
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123")
        time.sleep(0.1)
        sock.sendall(b"456789")
        assert read_response(sock)[::2] == (200, b"10")


def test_slow_and_idle_clients_do_not_slow_down_others(server: Server) -> None:
    idle = [server.connect() for _ in range(30)]
    slow = [server.connect() for _ in range(10)]
    try:
        for sock in slow:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        latencies = []
        for _ in range(20):
            with server.connect() as sock:
                start = time.monotonic()
                sock.sendall(get("/ok"))
                assert read_response(sock)[0] == 200
                latencies.append(time.monotonic() - start)
        assert max(latencies) < 0.2, latencies
        assert all(closed_by_server(sock, 1.5) for sock in idle + slow)
    finally:
        for sock in idle + slow:
            sock.close()


def test_requests_past_the_concurrency_limit_get_503_at_once(server: Server) -> None:
    def timed(path: str) -> tuple[int, dict[str, str], bytes, float]:
        with server.connect() as sock:
            start = time.monotonic()
            sock.sendall(get(path))
            status, headers, body = read_response(sock)
            return status, headers, body, time.monotonic() - start

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        running = [pool.submit(timed, "/slow") for _ in range(CONCURRENCY)]
        time.sleep(0.2)  # both are in the app now
        status, headers, body, elapsed = timed("/slow")
        assert (status, json.loads(body)) == (503, {"detail": "server busy"})
        assert headers["retry-after"] == "1"
        assert elapsed < 0.2
        assert timed("/healthz")[0] == 200  # a liveness probe is never shed
        assert [f.result()[0] for f in running] == [200] * CONCURRENCY
    assert timed("/slow")[0] == 200


# ---- logging -----------------------------------------------------------------------------------


def test_failure_log_writes_one_line_per_kind_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = FailureLog(logging.getLogger("test.failures"), interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.failures"):
        assert log.failure("triton_similar error", "boom") is True
        assert [log.failure("triton_similar error", "boom") for _ in range(41)] == [False] * 41
        assert log.failure("feature_fetch timeout", "slow") is True  # another kind
        now[0] += 10.0
        assert log.failure("triton_similar error", "boom again") is True
        assert log.failure("triton_similar error", "x" * 1000) is False
    assert caplog.messages == [
        "triton_similar error: boom",
        "feature_fetch timeout: slow",
        "triton_similar error: boom again (41 more in the last 10.0 s)",
    ]
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        FailureLog(logging.getLogger("x"), interval_s=0)


def test_describe_names_the_exception_on_one_line() -> None:
    assert describe(ConnectionError("refused\n  by peer")) == "ConnectionError: refused by peer"
    assert describe(TimeoutError()) == "TimeoutError"


def test_json_logging_writes_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(logging_config("json", "INFO"))
    try:
        logging.getLogger("shoprec.test").warning("hello %s", "world", extra={"stage": "x"})
        logging.getLogger("uvicorn.error").info("started")
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        logging.config.dictConfig(logging_config("text", "WARNING"))
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("WARNING", "shoprec.test", "hello world"),
        ("INFO", "uvicorn.error", "started"),
    ]
    assert records[0]["stage"] == "x" and "time" in records[0]
    with pytest.raises(ValueError, match="'yaml'"):
        logging_config("yaml")


def _app_client(
    store: FakeStore, triton: FakeTritonClient, **settings: Any
) -> Callable[[], TestClient]:
    def make() -> TestClient:
        app = create_app(
            Settings(**settings),
            store_factory=lambda _: store,
            recommender_factory=lambda s: TritonRecommender(triton, s.triton_timeout_s),
        )
        return TestClient(app)

    return make


def test_a_failing_upstream_logs_once_per_interval_and_counts_every_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Triton down, 50 requests: one log line without a traceback, 50 in the counter."""
    triton = FakeTritonClient()
    triton.error = ConnectionRefusedError(111, "Connection refused")
    with (
        caplog.at_level(logging.WARNING, "shoprec.gateway.deps"),
        _app_client(FakeStore(), triton, log_interval_s=60.0)() as client,
    ):
        for _ in range(50):
            assert client.get(SIMILAR_PATH.format(article_id="a1")).status_code == 503
        metrics = metric_samples(client.get("/metrics").text)
    lines = [r for r in caplog.records if r.name == "shoprec.gateway.deps"]
    assert [r.getMessage() for r in lines] == [
        "triton_similar error: UpstreamUnavailableError: similar_items: [Errno 111] "
        "Connection refused"
    ]
    assert lines[0].exc_info is None
    key = (
        "shoprec_gateway_stage_failures_total",
        frozenset({("stage", "triton_similar"), ("reason", "error")}),
    )
    assert metrics[key] == 50


def test_a_known_customer_the_store_misses_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.snapshot.add("c-lost")  # in the snapshot, not in the store
    with (
        caplog.at_level(logging.WARNING, "shoprec.gateway.deps"),
        _app_client(store, FakeTritonClient())() as client,
    ):
        for customer in ("c-lost", "c-new", KNOWN_CUSTOMER, "c-lost"):
            response = client.get(RECOMMEND_PATH.format(customer_id=customer))
            assert response.status_code == 200
        assert response.json()["source"] == "popular"
        metrics = metric_samples(client.get("/metrics").text)
    assert metrics[("shoprec_gateway_known_customer_misses_total", frozenset())] == 2
    assert [r.getMessage() for r in caplog.records if r.name == "shoprec.gateway.deps"] == [
        "known customer missing: the feature store has no features for 1 customer(s) of the "
        "materialized snapshot; serving them the popular list"
    ]


def test_the_app_follows_new_store_versions() -> None:
    store = FakeStore()
    with _app_client(store, FakeTritonClient(), store_refresh_s=0.05)() as client:
        time.sleep(0.3)
        assert client.get("/healthz").status_code == 200
    assert store.refreshes >= 3
