"""Facts recorded with every run: the machine (cores, CPU, memory, load), its busy CPU over a
window, and what is served (dataset, articles, customers, the Triton batching and tuning).

The load generator shares the machine with the servers: on a small host its CPU use is part
of the measurement, so each phase records the generator's CPU and the machine's busy CPU
(:func:`cpu_times`, :func:`busy_percent`) and the report records cores and load averages.
"""

from __future__ import annotations

import os
import platform
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shoprec.bench.config import BenchConfig


def machine_facts() -> dict[str, Any]:
    """Cores, CPU model, memory, platform and the time (UTC) of this machine."""
    cpu_model = ""
    with suppress(OSError):
        cpu_model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    memory_gib: float | None = None
    with suppress(ValueError, OSError):
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": cpu_model or platform.processor(),
        "memory GiB": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def load_average() -> str:
    """1, 5 and 15-minute load averages, e.g. ``"0.52 0.61 0.70"``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores from ``/proc/stat``; None where it is missing."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_percent(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    """Busy CPU of the whole machine between two :func:`cpu_times` readings, % of all cores;
    None when either is missing or no time passed between them."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100 * (after[0] - before[0]) / (after[1] - before[1])


def dataset_facts(config: BenchConfig) -> dict[str, Any]:
    """Dataset name, articles served, customers in the store and the served model tuning, from
    the feature repo's and the Triton repository's manifests.

    Raises:
        ArtifactError: a manifest is missing (not materialized, or not exported).
    """
    # Imported here: ``import shoprec.bench`` stays free of numpy and pyarrow (see loadgen).
    from shoprec.featurestore.tables import CUSTOMERS_FILE, ONLINE_DATA_DIR, read_manifest
    from shoprec.featurestore.versions import current_dir
    from shoprec.serving.repository import read_repository_manifest

    store = read_manifest(current_dir(config.feature_repo) / ONLINE_DATA_DIR)
    triton = read_repository_manifest(config.triton_repo)
    export = triton.get("export_config", {})
    return {
        "dataset": config.name,
        "articles served": triton["dims"]["served_articles"],
        "articles with text (similar_items)": triton.get("text_articles"),
        "customers in store": store["rows"][CUSTOMERS_FILE],
        "serving cutoff": triton.get("serving_cutoff"),
        "k": config.k,
        "Triton max_batch_size / queue delay us": f"{export.get('max_batch_size')} / "
        f"{export.get('max_queue_delay_microseconds')}",
        "model tuning (instances x threads)": ", ".join(
            f"{model} {tune.get('instances')}x{tune.get('intra_op_threads')}"
            for model, tune in export.get("tuning", {}).items()
        ),
    }
