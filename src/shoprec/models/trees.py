"""Tree-ensemble rankers (random forest, gradient-boosted trees) on ``RankingInputs``.

The trees see the same examples as the neural rankers, flattened by :func:`tree_features`
into one float32 matrix (M = examples, Fd = dense width, F = sparse features):

====================  =========  =======================================================
columns               width      values
====================  =========  =======================================================
dense                 Fd         ``RankingInputs.dense`` as is: customer dense, article
                                 dense, ``schema.CROSS_DENSE`` (history x candidate)
sparse                F          ``RankingInputs.sparse`` ids as numbers. ``Categorify``
                                 ids are frequency ranks (0 missing, 1 OOV, 2 = most
                                 frequent), so an ordinal split is a popularity split.
                                 LightGBM treats the features with at most
                                 ``RankersConfig.max_categorical`` ids as categorical.
history length        1          distinct articles in the history list (<= N)
history popularity    1          mean log2 of the history's article ids (their frequency
                                 ranks): low = mainstream buyer; 0 without history
====================  =========  =======================================================

Random forest: scikit-learn ``RandomForestClassifier`` (Breiman 2001), no model selection.
Gradient-boosted trees: LightGBM (Ke et al. 2017) with early stopping on validation AUC, the
trees' counterpart of the neural rankers' best-epoch selection. LambdaRank: the same trees
with LightGBM's ``lambdarank`` objective (Burges, "From RankNet to LambdaRank to LambdaMART",
2010), examples grouped by (window, customer), early stopping on validation MAP@12; its raw
scores go through a sigmoid so every tree ranker returns values in (0, 1) (the order is
unchanged).

Saved files (``ranker_files``): ``<kind>.json`` (kind, widths, config, fit summary) next to
the model: LightGBM's own model text (``gbdt.txt``, loadable by ``lightgbm.Booster``) or the
fitted scikit-learn estimator through ``joblib`` (``rf.joblib``, a pickle: load only files
you wrote; skops is not installed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import numpy.typing as npt

from shoprec.config import RankerKind, RankersConfig, from_plain, to_plain
from shoprec.errors import ArtifactError
from shoprec.features.assemble import RANKING_BLOCK, ExampleBlocks
from shoprec.features.workflow import FIRST_ID

if TYPE_CHECKING:  # imported where used: a Triton process serving DLRM never loads them
    import lightgbm as lgb
    from sklearn.ensemble import RandomForestClassifier

HISTORY_SUMMARIES: Final = ("history_length", "history_log2_rank")
_MODEL_FILES: Final = {
    RankerKind.GBDT: "gbdt.txt",
    RankerKind.LAMBDARANK: "lambdarank.txt",
    RankerKind.RF: "rf.joblib",
}
_FORMATS: Final = {
    RankerKind.GBDT: "lightgbm-text",
    RankerKind.LAMBDARANK: "lightgbm-text",
    RankerKind.RF: "sklearn-joblib",
}


def tree_features(inputs: ExampleBlocks) -> npt.NDArray[np.float32]:
    """The trees' feature matrix, float32 (M, Fd + F + 2) (columns in the module docstring).

    Built in blocks of ``RANKING_BLOCK`` rows (``inputs.slice``): neither the history
    summaries' float temporaries ((rows, N) wide) nor, for ``ExampleRows``, the whole
    ``RankingInputs`` exist at once; gigabytes at millions of examples.
    """
    m, fd, fs = len(inputs), inputs.num_dense, inputs.num_sparse
    features = np.empty((m, fd + fs + len(HISTORY_SUMMARIES)), dtype=np.float32)
    for start in range(0, m, RANKING_BLOCK):
        stop = min(start + RANKING_BLOCK, m)
        block = inputs.slice(start, stop)
        valid = block.hist_ids >= FIRST_ID
        length = valid.sum(1)
        log_rank = np.where(valid, np.log2(np.maximum(block.hist_ids, 1)), 0.0).sum(1)
        features[start:stop, :fd] = block.dense
        features[start:stop, fd : fd + fs] = block.sparse
        features[start:stop, fd + fs] = length
        features[start:stop, fd + fs + 1] = log_rank / np.maximum(length, 1)
    return features


def ranker_files(kind: RankerKind) -> tuple[str, ...]:
    """File names a tree ranker of ``kind`` is saved as (metadata first)."""
    if not kind.is_tree:
        raise ValueError(f"{kind.value} is not a tree ranker")
    return f"{kind.value}.json", _MODEL_FILES[kind]


class TreeRanker:
    """A random forest or LightGBM GBDT scoring ``RankingInputs`` (purchase probabilities).

    Same interface as the neural rankers where serving needs one: ``kind``,
    ``cardinalities`` (F sparse table sizes), ``num_dense`` (Fd) and ``predict``.

    Args:
        kind: ``RankerKind.RF``, ``RankerKind.GBDT`` or ``RankerKind.LAMBDARANK``.
        cardinalities: ids of each of the F sparse features.
        num_dense: Fd.
        config: tree hyper-parameters.
        seed: the estimator's random state (and of the ``tree_max_examples`` sample).
        threads: worker threads for fitting and predicting (0 = every core).

    Example::

        ranker = TreeRanker(RankerKind.GBDT, [10, 20], num_dense=3, config=RankersConfig(),
                            seed=0)
        ranker.fit(train, y, val, y_val)
        p = ranker.predict(val)  # float32 (M,)
    """

    def __init__(
        self,
        kind: RankerKind,
        cardinalities: Sequence[int],
        num_dense: int,
        config: RankersConfig,
        seed: int,
        threads: int = 0,
    ):
        if not kind.is_tree:
            raise ValueError(f"{kind.value} is not a tree ranker")
        self.kind = kind
        self.cardinalities = list(cardinalities)
        self.num_dense = num_dense
        self.config = config
        self.seed = seed
        self.threads = threads
        self.estimator: RandomForestClassifier | lgb.Booster | None = None  # after fit/load
        self.fit_summary: dict[str, Any] = {}

    @property
    def num_features(self) -> int:
        return self.num_dense + len(self.cardinalities) + len(HISTORY_SUMMARIES)

    @property
    def categorical(self) -> list[int]:
        """Columns of ``tree_features`` LightGBM splits as categories (small vocabularies)."""
        return [
            self.num_dense + j
            for j, card in enumerate(self.cardinalities)
            if card <= self.config.max_categorical
        ]

    def _check(self, inputs: ExampleBlocks) -> npt.NDArray[np.float32]:
        if inputs.num_dense != self.num_dense or inputs.num_sparse != len(self.cardinalities):
            raise ValueError(
                f"{self.kind.value}: inputs have {inputs.num_dense} dense and "
                f"{inputs.num_sparse} sparse features, the ranker {self.num_dense} and "
                f"{len(self.cardinalities)}"
            )
        return tree_features(inputs)

    def fit(
        self,
        train: ExampleBlocks,
        labels: npt.NDArray[np.integer[Any]],
        val: ExampleBlocks,
        val_labels: npt.NDArray[np.integer[Any]],
        groups: npt.NDArray[np.integer[Any]] | None = None,
        val_groups: npt.NDArray[np.integer[Any]] | None = None,
    ) -> dict[str, Any]:
        """Fit on 0/1 ``labels`` (M,); returns (and keeps) a summary with the validation AUC.

        ``groups`` / ``val_groups``: int (G,) sizes of consecutive example groups (one per
        window and customer, summing to M), required by LambdaRank, ignored by the others.

        Raises:
            ValueError: lengths differ, or LambdaRank without groups that sum to M.
        """
        if len(train) != len(labels) or len(val) != len(val_labels):
            raise ValueError("inputs and labels differ in length")
        x, y = self._check(train), np.asarray(labels, dtype=np.int32)
        x_val = self._check(val)
        ranking = self.kind is RankerKind.LAMBDARANK
        if ranking:
            if groups is None or val_groups is None:
                raise ValueError("lambdarank needs the example groups (one per customer)")
            if int(np.sum(groups)) != len(x) or int(np.sum(val_groups)) != len(x_val):
                raise ValueError(
                    f"lambdarank groups sum to {int(np.sum(groups))} / {int(np.sum(val_groups))}"
                    f" examples, inputs hold {len(x)} / {len(x_val)}"
                )
        cap = self.config.tree_max_examples
        if cap and len(x) > cap and not ranking:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(x), cap, replace=False))
            x, y = x[keep], y[keep]
        cfg = self.config
        if self.kind is RankerKind.RF:
            from sklearn.ensemble import RandomForestClassifier

            self.estimator = RandomForestClassifier(
                n_estimators=cfg.rf_trees,
                min_samples_leaf=cfg.rf_min_samples_leaf,
                max_samples=cfg.rf_max_samples,
                max_features="sqrt",
                n_jobs=self.threads or -1,
                random_state=self.seed,
            ).fit(x, y)
            self.fit_summary = {"examples": len(x), "trees": cfg.rf_trees}
        else:
            import lightgbm as lgb

            booster = lgb.train(
                self._lgb_params(),
                lgb.Dataset(
                    x,
                    y,
                    group=groups if ranking else None,
                    categorical_feature=self.categorical,
                    free_raw_data=True,
                ),
                num_boost_round=cfg.gbdt_rounds,
                valid_sets=[
                    lgb.Dataset(
                        x_val,
                        val_labels,
                        group=val_groups if ranking else None,
                        categorical_feature=self.categorical,
                    )
                ],
                valid_names=["val"],
                callbacks=[lgb.early_stopping(cfg.gbdt_early_stopping, verbose=False)],
            )
            self.estimator = booster
            self.fit_summary = {"examples": len(x), "rounds": int(booster.best_iteration)}
        from sklearn.metrics import roc_auc_score

        p = self.predict(val)
        self.fit_summary["val_auc"] = (
            float(roc_auc_score(val_labels, p)) if len(set(val_labels.tolist())) > 1 else None
        )
        return self.fit_summary

    def _lgb_params(self) -> dict[str, Any]:
        cfg = self.config
        ranking = {"objective": "lambdarank", "metric": "map", "eval_at": [12]}
        return {
            **(
                ranking
                if self.kind is RankerKind.LAMBDARANK
                else {"objective": "binary", "metric": "auc"}
            ),
            "learning_rate": cfg.gbdt_learning_rate,
            "num_leaves": cfg.gbdt_num_leaves,
            "min_child_samples": cfg.gbdt_min_child_samples,
            "feature_fraction": 0.8,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.threads,
            "verbosity": -1,
        }

    def predict(self, inputs: ExampleBlocks) -> npt.NDArray[np.float32]:
        """Purchase probabilities, float32 (M,). Raises ``ValueError`` before ``fit``/``load``."""
        if self.estimator is None:
            raise ValueError(f"{self.kind.value} ranker is not fitted")
        x = self._check(inputs)
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        if self.kind is RankerKind.RF:  # fit and load set a forest for RF, a Booster for GBDT
            forest = cast("RandomForestClassifier", self.estimator)
            forest.n_jobs = self.threads or -1
            p = forest.predict_proba(x)[:, 1]
        else:
            p = self.estimator.predict(
                x, num_iteration=self.estimator.best_iteration or None, num_threads=self.threads
            )
            if self.kind is RankerKind.LAMBDARANK:
                p = 1.0 / (1.0 + np.exp(-np.asarray(p, dtype=np.float64)))
        return np.asarray(p, dtype=np.float32)

    def save(self, directory: Path) -> list[Path]:
        """Write ``ranker_files(kind)`` into ``directory``; returns their paths."""
        if self.estimator is None:
            raise ValueError(f"{self.kind.value} ranker is not fitted")
        directory.mkdir(parents=True, exist_ok=True)
        meta_name, model_name = ranker_files(self.kind)
        if self.kind is RankerKind.RF:
            import joblib

            joblib.dump(self.estimator, directory / model_name, compress=3)
        else:
            self.estimator.save_model(
                directory / model_name, num_iteration=self.estimator.best_iteration or None
            )
        meta = {
            "kind": self.kind.value,
            "format": _FORMATS[self.kind],
            "model_file": model_name,
            "cardinalities": self.cardinalities,
            "num_dense": self.num_dense,
            "seed": self.seed,
            "config": to_plain(self.config),
            "fit": self.fit_summary,
        }
        (directory / meta_name).write_text(json.dumps(meta, indent=2) + "\n")
        return [directory / meta_name, directory / model_name]

    @classmethod
    def load(cls, directory: Path, kind: RankerKind, threads: int = 0) -> TreeRanker:
        """Load what :meth:`save` wrote. Raises ``ArtifactError`` for a missing or wrong file."""
        meta_name, model_name = ranker_files(kind)
        for name in (meta_name, model_name):
            if not (directory / name).exists():
                raise ArtifactError(
                    f"ranker file not found: {directory / name} "
                    f"(run `shoprec compare-rankers --rankers {kind.value}` first)"
                )
        meta = json.loads((directory / meta_name).read_text())
        if meta.get("kind") != kind.value:
            raise ArtifactError(
                f"{directory / meta_name}: kind {meta.get('kind')!r}, expected {kind.value!r}"
            )
        ranker = cls(
            kind,
            meta["cardinalities"],
            int(meta["num_dense"]),
            from_plain(RankersConfig, meta["config"], "rankers"),
            int(meta["seed"]),
            threads,
        )
        if kind is RankerKind.RF:
            import joblib

            ranker.estimator = joblib.load(directory / model_name)
        else:
            import lightgbm as lgb

            ranker.estimator = lgb.Booster(model_file=str(directory / model_name))
        ranker.fit_summary = meta.get("fit", {})
        return ranker
