"""What a Two-Tower epoch costs on a built dataset: per epoch the wall and CPU seconds of
``training.two_tower.train_two_tower`` (CPU time counts every thread, so it compares runs on a
busy machine better than the wall time) and the validation candidate recall that
``shoprec train`` keeps the best epoch by. The inputs are prepared as ``shoprec train``
prepares them (the workflow fitted on the training windows, the encoded dataset)::

    python scripts/bench_two_tower.py mid 2   # data/mid, epochs
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import polars as pl

from shoprec import schema as s
from shoprec.config import PipelineConfig
from shoprec.data.dataset import SPLIT_TRAIN, SPLIT_VAL, load_dataset
from shoprec.data.ingest.canonical import read_canonical
from shoprec.evaluation.testsets import window_truth
from shoprec.features.encode import fit_workflow, purchase_lines
from shoprec.training.encoded import encode_dataset
from shoprec.training.examples import article_rows, indexable_articles, window_ids
from shoprec.training.two_tower import (
    RetrievalExamples,
    ann_recall,
    build_two_tower,
    train_two_tower,
)


def main(name: str, epochs: int) -> None:
    config = PipelineConfig()
    root = Path("data") / name
    data = load_dataset(root / "dataset")
    canonical = read_canonical(root / "canonical")
    train_w, (val_w,) = window_ids(data, SPLIT_TRAIN), window_ids(data, SPLIT_VAL)
    val_start = data.window(SPLIT_VAL)[0].start
    before_val = canonical.transactions.filter(pl.col(s.T_DAT) < val_start)
    wf = fit_workflow(
        config.workflow,
        data.customer_features.filter(pl.col(s.WINDOW).is_in(train_w)),
        data.article_features.filter(pl.col(s.WINDOW).is_in(train_w)),
        purchase_lines(before_val, canonical.articles),
    )
    del canonical, before_val
    enc = encode_dataset(wf, data, config.dataset.history_length)
    ex = data.examples
    pos = ex.filter(pl.col(s.WINDOW).is_in(train_w) & (pl.col(s.LABEL) == 1))
    c_rows, a_rows = enc.rows(pos)
    tt = config.two_tower
    model = build_two_tower(
        wf.cardinalities(s.CUSTOMER_SPARSE),
        enc.customers.dense.shape[1],
        wf.cardinalities(s.ARTICLE_SPARSE),
        wf.dense_columns(s.ARTICLE_DENSE, s.ITEM_TOWER_DENSE),
        tt,
    )
    truth = window_truth(ex, val_w)
    val_rows = article_rows(enc, val_w, indexable_articles(data, val_w))
    n = config.eval.candidates
    print(
        f"{len(c_rows):,} training purchases, {model.item_tower.article_table.num_embeddings:,} "
        f"article ids x {tt.feature_dim}, batch {tt.batch_size}"
    )
    print(f"| epoch | loss | wall s | CPU s | val recall@{n} |\n|---:|---:|---:|---:|---:|")
    clock = [time.perf_counter(), time.process_time()]

    def epoch_done(epoch: int, loss: float) -> bool:
        wall, cpu = time.perf_counter() - clock[0], time.process_time() - clock[1]
        recall = ann_recall(model, enc, val_w, val_rows, truth, n)
        print(f"| {epoch + 1} | {loss:.4f} | {wall:.1f} | {cpu:.1f} | {recall:.4f} |", flush=True)
        clock[:] = [time.perf_counter(), time.process_time()]
        return False

    train_two_tower(
        model,
        RetrievalExamples(enc.customers, enc.articles, c_rows, a_rows),
        replace(tt, epochs=epochs),
        epoch_done,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
