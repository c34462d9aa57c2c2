"""Ranker comparison (``shoprec compare-rankers``): DLRM, Wide&Deep, DCN-v2, an MLP, a
random forest and gradient-boosted trees, on the same examples, split and labels.

The reference work compared scoring models on its H&M labelled dataset (chronological
split, popularity-sampled negatives 1:1) by AUC / precision / recall only
(:data:`REFERENCE_HM`). Here every ranker

* trains on the examples ``shoprec train`` gives its ranker (``training.examples``: the
  configured negatives, by default retrieved-but-not-bought Two-Tower candidates), with the
  same validation window and model selection (best validation MAP@12 epoch; LightGBM: early
  stopping on validation AUC; the random forest: none);
* is scored by ``evaluation.testsets.score_ranker``, as ``shoprec evaluate`` scores its ranker:
  AUC / precision / recall (threshold 0.5) on the labelled test set (the reference design's
  popularity negatives), AUC on the test window's retrieved candidates, and MAP@k / NDCG@k /
  Recall@k of its top k when it re-ranks every test customer's Two-Tower (+ history)
  candidates, which is what a customer would see;
* runs with ``seeds`` seeds (``RankerConfig.seed + i``: weights and batch order, or the trees'
  random state; the examples stay the same), reported as mean +- sample standard deviation;
* is compared with the first ranker listed on MAP@k by a paired bootstrap over customers
  (per-customer AP averaged over the seeds).

The first seed's model of every ranker is saved under ``models/<name>/rankers/``, where
``shoprec export --ranker`` takes a ranker other than the one ``shoprec train`` trained (that
one is exported from ``models/<name>/``; with an unchanged configuration it is the same model
as the first seed here: same examples, same seed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.config import Paths, PipelineConfig, RankerKind
from shoprec.data.dataset import SPLIT_TEST, load_dataset
from shoprec.data.ingest.canonical import read_canonical
from shoprec.evaluation.metrics import average_precision_at_k, paired_bootstrap_ci
from shoprec.evaluation.ranker_comparison import (
    CONTEXT_BASELINES,
    LABELS,
    REFERENCE_HM,
    comparison_markdown,
    mean_std,
    metric_names,
    plot_comparison,
)
from shoprec.evaluation.testsets import customers_bought, ranker_test_sets, score_ranker
from shoprec.features.workflow import Workflow
from shoprec.inference.scoring import predict
from shoprec.models.rankers import build_ranker, save_ranker
from shoprec.models.two_tower import load_two_tower
from shoprec.training.encoded import encode_dataset
from shoprec.training.examples import (
    example_groups,
    example_inputs,
    ranker_examples,
    ranker_widths,
)
from shoprec.training.ranker import fit_ranker

Log = Callable[[str], None]

# The reference work's numbers on ITS H&M labelled dataset (chronological split, popularity-
# indexed negatives 1:1): AUC, precision, recall. Context only: other data, other features.


def _noop(_: str) -> None:
    return None


def comparison_config(models_dir: Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """The trained models' ``config.json`` with ``overrides`` applied key by key.

    ``overrides`` is ``--config``'s JSON, e.g. ``{"rankers": {"rf_trees": 50}}``: a section
    named there keeps the trained values of the keys it does not name (unlike the other
    commands, whose ``--config`` starts from the defaults), so the comparison encodes features
    like the trained workflow. Raises ``KeyError`` for an unknown section or key.
    """
    trained = A.read_json(models_dir / A.CONFIG_FILE)
    merged = dict(trained)
    for section, values in (overrides or {}).items():
        if not isinstance(values, dict):
            raise ValueError(f"config section {section!r} must be an object, got {values!r}")
        merged[section] = {**trained.get(section, {}), **values}
    return PipelineConfig.from_dict(merged)


def compare_rankers(
    paths: Paths,
    config: PipelineConfig | None = None,
    rankers: Sequence[RankerKind] = tuple(RankerKind),
    seeds: int = 3,
    log: Log = _noop,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Train and score every ranker ``seeds`` times; write the comparison.

    Needs ``shoprec train``'s workflow and Two-Tower under ``paths.models_dir`` and the
    labelled dataset under ``paths.dataset``. Writes ``comparison.{json,md,png}`` and the
    first seed's model of each ranker (``models.rankers.ranker_files``) to ``out_dir``.

    Args:
        config: training and architecture settings; default the models' ``config.json``
            (:func:`comparison_config`; the workflow and Two-Tower are always the trained
            ones).
        rankers: which, in table order; the first is the reference of the MAP@k differences.
        seeds: runs per ranker (>= 1).
        log: receives progress lines.
        out_dir: default ``paths.models_dir / "rankers"``, where ``shoprec export --ranker``
            takes the rankers from; another folder keeps those (e.g. for a study with other
            negatives).

    Returns:
        The comparison (what ``comparison.json`` holds): per ranker ``metrics`` as
        :func:`mean_std` of :func:`metric_names`, ``val_auc`` per seed and the saved
        ``files``; ``map_vs_first`` bootstrap intervals; ``reference`` (:data:`REFERENCE_HM`);
        example counts, test window, seconds.

    Raises:
        ValueError: ``seeds < 1``, no ranker, or a ranker listed twice.
        ArtifactError: a missing trained artifact.
    """
    kinds = [RankerKind(r) for r in rankers]
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"need distinct rankers, got {[k.value for k in kinds]}")
    t0 = time.perf_counter()
    models_dir = paths.models_dir
    config = config or comparison_config(models_dir)
    wf = Workflow.load(models_dir / A.WORKFLOW_FILE)
    two_tower = load_two_tower(models_dir / A.TWO_TOWER_FILE)
    data = load_dataset(paths.dataset)
    enc = encode_dataset(wf, data, config.dataset.history_length)
    tr, va = ranker_examples(two_tower, enc, data, config)
    train_in, val_in = example_inputs(enc, tr), example_inputs(enc, va)
    y_tr, y_va = tr.get_column(s.LABEL).to_numpy(), va.get_column(s.LABEL).to_numpy()
    groups = (example_groups(tr), example_groups(va))
    (test,) = data.window(SPLIT_TEST)
    sets = ranker_test_sets(two_tower, enc, data, test.index, config)
    bought = (
        customers_bought(
            read_canonical(paths.canonical).transactions,
            enc.customers.ids[sets.customer_rows],
            test.start,
        )
        if A.trained_exclusion(models_dir)
        else None
    )
    cards, num_dense = ranker_widths(wf, train_in)
    k = config.eval.k
    seed_list = [config.ranker.seed + i for i in range(seeds)]
    log(
        f"{len(kinds)} rankers x {seeds} seeds; {tr.height} training examples "
        f"({config.ranker.negatives.value} negatives), {va.height} validation, "
        f"{len(sets.labels)} labelled test, {len(sets.customer_rows)} test customers"
    )
    out_dir = out_dir or models_dir / A.RANKERS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {}
    ap: dict[RankerKind, list[float]] = {}
    roc: dict[RankerKind, tuple[np.ndarray, np.ndarray]] = {}
    for kind in kinds:
        runs: list[dict[str, float]] = []
        val_auc: list[float] = []
        ap_seeds = []
        files: list[str] = []
        for i, seed in enumerate(seed_list):
            ranker = build_ranker(kind, cards, num_dense, config, seed)
            start = time.perf_counter()
            history = fit_ranker(
                ranker, train_in, y_tr, val_in, y_va, config.ranker, seed, None, groups
            )
            fit_s = time.perf_counter() - start
            scores, lists = score_ranker(ranker, enc, sets, k, bought)
            runs.append({**scores, "fit_seconds": fit_s})
            val_auc.append(max(auc for _, auc, _ in history))
            ap_seeds.append(
                [
                    average_precision_at_k(r, rel, k)
                    for r, rel in zip(lists, sets.relevant, strict=True)
                ]
            )
            if i == 0:
                fpr, tpr, _ = roc_curve(sets.labels, predict(ranker, sets.labelled))
                roc[kind] = (fpr, tpr)
                files = [p.name for p in save_ranker(ranker, config, out_dir)]
            log(
                f"{LABELS[kind]} seed {seed}: fit {fit_s:.1f} s, val AUC {val_auc[-1]:.4f}, "
                f"test AUC {scores['auc']:.4f}, MAP@{k} {scores[f'map@{k}']:.4f}, "
                f"NDCG@{k} {scores[f'ndcg@{k}']:.4f}"
            )
        ap[kind] = np.mean(ap_seeds, axis=0).tolist()
        results[kind.value] = {
            "label": LABELS[kind],
            "metrics": {m: mean_std([r[m] for r in runs]) for m in metric_names(k)},
            "val_auc": val_auc,
            "files": files,
        }

    first = kinds[0]
    versus = {}
    for kind in kinds[1:]:
        diff, low, high = paired_bootstrap_ci(ap[kind], ap[first], seed=config.eval.seed)
        versus[kind.value] = {"map_difference": diff, "ci95_low": low, "ci95_high": high}
    comparison = {
        "dataset": str(paths.data_dir),
        "test_window": test.to_dict(),
        "k": k,
        "seeds": seed_list,
        "negatives": config.ranker.negatives.value,
        "examples": {
            "train": tr.height,
            "train_positive": int(y_tr.sum()),
            "validation": va.height,
            "labelled_test": len(sets.labels),
            "test_candidates": len(sets.candidate_labels),
            "test_customers": len(sets.customer_rows),
        },
        "tree_max_examples": config.rankers.tree_max_examples,
        "rankers": results,
        "map_vs_first": {"reference": first.value, "rankers": versus},
        "reference": REFERENCE_HM,
        "baselines": _baselines(models_dir, k),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    A.write_json(comparison, out_dir / A.COMPARISON_JSON)
    (out_dir / A.COMPARISON_MD).write_text(comparison_markdown(comparison))
    plot_comparison(
        comparison, {kind.value: roc[kind] for kind in kinds}, out_dir / A.COMPARISON_PNG
    )
    return comparison


def _baselines(models_dir: Path, k: int) -> dict[str, dict[str, float]]:
    """``shoprec evaluate``'s rows of :data:`CONTEXT_BASELINES` (same test window), if any."""
    path = models_dir / A.REPORT_JSON
    if not path.exists():
        return {}
    report = A.read_json(path)
    if report.get("k") != k:
        return {}
    return {n: report["metrics"][n] for n in CONTEXT_BASELINES if n in report["metrics"]}
