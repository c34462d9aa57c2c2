"""What the offline baselines cost: each baseline's fit and top-k lists (what the guardrail of
``shoprec train`` and ``shoprec evaluate`` run, ``pipeline.steps.fitted_baselines``), wall
time and peak resident memory above what the loaded tables hold.

The cutoff is the first day of the validation window (the 14th day before the day after the
last purchase, as ``shoprec build-dataset`` counts its windows with the default settings);
the customers are those who bought in the 7 days from it, as the guardrail's::

    python scripts/bench_baselines.py data/mid/canonical
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

import polars as pl

from shoprec.config import PipelineConfig
from shoprec.data.ingest.canonical import read_canonical
from shoprec.pipeline.memory import PeakSpan, current_rss_mib
from shoprec.pipeline.steps import fitted_baselines
from shoprec.schema import CUSTOMER_ID, T_DAT

K = 12


def main(canonical_dir: Path) -> None:
    canonical = read_canonical(canonical_dir)
    tx = canonical.transactions
    last = tx.get_column(T_DAT).max()
    if not isinstance(last, datetime.date):
        raise ValueError(f"{canonical_dir}: no transaction dates")
    cutoff = last + datetime.timedelta(days=1) - datetime.timedelta(days=14)
    in_window = (pl.col(T_DAT) >= cutoff) & (pl.col(T_DAT) < cutoff + datetime.timedelta(days=7))
    customers = tx.filter(in_window).get_column(CUSTOMER_ID).unique().sort().to_list()
    loaded = current_rss_mib()
    print(
        f"{tx.height:,} transactions, {len(customers):,} customers from {cutoff}, "
        f"loaded {loaded:,.0f} MiB"
    )
    print("| baseline | seconds | peak RSS MiB | above loaded MiB |\n|---|---:|---:|---:|")
    baselines = fitted_baselines(PipelineConfig(), canonical, cutoff, customers, K)
    while True:
        t = time.perf_counter()
        with PeakSpan() as span:
            fitted = next(baselines, None)
        if fitted is None:
            break
        name, _ = fitted
        print(
            f"| {name} | {time.perf_counter() - t:.1f} | {span.mib:,.0f} | "
            f"{span.mib - loaded:,.0f} |"
        )
        del fitted, _  # the lists of one baseline are not held while the next one fits


if __name__ == "__main__":
    main(Path(sys.argv[1]))
