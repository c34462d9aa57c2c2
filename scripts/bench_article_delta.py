"""What the article delta costs a Triton step when no new article is live (the steady state).

Loads the ``retrieval`` and ``similar_items`` steps of an exported repository in-process
(``shoprec.serving.runtime.load_step``) without and with ``SHOPREC_ARTICLE_DELTA``, twice each,
and prints the median latency of 2,000 calls (FAISS on one thread), then the median of one
delta version read::

    python scripts/bench_article_delta.py triton_repo \
        models/completejourney/feature_repo/article_delta.db
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from shoprec import schema as s
from shoprec.serving.article_delta import ENV_ARTICLE_DELTA, SqliteArticleDelta
from shoprec.serving.runtime import load_step


def median_us(call: Callable[[], Any], n: int = 2000) -> float:
    for _ in range(50):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def main(repo: Path, delta: Path) -> None:
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    print("| step | delta | median us |\n|---|---|---:|")
    for model in (s.TRITON_RETRIEVAL, s.TRITON_SIMILAR_ITEMS):
        for on in (False, True, False, True):
            if on:
                os.environ[ENV_ARTICLE_DELTA] = str(delta.resolve())
            else:
                os.environ.pop(ENV_ARTICLE_DELTA, None)
            step: Any = load_step(repo / model)
            if model == s.TRITON_RETRIEVAL:
                dim = step.index.d
                query = rng.standard_normal((1, dim)).astype(np.float32)
                query /= np.linalg.norm(query)
                n = 64  # the history width N of the export
                inputs = {
                    s.T_QUERY_EMBEDDING: query,
                    s.T_HIST_IDS: np.zeros((1, n), dtype=np.int64),
                    s.T_HIST_COUNTS: np.zeros((1, n), dtype=np.float32),
                }
            else:
                article = np.array([[step.article_ids[123].encode()]], dtype=object)
                inputs = {s.T_ARTICLE_ID: article}
            took = median_us(lambda step=step, inputs=inputs: step(inputs))
            print(f"| {model} | {'on' if on else 'off'} | {took:.1f} |")
    export = json.loads((repo / "manifest.json").read_text())["export_id"]
    store = SqliteArticleDelta(delta)
    print(
        f"\ndelta version read: {median_us(lambda: store.version(export), 5000):.1f} us median, "
        f"{len(store.load(export))} rows"
    )
    store.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
