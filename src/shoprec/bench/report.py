"""The benchmark's result and its report: the same tables (:class:`Section`) rendered as
GitHub Markdown (``bench.md``) and as rich tables for the terminal, and the result as JSON
(``bench.json``).

Cells are preformatted strings: latencies in ms with 2 decimals (3 for Triton's per-model
times), throughput in req/s with 1, CPU in % with none; ``-`` where nothing was measured.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from shoprec.bench.breakdown import Breakdown
from shoprec.bench.stats import PhaseResult
from shoprec.bench.targets import REFERENCE_MS, TargetCheck
from shoprec.bench.workloads import WORKLOAD_LABELS, Workload

if TYPE_CHECKING:
    from rich.table import Table


@dataclass(frozen=True)
class BenchResult:
    """Everything :func:`~shoprec.bench.runner.run_benchmark` measured; ``bench.json`` is
    its :func:`to_json`."""

    facts: dict[str, Any]
    phases: list[PhaseResult]
    breakdowns: list[Breakdown]
    targets: list[TargetCheck]

    def phase(self, workload: Workload, users: int) -> PhaseResult | None:
        return next((p for p in self.phases if p.workload is workload and p.users == users), None)


def to_json(result: BenchResult) -> str:
    """``result`` as indented JSON (enums as their values, no NaN)."""
    return json.dumps(asdict(result), indent=2, sort_keys=False, allow_nan=False) + "\n"


# ---- report tables (one source for the terminal and Markdown) -------------------------------


@dataclass(frozen=True)
class Section:
    """A titled table of preformatted cells; numeric columns are right-aligned."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def format_cell(value: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, ``-`` for None (nothing measured)."""
    return "-" if value is None else f"{value:.{digits}f}"


def report_sections(result: BenchResult) -> list[Section]:
    """The report's tables: setup, latency and throughput, stage breakdown, Triton models,
    targets and the speed-up over the reference system."""
    facts = result.facts
    sections = [
        Section(
            "Setup",
            ("item", "value"),
            tuple((key, str(value)) for key, value in facts.items() if not isinstance(value, dict)),
        )
    ]
    sections.append(
        Section(
            "Latency and throughput (client side, closed loop)",
            (
                "endpoint",
                "users",
                "requests",
                "failures",
                "req/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "load generator CPU %",
                "machine CPU %",
            ),
            tuple(
                (
                    WORKLOAD_LABELS[p.workload],
                    str(p.users),
                    str(p.summary.requests),
                    str(p.summary.failures),
                    f"{p.summary.throughput_rps:.1f}",
                    format_cell(p.summary.p50_ms),
                    format_cell(p.summary.p95_ms),
                    format_cell(p.summary.p99_ms),
                    format_cell(p.loadgen_cpu_pct, 0),
                    format_cell(p.machine_cpu_pct, 0),
                )
                for p in result.phases
            ),
        )
    )
    stage_rows: list[tuple[str, ...]] = []
    for b in result.breakdowns:
        if b.server_mean_ms is None:
            continue
        label = WORKLOAD_LABELS[b.workload]
        stage_rows.append((label, "client mean latency", "", format_cell(b.client_mean_ms)))
        stage_rows.extend(
            (label, f"stage {s.stage}", f"{s.calls_per_request:.2f}", format_cell(s.ms_per_request))
            for s in b.stages
        )
        stage_rows.append((label, "HTTP + gateway overhead", "", format_cell(b.overhead_ms)))
        if b.overhead_ms is not None:
            outside = b.client_mean_ms - b.server_mean_ms
            stage_rows.append(
                (
                    label,
                    "of which in the gateway app (routing, validation, JSON)",
                    "",
                    format_cell(b.overhead_ms - outside),
                )
            )
            stage_rows.append(
                (label, "of which HTTP, uvicorn and the client", "", format_cell(outside))
            )
    users = result.breakdowns[0].users if result.breakdowns else 1
    sections.append(
        Section(
            f"Gateway stages at {users} user(s), mean ms per request",
            ("endpoint", "part", "calls/request", "ms"),
            tuple(stage_rows),
        )
    )
    sections.append(
        Section(
            f"Triton models at {users} user(s), mean ms per request",
            (
                "workload",
                "model",
                "requests",
                "batches",
                "queue",
                "compute input",
                "compute infer",
                "compute output",
                "total in Triton",
            ),
            tuple(
                (
                    WORKLOAD_LABELS[b.workload],
                    m.model,
                    str(m.requests),
                    str(m.executions),
                    format_cell(m.queue_ms, 3),
                    format_cell(m.compute_input_ms, 3),
                    format_cell(m.compute_infer_ms, 3),
                    format_cell(m.compute_output_ms, 3),
                    format_cell(m.request_ms, 3),
                )
                for b in result.breakdowns
                for m in b.models
            ),
        )
    )
    sections.append(
        Section(
            "Targets",
            ("target", "users", "measured ms", "result"),
            tuple(
                (c.target, str(c.users), format_cell(c.measured_ms), c.verdict)
                for c in result.targets
            ),
        )
    )
    speedups = []
    for workload, reference in REFERENCE_MS.items():
        phase = result.phase(workload, users)
        if phase is not None and phase.summary.mean_ms:
            speedups.append(
                (
                    WORKLOAD_LABELS[workload],
                    f"{reference:.0f}",
                    format_cell(phase.summary.mean_ms),
                    f"{reference / phase.summary.mean_ms:.0f}x",
                )
            )
    sections.append(
        Section(
            f"Versus the reference system (mean at {users} user(s))",
            ("endpoint", "reference ms", "measured ms", "speed-up"),
            tuple(speedups),
        )
    )
    return sections


def _number(cell: str) -> bool:
    try:
        float(cell.removesuffix("x"))
    except ValueError:
        return False
    return True


def _numeric_columns(section: Section) -> list[bool]:
    """Per column: every cell a number, ``-`` or empty, and at least one a number."""
    return [
        all(_number(row[i]) or row[i] in ("", "-") for row in section.rows)
        and any(_number(row[i]) for row in section.rows)
        for i in range(len(section.columns))
    ]


def render_markdown(sections: Sequence[Section], heading: str = "") -> str:
    """GitHub Markdown: ``heading`` (if any), then per section a ``###`` title and a table
    (numeric columns right-aligned). Sections without rows are left out."""
    lines = [heading, ""] if heading else []
    for section in sections:
        if not section.rows:
            continue
        numeric = _numeric_columns(section)
        lines += [
            f"### {section.title}",
            "",
            "| " + " | ".join(section.columns) + " |",
            "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in section.rows]
        lines.append("")
    return "\n".join(lines)


def rich_tables(sections: Sequence[Section]) -> list[Table]:
    """The sections as rich tables, for the terminal (sections without rows left out)."""
    from rich.table import Table

    tables = []
    for section in sections:
        if not section.rows:
            continue
        table = Table(title=section.title, title_justify="left")
        for column, numeric in zip(section.columns, _numeric_columns(section), strict=True):
            table.add_column(column, justify="right" if numeric else "left")
        for row in section.rows:
            style = {"PASS": "green", "MISS": "bold red"}.get(row[-1])
            table.add_row(*row, style=style)
        tables.append(table)
    return tables
