"""The offline pipeline: ingest -> labelled dataset -> train -> indexes -> evaluate.

Each ``run_*`` function is one CLI command; they communicate only through files under
``Paths`` so any step can be re-run alone.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.config import (
    EvalConfig,
    Paths,
    PipelineConfig,
    RankerKind,
    to_plain,
)
from shoprec.data.dataset import (
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VAL,
    DatasetArtifacts,
    build_dataset,
    load_dataset,
)
from shoprec.data.ingest.canonical import Canonical, read_canonical
from shoprec.evaluation.baselines import (
    ALSRecommender,
    GlobalPopularity,
    RecentPopularity,
    Recommender,
    Repurchase,
)
from shoprec.evaluation.metrics import (
    average_precision_at_k,
    evaluate_lists,
    mean_recall_at_k,
    paired_bootstrap_ci,
    paired_bootstrap_ratio_ci,
)
from shoprec.evaluation.report import none_if_nan, report_markdown
from shoprec.evaluation.testsets import (
    article_lists,
    customers_bought,
    in_history,
    rank_window,
    ranker_test_sets,
    score_ranker,
    window_truth,
)
from shoprec.features.encode import encode_articles, fit_workflow, purchase_lines
from shoprec.features.popular import repurchase_share
from shoprec.inference.index import build_index, save_index
from shoprec.models.modules import save_model
from shoprec.models.rankers import build_ranker, save_ranker
from shoprec.models.rules import SERVED_RANKER, RuleKind, RuleRanker
from shoprec.pipeline import budget
from shoprec.pipeline.budget import TextPlan
from shoprec.pipeline.memory import PeakSpan
from shoprec.pipeline.text_job import TextEmbeddingJob, TextEmbeddings, embed_catalog
from shoprec.training.encoded import encode_dataset
from shoprec.training.examples import (
    article_rows,
    example_groups,
    example_rows,
    indexable_articles,
    ranker_examples,
    ranker_widths,
    window_candidates,
    window_ids,
)
from shoprec.training.ranker import fit_ranker
from shoprec.training.two_tower import (
    RetrievalExamples,
    ann_recall,
    build_two_tower,
    embed_items,
    train_two_tower,
)

Log = Callable[[str], None]


def _noop(_: str) -> None:
    return None


@dataclass
class StepTimer:
    """Wall time (seconds) and peak resident memory (MiB, :mod:`shoprec.pipeline.memory`) per
    named step; a step's peak is measured from the previous step's end (or the timer's
    creation)."""

    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    _span: PeakSpan | None = None
    _last_mib: float = float("nan")

    def __post_init__(self) -> None:
        self._span = PeakSpan().__enter__()

    def __call__(self, name: str, start: float) -> None:
        self.seconds[name] = round(time.perf_counter() - start, 2)
        self.stop()
        self.peak_rss_mib[name] = round(self._last_mib)
        self._span = PeakSpan().__enter__()

    def stop(self) -> None:
        """Stop measuring (after the last step)."""
        if self._span is not None:
            self._span.__exit__(None, None, None)
            self._last_mib = self._span.mib
            self._span = None


def run_build_dataset(paths: Paths, config: PipelineConfig, log: Log = _noop) -> DatasetArtifacts:
    """Read the canonical tables and write the labelled dataset under ``paths.dataset``.

    Raises:
        MemoryBudgetError: the estimated peak (``pipeline.budget``) is above
            ``memory.ceiling_gib``; nothing is written.
    """
    canonical = read_canonical(paths.canonical)
    _log_estimate(budget.build_dataset_estimate(canonical, config).check(config.memory), log)
    return build_dataset(canonical, config.dataset, paths.dataset)


def _log_estimate(estimate: budget.Estimate, log: Log) -> None:
    log(
        f"{estimate.step}: memory estimate {estimate.gib:.1f} GiB ("
        + ", ".join(f"{name} {gib:.1f}" for name, gib in estimate.parts.items())
        + ")"
    )


def _publish(staging: Path, out: Path) -> None:
    """Move every file of ``staging`` into ``out`` (replacing), then remove ``staging``."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(staging.iterdir()):
        os.replace(path, out / path.name)
    staging.rmdir()


