"""Run the tritonserver binary shipped in the nvidia-pytriton wheel, without Docker.

The wheel holds Triton Inference Server 2.51 with only the Python backend:
``pytriton/tritonserver/bin/tritonserver``, its shared libraries in ``nvidia_pytriton.libs``,
the backend in ``pytriton/tritonserver/backends/python`` and one backend stub per Python
version in ``pytriton/tritonserver/python_backend_stubs/<X.Y>``. :class:`TritonServer` copies
the backend and this interpreter's stub into a backend folder, starts the binary in its own
process group on loopback ports, and stops the whole group.

How the stub finds this virtual environment (seen with Triton 2.51): the stub embeds
``libpython3.X.so`` and ignores ``PYTHONPATH``/``PYTHONHOME`` (``sys.flags.ignore_environment``
is 1), but the embedded interpreter computes its prefix from the first ``python3`` on
``PATH``; with the venv's ``bin`` first it finds ``pyvenv.cfg`` and gets the venv's
site-packages (torch, faiss, shoprec). ``LD_LIBRARY_PATH`` lists this interpreter's
``libpython`` folder first, so the stub runs the same CPython build as the venv (otherwise the
system's ``libpython3.11.so.1.0`` would run against the venv's standard library), then
``nvidia_pytriton.libs``.

Example::

    with TritonServer(Path("triton_repo")) as server:      # free loopback ports, waits ready
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from shoprec.errors import ShoprecError
from shoprec.serving.supervisor import (
    Backoff,
    ChildSpec,
    ProcessGroup,
    Restart,
    group_alive,  # noqa: F401  (re-exported: callers check process groups)
)

LOOPBACK: Final = "127.0.0.1"
BACKEND_NAME: Final = "python"
BACKEND_FILES: Final = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB_FILE: Final = "triton_python_backend_stub"
LOG_FILE: Final = "tritonserver.log"
SHM_DIR: Final = Path("/dev/shm")
# Triton APIs that change the server or read its internals: behind the admin key (or off).
# health, metadata, inference, model-config and statistics stay open (perf_analyzer reads
# statistics); the gateway needs only health and inference.
RESTRICTED_APIS: Final = ("model-repository", "shared-memory", "logging", "trace")
ADMIN_KEY_HEADER: Final = "shoprec-admin-key"  # HTTP header; gRPC: triton-grpc-protocol-<it>


class TritonServerError(ShoprecError, RuntimeError):
    """tritonserver is missing, exited, or did not become ready (message ends with its log)."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the nvidia-pytriton wheel keeps the server.

    Attributes:
        binary: the ``tritonserver`` executable.
        libs: folder of its bundled shared libraries (for ``LD_LIBRARY_PATH``).
        python_backend: folder holding ``libtriton_python.so`` and
            ``triton_python_backend_utils.py``.
        stubs: folder of per-Python-version stub folders (``3.11/triton_python_backend_stub``).
    """

    binary: Path
    libs: Path
    python_backend: Path
    stubs: Path

    @classmethod
    def find(cls) -> TritonInstall:
        """Locate the server inside the installed ``pytriton`` package.

        Raises:
            TritonServerError: nvidia-pytriton is not installed or lacks a file.
        """
        spec = importlib.util.find_spec("pytriton")
        if spec is None or spec.origin is None:
            raise TritonServerError("the pytriton package (nvidia-pytriton) is not installed")
        root = Path(spec.origin).parent / "tritonserver"
        install = cls(
            binary=root / "bin" / "tritonserver",
            libs=root.parent.parent / "nvidia_pytriton.libs",
            python_backend=root / "backends" / BACKEND_NAME,
            stubs=root / "python_backend_stubs",
        )
        for path in (install.binary, install.libs, install.python_backend, install.stubs):
            if not path.exists():
                raise TritonServerError(f"nvidia-pytriton install incomplete: {path} not found")
        return install

    def stub(self, python_version: str | None = None) -> Path:
        """The backend stub built for ``python_version`` ("3.11"; default: this interpreter)."""
        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        path = self.stubs / version / STUB_FILE
        if not path.exists():
            raise TritonServerError(f"no Python-backend stub for Python {version}: {path}")
        return path


def prepare_backend_dir(install: TritonInstall, dest: Path) -> Path:
    """Make ``dest/python/`` a complete Python backend (library, utils, this Python's stub).

    Returns ``dest``, the value of ``--backend-directory``. Without the stub copied there,
    models fail with "triton_python_backend_stub is not found".
    """
    backend = dest / BACKEND_NAME
    backend.mkdir(parents=True, exist_ok=True)
    for name in BACKEND_FILES:
        shutil.copy2(install.python_backend / name, backend / name)
    shutil.copy2(install.stub(), backend / STUB_FILE)
    return dest


def server_environment(
    install: TritonInstall, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment tritonserver and its Python stubs need to use this venv.

    ``PATH`` starts with this interpreter's ``bin`` folder; ``LD_LIBRARY_PATH`` starts with
    this interpreter's ``libpython`` folder (when it is a shared build) and
    ``nvidia_pytriton.libs``. See the module docstring for why.
    """
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p)
    libs = [str(install.libs)]
    libdir, ldlibrary = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlibrary and (Path(libdir) / ldlibrary).exists():
        libs.insert(0, libdir)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (*libs, env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class TritonServer:
    """A tritonserver process serving one model repository.

    Args:
        model_repository: the repository folder (e.g. from ``export_triton_repository``).
        http_port, grpc_port, metrics_port: ports on ``host``; None = a free port each.
        host: address every endpoint binds to (loopback by default).
        work_dir: where the backend folder and the log go; None = a temporary folder made by
            :meth:`start` and removed by :meth:`stop`.
        log_file: server log (stdout and stderr); default ``work_dir/tritonserver.log``.
        exit_timeout_s: how long tritonserver lets in-flight requests finish on SIGTERM.
        extra_args: more tritonserver flags (e.g. ``["--log-verbose=1"]``).
        admin_key: the value of the ``shoprec-admin-key`` header (HTTP) or
            ``triton-grpc-protocol-shoprec-admin-key`` metadata (gRPC) that the
            :data:`RESTRICTED_APIS` require; None: a random key nobody is told, i.e. those
            APIs are off. Triton takes it on its command line, so local users who can list
            processes can read it.

    The Python backend's shared-memory regions are named with a prefix unique to this object
    (:attr:`shm_prefix`); :meth:`stop` (and the supervisor's cleanup) removes the regions a
    killed server left in ``/dev/shm``.

    Use as a context manager (start, wait until ready, stop on exit) or call :meth:`start`,
    :meth:`wait_ready` and :meth:`stop`. The server runs in a new process group (session),
    and :meth:`stop` signals the whole group, so no Python-backend stub outlives it.
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        host: str = LOOPBACK,
        work_dir: Path | None = None,
        log_file: Path | None = None,
        exit_timeout_s: int = 15,
        extra_args: tuple[str, ...] = (),
        admin_key: str | None = None,
        env: Mapping[str, str] | None = None,
    ):
        """``env``: variables added to the server's environment (its Python-backend models
        read them, e.g. ``SHOPREC_ARTICLE_DELTA``)."""
        self.extra_env = dict(env or {})
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise TritonServerError(f"model repository not found: {self.model_repository}")
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or _other_free_port(host, {self.http_port})
        self.metrics_port = metrics_port or _other_free_port(host, {self.http_port, self.grpc_port})
        self.work_dir = Path(work_dir) if work_dir else None  # None: a temporary one at start
        self._own_work_dir = work_dir is None
        self._log_file = Path(log_file) if log_file else None
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = extra_args
        self._admin_key = admin_key or secrets.token_urlsafe(32)
        self.shm_prefix = f"shoprec_{secrets.token_hex(6)}_"
        self.install = TritonInstall.find()
        self._group: ProcessGroup | None = None
        self._backend_dir: Path | None = None
        self._stopped = False

    # ---- addresses ----------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint (tritonclient.http style, no scheme)."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        """The server log: ``log_file``, else ``tritonserver.log`` in the work folder."""
        if self._log_file is not None:
            return self._log_file
        if self.work_dir is None:
            raise TritonServerError("tritonserver not started: no work folder yet")
        return self.work_dir / LOG_FILE

    @property
    def pid(self) -> int | None:
        """Process id (= process group id) of the running server, None before start."""
        return self._group.pid if self._group else None

    def command(self, backend_dir: Path) -> list[str]:
        """The tritonserver command line: loopback by default, restricted APIs behind the
        admin key, shared-memory regions named with :attr:`shm_prefix`."""
        restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={self._admin_key}"
        return [
            str(self.install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            # configs are complete: skip the extra stub launch per model that auto-complete costs
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-config={BACKEND_NAME},shm-region-prefix-name={self.shm_prefix}",
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            *self.extra_args,
        ]

    # ---- lifecycle ----------------------------------------------------------------------
    def prepare(self) -> Path:
        """Make the work folder and the backend folder (once); returns the backend folder."""
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="tritonserver-"))
        if self._backend_dir is None:
            self._backend_dir = prepare_backend_dir(self.install, self.work_dir / "backends")
        return self._backend_dir

    def child_spec(
        self,
        name: str = "triton",
        restart: Restart = Restart.ALWAYS,
        backoff: Backoff | None = None,
        stop_grace_s: float = 25.0,
    ) -> ChildSpec:
        """This server as a :class:`~shoprec.serving.supervisor.Supervisor` child: same
        command, environment and log; its cleanup removes its ``/dev/shm`` regions."""
        backend_dir = self.prepare()
        return ChildSpec(
            name=name,
            command=lambda: self.command(backend_dir),
            log_file=self.log_path,
            env={**server_environment(self.install), **self.extra_env},
            cwd=self.work_dir,
            restart=restart,
            backoff=backoff or Backoff(),
            cleanup=self.remove_shm_regions,
            stop_grace_s=stop_grace_s,
        )

    def shm_regions(self) -> list[Path]:
        """This server's Python-backend shared-memory regions in ``/dev/shm``."""
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*"))

    def remove_shm_regions(self) -> int:
        """Remove this server's regions from ``/dev/shm`` (after its processes are gone: a
        killed server cannot); returns how many."""
        regions = self.shm_regions()
        for path in regions:
            path.unlink(missing_ok=True)
        return len(regions)

    def start(self) -> TritonServer:
        """Launch tritonserver (returns at once; see :meth:`wait_ready`)."""
        if self._group is not None:
            raise TritonServerError(f"tritonserver already started (pid {self._group.pid})")
        backend_dir = self.prepare()
        self._group = ProcessGroup.start(
            self.command(backend_dir),
            self.log_path,
            env={**server_environment(self.install), **self.extra_env},
            cwd=self.work_dir,
        )
        return self

    def wait_ready(self, timeout_s: float = 120.0, poll_s: float = 0.25) -> None:
        """Block until the HTTP and gRPC endpoints report the server ready.

        Raises:
            TritonServerError: the server exited (e.g. a model failed to load) or was not ready
                within ``timeout_s`` seconds; the message ends with the tail of its log.
        """
        if self._group is None:
            raise TritonServerError("tritonserver not started")
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._group.poll()
            if code is not None:
                raise TritonServerError(
                    f"tritonserver exited with code {code} before it was ready\n{self.log_tail()}"
                )
            if self.answers_ready():
                return
            if time.monotonic() > deadline:
                raise TritonServerError(
                    f"tritonserver not ready after {timeout_s:.0f} s\n{self.log_tail()}"
                )
            time.sleep(poll_s)

    def answers_ready(self) -> bool:
        """Whether the HTTP and gRPC endpoints both say the server is ready now."""
        return self._http_ready() and self._grpc_ready()

    def _http_ready(self) -> bool:
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _grpc_ready(self) -> bool:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        try:
            with grpcclient.InferenceServerClient(self.grpc_url) as client:
                return bool(client.is_server_ready(client_timeout=2))
        except InferenceServerException:
            return False

    def is_running(self) -> bool:
        return self._group is not None and self._group.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Block until the server exits (e.g. for ``shoprec serve``); returns its exit code."""
        if self._group is None:
            raise TritonServerError("tritonserver not started")
        return self._group.process.wait(timeout_s)

    def stop(self, grace_s: float = 25.0) -> int | None:
        """SIGTERM the server's process group, SIGKILL it after ``grace_s`` seconds, then
        remove its ``/dev/shm`` regions.

        Idempotent. Returns the server's exit code (None if it was never started). Removes the
        temporary work folder (and the log in it) when the server created it.
        """
        if self._group is not None and self._stopped:
            return self._group.process.returncode  # its pid may belong to someone else by now
        code = None
        if self._group is not None:
            code = self._group.stop(grace_s)
            self._stopped = True
        self.remove_shm_regions()
        if self._own_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return code

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log ("" if there is none)."""
        if self._log_file is None and self.work_dir is None:
            return ""  # not started
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _other_free_port(host: str, taken: set[int]) -> int:
    while True:
        port = free_port(host)
        if port not in taken:
            return port
