"""The served article table of the ``ranking`` step, extended by the article delta.

The ranking step's candidates are rows of the served article table (A rows, exported). A delta
article (:mod:`shoprec.serving.article_delta`) with slot m is row ``A + m``: its encoded
attributes (``sparse``: the unknown article id and the workflow ids of its attributes;
``dense``: those of an article never sold) come from the delta, so the ranker scores it from
its attributes. The attribute table of the cross features is indexed by vocabulary id; a delta
article has the unknown id, whose row is 0 (never matches the history).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shoprec.features.encode import EncodedArticles
from shoprec.serving.article_delta import DeltaArticles, DeltaView
from shoprec.serving.runtime import EMPTY_ID


@dataclass(frozen=True)
class ServedTable:
    """The articles the ranking step can return, rows 0..A+M-1.

    Attributes:
        articles: the encoded table (A + M rows).
        ids: object (A + M + 1,) bytes ids; the last element (row -1, none) is b"".
        vocab: int64 (A + M + 1,) article vocabulary ids; the last element is 0.
    """

    articles: EncodedArticles
    ids: npt.NDArray[np.object_]
    vocab: npt.NDArray[np.int64]

    @classmethod
    def of(cls, articles: EncodedArticles) -> ServedTable:
        return cls(
            articles,
            np.array([a.encode() for a in articles.ids] + [EMPTY_ID], dtype=object),
            np.append(articles.sparse[:, 0], 0).astype(np.int64),
        )


class DeltaArticleTable:
    """The exported table plus the delta's rows, rebuilt when the delta's version moved.

    Args:
        base: the exported served table (A rows).
        delta: the article delta view; None = the exported table alone.
    """

    def __init__(self, base: EncodedArticles, delta: DeltaView | None) -> None:
        self.base = base
        self.delta = delta
        self._version = 0
        self._table = ServedTable.of(base)

    def current(self) -> ServedTable:
        """The table for this request (one version read of the delta)."""
        if self.delta is None:
            return self._table
        got = self.delta.current()
        if got.version != self._version:
            self._table = ServedTable.of(_extend(self.base, got))
            self._version = got.version
        return self._table


def _extend(base: EncodedArticles, delta: DeltaArticles) -> EncodedArticles:
    if not len(delta):
        return base
    widths = (base.sparse.shape[1], base.dense.shape[1])
    if (delta.sparse.shape[1], delta.dense.shape[1]) != widths:
        return base  # written by another export's encoder: never mix widths
    ids: npt.NDArray[Any] = np.concatenate([base.ids, np.array(delta.ids, dtype=object)])
    return EncodedArticles(
        ids,
        np.concatenate([base.sparse, delta.sparse]),
        np.concatenate([base.dense, delta.dense]),
    )
