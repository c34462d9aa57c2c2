"""Peak resident memory per step (shoprec.pipeline.memory): the numbers in the step tables."""

from __future__ import annotations

import sys
from dataclasses import replace

import polars as pl
import pytest

from shoprec.pipeline.memory import PeakSpan, high_water_mib

MIB = 2**20

linux = pytest.mark.skipif(sys.platform != "linux", reason="exact per-span peaks need Linux")


@linux
def test_a_span_sees_its_own_peak_not_an_earlier_one() -> None:
    big = bytearray(300 * MIB)  # a peak before the span
    big[::4096] = b"x" * len(big[::4096])  # touch every page: resident
    earlier = high_water_mib()
    del big  # freed to the kernel (a block this large is its own mapping)
    with PeakSpan() as small:
        block = bytearray(40 * MIB)
        block[::4096] = b"x" * len(block[::4096])
        del block
    assert small.mib < earlier - 200  # not the earlier peak
    with PeakSpan() as large:
        block = bytearray(200 * MIB)
        block[::4096] = b"x" * len(block[::4096])
        del block
    assert large.mib >= small.mib + 150


@linux
def test_an_enclosing_span_keeps_the_peaks_of_the_spans_inside_it() -> None:
    with PeakSpan() as outer:
        with PeakSpan() as first:
            block = bytearray(200 * MIB)
            block[::4096] = b"x" * len(block[::4096])
            del block
        with PeakSpan() as second:  # resets the kernel's mark: outer must have folded it
            pass
    assert first.mib >= second.mib + 150
    assert outer.mib >= first.mib


def test_an_estimate_above_the_ceiling_names_step_estimate_ceiling_and_keys() -> None:
    from shoprec.config import MemoryConfig
    from shoprec.errors import MemoryBudgetError
    from shoprec.pipeline.budget import Estimate

    est = Estimate("train", {"loaded inputs": 2.0, "ranker examples": 9.5}, ("ranker.x",))
    assert est.gib == 11.5
    assert est.check(MemoryConfig(ceiling_gib=12)) is est
    assert est.check(MemoryConfig(ceiling_gib=0)) is est  # 0 = no check
    with pytest.raises(MemoryBudgetError) as err:
        est.check(MemoryConfig(ceiling_gib=10))
    assert str(err.value) == (
        "train: estimated peak memory 11.5 GiB is above the ceiling memory.ceiling_gib=10 GiB "
        "(ranker examples 9.5 GiB, loaded inputs 2.0 GiB); lower ranker.x in a --config file, "
        "or raise memory.ceiling_gib"
    )


def test_the_example_count_bound_scales_with_the_customer_cap() -> None:
    from shoprec.config import PipelineConfig, RankerConfig
    from shoprec.pipeline.budget import ranker_example_count

    config = PipelineConfig(
        ranker=RankerConfig(max_customers_per_window=100, candidate_negatives=4)
    )
    # window 2: 1000 customers capped at 100, 2 purchases each; window 3: 50 customers, 1 each
    assert ranker_example_count({2: 1000, 3: 50}, {2: 2000, 3: 50}, [2, 3], config) == (
        100 * (4 + 2) + 50 * (4 + 1)
    )


