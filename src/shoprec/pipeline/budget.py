"""The offline steps' memory budget: a peak estimate from the data's sizes, checked against
``memory.ceiling_gib`` before a step allocates or writes anything large.

An estimate is the resident memory measured when it is made (the step's inputs are loaded)
plus the arrays the step will build, each computed from row counts and widths (bytes per row
from the dtypes the code uses, see the ``*_BYTES`` constants), so it scales with whatever
catalog is given. Above the ceiling the step stops with :class:`MemoryBudgetError`, which names
the step, the estimate, the ceiling and the config keys that lower the estimate; the kernel's
OOM killer never gets to end the run silently.

The per-row sizes are from the code's dtypes; ``OVERHEAD`` covers polars/numpy temporaries and
allocator slack. The estimates were compared with the peaks measured by
:mod:`shoprec.pipeline.memory` at the synthetic ``mid`` and ``hm`` scales (README, "The
offline pipeline").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Final

import polars as pl

from shoprec import schema as s
from shoprec.config import MemoryConfig, PipelineConfig
from shoprec.data.dataset import MAX_REPURCHASE_LENGTH, make_windows
from shoprec.data.ingest.canonical import Canonical
from shoprec.errors import MemoryBudgetError
from shoprec.pipeline.memory import current_rss_mib

GIB: Final = 2.0**30
MIB: Final = 2.0**20
OVERHEAD: Final = 1.25  # temporaries and allocator slack on top of the arrays counted

# Dense widths: normalised numeric features plus a missing indicator each (upper bound).
_CUSTOMER_DENSE: Final = 2 * len(s.CUSTOMER_DENSE)
_ARTICLE_DENSE: Final = 2 * len(s.ARTICLE_DENSE)
_RANKER_DENSE: Final = _CUSTOMER_DENSE + _ARTICLE_DENSE + len(s.CROSS_DENSE) + len(s.SOURCE_DENSE)
_RANKER_SPARSE: Final = len(s.CUSTOMER_SPARSE) + len(s.ARTICLE_SPARSE)

# Encoded customer row: history ids int64 + counts, last / first days float32 (x N), dense
# float32, sparse int64, and the id string.
CUSTOMER_ROW_BYTES_PER_HISTORY: Final = 8 + 4 + 4 + 4
CUSTOMER_ROW_BYTES_PER_REPURCHASE: Final = 8 + 4  # repurchase ids int64 + counts (x R)
CUSTOMER_ROW_BYTES: Final = 4 * _CUSTOMER_DENSE + 8 * len(s.CUSTOMER_SPARSE) + 120
ARTICLE_ROW_BYTES: Final = 4 * _ARTICLE_DENSE + 8 * len(s.ARTICLE_SPARSE) + 60
# One ranker example as training holds it (``training.examples.ExampleRows``): two int32
# rows and the float32 source features, the trees' float32 matrix, LightGBM's binned copy
# and the example frame (ids, window, label, source features).
RANKER_EXAMPLE_BYTES: Final = (
    2 * 4
    + 4 * len(s.SOURCE_DENSE)
    + 4 * (_RANKER_DENSE + _RANKER_SPARSE + 2)
    + 2 * (_RANKER_DENSE + _RANKER_SPARSE)
    + 200
)
# One example assembled whole (``RankingInputs``: dense float32, sparse int64, history int64
# x N), as evaluation holds its test sets.
ASSEMBLED_EXAMPLE_BYTES: Final = 4 * _RANKER_DENSE + 8 * _RANKER_SPARSE + 200
ASSEMBLED_EXAMPLE_BYTES_PER_HISTORY: Final = 8
# One candidate of a whole window's retrieval: row int64, source features float32, the
# per-source rows int64, and the article-id lists of the evaluation (three refs).
CANDIDATE_BYTES: Final = 8 + 4 * len(s.SOURCE_DENSE) + 8 + 3 * 8
# build-dataset: per transaction (columns, the window filters and joins), per feature row.
TRANSACTION_BYTES: Final = 160
DATASET_ROW_BYTES_PER_HISTORY: Final = 4 * 8  # history lists (ids, counts, days) in polars
DATASET_ROW_BYTES_PER_REPURCHASE: Final = 2 * 8  # repurchase lists (ids, counts) in polars
EXAMPLE_ROW_BYTES: Final = 120  # window, label, customer and article id strings
# The repurchase share (``features.popular``) groups every line by 32-bit id codes: per line.
REPURCHASE_BYTES: Final = 120
# The offline baselines (``pipeline.steps.fitted_baselines``, one at a time): per transaction
# line the larger of the repurchase baseline's (copied id and date columns, the grouped
# pairs, their sort, the per-customer lists) and implicit ALS's (copied id columns, 32-bit
# positions, the grouped pairs as numpy arrays and the sparse matrix in both orientations),
# measured at the synthetic mid scale (64-character customer ids) by
# ``scripts/bench_baselines.py``; plus ALS's float32 factors per customer (and the
# conjugate-gradient solver's copy).
BASELINE_LINE_BYTES: Final = 150
# The text-embedding process beside ``shoprec train`` (``pipeline.text_job``): torch, the
# encoder and its batches' activations (1,539 MiB measured with all-MiniLM-L6-v2 on the
# synthetic mid catalog, 21,108 articles; 1,079 MiB on an 8-article catalog), plus per article
# six float32 copies of a vector (the distinct texts', the weighted sum, the normalised result,
# the saved array, the index and a temporary) of the widest text encoder shoprec ships (512).
TEXT_PROCESS_BASE_GIB: Final = 1.5
TEXT_ARTICLE_BYTES: Final = 6 * 4 * 512


@dataclass(frozen=True)
class Estimate:
    """A step's estimated peak resident memory.

    Attributes:
        step: the step's name (``train``).
        parts: GiB per named part (``loaded inputs`` is measured, the others estimated).
        lower: the config keys that lower the estimate, with their values (for the message).
    """

    step: str
    parts: dict[str, float]
    lower: tuple[str, ...]

    @property
    def gib(self) -> float:
        """The estimate, GiB."""
        return sum(self.parts.values())

    def fits(self, config: MemoryConfig) -> bool:
        """Whether the estimate is within ``config.ceiling_gib`` (always, with the check off)."""
        return config.ceiling_gib <= 0 or self.gib <= config.ceiling_gib

    def check(self, config: MemoryConfig) -> Estimate:
        """Return ``self`` if within ``config.ceiling_gib`` (or the check is off: 0).

        Raises:
            MemoryBudgetError: the estimate is above the ceiling.
        """
        ceiling = config.ceiling_gib
        if not self.fits(config):
            parts = ", ".join(
                f"{name} {gib:.1f} GiB"
                for name, gib in sorted(self.parts.items(), key=lambda p: -p[1])
            )
            raise MemoryBudgetError(
                f"{self.step}: estimated peak memory {self.gib:.1f} GiB is above the ceiling "
                f"memory.ceiling_gib={ceiling:g} GiB ({parts}); lower "
                f"{', '.join(self.lower)} in a --config file, or raise memory.ceiling_gib"
            )
        return self


def _loaded() -> float:
    return current_rss_mib() * MIB / GIB


def _per_window(frame: pl.DataFrame) -> dict[int, int]:
    counts = frame.group_by(s.WINDOW).len()
    return dict(counts.select(s.WINDOW, "len").iter_rows())


def encoded_gib(
    customer_rows: int, article_rows: int, history_length: int, repurchase_length: int
) -> float:
    """The encoded dataset (``training.encoded.encode_dataset``), GiB."""
    per_customer = (
        CUSTOMER_ROW_BYTES
        + CUSTOMER_ROW_BYTES_PER_HISTORY * history_length
        + CUSTOMER_ROW_BYTES_PER_REPURCHASE * repurchase_length
    )
    return (customer_rows * per_customer + article_rows * ARTICLE_ROW_BYTES) / GIB


def examples_gib(examples: int, history_length: int, assembled: bool = False) -> float:
    """``examples`` ranker examples held for training (rows, assembled a block at a time) or,
    ``assembled``, whole (``RankingInputs``, with the history), GiB."""
    if assembled:
        per = ASSEMBLED_EXAMPLE_BYTES + ASSEMBLED_EXAMPLE_BYTES_PER_HISTORY * history_length
    else:
        per = RANKER_EXAMPLE_BYTES
    return examples * per * OVERHEAD / GIB


def candidates_gib(customers: int, width: int) -> float:
    """Retrieval of ``customers`` customers with ``width`` candidates each, GiB."""
    return customers * width * CANDIDATE_BYTES * OVERHEAD / GIB


def candidate_width(config: PipelineConfig, repurchase_length: int) -> int:
    """C, the widest union of candidate sources the config allows with repurchase lists R
    wide."""
    ev = config.eval
    history = repurchase_length if ev.history_candidates else 0
    return ev.candidates + history + ev.copurchase_candidates + ev.popular_candidates


def repurchase_width(customer_features: pl.DataFrame) -> int:
    """R, the longest repurchase list of the dataset's customer feature rows (0 if none)."""
    longest = customer_features.get_column(s.REPURCHASE_ARTICLE_IDS).list.len().max()
    return int(longest) if isinstance(longest, int) else 0


