"""The offline pipeline: ingest -> labelled dataset -> train -> indexes -> evaluate.

Each ``run_*`` function is one CLI command; they communicate only through files under
``Paths`` so any step can be re-run alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.metrics import roc_auc_score

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.config import (
    IndexConfig,
    IndexKind,
    Paths,
    PipelineConfig,
    RankerKind,
    RankerNegatives,
    to_plain,
)
from shoprec.dataset.build import (
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VAL,
    DatasetArtifacts,
    build_dataset,
    load_dataset,
)
from shoprec.evaluation.baselines import (
    ALSRecommender,
    GlobalPopularity,
    RecentPopularity,
    Recommender,
    Repurchase,
)
from shoprec.evaluation.metrics import (
    average_precision_at_k,
    binary_classification_metrics,
    evaluate_lists,
    mean_recall_at_k,
    paired_bootstrap_ci,
)
from shoprec.features.assemble import (
    RANKING_HISTORY_FEATURE,
    EncodedDataset,
    RankingInputs,
    encode_dataset,
)
from shoprec.features.encode import encode_articles, fit_workflow
from shoprec.features.workflow import FIRST_ID, Workflow
from shoprec.ingest.canonical import Canonical, read_canonical
from shoprec.modules import save_model
from shoprec.ranking.models import Ranker, build_ranker, save_ranker
from shoprec.ranking.rerank import PAD, rank_candidates, retrieve_candidates, vocab_to_row
from shoprec.ranking.train import fit_ranker, predict
from shoprec.retrieval.index import build_index, save_index, search
from shoprec.retrieval.train import (
    RetrievalExamples,
    build_two_tower,
    embed_items,
    embed_queries,
    train_two_tower,
)
from shoprec.similarity.text import embed_articles, make_encoder

Log = Callable[[str], None]
TWO_STAGE = "two-stage (Two-Tower + DLRM)"


def _noop(_: str) -> None:
    return None


@dataclass
class StepTimer:
    """Wall time per named step, in seconds."""

    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str, start: float) -> None:
        self.seconds[name] = round(time.perf_counter() - start, 2)


def run_build_dataset(paths: Paths, config: PipelineConfig) -> DatasetArtifacts:
    """Read the canonical tables and write the labelled dataset under ``paths.dataset``."""
    return build_dataset(read_canonical(paths.canonical), config.dataset, paths.dataset)


def _window_ids(data: DatasetArtifacts, split: str) -> list[int]:
    return [w.index for w in data.window(split)]


def _indexable(data: DatasetArtifacts, window: int) -> pl.Series:
    """Article ids sold before the window's cutoff: the ANN index's catalog for it."""
    return (data.article_features
            .filter((pl.col(s.WINDOW) == window) & pl.col(s.DAYS_SINCE_FIRST_SALE).is_not_null())
            .get_column(s.ARTICLE_ID))


def _article_rows(enc: EncodedDataset, window: int, ids: pl.Series) -> np.ndarray:
    return (enc.article_index.filter((pl.col(s.WINDOW) == window)
                                     & pl.col(s.ARTICLE_ID).is_in(ids))
            .get_column("_row").to_numpy().astype(np.int64))


def window_candidates(two_tower: Any, enc: EncodedDataset, data: DatasetArtifacts, window: int,
                      config: PipelineConfig, customer_rows: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate retrieval for the customers of a window (default all), as of its first day.

    Returns (customer rows int64 (B,), candidate article rows int64 (B, C) with PAD); the first
    ``config.eval.candidates`` columns come from the ANN index, the rest from the history.
    """
    cust_rows = enc.window_customers(window) if customer_rows is None else customer_rows
    index_rows = _article_rows(enc, window, _indexable(data, window))
    index = build_index(embed_items(two_tower, enc.articles, index_rows), config.index)
    queries = embed_queries(two_tower, enc.customers, cust_rows)
    card = two_tower.item_tower.article_table.num_embeddings
    hist_map = vocab_to_row(enc.articles, enc.window_articles(window), card)
    hist = enc.customers.hist_ids[cust_rows] if config.eval.history_candidates else None
    cands, _ = retrieve_candidates(index, queries, config.eval.candidates, index_rows, hist,
                                   hist_map)
    return cust_rows, cands


