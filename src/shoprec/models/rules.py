"""Rule rankers: the baselines the ranking step can serve instead of a trained ranker.

They score candidates from the candidate sources' features (``schema.SOURCE_DENSE``, the last
columns of ``RankingInputs.dense``), so the same Triton ensemble serves them:

* ``popularity``: last week's best sellers (the popular source's score), the same list for
  everyone (the "last-week popularity" baseline).
* ``repurchase``: the customer's own articles by purchase count, then last week's best
  sellers (the "repurchase (+ last-week popularity)" baseline).

``shoprec train`` picks one of them when it beats the two-stage pipeline on the validation
window (the guardrail).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from shoprec import schema as s
from shoprec.features.assemble import RankingInputs

SERVED_RANKER: Final = "ranker"  # what is served when no rule is: the trained ranker
_POPULAR: Final = s.SOURCE_DENSE.index(f"{s.SOURCE_POPULAR}_score")
_HISTORY: Final = s.SOURCE_DENSE.index(f"{s.SOURCE_HISTORY}_score")


class RuleKind(StrEnum):
    """A rule ranker (the served recommender when it wins on validation)."""

    POPULARITY = "popularity"
    REPURCHASE = "repurchase"


class RuleRanker:
    """Scores candidates by a rule; same interface as a tree ranker where serving needs one.

    Args:
        rule: which rule.
        cardinalities / num_dense: the widths of the inputs it accepts (those of the trained
            ranker it stands in for).
    """

    def __init__(self, rule: RuleKind, cardinalities: Sequence[int], num_dense: int):
        self.rule = RuleKind(rule)
        self.cardinalities = list(cardinalities)
        self.num_dense = num_dense

    def predict(self, inputs: RankingInputs) -> npt.NDArray[np.float32]:
        """Scores float32 (M,): higher first; 0 for a candidate the rule knows nothing of.

        Raises:
            ValueError: inputs of another dense width.
        """
        if inputs.dense.shape[1] != self.num_dense:
            raise ValueError(
                f"rule {self.rule.value}: inputs have {inputs.dense.shape[1]} dense features, "
                f"expected {self.num_dense}"
            )
        src = inputs.dense[:, self.num_dense - len(s.SOURCE_DENSE) :]
        popular = src[:, _POPULAR].astype(np.float64)
        if self.rule is RuleKind.POPULARITY:
            return popular.astype(np.float32)
        # own articles first (by log1p count; popularity scores stay far below 1000), then popular
        return (src[:, _HISTORY] * 1000.0 + popular).astype(np.float32)