def run_train(paths: Paths, config: PipelineConfig, log: Log = _noop) -> dict[str, Any]:
    """Fit the workflow, train the Two-Tower and DLRM, build the item and text indexes.

    Writes everything in ``artifacts`` under ``paths.models_dir``, all at the end (into a
    staging folder beside it until then), so a failed run leaves the previous models intact;
    returns a summary dict (epoch losses, validation metrics, wall times, peak memory, and
    the memory estimate made before training).

    Raises:
        MemoryBudgetError: the estimated peak (``pipeline.budget``) is above
            ``memory.ceiling_gib``; raised before training, nothing is written.
    """
    torch.set_num_threads(max(1, torch.get_num_threads()))
    timer = StepTimer()
    canonical = read_canonical(paths.canonical)
    # the serving snapshot's customers are export's, not train's (1.5 GiB at H&M size)
    data = load_dataset(paths.dataset, latest_customers=False)
    train_w, (val_w,) = window_ids(data, SPLIT_TRAIN), window_ids(data, SPLIT_VAL)
    estimate, text_plan = _train_estimate_and_text_plan(
        (
            data.customer_features,
            data.article_features,
            data.examples,
            budget.canonical_gib(canonical),
            canonical.transactions.height,
            canonical.customers.height,
            train_w,
            val_w,
        ),
        canonical.articles.height,
        config,
    )
    estimate = estimate.check(config.memory)
    _log_estimate(estimate, log)
    if config.text.concurrent and text_plan is TextPlan.IN_TRAIN:
        log("train: no memory for the text process beside the models: texts encoded in train")
    out = paths.models_dir.with_name(paths.models_dir.name + ".partial")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)  # only once the inputs exist and fit the budget
    # the text embeddings need the catalog only: encoded beside the models (pipeline.text_job)
    text_job = (
        None if text_plan is TextPlan.IN_TRAIN else TextEmbeddingJob(paths.canonical, config, out)
    )
    try:
        val_start = data.window(SPLIT_VAL)[0].start

        t = time.perf_counter()
        purchases = purchase_lines(
            canonical.transactions.filter(pl.col(s.T_DAT) < val_start), canonical.articles
        )
        wf = fit_workflow(
            config.workflow,
            data.customer_features.filter(pl.col(s.WINDOW).is_in(train_w)),
            data.article_features.filter(pl.col(s.WINDOW).is_in(train_w)),
            purchases,
        )
        wf.save(out / A.WORKFLOW_FILE)
        share = repurchase_share(canonical.transactions.filter(pl.col(s.T_DAT) < val_start))
        exclude = config.eval.exclude_purchased.resolve(share, config.eval.repurchase_threshold)
        log(
            f"repurchase share of the training period {share:.3f}: exclude_purchased="
            f"{config.eval.exclude_purchased.value} -> {'exclude' if exclude else 'keep'} "
            "already-bought articles"
        )
        # The transactions are read again for the guardrail's baselines: not held while the
        # Two-Tower and the ranker's examples need the memory (gigabytes at H&M size).
        del purchases, canonical
        enc = encode_dataset(wf, data, config.dataset.history_length)
        # encoded, the customer feature rows are read no more (2 GiB at H&M size)
        data.customer_features = data.customer_features.clear()
        timer("workflow", t)
        log(
            f"workflow fitted: {len(wf.categorical_ops)} vocabularies, "
            f"{wf.categorical_ops[s.ARTICLE_ID].cardinality - 2} article ids"
        )

        # ---- Two-Tower ------------------------------------------------------------------------
        t = time.perf_counter()
        ex = data.examples
        pos_train = ex.filter(pl.col(s.WINDOW).is_in(train_w) & (pl.col(s.LABEL) == 1))
        c_rows, a_rows = enc.rows(pos_train)
        tt_cfg = config.two_tower
        item_dense = wf.dense_columns(s.ARTICLE_DENSE, s.ITEM_TOWER_DENSE)
        two_tower = build_two_tower(
            wf.cardinalities(s.CUSTOMER_SPARSE),
            enc.customers.dense.shape[1],
            wf.cardinalities(s.ARTICLE_SPARSE),
            item_dense,
            tt_cfg,
        )
        val_truth = window_truth(ex, val_w)
        val_rows = article_rows(enc, val_w, indexable_articles(data, val_w))

        tt_recalls: list[float] = []
        best_state: dict[str, torch.Tensor] = {}

        def tt_epoch(epoch: int, loss: float) -> bool:
            recall = ann_recall(two_tower, enc, val_w, val_rows, val_truth, config.eval.candidates)
            if not tt_recalls or recall > max(tt_recalls):
                best_state.clear()
                best_state.update(
                    {k: v.detach().clone() for k, v in two_tower.state_dict().items()}
                )
            tt_recalls.append(recall)
            log(
                f"two-tower epoch {epoch + 1}/{tt_cfg.epochs}: loss {loss:.4f}, "
                f"val candidate recall@{config.eval.candidates} {recall:.4f}"
            )
            since_best = len(tt_recalls) - 1 - int(np.argmax(tt_recalls))
            return tt_cfg.patience > 0 and since_best >= tt_cfg.patience

        tt_losses = train_two_tower(
            two_tower,
            RetrievalExamples(enc.customers, enc.articles, c_rows, a_rows),
            tt_cfg,
            tt_epoch,
        )
        # best-epoch selection: keep the epoch with the best validation candidate recall
        tt_best = int(np.argmax(tt_recalls)) if tt_recalls else len(tt_losses) - 1
        if best_state:
            two_tower.load_state_dict(best_state)
        log(f"two-tower: kept epoch {tt_best + 1} (best validation candidate recall)")
        save_model(
            two_tower,
            {
                "customer_cardinalities": wf.cardinalities(s.CUSTOMER_SPARSE),
                "customer_dense": int(enc.customers.dense.shape[1]),
                "article_cardinalities": wf.cardinalities(s.ARTICLE_SPARSE),
                "article_dense_columns": item_dense,
                "config": to_plain(tt_cfg),
            },
            out / A.TWO_TOWER_FILE,
        )
        timer("two_tower", t)

        # ---- the text process ends here when the budget has no room for it beside the ranker
        text: TextEmbeddings | None = None
        if text_job is not None and text_plan is TextPlan.UNTIL_RANKER:
            text = _wait_for_text(text_job, timer, log)

        # ---- ranker -----------------------------------------------------------------------------
        t = time.perf_counter()
        tr, va = ranker_examples(two_tower, enc, data, config)
        log(
            f"ranker examples ({config.ranker.negatives.value} negatives): {tr.height} train "
            f"({int(tr.get_column(s.LABEL).sum())} positive), {va.height} validation"
        )
        # rows only: the inputs are assembled a block at a time while fitting
        train_inputs = example_rows(enc, tr)
        val_inputs = example_rows(enc, va)
        cards, num_dense = ranker_widths(wf, train_inputs)
        kind = config.ranker.kind
        ranker = build_ranker(kind, cards, num_dense, config, config.ranker.seed)
        ranker_hist = fit_ranker(
            ranker,
            train_inputs,
            tr.get_column(s.LABEL).to_numpy(),
            val_inputs,
            va.get_column(s.LABEL).to_numpy(),
            config.ranker,
            config.ranker.seed,
            lambda e, loss, auc, val_map: log(
                f"{kind.value} epoch {e + 1}/{config.ranker.epochs}: loss {loss:.4f}, val AUC "
                f"{auc:.4f}, val MAP@{config.eval.k} {val_map:.4f}"
            ),
            (example_groups(tr), example_groups(va)),
            config.eval.k,
        )
        save_ranker(ranker, config, out)
        ranker_examples_count = int(tr.height)
        del tr, va, train_inputs, val_inputs  # the guardrail's retrieval needs the memory
        timer("ranker", t)

        # ---- ... or here, when it has room beside the ranker but not beside the guardrail
        if text_job is not None and text_plan is TextPlan.UNTIL_GUARDRAIL:
            text = _wait_for_text(text_job, timer, log)

        # ---- guardrail: what is served, chosen on the validation window ------------------------
        t = time.perf_counter()
        canonical = read_canonical(paths.canonical)
        served = choose_served(
            ranker,
            two_tower,
            enc,
            data,
            canonical,
            val_w,
            val_start,
            cards,
            num_dense,
            exclude,
            config,
        )
        log(
            f"served recommender: {served['recommender']} ({served['why']}; scored on "
            f"{served['customers']} validation customers)"
        )
        timer("guardrail", t)

        # ---- item index over the serving snapshot ---------------------------------------------
        t = time.perf_counter()
        latest = data.latest_articles.filter(pl.col(s.DAYS_SINCE_FIRST_SALE).is_not_null())
        latest_enc = encode_articles(wf, latest)
        item_vecs = embed_items(two_tower, latest_enc, np.arange(latest.height))
        save_index(build_index(item_vecs, config.index), out / A.ITEM_INDEX_FILE)
        A.write_ids(latest_enc.ids, out / A.ITEM_IDS_FILE)
        timer("item_index", t)

        # ---- text embeddings for item similarity (here unless encoded beside) -------------
        if text is None:
            if text_job is not None:
                text = _wait_for_text(text_job, timer, log)
            else:
                t = time.perf_counter()
                text = embed_catalog(canonical.articles, config, out, progress=True)
                _log_text(text, log)
                timer("text_embeddings", t)

        timer.stop()
        A.write_json(config.to_dict(), out / A.CONFIG_FILE)
        summary = {
            "two_tower_epoch_loss": tt_losses,
            "two_tower_val_recall": tt_recalls,
            "two_tower_best_epoch": tt_best + 1,
            "ranker": kind.value,
            "ranker_epochs": [
                {"loss": lo, "val_auc": au, f"val_map@{config.eval.k}": mp}
                for lo, au, mp in ranker_hist
            ],
            "ranker_best_epoch": best_epoch(ranker_hist),
            "train_examples": {"two_tower": int(len(c_rows)), "ranker": ranker_examples_count},
            "repurchase_share": share,
            "exclude_purchased": exclude,
            "served": served,
            "indexed_articles": int(latest.height),
            "text_embedding_dim": text.dim,
            "text_embeddings": {
                "concurrent": text_job is not None,
                "plan": text_plan.value,
                "seconds": text.seconds,
                "peak_rss_mib": text.peak_rss_mib,
            },
            "seconds": timer.seconds,
            "peak_rss_mib": timer.peak_rss_mib,
            "memory_estimate_mib": {name: round(v * 1024, 1) for name, v in estimate.parts.items()},
        }
        A.write_json(summary, out / A.TRAIN_SUMMARY_FILE)
    finally:
        if text_job is not None:
            text_job.close()
    _publish(out, paths.models_dir)
    return summary