def ranker_example_count(
    customers: dict[int, int], positives: dict[int, int], windows: list[int], config: PipelineConfig
) -> int:
    """Upper bound on the ranker examples mined from ``windows``: per window, the sampled
    customers (``ranker.max_customers_per_window``) x (``ranker.candidate_negatives`` + their
    mean purchases)."""
    cap, neg = config.ranker.max_customers_per_window, config.ranker.candidate_negatives
    total = 0
    for w in windows:
        n = customers.get(w, 0)
        if n == 0:
            continue
        total += int(min(cap, n) * (neg + positives.get(w, 0) / n))
    return total


_RANKER_KEYS: Final = ("ranker.max_customers_per_window", "ranker.candidate_negatives")


def baselines_gib(transactions: int, customers: int, config: PipelineConfig) -> float:
    """The offline baselines fitted on ``transactions`` lines of ``customers`` customers
    (``pipeline.steps.fitted_baselines``: the largest one, they are fitted one at a time), GiB.
    """
    factors = customers * config.eval.als_factors * 4 * 2
    return (transactions * BASELINE_LINE_BYTES + factors) * OVERHEAD / GIB


_BASELINE_KEYS: Final = ("eval.als_factors",)


def text_process_gib(catalog_articles: int) -> float:
    """The text-embedding process of ``shoprec train`` for a catalog of ``catalog_articles``
    articles, GiB."""
    return TEXT_PROCESS_BASE_GIB + catalog_articles * TEXT_ARTICLE_BYTES / GIB


