"""How the benchmark runs: :class:`BenchConfig`, its limits, its output files, and the checks
on what a user passes (concurrency levels, loopback-only URLs).

Times are in seconds; concurrency levels count simulated users (closed loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from shoprec.bench.workloads import READ_WORKLOADS, Workload
from shoprec.errors import ShoprecError

BENCH_JSON: Final = "bench.json"
BENCH_MD: Final = "bench.md"
LOADGEN_LOG: Final = "loadgen.log"  # the load generator's stderr (locust and gRPC warnings)
MAX_USERS: Final = 256
MAX_PHASE_SECONDS: Final = 600.0
TRITON_FEATURE_SAMPLE: Final = 500  # customers whose encoded features the gRPC users cycle
REQUEST_TIMEOUT_S: Final = 10.0  # per request of the load generator
LOOPBACK_NAMES: Final = frozenset({"localhost"})


class BenchError(ShoprecError, RuntimeError):
    """The benchmark could not run: target not ready, load generator failed or timed out."""


@dataclass(frozen=True)
class BenchConfig:
    """What to load, how hard and for how long.

    Attributes:
        name: dataset name (recorded in the output).
        triton_repo: the served Triton model repository (its manifest and the ``similar_items``
            article ids are read; started from when no URLs are given).
        feature_repo: the materialized Feast repo (customer ids, encoded features).
        out_dir: receives ``bench.json``, ``bench.md`` and ``loadgen.log``.
        users: concurrency levels, each 1..:data:`MAX_USERS`.
        seconds: measured seconds per workload and level, > 0 and <= :data:`MAX_PHASE_SECONDS`.
        warmup_s: unmeasured seconds before each measured window (users spawn in the first).
        k: ``k`` of every request.
        sample_size: customers and articles sampled (fewer when the store holds fewer).
        unknown_fraction: share of personalised requests for unknown customers, in [0, 1).
        seed: seeds the samples and the users' request order.
        workloads: which workloads to run, in this order within each level.
        gateway_url / triton_grpc_url / triton_metrics_url: a running stack (all three, on
            loopback: ``http://127.0.0.1:8080``, ``127.0.0.1:8001``,
            ``http://127.0.0.1:8002/metrics``); None (all three): start one on free ports.

    Raises:
        ValueError: a value out of range, some but not all URLs, or a non-loopback URL.
    """

    name: str
    triton_repo: Path
    feature_repo: Path
    out_dir: Path
    users: tuple[int, ...] = (1, 4, 16)
    seconds: float = 20.0
    warmup_s: float = 3.0
    k: int = 12
    sample_size: int = 2000
    unknown_fraction: float = 0.05
    seed: int = 0
    workloads: tuple[Workload, ...] = READ_WORKLOADS
    gateway_url: str | None = None
    triton_grpc_url: str | None = None
    triton_metrics_url: str | None = None

    def __post_init__(self) -> None:
        if not self.users or any(not 1 <= u <= MAX_USERS for u in self.users):
            raise ValueError(f"users must be 1..{MAX_USERS} each, got {self.users!r}")
        if not 0 < self.seconds <= MAX_PHASE_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_PHASE_SECONDS:g}], got {self.seconds}")
        if not 0 <= self.warmup_s <= MAX_PHASE_SECONDS:
            raise ValueError(f"warmup_s must be in [0, {MAX_PHASE_SECONDS:g}], got {self.warmup_s}")
        if self.k < 1 or self.sample_size < 1:
            raise ValueError(f"k and sample_size must be >= 1, got {self.k}, {self.sample_size}")
        if not 0 <= self.unknown_fraction < 1:
            raise ValueError(f"unknown_fraction must be in [0, 1), got {self.unknown_fraction}")
        if not self.workloads:
            raise ValueError("workloads is empty")
        urls = (self.gateway_url, self.triton_grpc_url, self.triton_metrics_url)
        if any(u is None for u in urls) and any(u is not None for u in urls):
            raise ValueError(
                "give gateway_url, triton_grpc_url and triton_metrics_url together "
                f"or none of them, got {urls}"
            )
        for url in urls:
            if url is not None:
                check_loopback(url)

    @property
    def external(self) -> bool:
        """True when the benchmark targets a running stack."""
        return self.gateway_url is not None


def check_loopback(url: str) -> str:
    """``url`` unchanged when its host is a loopback address (``127.x``, ``::1``, localhost).

    Accepts ``scheme://host:port/path`` and gRPC's bare ``host:port``.

    Raises:
        ValueError: another host (the benchmark only loads this machine).
    """
    host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    try:
        loopback = host in LOOPBACK_NAMES or ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"benchmark targets must be on loopback, got {url!r}")
    return url


def parse_users(text: str) -> tuple[int, ...]:
    """Concurrency levels from ``"1,4,16"``.

    Raises:
        ValueError: not comma-separated integers in 1..:data:`MAX_USERS`.
    """
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"users must be comma-separated integers, got {text!r}") from None
    if any(not 1 <= u <= MAX_USERS for u in levels):
        raise ValueError(f"users must be 1..{MAX_USERS} each, got {text!r}")
    return levels