# budget.train_estimate's arguments before ``config``: the dataset's frames, the canonical
# tables' GiB, transaction lines, customers, the training windows and the validation window
_TrainSizes = tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, float, int, int, list[int], int]


def _train_estimate_and_text_plan(
    sizes: _TrainSizes, catalog_articles: int, config: PipelineConfig
) -> tuple[budget.Estimate, TextPlan]:
    """The first text plan whose estimate (``budget.train_estimate`` of ``sizes``, its
    arguments before ``config``) fits ``memory.ceiling_gib``, in the order of
    :class:`TextPlan`, with that estimate; ``IN_TRAIN`` (unchecked) when none of the others
    fits or ``text.concurrent`` is off."""
    if config.text.concurrent:
        for plan in (TextPlan.BESIDE, TextPlan.UNTIL_GUARDRAIL, TextPlan.UNTIL_RANKER):
            estimate = budget.train_estimate(*sizes, config, catalog_articles, text_plan=plan)
            if estimate.fits(config.memory):
                return estimate, plan
    in_train = replace(config, text=replace(config.text, concurrent=False))
    return budget.train_estimate(*sizes, in_train, catalog_articles), TextPlan.IN_TRAIN


def _wait_for_text(job: TextEmbeddingJob, timer: StepTimer, log: Log) -> TextEmbeddings:
    """The text process's embeddings, waited for as train's ``text_embeddings_wait`` step."""
    start = time.perf_counter()
    text = job.result()
    _log_text(text, log)
    log(
        f"text embeddings' process: {text.seconds:.1f} s, peak {text.peak_rss_mib:.0f} MiB, "
        f"{text.threads} thread(s) at its end; waited {time.perf_counter() - start:.1f} s for it"
    )
    timer("text_embeddings_wait", start)
    return text