def _candidate_examples(two_tower: Any, enc: EncodedDataset, data: DatasetArtifacts, window: int,
                        config: PipelineConfig, rng: np.random.Generator) -> pl.DataFrame:
    """Ranker examples from retrieval: every purchased candidate (label 1) and up to
    ``candidate_negatives`` retrieved, not purchased candidates per customer (label 0), for at
    most ``max_customers_per_window`` customers (a seeded sample)."""
    rows = enc.window_customers(window)
    if len(rows) > config.dlrm.max_customers_per_window:
        rows = np.sort(rng.choice(rows, config.dlrm.max_customers_per_window, replace=False))
    cust_rows, cands = window_candidates(two_tower, enc, data, window, config, rows)
    b, c = np.nonzero(cands != PAD)
    pairs = pl.DataFrame({
        s.WINDOW: np.full(len(b), window, dtype=np.int32),
        s.CUSTOMER_ID: enc.customers.ids[cust_rows[b]].astype(str),
        s.ARTICLE_ID: enc.articles.ids[cands[b, c]].astype(str),
        "_random": rng.random(len(b)),
    })
    positives = (data.examples.filter((pl.col(s.WINDOW) == window) & (pl.col(s.LABEL) == 1))
                 .select(s.CUSTOMER_ID, s.ARTICLE_ID, s.LABEL))
    labelled = (pairs.join(positives, on=[s.CUSTOMER_ID, s.ARTICLE_ID], how="left")
                .with_columns(pl.col(s.LABEL).fill_null(0).cast(pl.Int8)))
    negatives = (labelled.filter(pl.col(s.LABEL) == 0).sort("_random")
                 .filter(pl.int_range(pl.len()).over(s.CUSTOMER_ID)
                         < config.dlrm.candidate_negatives))
    return (pl.concat([labelled.filter(pl.col(s.LABEL) == 1), negatives])
            .sort([s.CUSTOMER_ID, s.ARTICLE_ID]).select(s.WINDOW, s.CUSTOMER_ID, s.ARTICLE_ID,
                                                        s.LABEL))


