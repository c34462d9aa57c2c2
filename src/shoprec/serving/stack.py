"""The local online stack: tritonserver + the REST gateway + the near-real-time feature
updater, started and stopped together.

``shoprec serve`` and ``shoprec demo`` use it; docker-compose runs the same processes in
containers with the same ports and ``SHOPREC_*`` variables.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final

import httpx

from shoprec.errors import ArtifactError, ShoprecError
from shoprec.featurestore.shopper import article_delta_location
from shoprec.gateway.main import uvicorn_command
from shoprec.gateway.settings import Settings
from shoprec.serving.article_delta import DELTA_DB, ENV_ARTICLE_DELTA
from shoprec.serving.supervisor import Backoff, ChildSpec, Supervisor
from shoprec.serving.tritonserver import LOG_FILE, TritonServer

TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
GATEWAY_PORT = 8080
LOOPBACK = "127.0.0.1"
TRITON: Final = "triton"  # child names in the supervisor
GATEWAY: Final = "gateway"
UPDATER: Final = "updater"
GATEWAY_LOG: Final = "gateway.log"
UPDATER_LOG: Final = "updater.log"


class StackError(ShoprecError, RuntimeError):
    """A process of the stack failed to start or to become ready."""


@dataclass(frozen=True)
class StackConfig:
    """Ports (on ``host``) and folders of the local stack.

    Attributes:
        log_dir: where ``tritonserver.log`` and ``gateway.log`` are appended (kept across
            restarts and after stop; ``shoprec serve`` uses ``models/<name>/logs``); None: a
            temporary folder removed on stop.
        gateway_settings: :class:`~shoprec.gateway.settings.Settings` fields of the gateway
            beyond the Triton address and the feature repo (e.g. ``{"header_timeout_s": 1}``).
        triton_admin_key: the key of Triton's restricted APIs (None: a random one, i.e. off).
        backoff: restart delays of every process.
        updater: also run the near-real-time feature updater (``shoprec.updater``), started
            once the gateway is ready (the gateway creates the embedded event log).
    """

    triton_repo: Path
    feature_repo: Path
    host: str = LOOPBACK
    gateway_port: int = GATEWAY_PORT
    triton_http_port: int = TRITON_HTTP_PORT
    triton_grpc_port: int = TRITON_GRPC_PORT
    triton_metrics_port: int = TRITON_METRICS_PORT
    log_dir: Path | None = None
    ready_timeout_s: float = 180.0
    gateway_settings: Mapping[str, Any] = field(default_factory=dict)
    triton_admin_key: str | None = None
    backoff: Backoff = field(default_factory=Backoff)
    updater: bool = True


class ServingStack:
    """tritonserver and the gateway under one :class:`~shoprec.serving.supervisor.Supervisor`.

    :meth:`start` starts Triton, waits until its models are ready, then the gateway until its
    ``/readyz`` is 200, then watches both: a process that exits (Triton killed, a crash) is
    restarted with backoff while the other keeps running (the gateway answers 503 for what
    needs Triton meanwhile), and its whole process group and Triton's ``/dev/shm`` regions are
    cleaned up first. :meth:`stop` stops both.

    Example::

        with ServingStack(StackConfig(Path("triton_repo"), Path("models/x/feature_repo"))) as st:
            httpx.get(f"{st.gateway_url}/v1/customers/123/recommendations")
    """

    def __init__(self, config: StackConfig):
        self.config = config
        self._own_log_dir = config.log_dir is None
        self.log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="shoprec-stack-"))
        try:
            self.article_delta = article_delta_location(
                config.feature_repo, redis_url=config.gateway_settings.get("redis_url")
            )
        except ArtifactError:  # not materialized yet: the gateway will say so; SQLite default
            self.article_delta = str(config.feature_repo.resolve() / DELTA_DB)
        self.triton = TritonServer(
            config.triton_repo,
            http_port=config.triton_http_port,
            grpc_port=config.triton_grpc_port,
            metrics_port=config.triton_metrics_port,
            host=config.host,
            log_file=self.log_dir / LOG_FILE,
            admin_key=config.triton_admin_key,
            env={ENV_ARTICLE_DELTA: self.article_delta},
        )
        gateway = ChildSpec(
            name=GATEWAY,
            command=lambda: uvicorn_command(config.host, config.gateway_port),
            log_file=self.log_dir / GATEWAY_LOG,
            env=self.gateway_env(),
            backoff=config.backoff,
            stop_grace_s=10.0,
        )
        children = [self.triton.child_spec(TRITON, backoff=config.backoff), gateway]
        if config.updater:
            children.append(
                ChildSpec(
                    name=UPDATER,
                    command=lambda: [sys.executable, "-m", "shoprec.updater.main"],
                    log_file=self.log_dir / UPDATER_LOG,
                    env=self.gateway_env(),
                    backoff=config.backoff,
                    stop_grace_s=10.0,
                )
            )
        self.supervisor = Supervisor(children)

    @property
    def gateway_url(self) -> str:
        return f"http://{self.config.host}:{self.config.gateway_port}"

    def gateway_env(self) -> dict[str, str]:
        """Environment of the gateway and updater processes (the same variables docker-compose
        sets), with ``SHOPREC_ARTICLE_DELTA``: the article delta the updater writes and
        tritonserver's models read (next to the online store)."""
        settings = Settings(
            triton_url=self.triton.grpc_url,
            feature_repo=self.config.feature_repo.resolve(),
            **self.config.gateway_settings,
        )
        return {
            **os.environ,
            **settings.environment(),
            ENV_ARTICLE_DELTA: self.article_delta,
        }

    def start(self) -> ServingStack:
        """Start Triton, wait until its models are ready, then the gateway until /readyz is
        200; then watch both.

        Raises:
            StackError: a process exits or is not ready within ``ready_timeout_s`` (the message
                carries the end of its log); everything started is stopped first.
        """
        try:
            self._check_ports_free()
            self.supervisor.start_child(TRITON)
            self._wait(TRITON, self.triton.answers_ready)
            self.supervisor.start_child(GATEWAY)
            self._wait(GATEWAY, self.gateway_ready)
            if self.config.updater:
                self.supervisor.start_child(UPDATER)
            self.supervisor.watch()
        except BaseException:
            self.stop()
            raise
        return self

    def gateway_ready(self) -> bool:
        """Whether the gateway's ``/readyz`` answers 200 now."""
        try:
            return httpx.get(f"{self.gateway_url}/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        log = self.supervisor.child(name).spec.log_file
        deadline = time.monotonic() + self.config.ready_timeout_s
        while not ready():
            if not self.supervisor.running(name):
                group = self.supervisor.child(name).group
                code = None if group is None else group.poll()
                raise StackError(
                    f"{name} exited with code {code} before it was ready:\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} not ready after {self.config.ready_timeout_s} s:\n{_tail(log)}"
                )
            time.sleep(0.25)

    def _check_ports_free(self) -> None:
        """Raise StackError naming the first port of the stack that something listens on.

        Without it a second stack on the same ports takes the first one's ready answers for
        its own (its tritonserver and uvicorn then fail to bind and exit).
        """
        c = self.config
        for what, port in (
            ("gateway", c.gateway_port),
            ("Triton HTTP", c.triton_http_port),
            ("Triton gRPC", c.triton_grpc_port),
            ("Triton metrics", c.triton_metrics_port),
        ):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((c.host, port))
                except OSError as exc:
                    raise StackError(f"{what} port {c.host}:{port} is in use ({exc})") from exc

    def gateway_running(self) -> bool:
        """Whether the gateway process is running now."""
        return self.supervisor.running(GATEWAY)

    def pid(self, name: str) -> int | None:
        """Process (group) id of ``"triton"`` or ``"gateway"`` while it runs."""
        return self.supervisor.pid(name)

    def stop(self) -> None:
        """Stop watching, then the gateway, then Triton (whole process groups; SIGTERM, then
        SIGKILL after a grace period); remove Triton's ``/dev/shm`` regions. Idempotent."""
        self.supervisor.stop()
        self.triton.stop()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> ServingStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C inside the block, so ``finally`` clauses stop the stack."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