def canonical_gib(canonical: Canonical) -> float:
    """The canonical tables as loaded (polars' own size of each frame), GiB."""
    frames = (canonical.transactions, canonical.customers, canonical.articles)
    return sum(frame.estimated_size() for frame in frames) / GIB


class TextPlan(StrEnum):
    """Where ``shoprec train`` encodes the article texts (``pipeline.text_job``), in the
    order ``run_train`` tries them: the first whose estimate fits the ceiling is taken."""

    BESIDE = "beside"  # a second process beside every step, collected at the end
    UNTIL_GUARDRAIL = "until guardrail"  # a second process, collected after the ranker
    UNTIL_RANKER = "until ranker"  # a second process, collected before the ranker's examples
    IN_TRAIN = "in train"  # in the train process, after the models


def train_estimate(
    customer_features: pl.DataFrame,
    article_features: pl.DataFrame,
    examples: pl.DataFrame,
    canonical: float,
    transactions: int,
    buyers: int,
    train_windows: list[int],
    val_window: int,
    config: PipelineConfig,
    catalog_articles: int,
    text_plan: TextPlan = TextPlan.UNTIL_RANKER,
) -> Estimate:
    """``shoprec train``'s peak, the largest of its phases: fitting the workflow (the
    loaded inputs, measured, + the repurchase share's grouping of the ``transactions`` lines),
    encoding (the loaded dataset, less the ``canonical`` GiB of canonical tables, which
    ``run_train`` drops after the workflow and reads again for the guardrail, + the encoded
    dataset) and training (the loaded dataset less the canonical tables and the customer
    feature rows, which ``run_train`` drops once encoded, + the encoded dataset + the larger
    of the ranker's examples and the guardrail: the canonical tables and the larger of the
    retrieval of the validation window's scored customers (``eval.guardrail_customers``) and
    the offline baselines' fits (:func:`baselines_gib` of the ``transactions`` lines of at most
    ``buyers`` customers), which come after the retrieval is released). With ``text.concurrent``
    the text-embedding process (:func:`text_process_gib` of ``catalog_articles``) runs beside
    the workflow, the encoding and the Two-Tower, and adds to those phases; to the ranker's
    phase too with ``TextPlan.UNTIL_GUARDRAIL`` (``run_train`` waits for it after the ranker),
    to the guardrail's as well with ``TextPlan.BESIDE`` (it waits at its end); with
    ``TextPlan.UNTIL_RANKER`` it has ended before the ranker's examples."""
    n = config.dataset.history_length
    customers = _per_window(customer_features)
    positives = _per_window(examples.filter(pl.col(s.LABEL) == 1))
    m = ranker_example_count(customers, positives, [*train_windows, val_window], config)
    ranker = examples_gib(m, n)
    r = repurchase_width(customer_features)
    scored = customers.get(val_window, 0)
    if config.eval.guardrail_customers > 0:
        scored = min(scored, config.eval.guardrail_customers)
    retrieval = candidates_gib(scored, candidate_width(config, r))
    baselines = baselines_gib(transactions, buyers, config)
    guardrail = canonical + max(retrieval, baselines)
    loaded = _loaded()
    workflow = {
        "loaded inputs": loaded,
        "repurchase share": transactions * REPURCHASE_BYTES * OVERHEAD / GIB,
    }
    encoded = encoded_gib(customer_features.height, article_features.height, n, r)
    encoding = {"loaded dataset": max(loaded - canonical, 0.0), "encoded dataset": encoded}
    less_rows = max(loaded - canonical - customer_features.estimated_size() / GIB, 0.0)
    text = {"text process": text_process_gib(catalog_articles)} if config.text.concurrent else {}
    two_tower = {
        "loaded dataset less customer rows": less_rows,
        "encoded dataset": encoded,
        **text,
    }
    trained = {"loaded dataset less customer rows": less_rows, "encoded dataset": encoded}
    ranking = {
        **trained,
        **(text if text_plan in (TextPlan.BESIDE, TextPlan.UNTIL_GUARDRAIL) else {}),
        "ranker examples": ranker,
    }
    guarding = {
        **trained,
        **(text if text_plan is TextPlan.BESIDE else {}),
        (
            "guardrail (transactions, retrieval)"
            if retrieval >= baselines
            else "guardrail (transactions, offline baselines)"
        ): guardrail,
    }
    return Estimate(
        "train",
        max(
            {**workflow, **text},
            {**encoding, **text},
            two_tower,
            ranking,
            guarding,
            key=lambda parts: sum(parts.values()),
        ),
        (
            *_RANKER_KEYS,
            "eval.candidates",
            "eval.guardrail_customers",
            "dataset.train_windows",
            *_BASELINE_KEYS,
        ),
    )


