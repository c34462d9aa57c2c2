"""Ranking metrics for top-k recommendation lists, and the rankers' classification metrics
(pure functions).

Every per-customer metric takes ``recommended``, an ordered list of article ids (best first),
and ``relevant``, the set of article ids the customer actually bought in the evaluation
window. A recommended id that appears more than once counts only at its first position; the
later copies still occupy their slots in the top k (they are misses). A customer with no
relevant items scores 0.0 on every metric, as in the H&M competition's MAP@12.

The ``mean_*`` versions average over customers; ``recommended`` and ``relevant`` are aligned
lists (one entry per customer, same order). They include every customer they are given: drop
customers without purchases in the window beforehand if they should not count.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

PerCustomerMetric = Callable[[Sequence[str], Collection[str], int], float]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def _check_list(recommended: Sequence[str]) -> None:
    if isinstance(recommended, str):
        raise ValueError(
            f"recommended must be a sequence of article ids, got the string {recommended!r}"
        )


def _hits(recommended: Sequence[str], relevant: Collection[str], k: int) -> np.ndarray:
    """Binary relevance of the first ``k`` recommended positions, shape (min(k, len),).

    A position is a hit when its id is relevant and did not occur at an earlier position.
    """
    _check_k(k)
    _check_list(recommended)
    relevant_set = set(relevant)
    seen: set[str] = set()
    hits = np.zeros(min(k, len(recommended)), dtype=np.float64)
    for i, item in enumerate(recommended[:k]):
        if item in relevant_set and item not in seen:
            hits[i] = 1.0
        seen.add(item)
    return hits


def average_precision_at_k(
    recommended: Sequence[str], relevant: Collection[str], k: int = 12
) -> float:
    """Average precision at k of one ranked list, in [0, 1].

    ``AP@k = (1 / min(|relevant|, k)) * sum_{i=1..k} P(i) * rel(i)``, where ``P(i)`` is the
    precision of the first ``i`` recommendations and ``rel(i)`` is 1 when the item at rank
    ``i`` is relevant (and not a repeat of an earlier item), else 0. AP is 0.0 when
    ``relevant`` is empty.

    This is the per-customer term of the H&M Personalized Fashion Recommendations
    competition's MAP@12
    (https://www.kaggle.com/competitions/h-and-m-personalized-fashion-recommendations/overview/evaluation)
    and gives the same values as ``apk`` in Ben Hamner's ``ml_metrics`` package, including its
    handling of duplicates.

    Raises:
        ValueError: if ``k < 1`` or ``recommended`` is a single string.
    """
    hits = _hits(recommended, relevant, k)
    n_relevant = len(set(relevant))
    if n_relevant == 0 or hits.size == 0:
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(np.sum(precision * hits) / min(n_relevant, k))


def recall_at_k(recommended: Sequence[str], relevant: Collection[str], k: int = 12) -> float:
    """Recall at k of one ranked list, in [0, 1].

    ``Recall@k = |set(recommended[:k]) & relevant| / |relevant|``; 0.0 when ``relevant`` is
    empty. It is below 1 whenever ``|relevant| > k``, even for a perfect list.

    Reference: Manning, Raghavan & Schütze, *Introduction to Information Retrieval* (2008),
    section 8.3; ``recall_at_k`` in Microsoft ``recommenders``
    (``recommenders/evaluation/python_evaluation.py``).

    Raises:
        ValueError: if ``k < 1`` or ``recommended`` is a single string.
    """
    hits = _hits(recommended, relevant, k)
    n_relevant = len(set(relevant))
    if n_relevant == 0:
        return 0.0
    return float(hits.sum() / n_relevant)


def ndcg_at_k(recommended: Sequence[str], relevant: Collection[str], k: int = 12) -> float:
    """Normalised discounted cumulative gain at k with binary relevance, in [0, 1].

    ``DCG@k = sum_{i=1..k} rel(i) / log2(i + 1)``; the ideal DCG puts ``min(|relevant|, k)``
    hits at the top ranks; ``NDCG@k = DCG@k / IDCG@k``, and 0.0 when ``relevant`` is empty.

    Reference: Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques",
    ACM TOIS 20(4), 2002.

    Raises:
        ValueError: if ``k < 1`` or ``recommended`` is a single string.
    """
    hits = _hits(recommended, relevant, k)
    n_ideal = min(len(set(relevant)), k)
    if n_ideal == 0:
        return 0.0
    dcg = float(np.sum(hits / np.log2(np.arange(2, hits.size + 2))))
    idcg = float(np.sum(1.0 / np.log2(np.arange(2, n_ideal + 2))))
    return dcg / idcg


def _mean(
    metric: PerCustomerMetric,
    recommended: Sequence[Sequence[str]],
    relevant: Sequence[Collection[str]],
    k: int,
) -> float:
    _check_k(k)
    if len(recommended) != len(relevant):
        raise ValueError(
            f"recommended and relevant must be aligned per customer: "
            f"len(recommended)={len(recommended)} != len(relevant)={len(relevant)}"
        )
    if len(recommended) == 0:
        raise ValueError("cannot average a metric over 0 customers")
    scores = [metric(rec, rel, k) for rec, rel in zip(recommended, relevant, strict=True)]
    return float(np.mean(scores))


def mean_average_precision_at_k(
    recommended: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], k: int = 12
) -> float:
    """MAP@k: :func:`average_precision_at_k` averaged over customers, in [0, 1].

    With ``k = 12`` this is the H&M Personalized Fashion Recommendations competition metric
    (https://www.kaggle.com/competitions/h-and-m-personalized-fashion-recommendations/overview/evaluation),
    equal to ``mapk`` in ``ml_metrics``.

    Raises:
        ValueError: if ``k < 1``, the two lists differ in length (both lengths are named), or
            they are empty.
    """
    return _mean(average_precision_at_k, recommended, relevant, k)


def mean_recall_at_k(
    recommended: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], k: int = 12
) -> float:
    """:func:`recall_at_k` averaged over customers, in [0, 1].

    Candidate Recall@N of a retrieval stage is this with ``k = N`` applied to the retrieved
    candidate lists: the share of each customer's purchases that reach the ranker.

    Raises:
        ValueError: if ``k < 1``, the two lists differ in length (both lengths are named), or
            they are empty.
    """
    return _mean(recall_at_k, recommended, relevant, k)


def mean_ndcg_at_k(
    recommended: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], k: int = 12
) -> float:
    """:func:`ndcg_at_k` averaged over customers, in [0, 1].

    Raises:
        ValueError: if ``k < 1``, the two lists differ in length (both lengths are named), or
            they are empty.
    """
    return _mean(ndcg_at_k, recommended, relevant, k)


def evaluate_lists(
    recommended: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], k: int = 12
) -> dict[str, float]:
    """MAP@k, Recall@k and NDCG@k over customers, keyed ``"map@{k}"``, ``"recall@{k}"``,
    ``"ndcg@{k}"`` (e.g. ``{"map@12": ..., "recall@12": ..., "ndcg@12": ...}``).

    Raises:
        ValueError: as :func:`mean_average_precision_at_k`.
    """
    return {
        f"map@{k}": mean_average_precision_at_k(recommended, relevant, k),
        f"recall@{k}": mean_recall_at_k(recommended, relevant, k),
        f"ndcg@{k}": mean_ndcg_at_k(recommended, relevant, k),
    }


# customer indices drawn at a time by the bootstrap (32 MiB of int64); one (n_resamples, n)
# array was 1.6 GiB and 7.7 s a comparison at H&M's 102,842 test customers, blocks 1.1 s
_RESAMPLE_BLOCK: Final = 1 << 22


def _paired_scores(
    a: Sequence[float], b: Sequence[float], n_resamples: int, level: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(a, b) as float64 (n,); ``ValueError`` on bad arguments."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"need two aligned non-empty 1-D score lists, got {x.shape} and {y.shape}")
    if n_resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(
            f"n_resamples must be >= 1 and level in (0, 1), got {n_resamples}, {level}"
        )
    return x, y


def _resampled_means(
    columns: Sequence[npt.NDArray[np.float64]], n_resamples: int, seed: int
) -> list[npt.NDArray[np.float64]]:
    """Per column (float64 (n,), aligned), the means of ``n_resamples`` resamples of its n
    customers drawn with replacement, the same resamples for every column: float64
    (n_resamples,) each. The draws are those of one ``(n_resamples, n)`` call of
    ``default_rng(seed).integers``, made a block of resamples at a time."""
    n = len(columns[0])
    rng = np.random.default_rng(seed)
    means = [np.empty(n_resamples, dtype=np.float64) for _ in columns]
    rows = max(1, _RESAMPLE_BLOCK // n)
    for start in range(0, n_resamples, rows):
        idx = rng.integers(0, n, (min(rows, n_resamples - start), n))
        for out, column in zip(means, columns, strict=True):
            out[start : start + len(idx)] = column[idx].mean(axis=1)
    return means


def _percentile_interval(samples: npt.NDArray[np.float64], level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples``."""
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_bootstrap_ci(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its percentile bootstrap confidence interval.

    Paired: customers are resampled with replacement and both systems' per-customer scores
    (e.g. AP@12) move together (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993,
    ch. 13). A difference whose interval contains 0 is not significant at ``level``.

    Args:
        a, b: per-customer scores of two systems, aligned, same length >= 1.
        n_resamples: bootstrap resamples (>= 1).
        level: confidence level in (0, 1).

    Returns:
        (mean difference, lower bound, upper bound).

    Raises:
        ValueError: lengths differ, are 0, or an argument is out of range.
    """
    x, y = _paired_scores(a, b, n_resamples, level)
    diff = x - y
    (resampled,) = _resampled_means([diff], n_resamples, seed)
    low, high = _percentile_interval(resampled, level)
    return float(diff.mean()), low, high


def paired_bootstrap_ratio_ci(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Ratio of means ``mean(a) / mean(b)`` and its paired percentile bootstrap interval.

    Same resampling as :func:`paired_bootstrap_ci` (customers with replacement, both systems
    together); a ratio whose interval excludes 1.0 is a significant difference at ``level``.

    Returns:
        (ratio, lower bound, upper bound); ``inf`` where ``mean(b)`` is 0.

    Raises:
        ValueError: lengths differ, are 0, or an argument is out of range.
    """
    x, y = _paired_scores(a, b, n_resamples, level)
    mean_x, mean_y = _resampled_means([x, y], n_resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(mean_y > 0, mean_x / mean_y, np.inf)
        ratio = x.mean() / y.mean() if y.mean() > 0 else np.inf
    low, high = _percentile_interval(ratios, level)
    return float(ratio), low, high


def binary_classification_metrics(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
) -> dict[str, float]:
    """ROC AUC, precision and recall of purchase probabilities against 0/1 labels.

    ``auc`` (in [0, 1]) is the probability that a random positive scores above a random
    negative (ties count half; Hanley & McNeil, Radiology 143(1), 1982), computed by
    ``sklearn.metrics.roc_auc_score``. ``precision`` = TP / (TP + FP) and ``recall`` =
    TP / (TP + FN) of the decision ``probability >= threshold``, both in [0, 1] and 0.0 when
    undefined (no predicted, resp. no actual, positive). These are the three numbers the
    reference work reported for its rankers.

    Raises:
        ValueError: lengths differ, are 0, or the labels hold one class only (AUC undefined).
    """
    y = np.asarray(labels).astype(np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(
            f"need aligned non-empty 1-D labels and scores, got {y.shape} and {p.shape}"
        )
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"labels must hold both 0 and 1, got {sorted(set(y.tolist()))}")
    predicted = p >= threshold
    tp = int((predicted & (y == 1)).sum())
    return {
        "auc": float(roc_auc_score(y, p)),
        "precision": tp / int(predicted.sum()) if predicted.any() else 0.0,
        "recall": tp / int((y == 1).sum()),
    }