def _log_text(text: TextEmbeddings, log: Log) -> None:
    log(
        f"text embeddings: {text.counts.articles} articles, {text.counts.product_texts} "
        f"distinct texts without the variant and {text.counts.variants} variants encoded"
    )


def best_epoch(history: list[tuple[float, float, float]]) -> int:
    """The 1-based epoch ``training.ranker.train_ranker`` kept: the best validation MAP@k
    (third element), else the best AUC (second), else the last."""
    for col in (2, 1):
        values = [row[col] for row in history]
        if np.isfinite(values).any():
            return int(np.nanargmax(values)) + 1
    return len(history)


def choose_served(
    ranker: Any,
    two_tower: Any,
    enc: Any,
    data: DatasetArtifacts,
    canonical: Canonical,
    window: int,
    cutoff: Any,
    cards: list[int],
    num_dense: int,
    exclude: bool,
    config: PipelineConfig,
) -> dict[str, Any]:
    """The guardrail: MAP@k on the validation ``window`` (its customers, or a seeded sample of
    ``eval.guardrail_customers`` of them: :func:`guardrail_customers`) of what the Triton
    ensemble can serve (the two-stage pipeline with the trained ranker, and the rule rankers
    ``popularity`` and ``repurchase`` over the same candidates) and of the offline baselines;
    the servable one with the best MAP@k is served.

    Returns:
        {"recommender": SERVED_RANKER or a ``RuleKind`` value, "validation_map": {name:
        MAP@k}, "customers": customers scored, "why": a sentence}.
    """
    k = config.eval.k
    scored = guardrail_customers(enc.window_customers(window), config.eval)
    wc = window_candidates(two_tower, enc, data, window, config, scored)
    truth = window_truth(data.examples, window)
    ids = enc.customers.ids[wc.customer_rows]
    relevant = [truth[c] for c in ids]
    bought = customers_bought(canonical.transactions, ids, cutoff) if exclude else None

    models: dict[str, Any] = {SERVED_RANKER: ranker}
    models.update({rule.value: RuleRanker(rule, cards, num_dense) for rule in RuleKind})
    servable = {}
    for name, model in models.items():
        rows = rank_window(model, enc, wc.customer_rows, wc.candidates, k, wc.features, bought)
        servable[name] = evaluate_lists(article_lists(enc, rows), relevant, k)[f"map@{k}"]
    del wc, rows  # the window's candidates: the baselines' fits need the memory
    offline: dict[str, float] = {}
    for name, recs in fitted_baselines(config, canonical, cutoff, list(ids), k):
        offline[name] = evaluate_lists(recs, relevant, k)[f"map@{k}"]
    choice = max(servable, key=lambda n: (servable[n], n == SERVED_RANKER))
    best_offline = max(offline, key=offline.__getitem__)
    why = (
        f"best validation MAP@{k} among the servable recommenders "
        f"({', '.join(f'{n} {v:.4f}' for n, v in servable.items())})"
    )
    if offline[best_offline] > servable[choice]:
        why += f"; the offline baseline {best_offline} scored higher ({offline[best_offline]:.4f})"
    return {
        "recommender": choice,
        "validation_map": {**servable, **offline},
        "customers": len(scored),
        "why": why,
    }


