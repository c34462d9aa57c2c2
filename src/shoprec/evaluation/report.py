"""The offline evaluation report (``report.json`` / ``report.md``) rendered as Markdown."""

from __future__ import annotations

from typing import Any

import numpy as np


def none_if_nan(x: float) -> float | None:
    return None if np.isnan(x) else x


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _run_lines(run: dict[str, Any] | None) -> list[str]:
    """What was run: candidate sources, ranker, kept epochs, the exclusion decision."""
    if not run:
        return []
    share = run.get("repurchase_share")
    return [
        f"What ran: {run['two_stage']}, candidates from {', '.join(run['candidate_sources'])}; "
        f"kept Two-Tower epoch {run['two_tower_best_epoch']} (best validation candidate "
        f"recall) and {run['ranker']} epoch {run['ranker_best_epoch']} (neural: best validation "
        "MAP@12; trees: early stopping). exclude_purchased="
        f"{run['exclude_purchased']} with a training repurchase share of "
        f"{'n/a' if share is None else f'{share:.3f}'}: already-bought articles "
        f"{'excluded' if run['excluded'] else 'kept'}.",
        "",
    ]


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    k = report["k"]
    w = report["test_window"]
    lines = [
        f"# Offline evaluation: {report['dataset']}",
        "",
        f"Test window {w['start']} .. {w['end']} (exclusive), {report['test_customers']} "
        f"customers with at least one purchase. Metrics at k = {k}.",
        "",
        *_run_lines(report.get("run")),
        f"| model | MAP@{k} | Recall@{k} | NDCG@{k} |",
        "|---|---:|---:|---:|",
    ]
    for name, m in report["metrics"].items():
        lines.append(
            f"| {name} | {m[f'map@{k}']:.4f} | {m[f'recall@{k}']:.4f} | {m[f'ndcg@{k}']:.4f} |"
        )
    lines += [
        "",
        f"Two-stage minus each row on MAP@{k}, with a paired bootstrap 95% interval "
        "over customers (an interval containing 0 is no significant difference):",
        "",
        f"| versus | MAP@{k} difference | 95% interval |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {name} | {c['map_difference']:+.4f} | [{c['ci95_low']:+.4f}, {c['ci95_high']:+.4f}] |"
        for name, c in report["two_stage_minus_baseline_map"].items()
    ]
    served = report.get("served")
    if served:
        lines += [
            "",
            f"Served: {served['recommender']} ({served['why']}). Its MAP@{k} is "
            f"{served['map_ratio']:.3f}x that of the best baseline, {served['best_baseline']} "
            f"(paired bootstrap 95% interval [{served['ci95_low']:.3f}, "
            f"{served['ci95_high']:.3f}]). Recommended articles the customer had already "
            f"bought before the test window: {served.get('already_bought_in_lists', 'n/a')}.",
        ]
    lines += ["", "| retrieval | value |", "|---|---:|"]
    lines += [f"| {key} | {val:.4f} |" for key, val in report["retrieval"].items()]
    r = report["ranker_test_set"]
    lines += [
        "",
        f"Ranker on the labelled test set ({r['examples']} examples, 1:1 negatives): "
        f"AUC {r['auc']:.4f}, precision {r['precision']:.4f}, recall {r['recall']:.4f} "
        f"(threshold 0.5). In the customer's history: {r['positives_in_history']:.1%} "
        f"of its purchases, {r['negatives_in_history']:.1%} of its negatives.",
        "",
    ]
    c = report["ranker_test_candidates"]
    lines += [
        f"Ranker on test-window retrieval candidates ({c['examples']} examples, "
        f"{c['positive_share']:.1%} purchased): AUC {c['auc']:.4f}; among the "
        f"{c['history_share']:.1%} from the customer's history (which of my usual "
        f"articles; {c['history_positive_share']:.1%} of them purchased, "
        f"{c['negatives_in_history']:.1%} of all negatives) {_fmt(c['history_auc'])}, "
        f"among the others {_fmt(c['new_auc'])}.",
        "",
    ]
    return "\n".join(lines)
