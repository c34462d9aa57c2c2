"""End to end through the CLI on tiny synthetic H&M-schema CSVs (the Kaggle files' stand-in)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from shoprec import artifacts as A
from shoprec.cli import app
from shoprec.config import EvalConfig, RankerKind
from shoprec.models.rankers import ranker_files
from shoprec.pipeline.budget import TextPlan
from shoprec.pipeline.steps import guardrail_customers

FAST: dict[str, dict[str, Any]] = {
    "dataset": {"train_windows": 3, "history_length": 16, "repurchase_length": 24},
    "two_tower": {"epochs": 2, "batch_size": 256, "embedding_dim": 16},
    "ranker": {"kind": "dlrm", "epochs": 1, "batch_size": 512, "candidate_negatives": 8},
    "eval": {"candidates": 20, "als_iterations": 3, "als_factors": 8},
}

runner = CliRunner()

DLRM_FILE = ranker_files(RankerKind.DLRM)[0]  # the default ranker's file


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _train_again(trained: Path, models_root: str) -> Path:
    """``shoprec train`` on the fixture's dataset and config into ``trained/models_root``;
    returns the models dir."""
    _run(
        "train",
        "--name",
        "syn",
        "--config",
        str(trained / "fast.json"),
        "--data-root",
        str(trained / "data"),
        "--models-root",
        str(trained / models_root),
    )
    return trained / models_root / "syn"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    (root / "fast.json").write_text(json.dumps(FAST))
    output = _run(
        "pipeline",
        "synthetic",
        "--name",
        "syn",
        "--config",
        str(root / "fast.json"),
        "--data-root",
        str(root / "data"),
        "--models-root",
        str(root / "models"),
    )
    # the step tables give each step's wall time and peak resident memory
    assert "pipeline wall time and peak memory" in output and "peak RSS MiB" in output
    return root


@pytest.mark.slow
def test_pipeline_writes_every_artifact_and_a_sane_report(trained: Path) -> None:
    models = trained / "models" / "syn"
    for name in (
        A.WORKFLOW_FILE,
        A.TWO_TOWER_FILE,
        DLRM_FILE,
        A.ITEM_INDEX_FILE,
        A.ITEM_IDS_FILE,
        A.TEXT_INDEX_FILE,
        A.TEXT_IDS_FILE,
        A.REPORT_JSON,
        A.REPORT_MD,
    ):
        assert (models / name).exists(), name
    report = json.loads((models / A.REPORT_JSON).read_text())
    assert set(report["metrics"]) >= {
        "two-stage (Two-Tower + DLRM)",
        "global popularity",
        "last-week popularity",
        "implicit ALS",
    }
    for row in report["metrics"].values():
        assert set(row) == {"map@12", "recall@12", "ndcg@12"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert report["test_customers"] > 0
    assert 0.0 <= report["ranker_test_set"]["auc"] <= 1.0
    assert "| two-stage (Two-Tower + DLRM) |" in (models / A.REPORT_MD).read_text()
    # what ran, said by the report: sources, kept epochs, the exclusion decision
    summary = json.loads((models / A.TRAIN_SUMMARY_FILE).read_text())
    recalls = summary["two_tower_val_recall"]
    # all epochs, or early stopping (patience 1) at the first epoch not better than the best
    best = int(np.argmax(recalls))
    assert len(recalls) == FAST["two_tower"]["epochs"] or len(recalls) == best + 2
    assert len(summary["two_tower_epoch_loss"]) == len(recalls)
    # every train step has its wall time and its own peak resident memory (a Python process
    # with torch loaded holds well over 50 MiB)
    assert set(summary["peak_rss_mib"]) == set(summary["seconds"])
    assert all(50 < mib < 24 * 1024 for mib in summary["peak_rss_mib"].values())
    # the texts were encoded in a second process (text.concurrent, the default)
    text = summary["text_embeddings"]
    assert text["concurrent"] is True and text["seconds"] > 0 and text["peak_rss_mib"] > 100
    # a catalog this small leaves room for it beside every step: collected at the end
    assert text["plan"] == "beside"
    assert list(summary["seconds"])[-1] == "text_embeddings_wait"
    assert summary["two_tower_best_epoch"] == int(np.argmax(recalls)) + 1
    run = report["run"]
    assert run["candidate_sources"] == ["ann", "history", "copurchase", "popular"]
    assert run["two_tower_best_epoch"] == summary["two_tower_best_epoch"]
    assert run["excluded"] == (summary["repurchase_share"] < 0.05)
    assert (
        f"kept Two-Tower epoch {run['two_tower_best_epoch']}" in (models / A.REPORT_MD).read_text()
    )
    # the guardrail: the servable recommender with the best validation MAP@12 is served
    served = summary["served"]
    servable = {n: served["validation_map"][n] for n in ("ranker", "popularity", "repurchase")}
    assert served["recommender"] == max(servable, key=lambda n: (servable[n], n == "ranker"))
    assert "implicit ALS" in served["validation_map"]
    assert 0 < served["customers"] <= 50_000  # the tiny data's whole validation window
    assert report["served"]["best_baseline"] in report["metrics"]
    assert (
        report["served"]["ci95_low"]
        <= report["served"]["map_ratio"]
        <= report["served"]["ci95_high"]
    )
    retrieval = report["retrieval"]
    union = retrieval["candidate_recall (union of ann, history, copurchase, popular)"]
    per_source = [v for key, v in retrieval.items() if key.startswith("candidate_recall (")]
    assert len(per_source) == 5 and all(v <= union + 1e-9 for v in per_source)
    loaded = A.TrainedModels.load(models)
    assert loaded.item_index.ntotal == len(loaded.item_ids)
    assert loaded.text_index.ntotal == len(loaded.text_ids)
    # every indexed article id is a real, 10-digit H&M-style id
    assert all(len(a) == 10 and a.isdigit() for a in loaded.item_ids)


@pytest.mark.slow
def test_same_seed_gives_same_artifacts(trained: Path) -> None:
    first = trained / "models" / "syn"
    again = _train_again(trained, "again")
    for name in (A.TWO_TOWER_FILE, DLRM_FILE):
        a = torch.load(first / name, weights_only=True)["state_dict"]
        b = torch.load(again / name, weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (first / A.WORKFLOW_FILE).read_text() == (again / A.WORKFLOW_FILE).read_text()
    # the text process switches from one torch thread to every CPU when train waits for it,
    # at a time that depends on the machine's load: equal up to the threads' float rounding
    np.testing.assert_allclose(
        np.load(first / A.TEXT_EMBEDDINGS_FILE), np.load(again / A.TEXT_EMBEDDINGS_FILE), atol=1e-5
    )


def test_guardrail_scores_a_seeded_sample_above_its_cap() -> None:
    rows = np.arange(10, 1010, dtype=np.int64)
    assert guardrail_customers(rows, EvalConfig(guardrail_customers=0)) is rows
    assert guardrail_customers(rows, EvalConfig(guardrail_customers=1000)) is rows
    sample = guardrail_customers(rows, EvalConfig(guardrail_customers=100, seed=3))
    assert len(sample) == 100 and len(np.unique(sample)) == 100
    assert np.isin(sample, rows).all() and (np.diff(sample) > 0).all()
    again = guardrail_customers(rows, EvalConfig(guardrail_customers=100, seed=3))
    assert np.array_equal(sample, again)
    other = guardrail_customers(rows, EvalConfig(guardrail_customers=100, seed=4))
    assert not np.array_equal(sample, other)


def test_cli_names_the_missing_input_file(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    result = runner.invoke(
        app,
        ["ingest", "hm", "--raw-dir", str(tmp_path / "raw"), "--data-root", str(tmp_path / "data")],
    )
    assert result.exit_code == 2
    assert "articles.csv" in result.output
    assert not (tmp_path / "data" / "hm" / "canonical").exists()


def test_cli_reports_missing_artifacts_instead_of_a_traceback(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "--name",
            "nothing",
            "--data-root",
            str(tmp_path),
            "--models-root",
            str(tmp_path / "models"),
        ],
    )
    assert result.exit_code == 2
    assert not (tmp_path / "models" / "nothing").exists()  # nothing half-made is left
    assert result.output.startswith("error: canonical table 'articles' missing")
    assert "(run shoprec ingest)" in result.output


def test_cli_rejects_an_unknown_config_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"ranker": {"epochz": 1}}')
    result = runner.invoke(app, ["build-dataset", "--config", str(bad)])
    assert result.exit_code == 2
    assert "epochz" in result.output


@pytest.mark.slow
def test_train_with_another_ranker_saves_it_and_export_serves_it(
    trained: Path, tmp_path: Path
) -> None:
    """``shoprec train --ranker gbdt``: the GBDT is trained, saved in models/<name>/ and
    recorded in config.json; ``evaluate`` names it; ``export`` serves it without any DLRM."""
    _run(
        "train",
        "--name",
        "syn",
        "--ranker",
        "gbdt",
        "--config",
        str(trained / "fast.json"),
        "--data-root",
        str(trained / "data"),
        "--models-root",
        str(tmp_path / "models"),
    )
    models = tmp_path / "models" / "syn"
    assert json.loads((models / A.CONFIG_FILE).read_text())["ranker"]["kind"] == "gbdt"
    assert all((models / name).is_file() for name in ranker_files(RankerKind.GBDT))
    assert not (models / DLRM_FILE).exists()
    summary = json.loads((models / A.TRAIN_SUMMARY_FILE).read_text())
    assert summary["ranker"] == "gbdt" and len(summary["ranker_epochs"]) == 1
    out = _run(
        "evaluate",
        "--name",
        "syn",
        "--data-root",
        str(trained / "data"),
        "--models-root",
        str(tmp_path / "models"),
    )
    assert "two-stage (Two-Tower + GBDT (LightGBM))" in out
    _run(
        "export",
        "--name",
        "syn",
        "--triton-repo",
        str(tmp_path / "repo"),
        "--data-root",
        str(trained / "data"),
        "--models-root",
        str(tmp_path / "models"),
    )
    version = tmp_path / "repo" / "ranking" / "1"
    assert sorted(p.name for p in version.iterdir() if p.name in {"dlrm.pt", "gbdt.txt"}) == [
        "gbdt.txt"
    ]
    manifest = json.loads((tmp_path / "repo" / "manifest.json").read_text())
    assert manifest["export_config"]["ranker"] == "gbdt"


def test_cli_rejects_an_unknown_ranker_for_train(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--ranker", "xgboost"])
    assert result.exit_code == 2
    assert "xgboost" in result.output


@pytest.mark.slow
def test_cli_evaluate_takes_a_config(trained: Path, tmp_path: Path) -> None:
    """``shoprec evaluate --config``: k = 5 from the file; the served line is printed."""
    import shutil

    shutil.copytree(trained / "models" / "syn", tmp_path / "models" / "syn")
    cfg = tmp_path / "k5.json"
    cfg.write_text(json.dumps({**FAST, "eval": {**FAST["eval"], "k": 5}}))
    out = _run(
        "evaluate",
        "--name",
        "syn",
        "--config",
        str(cfg),
        "--data-root",
        str(trained / "data"),
        "--models-root",
        str(tmp_path / "models"),
    )
    report = json.loads((tmp_path / "models" / "syn" / A.REPORT_JSON).read_text())
    assert report["k"] == 5
    assert all(set(row) == {"map@5", "recall@5", "ndcg@5"} for row in report["metrics"].values())
    assert "served:" in out
    assert report["served"]["best_baseline"] in report["metrics"]


def test_evaluate_with_exclusion_lists_no_already_bought_article(
    trained: Path, tmp_path: Path
) -> None:
    """Under an excluding policy no served list holds an article the customer bought before
    the test window, including those beyond the N history slots (N = 16 here)."""
    import shutil

    before = json.loads((trained / "models" / "syn" / A.REPORT_JSON).read_text())
    models = tmp_path / "models" / "syn"
    shutil.copytree(trained / "models" / "syn", models)
    summary = json.loads((models / A.TRAIN_SUMMARY_FILE).read_text())
    (models / A.TRAIN_SUMMARY_FILE).write_text(json.dumps({**summary, "exclude_purchased": True}))
    _run(
        "evaluate",
        "--name",
        "syn",
        "--data-root",
        str(trained / "data"),
        "--models-root",
        str(tmp_path / "models"),
    )
    report = json.loads((models / A.REPORT_JSON).read_text())
    assert report["run"]["excluded"] is True
    assert report["served"]["already_bought_in_lists"] == 0
    if not before["run"]["excluded"]:  # the same models keeping them do list bought articles
        assert before["served"]["already_bought_in_lists"] > 0


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _squeeze_train_estimate(
    monkeypatch: pytest.MonkeyPatch, squeeze: Callable[[TextPlan, dict[str, float]], bool]
) -> None:
    """Make ``budget.train_estimate`` 1000 GiB larger where ``squeeze(text_plan, parts)`` is
    true, so that train's memory check takes another branch."""
    from shoprec.pipeline import budget

    real: Any = budget.train_estimate

    def squeezed(*args: Any, text_plan: TextPlan = TextPlan.UNTIL_RANKER) -> budget.Estimate:
        estimate: budget.Estimate = real(*args, text_plan=text_plan)
        if not squeeze(text_plan, estimate.parts):
            return estimate
        return budget.Estimate(estimate.step, {**estimate.parts, "beside": 1000.0}, ())

    monkeypatch.setattr(budget, "train_estimate", squeezed)