def guardrail_customers(rows: np.ndarray, ev: EvalConfig) -> np.ndarray:
    """The validation-window customers the guardrail scores: int64 (B,) sorted rows of
    ``EncodedDataset.customers``, all of ``rows`` or, above ``ev.guardrail_customers`` (> 0), a
    sample of that many drawn without replacement with seed ``ev.seed``. At 50,000 customers
    the standard error of a MAP@12 near 0.07 is at most 0.0012 (a per-customer AP in [0, 1]
    with mean m has variance at most m (1 - m)), under the gaps the guardrail decides on at
    H&M size (ranker 0.0730 against the repurchase rule's 0.0432); the whole H&M-size
    validation window is 100-120k customers."""
    cap = ev.guardrail_customers
    if cap <= 0 or len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng(ev.seed).choice(rows, cap, replace=False))


def offline_baselines(config: PipelineConfig) -> dict[str, Recommender]:
    """The baselines every evaluation compares with, unfitted, by report name."""
    return {
        "global popularity": GlobalPopularity(),
        "last-week popularity": RecentPopularity(days=7),
        "repurchase (+ last-week popularity)": Repurchase(),
        "implicit ALS": ALSRecommender(
            factors=config.eval.als_factors,
            iterations=config.eval.als_iterations,
            seed=config.eval.seed,
        ),
    }


