"""CPU and wall milliseconds of one Two-Tower training step (forward, backward, optimiser),
on random inputs of H&M-like size: batch 1024, history 64, ``V`` article ids, ``P`` postal
codes (the customers' widest table), the default ``TwoTowerConfig``. Three optimisers are
compared: Adam over every parameter in torch's multi-tensor implementation (its default),
the same Adam fused (what ``training.two_tower.train_two_tower`` does) and sparse embedding
gradients (``nn.Embedding(sparse=True)`` stepped by ``torch.optim.SparseAdam``, Adam for the
dense layers), each with the given number of torch threads::

    python scripts/bench_two_tower_step.py 1 105000 352000 30   # threads, V, P, steps
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from shoprec.config import TwoTowerConfig
from shoprec.training.two_tower import InBatchSoftmaxTask, build_two_tower

B, N = 1024, 64


def _optimizers(
    model: torch.nn.Module, kind: str, config: TwoTowerConfig
) -> list[torch.optim.Optimizer]:
    if kind != "sparse":
        return [
            torch.optim.Adam(
                model.parameters(),
                lr=config.learning_rate,
                weight_decay=config.weight_decay,
                fused=kind == "fused",
            )
        ]
    tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    for table in tables:
        table.sparse = True
    ids = {id(t.weight) for t in tables}
    return [
        torch.optim.SparseAdam(
            [p for p in model.parameters() if id(p) in ids], lr=config.learning_rate
        ),
        torch.optim.Adam(
            [p for p in model.parameters() if id(p) not in ids],
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        ),
    ]


def main(threads: int, v: int, p: int, steps: int) -> None:
    torch.set_num_threads(threads)
    config = TwoTowerConfig()
    rng = np.random.default_rng(0)
    print(
        "| threads | V | P | optimiser | forward | backward | step | CPU ms/step | wall ms/step |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for kind in ("multi-tensor", "fused", "sparse"):
        model = build_two_tower([10, 10, p], 6, [v, 20, 30, 40, 50, 60], [0, 1, 2, 3], config)
        optimizers = _optimizers(model, kind, config)
        task = InBatchSoftmaxTask(None, config.temperature)
        c_sparse = torch.from_numpy(
            np.stack([rng.integers(0, 10, B), rng.integers(0, 10, B), rng.integers(0, p, B)], 1)
        )
        c_dense, a_dense = torch.rand(B, 6), torch.rand(B, 4)
        hist = torch.from_numpy(rng.integers(0, v, (B, N)))
        ids = [rng.integers(1, v, B)] + [rng.integers(0, 20, B)] * 5
        a_sparse = torch.from_numpy(np.stack(ids, 1))
        cpu = np.zeros(3)
        wall = time.perf_counter()
        for _ in range(steps):
            t0 = time.process_time()
            q = model.query_tower(c_sparse, c_dense, hist)
            loss = task(q, model.item_tower(a_sparse, a_dense), a_sparse[:, 0])
            t1 = time.process_time()
            for opt in optimizers:
                opt.zero_grad()
            loss.backward()
            t2 = time.process_time()
            for opt in optimizers:
                opt.step()
            cpu += np.diff([t0, t1, t2, time.process_time()])
        ms = cpu / steps * 1000
        print(
            f"| {threads} | {v:,} | {p:,} | {kind} | {ms[0]:.1f} | "
            f"{ms[1]:.1f} | {ms[2]:.1f} | {ms.sum():.1f} | "
            f"{(time.perf_counter() - wall) / steps * 1000:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:5]))
