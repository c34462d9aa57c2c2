"""The latency targets of the gateway endpoints, the reference system's times, and the check
of a run against the targets (PASS / MISS / n/a; a report, not an assert).

Limits and reference times are in milliseconds per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from shoprec.bench.stats import PhaseResult
from shoprec.bench.workloads import WORKLOAD_LABELS, Workload


@dataclass(frozen=True)
class Target:
    """A latency target of a gateway endpoint: ``stat`` (``p50_ms``...) at most ``limit_ms``."""

    workload: Workload
    stat: str
    limit_ms: float

    @property
    def label(self) -> str:
        return (
            f"{WORKLOAD_LABELS[self.workload]} {self.stat.removesuffix('_ms')} <= "
            f"{self.limit_ms:g} ms"
        )


# The targets of the serving issue, and the reference system's time per request (ms).
TARGETS: Final = (
    Target(Workload.GATEWAY_RECOMMEND, "p50_ms", 15.0),
    Target(Workload.GATEWAY_RECOMMEND, "p99_ms", 50.0),
    Target(Workload.GATEWAY_SIMILAR, "p50_ms", 5.0),
)
REFERENCE_MS: Final[Mapping[Workload, float]] = {
    Workload.GATEWAY_RECOMMEND: 1400.0,
    Workload.GATEWAY_SIMILAR: 300.0,
}


@dataclass(frozen=True)
class TargetCheck:
    """One target at one concurrency level; ``passed`` None when nothing was measured."""

    target: str
    users: int
    measured_ms: float | None
    limit_ms: float
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


def check_targets(
    phases: Sequence[PhaseResult], targets: Sequence[Target] = TARGETS
) -> list[TargetCheck]:
    """Every target at every level its workload ran at: PASS when the statistic is at most
    the limit, MISS when above it or when any request failed (a failing endpoint does not
    pass on its fast errors), n/a when no request succeeded."""
    checks = []
    for target in targets:
        for phase in phases:
            if phase.workload is not target.workload:
                continue
            value = getattr(phase.summary, target.stat)
            passed = (
                None
                if value is None
                else (value <= target.limit_ms and phase.summary.failures == 0)
            )
            checks.append(TargetCheck(target.label, phase.users, value, target.limit_ms, passed))
    return checks
