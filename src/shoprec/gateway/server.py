"""The gateway's HTTP server: uvicorn with connection limits it lacks, and a concurrency limit.

uvicorn 0.34 with httptools (its default when httptools is installed) has no limit on the size
of a request head and no deadline for receiving one: a 100 MB header is buffered (and parsed
in quadratic time, holding the event loop for seconds), and a client that sends a byte now and
then, or nothing at all, keeps its connection forever (``ONLINE_NOTES.md`` q4; OWASP API4,
unrestricted resource consumption). :class:`GuardedHttpToolsProtocol` adds what a reverse
proxy such as nginx would (``client_header_timeout``, ``client_body_timeout``,
``large_client_header_buffers``):

* a request head larger than :attr:`ConnectionLimits.max_header_bytes`, or with more than
  :attr:`ConnectionLimits.max_headers` header lines, gets **431** and the connection is closed,
  checked on the raw bytes before the parser sees them (what the client still sends is dropped
  for up to :data:`LINGER_S` / :data:`LINGER_BYTES`, so that it can read the answer);
* a head not complete within :attr:`ConnectionLimits.header_timeout_s` of the connection (or of
  the previous response on a keep-alive connection) gets **408** and is closed; a connection
  that sent nothing is closed without an answer;
* a body not complete within :attr:`ConnectionLimits.body_timeout_s` of its head gets **408**
  (when the app has not answered yet) and is closed.

:class:`ConcurrencyLimit` (ASGI middleware) answers **503** ``{"detail": "server busy"}`` with
``Retry-After`` at once when ``max_concurrent_requests`` requests are already being served, so
load beyond capacity is shed instead of queued past every client's timeout. It counts
requests, not connections (uvicorn's ``limit_concurrency`` counts idle connections too, so a
few idle sockets made every request a 503).

:func:`run` starts the gateway (``python -m shoprec.gateway``, what ``shoprec gateway`` and
``shoprec serve`` run) with these limits and the logging of :mod:`shoprec.gateway.logs`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shoprec.gateway.logs import logging_config
from shoprec.gateway.settings import Settings

HEADERS_TOO_LARGE: Final = "request header fields too large"
REQUEST_TIMEOUT: Final = "request timeout"
SERVER_BUSY: Final = "server busy"
APP: Final = "shoprec.gateway.main:make_app"
# Paths a busy server still answers: a liveness probe must not fail because of load.
UNLIMITED_PATHS: Final = frozenset({"/healthz"})
_HEAD_END: Final = b"\r\n\r\n"
# After a 408/431 the connection lingers (nginx's lingering close): what the client still sends
# is read and dropped, up to these bounds, so that its kernel does not reset the connection
# before it has read the answer.
LINGER_S: Final = 1.0
LINGER_BYTES: Final = 1024 * 1024
_REASONS: Final = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection limits of :class:`GuardedHttpToolsProtocol` (bytes, counts, seconds)."""

    max_header_bytes: int = 16 * 1024  # request line + header lines + the blank line
    max_headers: int = 100  # header lines of one request
    header_timeout_s: float = 10.0  # from connection (or previous response) to a complete head
    body_timeout_s: float = 30.0  # from a complete head to a complete body

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
        )


