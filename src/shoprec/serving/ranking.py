"""The ``ranking`` step: any ranker scores the candidates, top K (torch or trees)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from shoprec import schema as s
from shoprec.config import RankerKind
from shoprec.errors import ArtifactError
from shoprec.features.encode import CROSS_ATTRIBUTES, EncodedArticles, EncodedCustomers
from shoprec.inference.scoring import purchased_mask, rank_candidates
from shoprec.models.rankers import Ranker, load_ranker
from shoprec.models.rules import SERVED_RANKER, RuleKind, RuleRanker
from shoprec.serving.article_delta import DeltaView, delta_view
from shoprec.serving.delta_table import DeltaArticleTable
from shoprec.serving.repository import (
    ARTICLE_DENSE_FILE,
    ARTICLE_IDS_FILE,
    ARTICLE_SPARSE_FILE,
    ATTRIBUTES_FILE,
)
from shoprec.serving.runtime import (
    P_EXCLUDE_PURCHASED,
    P_MAX_K,
    P_SERVED,
    P_THREADS,
    Step,
    as_float32,
    as_int64,
    batch_size_of,
    bool_param,
    check_range,
    check_sparse,
    check_width,
    int_param,
    load_array,
    ranker_param,
)


class RankingStep(Step):
    """Ranker scoring of the candidates (``inference.scoring.rank_candidates``), top K.

    The ranker is any ``RankerKind`` (parameter ``ranker``; its files, ``ranker_files``, lie
    in the version directory): a neural one runs in torch, a tree in scikit-learn/LightGBM,
    both in this Python-backend process. Holds the encoded served article table in memory;
    the customer x article features are built by ``features.assemble.ranking_inputs``, the
    same code as training and evaluation. With ``exclude_purchased`` a candidate whose
    article is in the customer's ``hist_ids`` is never returned.

    Inputs: customer_sparse int64 (B, Fc), customer_dense float32 (B, Fdc), hist_ids int64
    (B, N), hist_counts float32 (B, N), candidates int64 (B, C) served rows (-1 = none),
    source_features float32 (B, C * len(schema.SOURCE_DENSE)) from the retrieval step,
    hist_last_days / hist_first_days float32 (B, N) (the customer's purchase state).
    Outputs: article_ids bytes (B, K) best first (b"" = none), scores float32 (B, K) purchase
    probabilities (-inf = none).
    """

    name = s.TRITON_RANKING
    inputs = (
        s.T_CUSTOMER_SPARSE,
        s.T_CUSTOMER_DENSE,
        s.T_HIST_IDS,
        s.T_HIST_COUNTS,
        s.T_CANDIDATES,
        s.T_SOURCE_FEATURES,
        s.T_HIST_LAST_DAYS,
        s.T_HIST_FIRST_DAYS,
    )
    outputs = (s.T_ARTICLE_IDS, s.T_SCORES)

    def __init__(
        self,
        model: Ranker | RuleRanker,
        articles: EncodedArticles,
        attributes: npt.NDArray[Any],
        max_k: int,
        exclude_purchased: bool,
        delta: DeltaView | None = None,
    ):
        """``delta``: the article delta whose rows follow the exported table
        (:mod:`shoprec.serving.delta_table`); None = the exported table alone."""
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}")
        if attributes.ndim != 2 or attributes.shape[1] != len(CROSS_ATTRIBUTES):
            raise ArtifactError(
                f"attribute table has shape {attributes.shape}, expected "
                f"(V, {len(CROSS_ATTRIBUTES)})"
            )
        self.model = model.eval() if isinstance(model, nn.Module) else model
        self.articles = articles
        self.attributes = as_int64(attributes)
        self.max_k = max_k
        self.exclude_purchased = exclude_purchased
        self.customer_cards = model.cardinalities[: len(s.CUSTOMER_SPARSE)]
        self.dense_width = (
            model.num_dense - articles.dense.shape[1] - len(s.CROSS_DENSE) - len(s.SOURCE_DENSE)
        )
        # Rows A.. are the delta's articles; row -1 (none) maps to b"" / vocabulary id 0.
        self.table = DeltaArticleTable(articles, delta)

    @classmethod
    def load(
        cls,
        directory: Path,
        max_k: int,
        exclude_purchased: bool,
        ranker: RankerKind = RankerKind.DLRM,
        threads: int = 0,
        served: str = SERVED_RANKER,
    ) -> RankingStep:
        """Load the ranker's files and the served article table; ``ArtifactError`` if missing.

        ``threads``: a tree ranker's prediction threads (0 = every core). ``served``:
        ``"ranker"`` scores with the ranker, a ``models.rules.RuleKind`` value with that rule
        (the guardrail's choice; the ranker's files still give the input widths).
        """
        ids = load_array(directory / ARTICLE_IDS_FILE).astype(str).astype(object)
        articles = EncodedArticles(
            ids,
            load_array(directory / ARTICLE_SPARSE_FILE),
            load_array(directory / ARTICLE_DENSE_FILE),
        )
        model: Ranker | RuleRanker = load_ranker(directory, ranker, threads)
        if served != SERVED_RANKER:
            try:
                rule = RuleKind(served)
            except ValueError as exc:
                raise ArtifactError(f"parameter 'served': unknown recommender {served!r}") from exc
            model = RuleRanker(rule, model.cardinalities, model.num_dense)
        return cls(
            model,
            articles,
            load_array(directory / ATTRIBUTES_FILE),
            max_k,
            exclude_purchased,
            delta_view(directory),
        )

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> RankingStep:
        return cls.load(
            directory,
            int_param(params, P_MAX_K),
            bool_param(params, P_EXCLUDE_PURCHASED),
            ranker_param(params),
            int_param(params, P_THREADS),
            params.get(P_SERVED, SERVED_RANKER),
        )

    def rank(
        self,
        sparse: npt.NDArray[Any],
        dense: npt.NDArray[Any],
        hist_ids: npt.NDArray[Any],
        hist_counts: npt.NDArray[Any],
        candidates: npt.NDArray[Any],
        source_features: npt.NDArray[Any],
        hist_last_days: npt.NDArray[Any],
        hist_first_days: npt.NDArray[Any],
    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]:
        """(article ids bytes (B, K), scores float32 (B, K)), best first.

        Raises:
            RequestError: inconsistent shapes, ids outside the vocabularies, candidate rows
                outside the served table.
        """
        batch = batch_size_of(
            {
                s.T_CUSTOMER_SPARSE: sparse,
                s.T_CUSTOMER_DENSE: dense,
                s.T_HIST_IDS: hist_ids,
                s.T_HIST_COUNTS: hist_counts,
                s.T_CANDIDATES: candidates,
                s.T_SOURCE_FEATURES: source_features,
                s.T_HIST_LAST_DAYS: hist_last_days,
                s.T_HIST_FIRST_DAYS: hist_first_days,
            }
        )
        check_width(s.T_CUSTOMER_SPARSE, sparse, len(self.customer_cards))
        check_width(s.T_CUSTOMER_DENSE, dense, self.dense_width)
        check_width(s.T_HIST_COUNTS, hist_counts, hist_ids.shape[1])
        check_width(s.T_HIST_LAST_DAYS, hist_last_days, hist_ids.shape[1])
        check_width(s.T_HIST_FIRST_DAYS, hist_first_days, hist_ids.shape[1])
        check_sparse(s.T_CUSTOMER_SPARSE, sparse, self.customer_cards)
        check_range(s.T_HIST_IDS, hist_ids, len(self.attributes))
        table = self.table.current()
        check_range(s.T_CANDIDATES, candidates, len(table.articles.ids), lower=s.NO_CANDIDATE)
        check_width(s.T_SOURCE_FEATURES, source_features, candidates.shape[1] * len(s.SOURCE_DENSE))
        if batch == 0:
            return (
                np.zeros((0, self.max_k), dtype=object),
                np.zeros((0, self.max_k), dtype=np.float32),
            )
        hist = as_int64(hist_ids)
        cands = as_int64(candidates)
        customers = EncodedCustomers(
            np.zeros(batch, dtype=object),
            as_int64(sparse),
            as_float32(dense),
            hist,
            as_float32(hist_counts),
            as_float32(hist_last_days),
            as_float32(hist_first_days),
            np.zeros((batch, 0), dtype=np.int64),  # the repurchase list: retrieval's input only
            np.zeros((batch, 0), dtype=np.float32),
        )
        exclude = None
        if self.exclude_purchased:
            vocab = table.vocab[cands]
            exclude = purchased_mask(vocab, hist)
        rows, scores = rank_candidates(
            self.model,
            customers,
            np.arange(batch),
            table.articles,
            self.attributes,
            cands,
            self.max_k,
            exclude,
            as_float32(source_features).reshape(batch, cands.shape[1], len(s.SOURCE_DENSE)),
        )
        return table.ids[rows], scores.astype(np.float32, copy=False)

    def __call__(self, tensors: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        ids, scores = self.rank(*(tensors[name] for name in self.inputs))
        return {s.T_ARTICLE_IDS: ids, s.T_SCORES: scores}
