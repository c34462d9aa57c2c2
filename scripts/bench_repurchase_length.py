"""What choosing the repurchase list's length R costs (``shoprec build-dataset``,
``data.dataset.choose_repurchase_length``): wall time and peak resident memory above what the
loaded transactions hold, for the default history length and window.

The cutoff is the first day of the validation window (the 14th day before the day after the
last purchase, as ``shoprec build-dataset`` counts its windows with the default settings)::

    python scripts/bench_repurchase_length.py data/hmsyn/canonical
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

from shoprec.config import DatasetConfig
from shoprec.data.dataset import choose_repurchase_length
from shoprec.data.ingest.canonical import read_canonical
from shoprec.pipeline.memory import PeakSpan, current_rss_mib
from shoprec.schema import T_DAT


def main(canonical_dir: Path) -> None:
    tx = read_canonical(canonical_dir).transactions
    last = tx.get_column(T_DAT).max()
    if not isinstance(last, datetime.date):
        raise ValueError(f"{canonical_dir}: no transaction dates")
    cutoff = last + datetime.timedelta(days=1) - datetime.timedelta(days=14)
    config = DatasetConfig()
    loaded = current_rss_mib()
    t = time.perf_counter()
    with PeakSpan() as span:
        r = choose_repurchase_length(
            tx, cutoff, config.history_length, config.window_days, config.history_order
        )
    print("| transactions | cutoff | R | seconds | peak RSS MiB | above loaded MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    print(
        f"| {tx.height:,} | {cutoff} | {r} | {time.perf_counter() - t:.1f} | {span.mib:,.0f} | "
        f"{span.mib - loaded:,.0f} |"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