def error_response(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 response with a JSON ``{"detail": ...}`` body that closes the
    connection (``status`` is 408 or 431)."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head size/count limits and head/body deadlines.

    Give it to uvicorn as ``http=functools.partial(GuardedHttpToolsProtocol, limits=...)``.
    See the module docstring for what each limit answers.
    """

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False  # waiting for (the rest of) a request head
        self._head_bytes = 0  # bytes of the current head received so far
        self._head_lines = 0  # line feeds in them
        self._tail = b""  # last bytes of the previous chunk, to find a split "\r\n\r\n"
        self._lingering = False  # answered 408/431: dropping input until closed
        self._reject_after_response = False  # next head too large while a request is served
        self._dropped = 0

    # ---- deadlines ------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._deadline_passed)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start_head(self) -> None:
        """The next bytes are a new request head: count them from zero."""
        self._in_head, self._head_bytes, self._head_lines, self._tail = True, 0, 0, b""

    def _deadline_passed(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self.logger.info("request head late (%.1f s)", self.limits.header_timeout_s)
            if not self._head_bytes:  # an idle connection is just closed
                self.transport.close()
                return
        else:
            self.logger.info("request body late (%.1f s)", self.limits.body_timeout_s)
            if self.cycle is None or self.cycle.response_started:
                self.transport.close()
                return
        self._reject(408, REQUEST_TIMEOUT)

    def _reject(self, status: int, detail: str) -> None:
        """Answer ``status`` and close once the client has had the chance to read it."""
        self._in_head = False
        self._lingering = True
        self.transport.write(error_response(status, detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._disarm()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)

    # ---- uvicorn / asyncio callbacks --------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._reject_after_response:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        if self._in_head and not self._count_head(data):
            if self.cycle is not None and not self.cycle.response_complete:
                # Answer the request being served first; read nothing more until then.
                self._reject_after_response = True
                self.flow.pause_reading()
            else:
                self._reject(431, HEADERS_TOO_LARGE)
            return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
        if not self.transport.is_closing():
            self._arm(self.limits.body_timeout_s)  # disarmed by on_message_complete

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        # Bytes from now on belong to the next head, counted even while this request is
        # served (its deadline starts with the response, below).
        self._start_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._reject_after_response:
            self._reject(431, HEADERS_TOO_LARGE)
        elif not self.pipeline and not self._lingering:
            # (a pipelined request already parsed is being served: its head is complete)
            self._arm(self.limits.header_timeout_s)

    def _count_head(self, data: bytes) -> bool:
        """Add ``data`` to the head being received; False once it breaks a limit."""
        window = self._tail + data
        end = window.find(_HEAD_END)
        if end >= 0:
            head_part = data[: max(0, end + len(_HEAD_END) - len(self._tail))]
            self._in_head = False  # complete: the parser takes it from here
        else:
            head_part = data
            self._tail = window[-(len(_HEAD_END) - 1) :]
        self._head_bytes += len(head_part)
        self._head_lines += head_part.count(b"\n")
        # Lines of a complete head: request line + headers + the blank line.
        headers = self._head_lines - (2 if end >= 0 else 1)
        return self._head_bytes <= self.limits.max_header_bytes and (
            headers <= self.limits.max_headers
        )


class ConcurrencyLimit:
    """Pure ASGI middleware: at most ``limit`` HTTP requests in the app at once; beyond that,
    503 ``{"detail": "server busy"}`` with ``Retry-After: 1`` at once (paths in
    :data:`UNLIMITED_PATHS` are always served and not counted).

    Single event loop (one uvicorn worker process), so a plain counter is exact.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"concurrency limit must be >= 1, got {limit}")
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            body = json.dumps({"detail": SERVER_BUSY}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def server_command(python: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The command line of a gateway server process: ``python -m shoprec.gateway``; settings
    travel in its environment (:meth:`Settings.environment`)."""
    return [
        python, "-m", "shoprec.gateway", "--host", host, "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip


def run(host: str, port: int, workers: int = 1, settings: Settings | None = None) -> None:
    """Serve the gateway app (:data:`APP`, factory mode) under uvicorn with
    :class:`GuardedHttpToolsProtocol` and the configured logging; returns when it stops.

    Raises:
        pydantic.ValidationError: ``settings`` omitted and the environment holds invalid values.
    """
    settings = settings or Settings()
    limits = ConnectionLimits.from_settings(settings)
    uvicorn.run(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=functools.partial(GuardedHttpToolsProtocol, limits=limits),  # type: ignore[arg-type]
        timeout_keep_alive=int(max(1, settings.keepalive_timeout_s)),
        log_config=logging_config(settings.log_format, settings.log_level),
        access_log=settings.access_log,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shoprec.gateway [--host H] [--port P] [--workers N]``."""
    parser = argparse.ArgumentParser(prog="python -m shoprec.gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    run(args.host, args.port, args.workers)