@pytest.mark.parametrize(
    ("squeezed", "plan", "after", "before"),
    [
        # no room beside the ranker: collected right after the Two-Tower
        ((TextPlan.BESIDE, TextPlan.UNTIL_GUARDRAIL), "until ranker", "two_tower", "ranker"),
        # room beside the ranker, not beside the guardrail: collected between the two
        ((TextPlan.BESIDE,), "until guardrail", "ranker", "guardrail"),
    ],
)
def test_train_waits_for_the_text_process_where_the_budget_needs_it(
    trained: Path,
    monkeypatch: pytest.MonkeyPatch,
    squeezed: tuple[TextPlan, ...],
    plan: str,
    after: str,
    before: str,
) -> None:
    """When the text process beside the later steps would not fit the memory ceiling, train
    collects it between the steps ``after`` and ``before`` (its memory is then counted beside
    the earlier phases only) and builds the same files."""
    _squeeze_train_estimate(monkeypatch, lambda text_plan, _: text_plan in squeezed)
    models = _train_again(trained, plan.replace(" ", "_"))
    summary = json.loads((models / A.TRAIN_SUMMARY_FILE).read_text())
    assert summary["text_embeddings"]["plan"] == plan
    steps = list(summary["seconds"])
    assert steps[steps.index(after) + 1 : steps.index(before)] == ["text_embeddings_wait"]
    assert "beside" not in summary["memory_estimate_mib"]
    np.testing.assert_allclose(
        np.load(models / A.TEXT_EMBEDDINGS_FILE),
        np.load(trained / "models" / "syn" / A.TEXT_EMBEDDINGS_FILE),
        atol=1e-5,
    )