def evaluate_estimate(
    customer_features: pl.DataFrame,
    article_features: pl.DataFrame,
    examples: pl.DataFrame,
    transactions: int,
    buyers: int,
    test_window: int,
    config: PipelineConfig,
) -> Estimate:
    """``shoprec evaluate``'s peak, the larger of encoding (the loaded inputs, measured, + the
    encoded dataset) and scoring (the loaded inputs less the customer feature rows, which
    ``run_evaluate`` drops once encoded, + the encoded dataset + the larger of the offline
    baselines' fits (:func:`baselines_gib` of the ``transactions`` lines of at most ``buyers``
    customers; they come first) and the test window's labelled examples, candidate examples
    and whole-window retrieval)."""
    n = config.dataset.history_length
    customers = _per_window(customer_features)
    positives = _per_window(examples.filter(pl.col(s.LABEL) == 1))
    labelled = _per_window(examples).get(test_window, 0)
    m = labelled + ranker_example_count(customers, positives, [test_window], config)
    r = repurchase_width(customer_features)
    test_sets: dict[str, float] = {
        "test examples": examples_gib(m, n, assembled=True),
        "test retrieval": candidates_gib(customers.get(test_window, 0), candidate_width(config, r)),
    }
    baselines: dict[str, float] = {"offline baselines": baselines_gib(transactions, buyers, config)}
    loaded = _loaded()
    encoded = encoded_gib(customer_features.height, article_features.height, n, r)
    encoding = {"loaded inputs": loaded, "encoded dataset": encoded}
    scoring = {
        "loaded inputs less customer rows": max(
            loaded - customer_features.estimated_size() / GIB, 0.0
        ),
        "encoded dataset": encoded,
        **(test_sets if sum(test_sets.values()) >= sum(baselines.values()) else baselines),
    }
    return Estimate(
        "evaluate",
        max(encoding, scoring, key=lambda parts: sum(parts.values())),
        (*_RANKER_KEYS, "eval.candidates", "dataset.negatives_per_positive", *_BASELINE_KEYS),
    )