def ranker_examples(two_tower: Any, enc: EncodedDataset, data: DatasetArtifacts,
                    config: PipelineConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rankers' (training, validation) examples: WINDOW, CUSTOMER_ID, ARTICLE_ID, LABEL.

    ``config.dlrm.negatives`` picks the negatives: retrieved, not purchased candidates of the
    Two-Tower (seeded by ``config.dlrm.seed``) or the labelled dataset's sampled ones. Every
    ranker (``shoprec train``'s DLRM, ``shoprec compare-rankers``) trains on these.
    """
    train_w, (val_w,) = _window_ids(data, SPLIT_TRAIN), _window_ids(data, SPLIT_VAL)
    if config.dlrm.negatives is RankerNegatives.CANDIDATES:
        rng = np.random.default_rng(config.dlrm.seed)
        tr = pl.concat([_candidate_examples(two_tower, enc, data, w, config, rng)
                        for w in train_w])
        return tr, _candidate_examples(two_tower, enc, data, val_w, config, rng)
    ex = data.examples
    return ex.filter(pl.col(s.WINDOW).is_in(train_w)), ex.filter(pl.col(s.WINDOW) == val_w)


def ranker_widths(wf: Workflow, inputs: RankingInputs) -> tuple[list[int], int]:
    """(F sparse table sizes, Fd) of the rankers' inputs under the fitted workflow."""
    return (wf.cardinalities(s.CUSTOMER_SPARSE) + wf.cardinalities(s.ARTICLE_SPARSE),
            int(inputs.dense.shape[1]))


def run_train(paths: Paths, config: PipelineConfig, log: Log = _noop) -> dict[str, Any]:
    """Fit the workflow, train the Two-Tower and DLRM, build the item and text indexes.

    Writes everything in ``artifacts`` under ``paths.models_dir``; returns a summary dict
    (epoch losses, validation metrics, wall times).
    """
    torch.set_num_threads(max(1, torch.get_num_threads()))
    timer = StepTimer()
    out = paths.models_dir
    canonical = read_canonical(paths.canonical)
    data = load_dataset(paths.dataset)
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs exist
    train_w, (val_w,) = _window_ids(data, SPLIT_TRAIN), _window_ids(data, SPLIT_VAL)
    val_start = data.window(SPLIT_VAL)[0].start

    t = time.perf_counter()
    purchases = canonical.transactions.filter(pl.col(s.T_DAT) < val_start).join(
        canonical.articles.select(s.ARTICLE_SPARSE), on=s.ARTICLE_ID, how="left")
    wf = fit_workflow(
        config.workflow,
        data.customer_features.filter(pl.col(s.WINDOW).is_in(train_w)),
        data.article_features.filter(pl.col(s.WINDOW).is_in(train_w)),
        purchases,
    )
    wf.save(out / A.WORKFLOW_FILE)
    enc = encode_dataset(wf, data, config.dataset.history_length)
    timer("workflow", t)
    log(f"workflow fitted: {len(wf.categorical_ops)} vocabularies, "
        f"{wf.categorical_ops[s.ARTICLE_ID].cardinality - 2} article ids")

    # ---- Two-Tower ------------------------------------------------------------------------
    t = time.perf_counter()
    ex = data.examples
    pos_train = ex.filter(pl.col(s.WINDOW).is_in(train_w) & (pl.col(s.LABEL) == 1))
    c_rows, a_rows = enc.rows(pos_train)
    tt_cfg = config.two_tower
    two_tower = build_two_tower(wf.cardinalities(s.CUSTOMER_SPARSE),
                                enc.customers.dense.shape[1],
                                wf.cardinalities(s.ARTICLE_SPARSE),
                                enc.articles.dense.shape[1], tt_cfg)
    val_truth = window_truth(ex, val_w)
    val_rows = _article_rows(enc, val_w, _indexable(data, val_w))

    def tt_epoch(epoch: int, loss: float) -> None:
        recall = _ann_recall(two_tower, enc, val_w, val_rows, val_truth, config.eval.candidates)
        log(f"two-tower epoch {epoch + 1}/{tt_cfg.epochs}: loss {loss:.4f}, "
            f"val candidate recall@{config.eval.candidates} {recall:.4f}")

    tt_losses = train_two_tower(two_tower, RetrievalExamples(enc.customers, enc.articles,
                                                             c_rows, a_rows), tt_cfg, tt_epoch)
    save_model(two_tower, {
        "customer_cardinalities": wf.cardinalities(s.CUSTOMER_SPARSE),
        "customer_dense": int(enc.customers.dense.shape[1]),
        "article_cardinalities": wf.cardinalities(s.ARTICLE_SPARSE),
        "article_dense": int(enc.articles.dense.shape[1]),
        "config": to_plain(tt_cfg),
    }, out / A.TWO_TOWER_FILE)
    timer("two_tower", t)

    # ---- DLRM -------------------------------------------------------------------------------
    t = time.perf_counter()
    tr, va = ranker_examples(two_tower, enc, data, config)
    log(f"ranker examples ({config.dlrm.negatives.value} negatives): {tr.height} train "
        f"({int(tr.get_column(s.LABEL).sum())} positive), {va.height} validation")
    train_inputs = enc.ranking_inputs(*enc.rows(tr))
    val_inputs = enc.ranking_inputs(*enc.rows(va))
    cards, num_dense = ranker_widths(wf, train_inputs)
    ranker = build_ranker(RankerKind.DLRM, cards, num_dense, config, config.dlrm.seed)
    dlrm_hist = fit_ranker(
        ranker, train_inputs, tr.get_column(s.LABEL).to_numpy(), val_inputs,
        va.get_column(s.LABEL).to_numpy(), config.dlrm, config.dlrm.seed,
        lambda e, loss, auc: log(f"dlrm epoch {e + 1}/{config.dlrm.epochs}: loss {loss:.4f}, "
                                 f"val AUC {auc:.4f}"),
    )
    save_ranker(ranker, config, out)
    timer("dlrm", t)

    # ---- item index over the serving snapshot ---------------------------------------------
    t = time.perf_counter()
    latest = data.latest_articles.filter(pl.col(s.DAYS_SINCE_FIRST_SALE).is_not_null())
    latest_enc = encode_articles(wf, latest)
    item_vecs = embed_items(two_tower, latest_enc, np.arange(latest.height))
    save_index(build_index(item_vecs, config.index), out / A.ITEM_INDEX_FILE)
    A.write_ids(latest_enc.ids, out / A.ITEM_IDS_FILE)
    timer("item_index", t)

    # ---- text embeddings for item similarity ----------------------------------------------
    t = time.perf_counter()
    # The whole catalog: text similarity is what serves articles that never sold (cold items).
    catalog = canonical.articles
    encoder = make_encoder(config.text)
    text_ids, text_vecs = embed_articles(catalog, encoder, config.text.batch_size)
    np.save(out / A.TEXT_EMBEDDINGS_FILE, text_vecs)
    save_index(build_index(text_vecs, config.index), out / A.TEXT_INDEX_FILE)
    A.write_ids(np.asarray(text_ids, dtype=object), out / A.TEXT_IDS_FILE)
    timer("text_embeddings", t)

    A.write_json(config.to_dict(), out / A.CONFIG_FILE)
    summary = {
        "two_tower_epoch_loss": tt_losses,
        "dlrm_epochs": [{"loss": lo, "val_auc": au} for lo, au in dlrm_hist],
        "train_examples": {"two_tower": int(len(c_rows)), "dlrm": int(tr.height)},
        "indexed_articles": int(latest.height),
        "text_embedding_dim": int(text_vecs.shape[1]),
        "seconds": timer.seconds,
    }
    A.write_json(summary, out / A.TRAIN_SUMMARY_FILE)
    return summary


def window_truth(examples: pl.DataFrame, window: int) -> dict[str, set[str]]:
    """Customer id -> the article ids they bought in ``window`` (the labels' positives)."""
    pos = examples.filter((pl.col(s.WINDOW) == window) & (pl.col(s.LABEL) == 1))
    grouped = pos.group_by(s.CUSTOMER_ID).agg(pl.col(s.ARTICLE_ID))
    return {c: set(a) for c, a in grouped.iter_rows()}


def _ann_recall(model: Any, enc: EncodedDataset, window: int, index_rows: np.ndarray,
                truth: dict[str, set[str]], n: int) -> float:
    cust_rows = enc.window_customers(window)
    index = build_index(embed_items(model, enc.articles, index_rows), _flat())
    _, ids = search(index, embed_queries(model, enc.customers, cust_rows), n)
    art_ids = enc.articles.ids
    recs = [[art_ids[index_rows[j]] for j in row if j >= 0] for row in ids]
    rel = [truth[c] for c in enc.customers.ids[cust_rows]]
    return mean_recall_at_k(recs, rel, n)


def _flat() -> IndexConfig:
    return IndexConfig(kind=IndexKind.FLAT, use_gpu=False)


@dataclass
class RankerTestSets:
    """What a ranker is scored on in one (test) window, built once for any number of rankers.

    Attributes:
        labelled: inputs of the labelled dataset's examples of the window (purchases and
            popularity-sampled negatives, ``DatasetConfig.negatives_per_positive`` : 1).
        labels: int8 (M,) their labels.
        candidates: inputs of retrieved candidates (``_candidate_examples``, seeded by
            ``EvalConfig.seed``): purchases among them and retrieved, not purchased ones.
        candidate_labels: int8 (Mc,).
        customer_rows: int64 (B,) the window's customers (rows of ``EncodedDataset.customers``).
        candidate_rows: int64 (B, C) their Two-Tower (+ history) candidates, PAD-padded.
        relevant: per customer, the article ids bought in the window.
    """

    labelled: RankingInputs
    labels: np.ndarray
    candidates: RankingInputs
    candidate_labels: np.ndarray
    customer_rows: np.ndarray
    candidate_rows: np.ndarray
    relevant: list[set[str]]

    @cached_property
    def candidate_in_history(self) -> np.ndarray:
        """bool (Mc,): :func:`in_history` of ``candidates``, computed once per test set."""
        return in_history(self.candidates)


def ranker_test_sets(two_tower: Any, enc: EncodedDataset, data: DatasetArtifacts, window: int,
                     config: PipelineConfig) -> RankerTestSets:
    """Build :class:`RankerTestSets` for ``window`` (retrieval as of its first day)."""
    labelled = data.examples.filter(pl.col(s.WINDOW) == window)
    cand_ex = _candidate_examples(two_tower, enc, data, window, config,
                                  np.random.default_rng(config.eval.seed))
    cust_rows, cands = window_candidates(two_tower, enc, data, window, config)
    truth = window_truth(data.examples, window)
    return RankerTestSets(
        labelled=enc.ranking_inputs(*enc.rows(labelled)),
        labels=labelled.get_column(s.LABEL).to_numpy(),
        candidates=enc.ranking_inputs(*enc.rows(cand_ex)),
        candidate_labels=cand_ex.get_column(s.LABEL).to_numpy(),
        customer_rows=cust_rows,
        candidate_rows=cands,
        relevant=[truth[c] for c in enc.customers.ids[cust_rows]],
    )


def rank_window(ranker: Ranker, enc: EncodedDataset, customer_rows: np.ndarray,
                candidates: np.ndarray, k: int, batch: int = 1024) -> np.ndarray:
    """``rank_candidates`` in batches of customers: top-k article rows int64 (B, k), PAD-padded."""
    return np.concatenate([
        rank_candidates(ranker, enc.customers, customer_rows[i:i + batch], enc.articles,
                        enc.attributes, candidates[i:i + batch], k)[0]
        for i in range(0, len(customer_rows), batch)
    ]) if len(customer_rows) else np.zeros((0, k), dtype=np.int64)


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


def _none_if_nan(x: float) -> float | None:
    return None if np.isnan(x) else x


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def score_ranker(ranker: Ranker, enc: EncodedDataset, sets: RankerTestSets,
                 k: int) -> tuple[dict[str, float], list[list[str]]]:
    """Score one ranker on the test sets.

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
    lists = article_lists(enc, rank_window(ranker, enc, sets.customer_rows,
                                           sets.candidate_rows, k))
    scores.update(evaluate_lists(lists, sets.relevant, k))
    return scores, lists


def run_evaluate(paths: Paths, config: PipelineConfig | None = None,
                 log: Log = _noop) -> dict[str, Any]:
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
    data = load_dataset(paths.dataset)
    (test,) = data.window(SPLIT_TEST)
    enc = encode_dataset(models.workflow, data, config.dataset.history_length)
    k, n = config.eval.k, config.eval.candidates
    sets = ranker_test_sets(models.two_tower, enc, data, test.index, config)
    ranker_scores, two_stage = score_ranker(models.ranker, enc, sets, k)
    labelled_hist, cand_hist = in_history(sets.labelled), sets.candidate_in_history
    cust_rows, cands, relevant = sets.customer_rows, sets.candidate_rows, sets.relevant
    customer_ids = enc.customers.ids[cust_rows]
    ann, everything = article_lists(enc, cands[:, :n]), article_lists(enc, cands)
    recommended: dict[str, list[list[str]]] = {
        TWO_STAGE: two_stage,
        "Two-Tower only": [a[:k] for a in ann],
    }
    log("two-stage pipeline evaluated")
    cutoff = test.start
    baselines: dict[str, Recommender] = {
        "global popularity": GlobalPopularity(),
        "last-week popularity": RecentPopularity(days=7),
        "repurchase (+ last-week popularity)": Repurchase(),
        "implicit ALS": ALSRecommender(factors=config.eval.als_factors,
                                       iterations=config.eval.als_iterations,
                                       seed=config.eval.seed),
    }
    for name, model in baselines.items():
        model.fit(canonical.transactions, cutoff)
        recommended[name] = model.recommend(list(customer_ids), k)
        log(f"baseline evaluated: {name}")
    rows = {name: evaluate_lists(recs, relevant, k) for name, recs in recommended.items()}
    ap = {name: [average_precision_at_k(r, rel, k) for r, rel in zip(recs, relevant, strict=True)]
          for name, recs in recommended.items()}
    comparison = {}
    for name in recommended:
        if name != TWO_STAGE:
            diff, low, high = paired_bootstrap_ci(ap[TWO_STAGE], ap[name], seed=config.eval.seed)
            comparison[name] = {"map_difference": diff, "ci95_low": low, "ci95_high": high}

    report = {
        "dataset": str(paths.data_dir),
        "test_window": test.to_dict(),
        "test_customers": len(relevant),
        "k": k,
        "candidates": n,
        "history_candidates": config.eval.history_candidates,
        "metrics": rows,
        "two_stage_minus_baseline_map": comparison,
        "retrieval": {
            f"candidate_recall@{n} (ANN)": mean_recall_at_k(ann, relevant, n),
            "candidate_recall (ANN + history)": mean_recall_at_k(everything, relevant,
                                                                 cands.shape[1]),
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
            "history_auc": _none_if_nan(ranker_scores["history_candidate_auc"]),
            "new_auc": _none_if_nan(ranker_scores["new_candidate_auc"]),
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
    A.write_json(report, paths.models_dir / A.REPORT_JSON)
    (paths.models_dir / A.REPORT_MD).write_text(report_markdown(report))
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    k = report["k"]
    w = report["test_window"]
    lines = [
        f"# Offline evaluation: {report['dataset']}",
        "",
        f"Test window {w['start']} .. {w['end']} (exclusive), {report['test_customers']} "
        f"customers with at least one purchase. Metrics at k = {k}.",
        "",
        f"| model | MAP@{k} | Recall@{k} | NDCG@{k} |",
        "|---|---:|---:|---:|",
    ]
    for name, m in report["metrics"].items():
        lines.append(f"| {name} | {m[f'map@{k}']:.4f} | {m[f'recall@{k}']:.4f} | "
                     f"{m[f'ndcg@{k}']:.4f} |")
    lines += ["", f"Two-stage minus each row on MAP@{k}, with a paired bootstrap 95% interval "
              "over customers (an interval containing 0 is no significant difference):", "",
              f"| versus | MAP@{k} difference | 95% interval |", "|---|---:|---:|"]
    lines += [f"| {name} | {c['map_difference']:+.4f} | [{c['ci95_low']:+.4f}, "
              f"{c['ci95_high']:+.4f}] |"
              for name, c in report["two_stage_minus_baseline_map"].items()]
    lines += ["", "| retrieval | value |", "|---|---:|"]
    lines += [f"| {key} | {val:.4f} |" for key, val in report["retrieval"].items()]
    r = report["ranker_test_set"]
    lines += ["", f"Ranker on the labelled test set ({r['examples']} examples, 1:1 negatives): "
              f"AUC {r['auc']:.4f}, precision {r['precision']:.4f}, recall {r['recall']:.4f} "
              f"(threshold 0.5). In the customer's history: {r['positives_in_history']:.1%} "
              f"of its purchases, {r['negatives_in_history']:.1%} of its negatives.", ""]
    c = report["ranker_test_candidates"]
    lines += [f"Ranker on test-window retrieval candidates ({c['examples']} examples, "
              f"{c['positive_share']:.1%} purchased): AUC {c['auc']:.4f}; among the "
              f"{c['history_share']:.1%} from the customer's history (which of my usual "
              f"articles; {c['history_positive_share']:.1%} of them purchased, "
              f"{c['negatives_in_history']:.1%} of all negatives) {_fmt(c['history_auc'])}, "
              f"among the others {_fmt(c['new_auc'])}.", ""]
    return "\n".join(lines)


def dataset_summary(data: DatasetArtifacts) -> list[dict[str, Any]]:
    """Per window: split, dates, positives, negatives, customers."""
    counts = (data.examples.group_by(s.WINDOW)
              .agg((pl.col(s.LABEL) == 1).sum().alias("positives"),
                   (pl.col(s.LABEL) == 0).sum().alias("negatives"),
                   pl.col(s.CUSTOMER_ID).n_unique().alias("customers")))
    by_w = {r[s.WINDOW]: r for r in counts.iter_rows(named=True)}
    return [{"window": w.index, "split": w.split, "start": w.start.isoformat(),
             "end": w.end.isoformat(), **{k: by_w[w.index][k] for k in
                                          ("positives", "negatives", "customers")}}
            for w in data.windows]


def default_paths(name: str, data_root: Path, models_root: Path) -> Paths:
    return Paths.for_name(name, data_root, models_root)
