"""Real servers for the write-API tests: a toy feature store materialized by Feast, uvicorn on a
free loopback port (in a thread or as a process) and redis-server instances of their own.

Nothing here touches the shared Redis at 127.0.0.1:6379: each :class:`RedisServer` runs in a
temporary folder on a free port with AOF on and a password, and is stopped by PID.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import redis
import uvicorn
from fastapi import FastAPI

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.config import DatasetConfig, PipelineConfig
from shoprec.data.dataset import SPLIT_TRAIN, build_dataset
from shoprec.data.ingest.canonical import Canonical, write_canonical
from shoprec.export.online_tables import materialize
from shoprec.features.encode import fit_workflow
from shoprec.gateway.keys import ApiKey, Role, hash_key
from toydata import make_canonical

LOOPBACK = "127.0.0.1"
REDIS_PASSWORD = "test-log-secret"
WRITE_KEY = "write-key-for-tests-0123456789abcdefghijklmnop"
READ_KEY = "read-key-for-tests-0123456789abcdefghijklmnopq"
TEST_KEYS = [
    ApiKey(name="storefront", role=Role.WRITE, sha256=hash_key(WRITE_KEY)),
    ApiKey(name="browser", role=Role.READ, sha256=hash_key(READ_KEY)),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ToyStore:
    """A toy dataset (tests/toydata.py) with a materialized SQLite feature repo."""

    root: Path
    canonical: Canonical
    canonical_dir: Path
    models_dir: Path
    repo: Path


def build_toy_store(root: Path) -> ToyStore:
    """Canonical tables, labelled dataset, fitted workflow and a materialized SQLite feature
    repo of the toy data under ``root`` (a few seconds)."""
    canonical = make_canonical()
    canonical_dir = root / "data" / "toy" / "canonical"
    write_canonical(canonical, canonical_dir, {"source": "toy"})
    config = PipelineConfig(dataset=DatasetConfig(train_windows=2, history_length=6))
    dataset_dir = root / "data" / "toy" / "dataset"
    data = build_dataset(canonical, config.dataset, dataset_dir)
    train = [w.index for w in data.window(SPLIT_TRAIN)]
    purchases = canonical.transactions.join(
        canonical.articles.select(s.ARTICLE_SPARSE), on=s.ARTICLE_ID
    )
    workflow = fit_workflow(
        config.workflow,
        data.customer_features.filter(pl.col(s.WINDOW).is_in(train)),
        data.article_features.filter(pl.col(s.WINDOW).is_in(train)),
        purchases,
    )
    models_dir = root / "models" / "toy"
    models_dir.mkdir(parents=True)
    workflow.save(models_dir / A.WORKFLOW_FILE)
    (models_dir / A.CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    report = materialize(models_dir, dataset_dir, canonical_dir)
    return ToyStore(root, canonical, canonical_dir, models_dir, report.repo_path)


class ThreadedServer:
    """uvicorn serving ``app`` on a free loopback port in a thread of this process."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host=LOOPBACK, port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class GatewayProcess:
    """``shoprec.gateway.main:make_app`` under uvicorn in its own process group, the way
    ``shoprec gateway`` runs it; stdout and stderr go to ``log``."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> GatewayProcess:
        from shoprec.gateway.main import uvicorn_command

        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                uvicorn_command(LOOPBACK, self.port),
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not up: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group (no shutdown of any kind)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisServer:
    """A redis-server of the test's own: temp folder, free port, password, AOF, noeviction."""

    def __init__(self, folder: Path, appendfsync: str = "always") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not installed")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@{LOOPBACK}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, password=REDIS_PASSWORD)

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                LOOPBACK,
                "--dir",
                str(self.folder),
                "--requirepass",
                REDIS_PASSWORD,
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                str(self.folder / "redis.log"),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_rewrite(self, timeout_s: float = 20.0) -> None:
        """Until no AOF rewrite is running or scheduled."""
        deadline = time.monotonic() + timeout_s
        client = self.client()
        while time.monotonic() < deadline:
            info: dict[str, Any] = client.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                return
            time.sleep(0.05)
        raise TimeoutError("AOF rewrite still running")


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)
