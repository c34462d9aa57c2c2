"""The write side of the benchmark: durable events per second and the latency of
``POST /v1/events``, on each event-log backend (``shoprec bench --write``).

For every backend (:data:`BACKENDS`) it starts a fresh log (SQLite: a new file; Redis: a
``redis-server`` of its own in a temporary folder with ``appendonly yes``, ``appendfsync``
as configured, ``maxmemory-policy noeviction`` and a password), a gateway process on it
(``shoprec.gateway.main:make_app`` under uvicorn, one worker, a generated write key, rate
limits out of the way) over the dataset's feature repo (the articles the events name must
exist), and runs the load generator (:mod:`shoprec.bench.loadgen`) with the write workloads
(:data:`~shoprec.bench.workloads.WRITE_WORKLOADS`: batches of 1 and of 100 new purchases) at
every concurrency level. A request counts as acknowledged only when it is answered 202 with
every event ``stored``, i.e. durable in the log.

Reported per backend, batch size and level: requests, failures, requests/s, acknowledged
events/s, p50 / p95 / p99 latency (ms, client side); at the lowest level the gateway's stages
(``event_log`` = the durable write, ``catalog``, ...); and the targets (>= 2,000 acknowledged
events/s with batches of 100; p50 <= 5 ms for one event at one user).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from shoprec.bench.breakdown import Breakdown
from shoprec.bench.config import LOADGEN_LOG, MAX_PHASE_SECONDS, MAX_USERS, BenchError
from shoprec.bench.machine import load_average, machine_facts
from shoprec.bench.report import Section, format_cell, render_markdown
from shoprec.bench.runner import phase_results, run_loadgen
from shoprec.bench.stats import PhaseResult
from shoprec.bench.workloads import EVENT_BATCHES, WORKLOAD_LABELS, WRITE_WORKLOADS, draw_samples

BENCH_WRITE_JSON: Final = "bench-write.json"
BENCH_WRITE_MD: Final = "bench-write.md"
BACKENDS: Final = ("sqlite", "redis")
APPENDFSYNC: Final = ("always", "everysec")
LOOPBACK: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 60.0
UNLIMITED: Final = "100000000/second"  # rate limits the benchmark must not hit
TARGET_EVENTS_PER_S: Final = 2000.0  # batches of 100
TARGET_SINGLE_P50_MS: Final = 5.0  # one event, one user


@dataclass(frozen=True)
class WriteBenchConfig:
    """What the write benchmark loads, how hard and for how long.

    Attributes:
        name: dataset name (recorded in the output).
        feature_repo: the materialized feature repo (its customers and articles are sampled;
            the gateway validates article ids against it).
        out_dir: receives ``bench-write.json``, ``bench-write.md`` and ``loadgen.log``.
        users: concurrency levels, each 1..``MAX_USERS``.
        seconds / warmup_s: measured and unmeasured seconds per phase.
        backends: event-log backends, of :data:`BACKENDS`.
        appendfsync: the Redis log's AOF policy, of :data:`APPENDFSYNC`.
        redis_server: the ``redis-server`` binary.
        sample_size / seed: customers and articles sampled, and the seed.

    Raises:
        ValueError: a value out of range or an unknown backend / policy.
    """

    name: str
    feature_repo: Path
    out_dir: Path
    users: tuple[int, ...] = (1, 16)
    seconds: float = 10.0
    warmup_s: float = 2.0
    backends: tuple[str, ...] = BACKENDS
    appendfsync: str = "always"
    redis_server: str = "redis-server"
    sample_size: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.users or any(not 1 <= u <= MAX_USERS for u in self.users):
            raise ValueError(f"users must be 1..{MAX_USERS} each, got {self.users!r}")
        if not 0 < self.seconds <= MAX_PHASE_SECONDS or self.warmup_s < 0:
            raise ValueError(f"seconds must be in (0, {MAX_PHASE_SECONDS:g}], got {self.seconds}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if not self.backends or unknown:
            raise ValueError(f"log backends must be some of {BACKENDS}, got {self.backends!r}")
        if self.appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {APPENDFSYNC}, got {self.appendfsync!r}")


def parse_backends(text: str) -> tuple[str, ...]:
    """``"sqlite,redis"`` -> ``("sqlite", "redis")``.

    Raises:
        ValueError: an unknown name or none.
    """
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in BACKENDS]
    if not names or unknown:
        raise ValueError(f"log backends must be some of {BACKENDS}, got {text!r}")
    return names


@dataclass(frozen=True)
class WritePhase:
    """One write workload at one level on one backend."""

    backend: str
    batch: int
    phase: PhaseResult

    @property
    def events_per_s(self) -> float:
        """Acknowledged (202, every event stored) events per second of the window."""
        s = self.phase.summary
        return (s.requests - s.failures) * self.batch / s.seconds


@dataclass(frozen=True)
class WriteTarget:
    """One target at one level on one backend; ``passed`` None when nothing was measured."""

    target: str
    backend: str
    users: int
    measured: float | None
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


@dataclass(frozen=True)
class WriteBenchResult:
    facts: dict[str, Any]
    phases: list[WritePhase]
    breakdowns: list[tuple[str, Breakdown]]
    targets: list[WriteTarget]


def check_write_targets(phases: list[WritePhase]) -> list[WriteTarget]:
    """>= :data:`TARGET_EVENTS_PER_S` acknowledged events/s with batches of 100 (every
    level), and a single-event p50 <= :data:`TARGET_SINGLE_P50_MS` at one user; a phase with
    failures misses."""
    out = []
    for p in phases:
        clean = p.phase.summary.failures == 0
        if p.batch == 100:
            out.append(
                WriteTarget(
                    f"acknowledged events/s, batches of 100 >= {TARGET_EVENTS_PER_S:g}",
                    p.backend,
                    p.phase.users,
                    p.events_per_s,
                    p.events_per_s >= TARGET_EVENTS_PER_S and clean,
                )
            )
        if p.batch == 1 and p.phase.users == 1:
            p50 = p.phase.summary.p50_ms
            out.append(
                WriteTarget(
                    f"p50 ms, one event <= {TARGET_SINGLE_P50_MS:g}",
                    p.backend,
                    1,
                    p50,
                    None if p50 is None else p50 <= TARGET_SINGLE_P50_MS and clean,
                )
            )
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait(
    check: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise BenchError(f"{what} exited with {process.returncode}:\n{tail}")
        try:
            if check():
                return
        except Exception:  # not answering yet (refused, reset, loading)
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} did not start within {START_TIMEOUT_S:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def _redis_log(config: WriteBenchConfig, folder: Path, password: str) -> Iterator[str]:
    """A redis-server for the log; yields its URL."""
    binary = shutil.which(config.redis_server)
    if binary is None:
        raise BenchError(f"redis-server not found: {config.redis_server!r}")
    port = _free_port()
    log = folder / "redis.log"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--dir",
            str(folder),
            "--requirepass",
            password,
            "--appendonly",
            "yes",
            "--appendfsync",
            config.appendfsync,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(log),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        import redis

        client = redis.Redis(host=LOOPBACK, port=port, password=password)
        _wait(lambda: bool(client.ping()), process, "redis-server", log)
        client.close()
        yield f"redis://:{password}@{LOOPBACK}:{port}/0"
    finally:
        _stop(process)


@contextmanager
def _gateway(
    config: WriteBenchConfig, event_log: str, key_hash: str, folder: Path
) -> Iterator[str]:
    """A gateway process on ``event_log``; yields its base URL."""
    import urllib.request

    from shoprec.gateway.main import uvicorn_command

    port = _free_port()
    env = {
        **os.environ,
        "SHOPREC_FEATURE_REPO": str(config.feature_repo.resolve()),
        "SHOPREC_EVENT_LOG": event_log,
        "SHOPREC_EVENT_LOG_NAMESPACE": "bench",
        "SHOPREC_TRITON_URL": f"{LOOPBACK}:{_free_port()}",  # the write side calls no model
        "SHOPREC_API_KEYS": json.dumps([{"name": "bench", "role": "write", "sha256": key_hash}]),
        "SHOPREC_RATE_LIMIT_READS": UNLIMITED,
        "SHOPREC_RATE_LIMIT_WRITES": UNLIMITED,
        "SHOPREC_RATE_LIMIT_EVENTS": UNLIMITED,
    }
    log = folder / "gateway.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            uvicorn_command(LOOPBACK, port),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{LOOPBACK}:{port}"

    def healthy() -> bool:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)

    try:
        _wait(healthy, process, "gateway", log)
        yield url
    finally:
        _stop(process)


def _backend_label(backend: str, appendfsync: str) -> str:
    if backend == "sqlite":
        return "SQLite (WAL, synchronous=FULL)"
    return f"Redis (AOF, appendfsync {appendfsync})"


def run_write_benchmark(
    config: WriteBenchConfig, log: Callable[[str], None] = lambda _: None
) -> WriteBenchResult:
    """Run every write workload at every level on every backend; write the report.

    Raises:
        ArtifactError: the feature repo is not materialized.
        BenchError: redis-server or the gateway does not start, or the load generator fails.
    """
    from shoprec.featurestore.tables import ONLINE_DATA_DIR, read_article_ids, read_customer_ids
    from shoprec.featurestore.versions import current_dir
    from shoprec.gateway.keys import generate_key, hash_key

    data_dir = current_dir(config.feature_repo) / ONLINE_DATA_DIR
    samples = draw_samples(
        read_customer_ids(data_dir),
        read_article_ids(data_dir),
        config.sample_size,
        0.0,
        config.seed,
    )
    facts: dict[str, Any] = {**machine_facts(), "load average before": load_average()}
    facts.update(
        {
            "dataset": config.name,
            "users": ",".join(map(str, config.users)),
            "seconds per phase": config.seconds,
            "warm-up s": config.warmup_s,
            "gateway": "1 uvicorn worker, started by the benchmark",
        }
    )
    config.out_dir.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    phases: list[WritePhase] = []
    breakdowns: list[tuple[str, Breakdown]] = []
    with tempfile.TemporaryDirectory(prefix="shoprec-bench-write-") as tmp:
        for backend in config.backends:
            label = _backend_label(backend, config.appendfsync)
            folder = Path(tmp) / backend
            folder.mkdir()
            with (
                _log_url(config, backend, folder) as url,
                _gateway(config, url, hash_key(key), folder) as gateway_url,
            ):
                log(f"{label}: gateway {gateway_url}")
                spec = {
                    "endpoints": {
                        "gateway_url": gateway_url,
                        "triton_grpc_url": None,
                        "triton_metrics_url": None,
                    },
                    "users": list(config.users),
                    "workloads": [w.value for w in WRITE_WORKLOADS],
                    "seconds": config.seconds,
                    "warmup_s": config.warmup_s,
                    "k": 1,
                    "seed": config.seed,
                    "breakdown_users": min(config.users),
                    "samples": asdict(samples),
                    "features": "",
                    "write_key": key,
                }
                raw = run_loadgen(spec, folder, config.out_dir / LOADGEN_LOG, log)
            results, backend_breakdowns = phase_results(raw)
            phases += [WritePhase(label, EVENT_BATCHES[p.workload], p) for p in results]
            breakdowns += [(label, b) for b in backend_breakdowns]
    facts["load average after"] = load_average()
    result = WriteBenchResult(facts, phases, breakdowns, check_write_targets(phases))
    (config.out_dir / BENCH_WRITE_JSON).write_text(
        json.dumps(asdict(result), indent=2, allow_nan=False) + "\n"
    )
    heading = (
        f"## Write benchmark: {config.name} ({facts['date']}, {facts['cores']} cores, "
        f"load average {facts['load average before']} before, "
        f"{facts['load average after']} after)"
    )
    (config.out_dir / BENCH_WRITE_MD).write_text(render_markdown(write_sections(result), heading))
    return result


@contextmanager
def _log_url(config: WriteBenchConfig, backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield str(folder / "events.db")
        return
    from shoprec.gateway.keys import generate_key

    with _redis_log(config, folder, generate_key()) as url:
        yield url


def write_sections(result: WriteBenchResult) -> list[Section]:
    """The write report's tables: setup, throughput and latency, stages, targets."""
    sections = [
        Section(
            "Setup",
            ("item", "value"),
            tuple((k, str(v)) for k, v in result.facts.items() if not isinstance(v, dict)),
        ),
        Section(
            "POST /v1/events (client side, closed loop; acknowledged = 202, every event durable)",
            (
                "event log",
                "events/request",
                "users",
                "requests",
                "failures",
                "req/s",
                "acknowledged events/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
            ),  # fmt: skip
            tuple(
                (
                    p.backend,
                    str(p.batch),
                    str(p.phase.users),
                    str(p.phase.summary.requests),
                    str(p.phase.summary.failures),
                    f"{p.phase.summary.throughput_rps:.1f}",
                    f"{p.events_per_s:.0f}",
                    format_cell(p.phase.summary.p50_ms),
                    format_cell(p.phase.summary.p95_ms),
                    format_cell(p.phase.summary.p99_ms),
                )
                for p in result.phases
            ),
        ),
    ]
    rows: list[tuple[str, ...]] = []
    for backend, b in result.breakdowns:
        label = f"{backend}, {WORKLOAD_LABELS[b.workload]}"
        rows.append((label, "client mean latency", "", format_cell(b.client_mean_ms)))
        rows += [
            (label, f"stage {s.stage}", f"{s.calls_per_request:.2f}", format_cell(s.ms_per_request))
            for s in b.stages
        ]
        rows.append((label, "HTTP + gateway overhead", "", format_cell(b.overhead_ms)))
    users = result.breakdowns[0][1].users if result.breakdowns else 1
    sections.append(
        Section(
            f"Gateway stages at {users} user(s), mean ms per request",
            ("workload", "part", "calls/request", "ms"),
            tuple(rows),
        )
    )
    sections.append(
        Section(
            "Targets",
            ("target", "event log", "users", "measured", "result"),
            tuple(
                (t.target, t.backend, str(t.users), format_cell(t.measured), t.verdict)
                for t in result.targets
            ),
        )
    )
    return sections
