"""What a ranker is scored on in the test window, and how: labelled set, candidates, lists.

Shape letters: B = customers, C = candidates per customer, M = examples.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from shoprec import schema as s
from shoprec.config import PipelineConfig
from shoprec.data.dataset import DatasetArtifacts
from shoprec.evaluation.metrics import binary_classification_metrics, evaluate_lists
from shoprec.features.assemble import RANKING_HISTORY_FEATURE, RankingInputs
from shoprec.features.workflow import FIRST_ID
from shoprec.inference.candidates import PAD
from shoprec.inference.scoring import bought_mask, predict, rank_candidates
from shoprec.models.rankers import Ranker
from shoprec.models.rules import RuleRanker
from shoprec.training.encoded import EncodedDataset
from shoprec.training.examples import candidate_examples, example_inputs, window_candidates


def customers_bought(
    transactions: pl.DataFrame, customer_ids: Sequence[str], cutoff: date
) -> list[frozenset[str]]:
    """Per customer (in ``customer_ids`` order), every article id they bought before
    ``cutoff`` (``t_dat < cutoff``; empty for a customer without purchases): what
    ``exclude_purchased`` never lists (:func:`inference.scoring.bought_mask`)."""
    ids = list(customer_ids)
    grouped = (
        transactions.filter((pl.col(s.T_DAT) < cutoff) & pl.col(s.CUSTOMER_ID).is_in(ids))
        .group_by(s.CUSTOMER_ID)
        .agg(pl.col(s.ARTICLE_ID).unique())
    )
    sets = {c: frozenset(a) for c, a in grouped.iter_rows()}
    return [sets.get(c, frozenset()) for c in ids]


def window_truth(examples: pl.DataFrame, window: int) -> dict[str, set[str]]:
    """Customer id -> the article ids they bought in ``window`` (the labels' positives)."""
    pos = examples.filter((pl.col(s.WINDOW) == window) & (pl.col(s.LABEL) == 1))
    grouped = pos.group_by(s.CUSTOMER_ID).agg(pl.col(s.ARTICLE_ID))
    return {c: set(a) for c, a in grouped.iter_rows()}


@dataclass
class RankerTestSets:
    """What a ranker is scored on in one (test) window, built once for any number of rankers.

    Attributes:
        labelled: inputs of the labelled dataset's examples of the window (purchases and
            popularity-sampled negatives, ``DatasetConfig.negatives_per_positive`` : 1).
        labels: int8 (M,) their labels.
        candidates: inputs of retrieved candidates (``candidate_examples``, seeded by
            ``EvalConfig.seed``): purchases among them and retrieved, not purchased ones.
        candidate_labels: int8 (Mc,).
        customer_rows: int64 (B,) the window's customers (rows of ``EncodedDataset.customers``).
        candidate_rows: int64 (B, C) their candidates from every source, PAD-padded.
        candidate_features: float32 (B, C, len(schema.SOURCE_DENSE)) their source features.
        by_source: each source's own candidate rows (B, c), by source name.
        relevant: per customer, the article ids bought in the window.
    """

    labelled: RankingInputs
    labels: np.ndarray
    candidates: RankingInputs
    candidate_labels: np.ndarray
    customer_rows: np.ndarray
    candidate_rows: np.ndarray
    candidate_features: np.ndarray
    by_source: dict[str, np.ndarray]
    relevant: list[set[str]]

    @cached_property
    def candidate_in_history(self) -> np.ndarray:
        """bool (Mc,): :func:`in_history` of ``candidates``, computed once per test set."""
        return in_history(self.candidates)


def ranker_test_sets(
    two_tower: Any, enc: EncodedDataset, data: DatasetArtifacts, window: int, config: PipelineConfig
) -> RankerTestSets:
    """Build :class:`RankerTestSets` for ``window`` (retrieval as of its first day)."""
    labelled = data.examples.filter(pl.col(s.WINDOW) == window)
    cand_ex = candidate_examples(
        two_tower, enc, data, window, config, np.random.default_rng(config.eval.seed)
    )
    wc = window_candidates(two_tower, enc, data, window, config)
    truth = window_truth(data.examples, window)
    return RankerTestSets(
        labelled=example_inputs(enc, labelled),
        labels=labelled.get_column(s.LABEL).to_numpy(),
        candidates=example_inputs(enc, cand_ex),
        candidate_labels=cand_ex.get_column(s.LABEL).to_numpy(),
        customer_rows=wc.customer_rows,
        candidate_rows=wc.candidates,
        candidate_features=wc.features,
        by_source=wc.by_source,
        relevant=[truth[c] for c in enc.customers.ids[wc.customer_rows]],
    )


def rank_window(
    ranker: Ranker | RuleRanker,
    enc: EncodedDataset,
    customer_rows: np.ndarray,
    candidates: np.ndarray,
    k: int,
    features: np.ndarray | None = None,
    bought: Sequence[Set[str]] | None = None,
    batch: int = 1024,
) -> np.ndarray:
    """``rank_candidates`` in batches of customers: top-k article rows int64 (B, k), PAD-padded.

    ``bought``: per customer the article ids never to list (:func:`customers_bought`, when
    ``exclude_purchased`` excludes), None = exclude nothing.
    """
    return (
        np.concatenate(
            [
                rank_candidates(
                    ranker,
                    enc.customers,
                    customer_rows[i : i + batch],
                    enc.articles,
                    enc.attributes,
                    candidates[i : i + batch],
                    k,
                    None
                    if bought is None
                    else _bought(enc, candidates[i : i + batch], bought[i : i + batch]),
                    None if features is None else features[i : i + batch],
                )[0]
                for i in range(0, len(customer_rows), batch)
            ]
        )
        if len(customer_rows)
        else np.zeros((0, k), dtype=np.int64)
    )


def _bought(enc: EncodedDataset, candidates: np.ndarray, bought: Sequence[Set[str]]) -> np.ndarray:
    ids = np.where(candidates != PAD, enc.articles.ids[np.maximum(candidates, 0)], "")
    return bought_mask(ids.astype(object), bought)


def article_lists(enc: EncodedDataset, rows: np.ndarray) -> list[list[str]]:
    """Article rows (B, C) -> per customer the article ids, PAD dropped."""
    ids = enc.articles.ids
    return [[ids[r] for r in row if r != PAD] for row in rows]


def in_history(inputs: RankingInputs) -> np.ndarray:
    """bool (M,): whether each example's article is in its customer's history list.

    Compares encoded ids, so an article unknown to the workflow (OOV, or the missing id) is
    never "in the history", even when the history holds other unknown articles.
    """
    article = inputs.sparse[:, RANKING_HISTORY_FEATURE]
    return (inputs.hist_ids == article[:, None]).any(axis=1) & (article >= FIRST_ID)


def subset_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when ``labels`` hold one class only (AUC undefined)."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def score_ranker(
    ranker: Ranker,
    enc: EncodedDataset,
    sets: RankerTestSets,
    k: int,
    bought: Sequence[Set[str]] | None = None,
) -> tuple[dict[str, float], list[list[str]]]:
    """Score one ranker on the test sets; ``bought`` as in :func:`rank_window`.

    Returns:
        ({"auc", "precision", "recall"} on the labelled set (threshold 0.5),
        "candidate_auc" on the retrieved candidates, "history_candidate_auc" /
        "new_candidate_auc" on those from / not from the customer's history list (NaN when
        a subset holds one class), and ``evaluate_lists`` of its re-ranked
        top-k lists: "map@k", "recall@k", "ndcg@k"}, those lists of article ids).
    """
    scores = binary_classification_metrics(sets.labels, predict(ranker, sets.labelled))
    cand_p = predict(ranker, sets.candidates)
    scores["candidate_auc"] = float(roc_auc_score(sets.candidate_labels, cand_p))
    in_hist = sets.candidate_in_history
    for name, subset in (("history_candidate_auc", in_hist), ("new_candidate_auc", ~in_hist)):
        scores[name] = subset_auc(sets.candidate_labels[subset], cand_p[subset])
    lists = article_lists(
        enc,
        rank_window(
            ranker,
            enc,
            sets.customer_rows,
            sets.candidate_rows,
            k,
            sets.candidate_features,
            bought,
        ),
    )
    scores.update(evaluate_lists(lists, sets.relevant, k))
    return scores, lists