def fitted_baselines(
    config: PipelineConfig, canonical: Canonical, cutoff: Any, customer_ids: list[str], k: int
) -> Iterator[tuple[str, list[list[str]]]]:
    """(name, top-k lists of ``customer_ids``) of each offline baseline fitted as of
    ``cutoff``, one at a time: a fitted baseline is released before the next one fits (the
    repurchase baseline's lists of every customer are gigabytes at H&M size)."""
    baselines = offline_baselines(config)
    for name in list(baselines):
        model = baselines.pop(name)
        model.fit(canonical.transactions, cutoff)
        recs = model.recommend(customer_ids, k)
        del model
        yield name, recs


def two_stage_label(kind: RankerKind) -> str:
    """The report's name of the two-stage pipeline, e.g. ``two-stage (Two-Tower + DLRM)``."""
    return f"two-stage (Two-Tower + {kind.label})"


def run_evaluate(
    paths: Paths, config: PipelineConfig | None = None, log: Log = _noop
) -> dict[str, Any]:
    """Evaluate on the test window; writes ``report.json`` and ``report.md`` to the models dir.

    Rows: the two-stage pipeline (retrieve N + history, rank with DLRM, keep k), the Two-Tower
    alone (ANN top k), and the baselines, all with features/fit as of the test window's first
    day. Also candidate Recall@N and the ranker's AUC / precision / recall (threshold 0.5) on
    the labelled test set.
    """
    t0 = time.perf_counter()
    models = A.TrainedModels.load(paths.models_dir)
    config = config or models.config
    canonical: Canonical = read_canonical(paths.canonical)
    data = load_dataset(paths.dataset, latest_customers=False)  # export's, not evaluate's
    (test,) = data.window(SPLIT_TEST)
    estimate = budget.evaluate_estimate(
        data.customer_features,
        data.article_features,
        data.examples,
        canonical.transactions.height,
        canonical.customers.height,
        test.index,
        config,
    )
    _log_estimate(estimate.check(config.memory), log)
    enc = encode_dataset(models.workflow, data, config.dataset.history_length)
    data.customer_features = data.customer_features.clear()  # encoded: read no more
    k, n = config.eval.k, config.eval.candidates
    # The baselines first, one at a time (their fits are the transactions' size): only their
    # top-k lists of the test window's customers (the test sets' customers, in the same
    # order: ``window_candidates``) are held while the test sets are built.
    customer_ids = enc.customers.ids[enc.window_customers(test.index)]
    baseline_names = list(offline_baselines(config))
    baseline_lists: dict[str, list[list[str]]] = {}
    for name, recs in fitted_baselines(config, canonical, test.start, list(customer_ids), k):
        baseline_lists[name] = recs
        log(f"baseline fitted: {name}")
    sets = ranker_test_sets(models.two_tower, enc, data, test.index, config)  # same customers
    exclude = A.trained_exclusion(paths.models_dir)
    # every article each test customer bought before the test window: what an excluding policy
    # never lists, and what the report counts in the served lists
    bought_before = customers_bought(
        canonical.transactions, enc.customers.ids[sets.customer_rows], test.start
    )
    bought = bought_before if exclude else None
    ranker_scores, two_stage = score_ranker(models.load_ranker(), enc, sets, k, bought)
    two_stage_name = two_stage_label(models.ranker_kind)
    labelled_hist, cand_hist = in_history(sets.labelled), sets.candidate_in_history
    cust_rows, cands, relevant = sets.customer_rows, sets.candidate_rows, sets.relevant
    ann, everything = article_lists(enc, sets.by_source[s.SOURCE_ANN]), article_lists(enc, cands)
    recommended: dict[str, list[list[str]]] = {
        two_stage_name: two_stage,
        "Two-Tower only": [a[:k] for a in ann],
    }
    trained = A.read_json(paths.models_dir / A.TRAIN_SUMMARY_FILE)
    served = trained.get("served", {}).get("recommender", SERVED_RANKER)
    if served == SERVED_RANKER:
        served_name = two_stage_name
    else:  # the guardrail chose a rule: rank the same candidates by it
        loaded = models.load_ranker()
        rule = RuleRanker(RuleKind(served), loaded.cardinalities, loaded.num_dense)
        served_name = f"served: {served} rule over the candidates"
        recommended[served_name] = article_lists(
            enc,
            rank_window(rule, enc, cust_rows, cands, k, sets.candidate_features, bought),
        )
    log("two-stage pipeline evaluated")
    recommended.update(baseline_lists)
    rows = {name: evaluate_lists(recs, relevant, k) for name, recs in recommended.items()}
    best_baseline = max(baseline_names, key=lambda n: rows[n][f"map@{k}"])
    ap = {
        name: [average_precision_at_k(r, rel, k) for r, rel in zip(recs, relevant, strict=True)]
        for name, recs in recommended.items()
    }
    comparison = {}
    for name in recommended:
        if name != two_stage_name:
            diff, low, high = paired_bootstrap_ci(
                ap[two_stage_name], ap[name], seed=config.eval.seed
            )
            comparison[name] = {"map_difference": diff, "ci95_low": low, "ci95_high": high}

    already_bought = sum(
        a in before
        for before, items in zip(bought_before, recommended[served_name], strict=True)
        for a in items
    )
    ratio, low, high = paired_bootstrap_ratio_ci(
        ap[served_name], ap[best_baseline], seed=config.eval.seed
    )
    report = {
        "dataset": str(paths.data_dir),
        "run": {
            "two_stage": two_stage_name,
            "candidate_sources": list(sets.by_source),
            "ranker": models.ranker_kind.value,
            "two_tower_best_epoch": trained.get("two_tower_best_epoch"),
            "ranker_best_epoch": trained.get("ranker_best_epoch"),
            "exclude_purchased": config.eval.exclude_purchased.value,
            "repurchase_share": trained.get("repurchase_share"),
            "excluded": exclude,
        },
        "test_window": test.to_dict(),
        "test_customers": len(relevant),
        "k": k,
        "candidates": n,
        "exclude_purchased": exclude,
        "candidate_sources": {name: int(rows.shape[1]) for name, rows in sets.by_source.items()},
        "metrics": rows,
        "served": {
            "recommender": served_name,
            "why": trained.get("served", {}).get("why", "the trained ranker (no guardrail run)"),
            "best_baseline": best_baseline,
            "already_bought_in_lists": already_bought,
            "map_ratio": ratio,
            "ci95_low": low,
            "ci95_high": high,
        },
        "two_stage_minus_baseline_map": comparison,
        "retrieval": {
            **{
                f"candidate_recall ({name}, {rows.shape[1]})": mean_recall_at_k(
                    article_lists(enc, rows), relevant, rows.shape[1]
                )
                for name, rows in sets.by_source.items()
            },
            f"candidate_recall (union of {', '.join(sets.by_source)})": mean_recall_at_k(
                everything, relevant, cands.shape[1]
            ),
            "mean_candidates_per_customer": float(np.mean([len(c) for c in everything])),
        },
        "ranker_test_set": {
            "examples": len(sets.labels),
            **{m: ranker_scores[m] for m in ("auc", "precision", "recall")},
            # how often the article is in the customer's history, purchases vs negatives
            "positives_in_history": float(labelled_hist[sets.labels == 1].mean()),
            "negatives_in_history": float(labelled_hist[sets.labels == 0].mean()),
        },
        "ranker_test_candidates": {
            "examples": len(sets.candidate_labels),
            "positive_share": float(sets.candidate_labels.mean()),
            "auc": ranker_scores["candidate_auc"],
            "history_share": float(cand_hist.mean()),
            "history_positive_share": float(sets.candidate_labels[cand_hist].mean()),
            "negatives_in_history": float(cand_hist[sets.candidate_labels == 0].mean()),
            "history_auc": none_if_nan(ranker_scores["history_candidate_auc"]),
            "new_auc": none_if_nan(ranker_scores["new_candidate_auc"]),
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
    A.write_json(report, paths.models_dir / A.REPORT_JSON)
    (paths.models_dir / A.REPORT_MD).write_text(report_markdown(report))
    return report
