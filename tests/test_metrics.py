"""Tests for shoprec.evaluation.metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoprec.evaluation.metrics import (
    PerCustomerMetric,
    average_precision_at_k,
    evaluate_lists,
    mean_average_precision_at_k,
    mean_ndcg_at_k,
    mean_recall_at_k,
    ndcg_at_k,
    recall_at_k,
)

MeanMetric = Callable[[Sequence[Sequence[str]], Sequence[Collection[str]], int], float]

PER_CUSTOMER: list[PerCustomerMetric] = [average_precision_at_k, recall_at_k, ndcg_at_k]
MEANS: list[MeanMetric] = [mean_average_precision_at_k, mean_recall_at_k, mean_ndcg_at_k]


def ml_metrics_apk(actual: Collection[str], predicted: Sequence[str], k: int) -> float:
    """``apk`` from Ben Hamner's ml_metrics (the H&M competition's reference), verbatim logic."""
    predicted = list(predicted)[:k]
    score = 0.0
    num_hits = 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            num_hits += 1.0
            score += num_hits / (i + 1.0)
    if not actual:
        return 0.0
    return score / min(len(actual), k)


# ---- fixed cases -----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", PER_CUSTOMER)
def test_perfect_list_scores_one(metric: PerCustomerMetric) -> None:
    assert metric(["a", "b", "c"], {"c", "b", "a"}, 3) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", PER_CUSTOMER)
def test_no_hit_scores_zero(metric: PerCustomerMetric) -> None:
    assert metric(["x", "y", "z"], {"a", "b"}, 12) == 0.0


@pytest.mark.parametrize("metric", PER_CUSTOMER)
def test_empty_relevant_scores_zero(metric: PerCustomerMetric) -> None:
    assert metric(["a", "b"], set(), 12) == 0.0


@pytest.mark.parametrize("metric", PER_CUSTOMER)
def test_empty_recommendation_scores_zero(metric: PerCustomerMetric) -> None:
    assert metric([], {"a"}, 12) == 0.0


@pytest.mark.parametrize("metric", PER_CUSTOMER)
def test_hits_after_k_do_not_count(metric: PerCustomerMetric) -> None:
    assert metric(["x", "y", "a"], {"a"}, 2) == 0.0


# recommended = [a, x, b, y, c], relevant = {a, b, c, d}, k = 5: hits at ranks 1, 3, 5.
HAND_REC = ["a", "x", "b", "y", "c"]
HAND_REL = {"a", "b", "c", "d"}


def test_average_precision_by_hand() -> None:
    # P(1) = 1/1, P(3) = 2/3, P(5) = 3/5; sum = 1 + 0.6667 + 0.6 = 2.2667;
    # divided by min(|relevant| = 4, k = 5) = 4 -> 0.5667 (= 17/30).
    assert average_precision_at_k(HAND_REC, HAND_REL, 5) == pytest.approx(17 / 30)
    assert average_precision_at_k(HAND_REC, HAND_REL, 5) == pytest.approx(
        ml_metrics_apk(HAND_REL, HAND_REC, 5)
    )


def test_recall_by_hand() -> None:
    # 3 of the 4 relevant items are in the top 5 -> 3/4.
    assert recall_at_k(HAND_REC, HAND_REL, 5) == pytest.approx(0.75)
    # top 2 = [a, x] holds 1 of 4 -> 1/4.
    assert recall_at_k(HAND_REC, HAND_REL, 2) == pytest.approx(0.25)


def test_ndcg_by_hand() -> None:
    # DCG  = 1/log2(2) + 1/log2(4) + 1/log2(6) = 1 + 0.5 + 0.38685 = 1.88685
    # IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4) + 1/log2(5) (4 ideal hits)
    #      = 1 + 0.63093 + 0.5 + 0.43068 = 2.56161;  NDCG = 1.88685 / 2.56161 = 0.73659
    assert ndcg_at_k(HAND_REC, HAND_REL, 5) == pytest.approx(0.73659, abs=1e-5)


def test_k_larger_than_list() -> None:
    rec, rel = ["a", "b"], {"a", "b", "c"}
    # AP: (1/1 + 2/2) / min(3, 12) = 2/3
    assert average_precision_at_k(rec, rel, 12) == pytest.approx(2 / 3)
    # Recall: 2 of 3
    assert recall_at_k(rec, rel, 12) == pytest.approx(2 / 3)
    # NDCG: (1 + 1/log2(3)) / (1 + 1/log2(3) + 1/log2(4))
    idcg = 1 + 1 / math.log2(3) + 0.5
    assert ndcg_at_k(rec, rel, 12) == pytest.approx((1 + 1 / math.log2(3)) / idcg)


def test_more_relevant_than_k() -> None:
    rec, rel = ["a", "b"], {"a", "b", "c"}
    # AP and NDCG normalise by min(|relevant|, k) = 2 hits, so a full top 2 is perfect;
    # recall still misses c.
    assert average_precision_at_k(rec, rel, 2) == pytest.approx(1.0)
    assert ndcg_at_k(rec, rel, 2) == pytest.approx(1.0)
    assert recall_at_k(rec, rel, 2) == pytest.approx(2 / 3)


def test_duplicates_count_once() -> None:
    rec, rel = ["a", "a", "b"], {"a", "b"}
    # The repeated a occupies rank 2 as a miss: AP = (1/1 + 2/3) / 2 = 5/6
    assert average_precision_at_k(rec, rel, 3) == pytest.approx(5 / 6)
    assert ml_metrics_apk(rel, rec, 3) == pytest.approx(5 / 6)
    assert recall_at_k(["a", "a", "a"], rel, 3) == pytest.approx(0.5)
    # NDCG: (1 + 1/log2(4)) / (1 + 1/log2(3))
    assert ndcg_at_k(rec, rel, 3) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))


def test_default_k_is_12() -> None:
    rec = [f"x{i}" for i in range(12)] + ["a"]
    assert average_precision_at_k(rec, {"a"}) == 0.0
    assert average_precision_at_k(rec, {"a"}, 13) == pytest.approx(1 / 13)


@pytest.mark.parametrize("metric", [*PER_CUSTOMER, *MEANS])
@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_raises(metric: Callable[..., float], k: int) -> None:  # either kind
    with pytest.raises(ValueError, match=rf"k must be an integer >= 1, got {k}"):
        metric([["a"]] if metric in MEANS else ["a"], [{"a"}] if metric in MEANS else {"a"}, k)


def test_string_instead_of_list_raises() -> None:
    with pytest.raises(ValueError, match="got the string 'abc'"):
        average_precision_at_k("abc", {"a"}, 3)


# ---- means -----------------------------------------------------------------------------------


def test_means_average_over_customers() -> None:
    rec = [["a", "x"], ["y", "b"], ["z"]]
    rel = [{"a"}, {"b"}, {"c"}]
    # AP: 1, 1/2, 0 -> 0.5; recall: 1, 1, 0 -> 2/3; NDCG: 1, 1/log2(3), 0.
    assert mean_average_precision_at_k(rec, rel, 2) == pytest.approx(0.5)
    assert mean_recall_at_k(rec, rel, 2) == pytest.approx(2 / 3)
    assert mean_ndcg_at_k(rec, rel, 2) == pytest.approx((1 + 1 / math.log2(3)) / 3)


@pytest.mark.parametrize("metric", MEANS)
def test_mean_length_mismatch_names_both_lengths(metric: MeanMetric) -> None:
    with pytest.raises(ValueError, match=r"len\(recommended\)=2 != len\(relevant\)=1"):
        metric([["a"], ["b"]], [{"a"}], 12)


@pytest.mark.parametrize("metric", MEANS)
def test_mean_over_no_customers_raises(metric: MeanMetric) -> None:
    with pytest.raises(ValueError, match="0 customers"):
        metric([], [], 12)


def test_evaluate_lists_keys_carry_k() -> None:
    rec = [["a", "x"], ["y", "b"], ["z"]]
    rel = [{"a"}, {"b"}, {"c"}]
    result = evaluate_lists(rec, rel, 2)
    assert result == {
        "map@2": pytest.approx(0.5),
        "recall@2": pytest.approx(2 / 3),
        "ndcg@2": pytest.approx((1 + 1 / math.log2(3)) / 3),
    }
    assert list(evaluate_lists(rec, rel)) == ["map@12", "recall@12", "ndcg@12"]


# ---- properties ------------------------------------------------------------------------------

ITEMS = st.sampled_from([f"i{n}" for n in range(15)])
RECOMMENDED = st.lists(ITEMS, max_size=20)
RELEVANT = st.sets(ITEMS, max_size=10)
KS = st.integers(min_value=1, max_value=25)


@given(RECOMMENDED, RELEVANT, KS)
def test_metrics_in_unit_interval(rec: list[str], rel: set[str], k: int) -> None:
    for metric in PER_CUSTOMER:
        assert 0.0 <= metric(rec, rel, k) <= 1.0 + 1e-12


@given(RECOMMENDED, RELEVANT, KS)
def test_ap_matches_ml_metrics_apk(rec: list[str], rel: set[str], k: int) -> None:
    assert average_precision_at_k(rec, rel, k) == pytest.approx(ml_metrics_apk(rel, rec, k))


@given(st.permutations([f"i{n}" for n in range(6)]), st.integers(1, 6), RECOMMENDED, KS)
def test_relevant_first_is_perfect(
    order: list[str], n_relevant: int, tail: list[str], k: int
) -> None:
    relevant = order[:n_relevant]
    rec = relevant + tail
    assert average_precision_at_k(rec, set(relevant), k) == pytest.approx(1.0)
    assert ndcg_at_k(rec, set(relevant), k) == pytest.approx(1.0)
    assert recall_at_k(rec, set(relevant), k) == pytest.approx(min(n_relevant, k) / n_relevant)


def test_paired_bootstrap_ci_brackets_the_mean_and_detects_a_clear_difference() -> None:
    from shoprec.evaluation.metrics import paired_bootstrap_ci

    better = [1.0, 1.0, 0.5, 1.0] * 25
    worse = [0.0, 0.5, 0.5, 0.0] * 25
    diff, low, high = paired_bootstrap_ci(better, worse, seed=1)
    assert diff == pytest.approx(0.625)
    assert 0.0 < low <= diff <= high
    same = paired_bootstrap_ci(better, better)
    assert same == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap_ci([1.0], [1.0, 2.0])


def test_paired_bootstrap_ratio_ci_brackets_the_ratio_of_means() -> None:
    from shoprec.evaluation.metrics import paired_bootstrap_ratio_ci

    rng = np.random.default_rng(0)
    worse = rng.uniform(0.1, 0.3, 400).tolist()
    better = [w * 1.5 for w in worse]  # every customer 1.5x: the ratio is 1.5, the interval too
    ratio, low, high = paired_bootstrap_ratio_ci(better, worse, seed=1)
    assert ratio == pytest.approx(1.5) and low == pytest.approx(1.5) and high == pytest.approx(1.5)
    noisy = (np.asarray(worse) + rng.normal(0.0, 0.05, 400)).tolist()
    ratio, low, high = paired_bootstrap_ratio_ci(noisy, worse, seed=1)
    assert low < ratio < high and low < 1.0 < high  # no real difference: 1.0 inside
    assert paired_bootstrap_ratio_ci([1.0, 2.0], [0.0, 0.0])[0] == float("inf")
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap_ratio_ci([1.0], [1.0, 2.0])


@pytest.mark.parametrize("block", [1, 37 * 7, 10**9])
def test_bootstrap_in_blocks_draws_the_resamples_of_one_array(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drawn a block of resamples at a time (one resample a block, seven with a partial last
    block, or all at once), the intervals are those of the whole (n_resamples, n) array of
    customer indices."""
    from shoprec.evaluation import metrics

    monkeypatch.setattr(metrics, "_RESAMPLE_BLOCK", block)
    rng = np.random.default_rng(3)
    a, b = rng.random(37), rng.random(37) + 0.1
    idx = np.random.default_rng(7).integers(0, 37, (101, 37))
    level = 0.9
    tail = (1 - level) / 2 * 100
    want = np.percentile((a - b)[idx].mean(axis=1), [tail, 100 - tail])
    _, low, high = metrics.paired_bootstrap_ci(list(a), list(b), 101, level, seed=7)
    assert (low, high) == (want[0], want[1])
    ratios = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    want = np.percentile(ratios, [tail, 100 - tail])
    _, low, high = metrics.paired_bootstrap_ratio_ci(list(a), list(b), 101, level, seed=7)
    assert (low, high) == (want[0], want[1])