def _window_frames() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Customer and article feature rows of windows 0 (test), 1 (validation), 2 (training),
    10 customers (repurchase lists of 64) and 5 articles each, and one purchase + one negative
    per customer."""

    from shoprec.schema import ARTICLE_ID, CUSTOMER_ID, LABEL, REPURCHASE_ARTICLE_IDS, WINDOW

    windows = [w for w in (0, 1, 2) for _ in range(10)]
    customers = pl.DataFrame(
        {
            WINDOW: windows,
            CUSTOMER_ID: [f"c{i}" for i in range(30)],
            REPURCHASE_ARTICLE_IDS: [[f"a{j}" for j in range(64)]] * 30,
        }
    )
    articles = pl.DataFrame({WINDOW: [w for w in (0, 1, 2) for _ in range(5)]})
    examples = pl.DataFrame(
        {
            WINDOW: windows * 2,
            CUSTOMER_ID: [f"c{i}" for i in range(30)] * 2,
            ARTICLE_ID: ["a"] * 60,
            LABEL: [1] * 30 + [0] * 30,
        }
    )
    return customers, articles, examples


def test_the_offline_baselines_term_bounds_train_and_evaluate_and_names_its_key() -> None:
    """The baselines' fits (per transaction line, ALS's factors per customer) are a part of
    the train and evaluate estimates once they outgrow the other phase; a ceiling below the
    estimate stops with a message that names the key that lowers them."""
    from shoprec.config import EvalConfig, MemoryConfig, PipelineConfig
    from shoprec.errors import MemoryBudgetError
    from shoprec.pipeline import budget

    customers, articles, examples = _window_frames()
    config = PipelineConfig(eval=EvalConfig(als_factors=32))
    lines, buyers = 40_000_000, 1_000_000
    expected = (
        (lines * budget.BASELINE_LINE_BYTES + buyers * 32 * 4 * 2) * budget.OVERHEAD / budget.GIB
    )
    assert budget.baselines_gib(lines, buyers, config) == pytest.approx(expected)
    assert budget.baselines_gib(2 * lines, buyers, config) > 1.9 * expected

    def train(lines: int, buyers: int = buyers) -> budget.Estimate:
        return budget.train_estimate(
            customers, articles, examples, 0.5, lines, buyers, [2], 1, config, 1000
        )

    big = train(lines)
    assert big.parts["guardrail (transactions, offline baselines)"] == pytest.approx(0.5 + expected)
    assert "guardrail (transactions, offline baselines)" not in train(1000, 10).parts
    with pytest.raises(MemoryBudgetError, match=r"^train: .* lower .*eval\.als_factors"):
        big.check(MemoryConfig(ceiling_gib=big.gib - 0.1))

    def evaluate(lines: int, buyers: int = buyers) -> budget.Estimate:
        return budget.evaluate_estimate(customers, articles, examples, lines, buyers, 0, config)

    big = evaluate(lines)
    assert big.parts["offline baselines"] == pytest.approx(expected)
    assert "test examples" not in big.parts  # the test sets are built after the baselines
    small = evaluate(1000, 10)
    assert "offline baselines" not in small.parts and small.parts["test examples"] > 0
    with pytest.raises(MemoryBudgetError, match=r"^evaluate: .* lower .*eval\.als_factors"):
        big.check(MemoryConfig(ceiling_gib=big.gib - 0.1))


def test_train_and_evaluate_count_the_customer_rows_only_until_they_are_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run_train`` and ``run_evaluate`` drop the customer feature rows once encoded, so the
    phases after encoding (the ranker's examples, the guardrail, the baselines) are counted
    on top of the loaded inputs less those rows; encoding itself holds both."""
    from shoprec.config import PipelineConfig
    from shoprec.pipeline import budget

    customers, articles, examples = _window_frames()
    monkeypatch.setattr(budget, "_loaded", lambda: 10.0)
    rows_gib = customers.estimated_size() / budget.GIB
    config = PipelineConfig()
    lines, buyers = 40_000_000, 1_000_000  # the baselines' fits dominate
    train = budget.train_estimate(
        customers, articles, examples, 0.5, lines, buyers, [2], 1, config, 1000
    )
    assert train.parts["loaded dataset less customer rows"] == pytest.approx(10.0 - 0.5 - rows_gib)
    assert "loaded dataset" not in train.parts
    evaluate = budget.evaluate_estimate(customers, articles, examples, lines, buyers, 0, config)
    assert evaluate.parts["loaded inputs less customer rows"] == pytest.approx(10.0 - rows_gib)
    # the encoding phase holds the rows: the estimate is never below it
    small = budget.evaluate_estimate(customers, articles, examples, 10, 1, 0, config)
    assert small.gib >= 10.0 + evaluate.parts["encoded dataset"]


def test_the_text_process_adds_to_the_phases_before_the_ranker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``text.concurrent`` the text-embedding process runs beside the workflow, the
    encoding and the Two-Tower, beside the ranker only when ``run_train`` waits for it after
    the ranker or at its end, and beside the guardrail only in the latter case."""
    from shoprec.config import MemoryConfig, PipelineConfig
    from shoprec.pipeline import budget

    customers, articles, examples = _window_frames()
    monkeypatch.setattr(budget, "_loaded", lambda: 10.0)
    config = PipelineConfig()
    assert config.text.concurrent  # the default
    text = budget.text_process_gib(105_542)  # an H&M-size catalog
    assert text == pytest.approx(1.5 + 105_542 * 6 * 4 * 512 / 2**30)

    def train(config: PipelineConfig, lines: int = 1000) -> budget.Estimate:
        return budget.train_estimate(
            customers, articles, examples, 0.5, lines, 10, [2], 1, config, 105_542
        )

    beside = train(config)
    alone = train(replace(config, text=replace(config.text, concurrent=False)))
    assert "text process" not in alone.parts
    # the workflow's phase with the process beside it is the peak here
    assert set(beside.parts) == {"loaded inputs", "repurchase share", "text process"}
    assert beside.parts["text process"] == pytest.approx(text)
    assert beside.gib > alone.gib + text - 0.5  # alone: the guardrail's phase, 0.5 GiB above
    # when the baselines' fits dominate (after the process ended), it is not counted
    big = train(config, lines=400_000_000)
    assert "text process" not in big.parts

    # unless train waits for it at its end: then it is beside the guardrail too
    def plan(text_plan: budget.TextPlan, lines: int = 400_000_000) -> budget.Estimate:
        return budget.train_estimate(
            customers, articles, examples, 0.5, lines, 10, [2], 1, config, 105_542, text_plan
        )

    late = plan(budget.TextPlan.BESIDE)
    assert late.parts["text process"] == pytest.approx(text)
    assert late.gib == pytest.approx(big.gib + text)
    # collected after the ranker: beside the ranker's examples, not beside the guardrail
    assert plan(budget.TextPlan.UNTIL_GUARDRAIL).parts == big.parts
    assert plan(budget.TextPlan.UNTIL_RANKER).parts == big.parts
    monkeypatch.setattr(budget, "examples_gib", lambda *_: 100.0)  # the ranker's phase peaks
    ranking = plan(budget.TextPlan.UNTIL_GUARDRAIL)
    assert ranking.parts["ranker examples"] == 100.0
    assert ranking.parts["text process"] == pytest.approx(text)
    assert "text process" not in plan(budget.TextPlan.UNTIL_RANKER).parts
    assert big.fits(MemoryConfig(ceiling_gib=big.gib)) and not late.fits(
        MemoryConfig(ceiling_gib=big.gib)
    )
    assert late.fits(MemoryConfig(ceiling_gib=0))  # 0 = no check