def test_train_encodes_the_texts_itself_when_the_process_fits_nowhere(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for the text process even beside the workflow: train does not stop, it encodes
    the texts itself after the models (the estimate without the process is the one checked)."""
    _squeeze_train_estimate(monkeypatch, lambda _, parts: "text process" in parts)
    models = _train_again(trained, "in_train")
    summary = json.loads((models / A.TRAIN_SUMMARY_FILE).read_text())
    assert summary["text_embeddings"]["concurrent"] is False
    assert summary["text_embeddings"]["plan"] == "in train"
    assert list(summary["seconds"])[-1] == "text_embeddings"
    assert "text process" not in summary["memory_estimate_mib"]
    assert (models / A.TEXT_INDEX_FILE).is_file()


@pytest.mark.slow
def test_train_records_a_memory_estimate_that_bounds_the_examples(trained: Path) -> None:
    """The estimate made before training is in train_summary.json, and its count of ranker
    examples (per window: sampled customers x (negatives + mean purchases)) is not below the
    examples actually mined."""
    from shoprec.config import PipelineConfig
    from shoprec.data.dataset import SPLIT_TRAIN, SPLIT_VAL, load_dataset
    from shoprec.pipeline import budget
    from shoprec.schema import LABEL, WINDOW

    summary = json.loads((trained / "models" / "syn" / A.TRAIN_SUMMARY_FILE).read_text())
    parts = summary["memory_estimate_mib"]
    loaded = [mib for name, mib in parts.items() if name.startswith("loaded")]
    assert len(loaded) == 1 and loaded[0] > 0
    # on a catalog this small the text process (1.5 GiB and up) beside the models is the peak
    assert parts["text process"] >= 1.5 * 1024
    data = load_dataset(trained / "data" / "syn" / "dataset")
    config = PipelineConfig.from_dict(FAST)
    windows = [w.index for w in data.window(SPLIT_TRAIN) + data.window(SPLIT_VAL)]
    customers = {
        w: data.customer_features.filter(data.customer_features[WINDOW] == w).height
        for w in windows
    }
    positives = {
        w: data.examples.filter((data.examples[WINDOW] == w) & (data.examples[LABEL] == 1)).height
        for w in windows
    }
    bound = budget.ranker_example_count(customers, positives, windows[:-1], config)
    assert bound >= summary["train_examples"]["ranker"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("command", ["build-dataset", "train", "evaluate"])
def test_a_step_above_the_memory_ceiling_stops_with_the_estimate_and_keeps_earlier_output(
    trained: Path, tmp_path: Path, command: str
) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(trained / "data", root / "data")
    shutil.copytree(trained / "models", root / "models")
    low = tmp_path / "low.json"
    low.write_text(json.dumps({**FAST, "memory": {"ceiling_gib": 0.05}}))
    before = _tree(root)
    result = runner.invoke(
        app,
        [
            command,
            "--name",
            "syn",
            "--config",
            str(low),
            "--data-root",
            str(root / "data"),
            "--models-root",
            str(root / "models"),
        ],
    )
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith(f"error: {command}: estimated peak memory ")
    assert "GiB is above the ceiling memory.ceiling_gib=0.05 GiB (" in text
    keys = {
        "build-dataset": "dataset.train_windows",
        "train": "ranker.max_customers_per_window",
        "evaluate": "ranker.max_customers_per_window",
    }
    assert f"lower {keys[command]}" in text and "raise memory.ceiling_gib" in text
    assert _tree(root) == before  # nothing written, nothing half-made
