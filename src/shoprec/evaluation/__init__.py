"""Offline evaluation: ranking metrics (MAP@k, Recall@k, NDCG@k) and non-neural baselines."""

from shoprec.evaluation.baselines import (
    ALSRecommender,
    GlobalPopularity,
    NotFittedError,
    RecentPopularity,
    Recommender,
    Repurchase,
)
from shoprec.evaluation.metrics import (
    average_precision_at_k,
    evaluate_lists,
    mean_average_precision_at_k,
    mean_ndcg_at_k,
    mean_recall_at_k,
    ndcg_at_k,
    paired_bootstrap_ci,
    recall_at_k,
)

__all__ = [
    "ALSRecommender",
    "GlobalPopularity",
    "NotFittedError",
    "RecentPopularity",
    "Recommender",
    "Repurchase",
    "average_precision_at_k",
    "evaluate_lists",
    "mean_average_precision_at_k",
    "mean_ndcg_at_k",
    "mean_recall_at_k",
    "ndcg_at_k",
    "paired_bootstrap_ci",
    "recall_at_k",
]