def build_dataset_estimate(canonical: Canonical, config: PipelineConfig) -> Estimate:
    """``shoprec build-dataset``'s peak: the loaded tables (measured) + per-transaction work
    (the as-of aggregations over the history before a cutoff, the co-purchase pairs) + the
    customer feature rows kept for every window (its buyers) and the serving snapshot (every
    customer who bought), with their history lists, + the labelled examples."""
    ds = config.dataset
    tx = canonical.transactions
    first, last = tx.get_column(s.T_DAT).min(), tx.get_column(s.T_DAT).max()
    buyers, positives = 0, 0
    if isinstance(first, date) and isinstance(last, date):
        for w in make_windows(first, last, ds):
            in_window = tx.filter((pl.col(s.T_DAT) >= w.start) & (pl.col(s.T_DAT) < w.end))
            buyers += in_window.get_column(s.CUSTOMER_ID).n_unique()
            positives += in_window.select(s.CUSTOMER_ID, s.ARTICLE_ID).n_unique()
    per_buyer = tx.group_by(s.CUSTOMER_ID).agg(pl.col(s.ARTICLE_ID).n_unique().alias("n"))
    snapshot = per_buyer.height
    # the mean history list: distinct articles bought, at most N, over every buyer
    history = per_buyer.get_column("n").clip(upper_bound=ds.history_length).mean()
    mean_history = float(history) if isinstance(history, int | float) else 0.0
    # the repurchase lists, at most R (the configured R, else the most it can be chosen)
    most = ds.repurchase_length or max(ds.history_length, MAX_REPURCHASE_LENGTH)
    rep = per_buyer.get_column("n").clip(upper_bound=most).mean()
    mean_rep = float(rep) if isinstance(rep, int | float) else 0.0
    per_customer = (
        CUSTOMER_ROW_BYTES
        + DATASET_ROW_BYTES_PER_HISTORY * mean_history
        + DATASET_ROW_BYTES_PER_REPURCHASE * mean_rep
    )
    examples = positives * (1 + ds.negatives_per_positive) * EXAMPLE_ROW_BYTES
    return Estimate(
        "build-dataset",
        {
            "loaded inputs": _loaded(),
            "transactions work": tx.height * TRANSACTION_BYTES * OVERHEAD / GIB,
            "feature rows": (buyers + snapshot) * per_customer * OVERHEAD / GIB,
            "examples": examples * OVERHEAD / GIB,
        },
        ("dataset.train_windows", "dataset.history_length", "dataset.negatives_per_positive"),
    )
