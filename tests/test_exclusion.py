"""``exclude_purchased`` by article identity: every purchase, not only the history slots."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from shoprec import schema as s
from shoprec.evaluation.testsets import customers_bought
from shoprec.inference.scoring import bought_mask, purchased_mask


def test_bought_mask_matches_ids_beyond_the_history_and_outside_the_vocabulary() -> None:
    # customer 0 bought a, b, z; the history list (N = 1) holds only a's vocab id 5, and z is
    # out of vocabulary (id 1): the vocabulary rule misses b and z, identity does not.
    candidates = np.array([["a", "b", "z", "c"], ["a", "", "c", "d"]], dtype=object)
    bought = [frozenset({"a", "b", "z"}), frozenset({"d"})]
    assert bought_mask(candidates, bought).tolist() == [
        [True, True, True, False],
        [False, False, False, True],
    ]
    vocab = np.array([[5, 6, 1, 7], [5, 0, 7, 8]], dtype=np.int64)
    hist = np.array([[5], [0]], dtype=np.int64)
    assert purchased_mask(vocab, hist).tolist() == [
        [True, False, False, False],
        [False, False, False, False],
    ]


def test_bought_mask_checks_the_customer_count() -> None:
    with pytest.raises(ValueError, match="bought sets for 1 customers, candidates for 2"):
        bought_mask(np.array([["a"], ["b"]], dtype=object), [frozenset()])


def test_customers_bought_takes_every_purchase_before_the_cutoff_only() -> None:
    tx = pl.DataFrame(
        {
            s.T_DAT: [date(2020, 1, d) for d in (1, 2, 3, 5, 4)],
            s.CUSTOMER_ID: ["u", "u", "u", "u", "v"],
            s.ARTICLE_ID: ["a", "b", "a", "late", "x"],
        }
    )
    got = customers_bought(tx, ["v", "w", "u"], date(2020, 1, 5))
    assert got == [frozenset({"x"}), frozenset(), frozenset({"a", "b"})]
