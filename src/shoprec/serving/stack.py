"""The local online stack: tritonserver + the REST gateway, started and stopped together.

``shoprec serve`` and ``shoprec demo`` use it; docker-compose runs the same processes in
containers with the same ports and ``SHOPREC_*`` variables.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

import httpx

from shoprec.errors import ShoprecError
from shoprec.gateway.main import uvicorn_command
from shoprec.gateway.settings import Settings
from shoprec.serving.tritonserver import TritonServer, group_alive

TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
GATEWAY_PORT = 8080
LOOPBACK = "127.0.0.1"


class StackError(ShoprecError, RuntimeError):
    """A process of the stack failed to start or to become ready."""


@dataclass(frozen=True)
class StackConfig:
    """Ports (on ``host``) and folders of the local stack."""

    triton_repo: Path
    feature_repo: Path
    host: str = LOOPBACK
    gateway_port: int = GATEWAY_PORT
    triton_http_port: int = TRITON_HTTP_PORT
    triton_grpc_port: int = TRITON_GRPC_PORT
    triton_metrics_port: int = TRITON_METRICS_PORT
    log_dir: Path | None = None  # None: a temporary folder
    ready_timeout_s: float = 180.0


class ServingStack:
    """tritonserver and the gateway (uvicorn, its own process group), ready or stopped together.

    Example::

        with ServingStack(StackConfig(Path("triton_repo"), Path("models/x/feature_repo"))) as st:
            httpx.get(f"{st.gateway_url}/v1/customers/123/recommendations")
    """

    def __init__(self, config: StackConfig):
        self.config = config
        self.triton = TritonServer(
            config.triton_repo,
            http_port=config.triton_http_port,
            grpc_port=config.triton_grpc_port,
            metrics_port=config.triton_metrics_port,
            host=config.host,
            work_dir=config.log_dir,
        )
        self._gateway: subprocess.Popen[bytes] | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://{self.config.host}:{self.config.gateway_port}"

    def gateway_env(self) -> dict[str, str]:
        """Environment of the gateway process (the same variables docker-compose sets)."""
        settings = Settings(
            triton_url=self.triton.grpc_url, feature_repo=self.config.feature_repo.resolve()
        )
        return {**os.environ, **settings.environment()}

    def start(self) -> ServingStack:
        """Start Triton, wait until its models are ready, then the gateway until /readyz is 200.

        Raises:
            StackError: a process exits or is not ready within ``ready_timeout_s`` (the message
                carries the end of its log); everything started is stopped first.
        """
        try:
            self._check_ports_free()
            self.triton.start()
            self.triton.wait_ready(self.config.ready_timeout_s)
            self._start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

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
        """Whether the gateway process was started and has not exited."""
        return self._gateway is not None and self._gateway.poll() is None

    def _start_gateway(self) -> None:
        log_dir = self.triton.log_path.parent
        cmd = uvicorn_command(self.config.host, self.config.gateway_port)
        with (log_dir / "gateway.log").open("ab") as log:  # the child keeps its own copy
            self._gateway = subprocess.Popen(
                cmd,
                env=self.gateway_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.config.ready_timeout_s
        while time.monotonic() < deadline:
            if self._gateway.poll() is not None:
                raise StackError(
                    f"gateway exited with {self._gateway.returncode}:\n"
                    f"{_tail(log_dir / 'gateway.log')}"
                )
            try:
                if httpx.get(f"{self.gateway_url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise StackError(
            f"gateway not ready after {self.config.ready_timeout_s} s:\n"
            f"{_tail(log_dir / 'gateway.log')}"
        )

    def stop(self) -> None:
        """Stop the gateway, then Triton; SIGTERM, then SIGKILL after a grace period."""
        gateway, self._gateway = self._gateway, None
        if gateway is not None and gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGTERM)
            try:
                gateway.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(gateway.pid, signal.SIGKILL)
                gateway.wait()
        if gateway is not None and group_alive(gateway.pid):
            os.killpg(gateway.pid, signal.SIGKILL)
        self.triton.stop()

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
