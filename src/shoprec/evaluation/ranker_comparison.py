"""Rendering of the ranker comparison (``shoprec compare-rankers``): tables and plot.

See :mod:`shoprec.pipeline.compare` for how the comparison is run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from matplotlib.figure import Figure

from shoprec.config import RankerKind, RankerNegatives

LABELS: Final = {kind: kind.label for kind in RankerKind}


REFERENCE_HM: Final = {
    "Random Forest": {"auc": 0.8050, "precision": 0.8326, "recall": 0.7488},
    "Gradient Boosting": {"auc": 0.7981, "precision": 0.8226, "recall": 0.7440},
    "DLRM": {"auc": 0.8794, "precision": 0.8236, "recall": 0.7100},
    "Wide&Deep": {"auc": 0.8485, "precision": 0.8104, "recall": 0.6416},
    "DCN": {"auc": 0.8286, "precision": 0.7569, "recall": 0.6814},
    "MLP": {"auc": 0.8195, "precision": 0.7072, "recall": 0.7543},
}


NEGATIVES_TEXT: Final = {
    RankerNegatives.CANDIDATES.value: "negatives: retrieved, not purchased candidates",
    RankerNegatives.SAMPLED.value: "negatives: the labelled dataset's popularity samples",
}


def metric_names(k: int) -> tuple[str, ...]:
    """Keys of each ranker's ``metrics`` in the comparison, table order."""
    return (
        "auc",
        "precision",
        "recall",
        "candidate_auc",
        "history_candidate_auc",
        "new_candidate_auc",
        f"map@{k}",
        f"ndcg@{k}",
        f"recall@{k}",
        "fit_seconds",
    )


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}``; std is the sample standard deviation (0.0 for one);
    mean and std are None (and the NaN values None) when a value is NaN."""
    x = np.asarray(values, dtype=np.float64)
    if np.isnan(x).any():  # an undefined AUC (one class): no mean either
        return {"mean": None, "std": None, "values": [None if np.isnan(v) else float(v) for v in x]}
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "values": [float(v) for v in x],
    }


CONTEXT_BASELINES: Final = ("repurchase (+ last-week popularity)", "Two-Tower only")


def _pm(m: dict[str, Any], digits: int = 4) -> str:
    if m["mean"] is None:
        return "n/a"
    return f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}"


def comparison_markdown(c: dict[str, Any]) -> str:
    """The comparison as Markdown: our table, the MAP differences, the reference's numbers."""
    k, w, ex = c["k"], c["test_window"], c["examples"]
    lines = [
        f"# Ranker comparison: {c['dataset']}",
        "",
        f"Mean ± std over {len(c['seeds'])} seeds ({', '.join(map(str, c['seeds']))}). Every "
        f"ranker trains on the same {ex['train']} examples ({ex['train_positive']} purchases, "
        f"{NEGATIVES_TEXT.get(c['negatives'], c['negatives'])}) and selects on the same "
        f"{ex['validation']} validation "
        f"examples. AUC / precision / recall (threshold 0.5): the labelled test set "
        f"({ex['labelled_test']} examples, popularity-sampled negatives 1:1, the reference "
        f"design's). AUC cand.: {ex['test_candidates']} retrieved test-window candidates; "
        "AUC hist. / AUC new: those from / not from the customer's history list. "
        f"MAP / NDCG / Recall@{k}: each ranker re-ranks the candidates of every source "
        f"of the {ex['test_customers']} customers who bought in the test window "
        f"{w['start']} .. {w['end']}.",
        "",
        f"| ranker | AUC | precision | recall | AUC cand. | AUC hist. | AUC new | MAP@{k} "
        f"| NDCG@{k} | Recall@{k} | fit s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in c["rankers"].values():
        m = r["metrics"]
        lines.append(
            f"| {r['label']} | "
            + " | ".join(_pm(m[name]) for name in metric_names(k)[:-1])
            + f" | {m['fit_seconds']['mean']:.0f} |"
        )
    versus = c["map_vs_first"]
    if versus["rankers"]:
        first = c["rankers"][versus["reference"]]["label"]
        lines += [
            "",
            f"MAP@{k} minus {first}'s, paired bootstrap 95% interval over customers (AP "
            "averaged over the seeds; an interval containing 0 is no significant difference):",
            "",
            f"| ranker | MAP@{k} difference | 95% interval |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {c['rankers'][kind]['label']} | {d['map_difference']:+.4f} | "
            f"[{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}] |"
            for kind, d in versus["rankers"].items()
        ]
    if c["baselines"]:
        lines += [
            "",
            "Baselines from `shoprec evaluate` on the same customers and window: "
            + "; ".join(
                f"{name}: MAP@{k} {m[f'map@{k}']:.4f}, NDCG@{k} {m[f'ndcg@{k}']:.4f}"
                for name, m in c["baselines"].items()
            )
            + ".",
        ]
    if c["tree_max_examples"]:
        lines += [
            "",
            f"The trees fit on a seeded sample of {c['tree_max_examples']} of the "
            "training examples.",
        ]
    lines += [
        "",
        "For context only, the reference work's numbers on its H&M labelled dataset (theirs, "
        "not ours: other data, features and negatives at training time):",
        "",
        "| ranker (reference work, H&M) | AUC | precision | recall |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {r['auc']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} |"
        for name, r in c["reference"].items()
    ]
    return "\n".join(lines) + "\n"


def plot_comparison(
    c: dict[str, Any], roc: dict[str, tuple[np.ndarray, np.ndarray]], path: Path
) -> None:
    """PNG: ROC curves on the labelled test set (first seed) and MAP@k / NDCG@k bars with
    +- std error bars."""
    k = c["k"]
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    ax_roc, ax_map, ax_ndcg = fig.subplots(1, 3)
    for kind, (fpr, tpr) in roc.items():
        r = c["rankers"][kind]
        ax_roc.plot(fpr, tpr, label=f"{r['label']} ({r['metrics']['auc']['values'][0]:.3f})")
    ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax_roc.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"ROC, labelled test set (seed {c['seeds'][0]})",
    )
    ax_roc.legend(loc="lower right", fontsize="small")
    labels = [r["label"] for r in c["rankers"].values()]
    x = np.arange(len(labels))
    for ax, name in ((ax_map, f"map@{k}"), (ax_ndcg, f"ndcg@{k}")):
        means = [r["metrics"][name]["mean"] for r in c["rankers"].values()]
        stds = [r["metrics"][name]["std"] for r in c["rankers"].values()]
        ax.bar(x, means, yerr=stds, capsize=4, color="tab:blue")
        for (label, m), style in zip(c["baselines"].items(), (":", "--"), strict=False):
            ax.axhline(m[name], color="tab:red", linestyle=style, linewidth=1, label=label)
        tops = [m + sd for m, sd in zip(means, stds, strict=True)]
        tops += [m[name] for m in c["baselines"].values()]
        ax.set_ylim(0.0, 1.35 * max(tops) if max(tops) > 0 else 1.0)  # room for the legend
        if c["baselines"]:
            ax.legend(loc="upper left", fontsize="small")
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set(title=f"{name.upper()} re-ranking test candidates (± std, {len(c['seeds'])} seeds)")
    fig.savefig(path, dpi=110)
