"""Triton repository export and the serving steps, without Triton.

Golden files: ``tests/golden/triton/<model>/config.pbtxt`` hold ``render_model_configs`` of
``GOLDEN_DIMS`` (the Complete Journey widths) under the default ``ExportConfig``. After an
intended change to the generated configs, regenerate them with::

    SHOPREC_UPDATE_GOLDEN=1 pytest tests/test_export.py -k golden

and review the diff. The other tests run on tiny models trained here through the CLI on
synthetic data (``tiny_run``, shared with ``test_triton_server.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.cli import app
from shoprec.config import RankerKind
from shoprec.data.dataset import SERVING_WINDOW, load_dataset
from shoprec.errors import ArtifactError
from shoprec.export import ExportConfig, ModelTuning, RepositoryDims, render_model_configs
from shoprec.export.triton import (
    MANIFEST_FILE,
    MODELS,
    RECOMMEND_STEPS,
    STEP_MODELS,
    export_triton_repository,
)
from shoprec.features.workflow import Workflow
from shoprec.inference.candidates import PAD
from shoprec.inference.scoring import purchased_mask, rank_candidates
from shoprec.serving.query_tower import QueryTowerStep
from shoprec.serving.ranking import RankingStep
from shoprec.serving.repository import read_repository_manifest, similar_items_article_ids
from shoprec.serving.retrieval import RetrievalStep
from shoprec.serving.runtime import (
    RequestError,
    Step,
    execute_requests,
    load_step,
    step_class,
)
from shoprec.serving.similar_items import SimilarItemsStep
from shoprec.training.encoded import encode_dataset
from shoprec.training.examples import window_candidates
from test_pipeline import FAST

GOLDEN = Path(__file__).parent / "golden" / "triton"
UPDATE_GOLDEN = os.environ.get("SHOPREC_UPDATE_GOLDEN") == "1"
GOLDEN_DIMS = RepositoryDims(
    customer_sparse=3,
    customer_dense=11,
    history_length=64,
    repurchase_length=256,
    embedding_dim=64,
    served_articles=68257,
    article_dense=8,
    text_embedding_dim=384,
)
# Tiny export: K = 10, 20 ANN candidates + 24 repurchase-list articles (N = 16 history slots).
# serves the trained ranker whatever the guardrail chose on the tiny data
TINY_EXPORT = ExportConfig(max_k=10, candidates=20, max_batch_size=8, served="ranker")
_DONE = "done"


@dataclass(frozen=True)
class TinyRun:
    """Tiny trained artifacts and their exported repository (``TINY_EXPORT``)."""

    models_dir: Path
    dataset_dir: Path
    repo: Path


def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """Train tiny models through the CLI and export them, once per test session."""
    root = tmp_path_factory.getbasetemp() / "tiny-serving"
    run = TinyRun(root / "models" / "syn", root / "data" / "syn" / "dataset", root / "repo")
    if (root / _DONE).exists():
        return run
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    (root / "fast.json").write_text(json.dumps(FAST))
    common = ["--name", "syn", "--data-root", str(root / "data")]
    runner = CliRunner()
    for args in (
        ["ingest", "synthetic", *common],
        ["build-dataset", *common, "--config", str(root / "fast.json")],
        [
            "train",
            *common,
            "--config",
            str(root / "fast.json"),
            "--models-root",
            str(root / "models"),
        ],
    ):
        result = runner.invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    export_triton_repository(run.models_dir, run.dataset_dir, run.repo, TINY_EXPORT)
    (root / _DONE).touch()
    return run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


def _parse(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


# ---- golden files and config structure ---------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_config_matches_golden_file(model: str) -> None:
    text = render_model_configs(
        GOLDEN_DIMS, ExportConfig(ranker=RankerKind.DLRM, exclude_purchased=False)
    )[model]
    golden = GOLDEN / model / "config.pbtxt"
    if UPDATE_GOLDEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run with SHOPREC_UPDATE_GOLDEN=1"
    assert text == golden.read_text()


def test_golden_configs_are_valid_triton_model_configs() -> None:
    for model in MODELS:
        config = _parse((GOLDEN / model / "config.pbtxt").read_text())
        assert config.name == model
        assert config.max_batch_size == 32
    ranking = _parse((GOLDEN / s.TRITON_RANKING / "config.pbtxt").read_text())
    assert [(t.name, list(t.dims)) for t in ranking.input] == [
        (s.T_CUSTOMER_SPARSE, [3]),
        (s.T_CUSTOMER_DENSE, [11]),
        (s.T_HIST_IDS, [64]),
        (s.T_HIST_COUNTS, [64]),
        (s.T_CANDIDATES, [100 + 256 + 50 + 20]),  # ANN, repurchase list R, co-purchase, popular
        (s.T_SOURCE_FEATURES, [(100 + 256 + 50 + 20) * len(s.SOURCE_DENSE)]),
        (s.T_HIST_LAST_DAYS, [64]),
        (s.T_HIST_FIRST_DAYS, [64]),
    ]
    assert ranking.output[0].data_type == model_config_pb2.TYPE_STRING
    assert list(ranking.output[0].dims) == [100]
    assert dict(ranking.parameters)["exclude_purchased"].string_value == "false"
    assert ranking.dynamic_batching.max_queue_delay_microseconds == 100


def test_rendering_follows_the_export_config() -> None:
    config = ExportConfig(
        max_k=7,
        candidates=30,
        history_candidates=False,
        copurchase_candidates=0,
        popular_candidates=5,
        exclude_purchased=True,
        max_batch_size=16,
        preferred_batch_sizes=(4, 8),
        max_queue_delay_microseconds=0,
        tuning={s.TRITON_RANKING: ModelTuning(instances=2, intra_op_threads=3)},
        ranker=RankerKind.GBDT,
    )
    configs = {m: _parse(t) for m, t in render_model_configs(GOLDEN_DIMS, config).items()}
    ranking = configs[s.TRITON_RANKING]
    assert list(ranking.input[4].dims) == [30 + 5]  # no history or co-purchase candidates
    assert list(ranking.output[1].dims) == [7]
    assert ranking.instance_group[0].count == 2
    params = {k: v.string_value for k, v in ranking.parameters.items()}
    assert params == {
        "step": "ranking",
        "intra_op_threads": "3",
        "max_k": "7",
        "exclude_purchased": "true",
        "ranker": "gbdt",
        "served": "ranker",
    }
    assert list(ranking.dynamic_batching.preferred_batch_size) == [4, 8]
    assert configs[s.TRITON_QUERY_TOWER].instance_group[0].count == 1
    assert {k: v.string_value for k, v in configs[s.TRITON_RETRIEVAL].parameters.items()} == {
        "step": "retrieval",
        "intra_op_threads": "1",
        "candidates": "30",
        "history_candidates": "false",
        "copurchase_candidates": "0",
        "popular_candidates": "5",
    }
    assert all(c.max_batch_size == 16 for c in configs.values())
    # the ANN part is capped by the catalog size
    small = dataclasses.replace(GOLDEN_DIMS, served_articles=12)
    retrieval = _parse(render_model_configs(small, config)[s.TRITON_RETRIEVAL])
    assert list(retrieval.output[0].dims) == [12 + 5]


def _check_wiring(configs: dict[str, Any]) -> None:
    """Every ensemble step's maps name tensors the step model and the ensemble really have."""
    ensemble = configs[s.TRITON_RECOMMEND]
    assert ensemble.platform == "ensemble"
    available = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    steps = ensemble.ensemble_scheduling.step
    assert [st.model_name for st in steps] == list(RECOMMEND_STEPS)
    for st in steps:
        model = configs[st.model_name]
        inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        assert set(st.input_map) == set(inputs), st.model_name  # every input fed
        for model_input, tensor in st.input_map.items():
            assert available[tensor] == inputs[model_input], (st.model_name, tensor)
        assert set(st.output_map) <= set(outputs), st.model_name
        for model_output, tensor in st.output_map.items():
            available[tensor] = outputs[model_output]
        assert model.max_batch_size >= ensemble.max_batch_size
    for out in ensemble.output:
        assert available[out.name] == (out.data_type, list(out.dims)), out.name
    assert [t.name for t in ensemble.input] == list(s.ENCODED_CUSTOMER_FEATURES)
    assert [t.name for t in ensemble.output] == [s.T_ARTICLE_IDS, s.T_SCORES]


def test_ensemble_wiring_of_golden_configs() -> None:
    _check_wiring({m: _parse((GOLDEN / m / "config.pbtxt").read_text()) for m in MODELS})


def test_ensemble_wiring_check_catches_a_renamed_tensor() -> None:
    configs = {m: _parse((GOLDEN / m / "config.pbtxt").read_text()) for m in MODELS}
    step = configs[s.TRITON_RECOMMEND].ensemble_scheduling.step[1]
    step.input_map["query_embedding"] = "query_embeddings"
    with pytest.raises(KeyError, match="query_embeddings"):
        _check_wiring(configs)


def test_step_models_declare_the_step_tensors() -> None:
    for model in STEP_MODELS:
        config = _parse((GOLDEN / model / "config.pbtxt").read_text())
        step = step_class(model)
        assert tuple(t.name for t in config.input) == step.inputs
        assert tuple(t.name for t in config.output) == step.outputs
        assert dict(config.parameters)["step"].string_value == model


# ---- ExportConfig validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_k": 0}, ValueError, "max_k must be an integer >= 1, got 0"),
        ({"candidates": -3}, ValueError, "candidates must be an integer >= 1, got -3"),
        ({"max_batch_size": 2.5}, ValueError, "max_batch_size must be an integer >= 1, got 2.5"),
        ({"max_queue_delay_microseconds": -1}, ValueError, "max_queue_delay_microseconds"),
        ({"history_candidates": "yes"}, ValueError, "history_candidates must be true or false"),
        ({"preferred_batch_sizes": (4, 64)}, ValueError, "64 exceeds max_batch_size 32"),
        ({"preferred_batch_sizes": (8, 4)}, ValueError, r"strictly ascending, got \[8, 4\]"),
        ({"tuning": {"rankin": ModelTuning()}}, KeyError, r"unknown model\(s\) \['rankin'\]"),
        ({"ranker": "xgboost"}, ValueError, r"ranker must be one of \['dlrm', .*got 'xgboost'"),
    ],
)
def test_export_config_rejects_bad_values(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ExportConfig(**kwargs)


def test_model_tuning_and_dict_round_trip() -> None:
    with pytest.raises(ValueError, match="instances must be an integer >= 1, got 0"):
        ModelTuning(instances=0)
    config = ExportConfig(
        max_k=5,
        preferred_batch_sizes=(2, 4),
        tuning={s.TRITON_SIMILAR_ITEMS: ModelTuning(2, 4)},
        ranker=RankerKind.MLP,
    )
    plain = json.loads(json.dumps(config.to_dict()))
    assert plain["tuning"][s.TRITON_RANKING] == {"instances": 1, "intra_op_threads": 1}
    assert plain["ranker"] == "mlp"
    assert ExportConfig.from_dict(plain).ranker is RankerKind.MLP
    assert ExportConfig.from_dict(plain).to_dict() == config.to_dict()
    with pytest.raises(KeyError, match="max_kk"):
        ExportConfig.from_dict({"max_kk": 3})
    with pytest.raises(KeyError, match="thread"):
        ExportConfig.from_dict({"tuning": {s.TRITON_RANKING: {"thread": 2}}})


# ---- export on tiny artifacts --------------------------------------------------------------


def test_export_writes_a_self_contained_repository(tiny: TinyRun) -> None:
    manifest = json.loads((tiny.repo / MANIFEST_FILE).read_text())
    served = A.read_ids(tiny.models_dir / A.ITEM_IDS_FILE)
    dims = RepositoryDims(
        **{
            k: manifest["dims"][k]
            for k in (
                "customer_sparse",
                "customer_dense",
                "history_length",
                "repurchase_length",
                "embedding_dim",
                "served_articles",
                "article_dense",
                "text_embedding_dim",
            )
        }
    )
    assert dims == RepositoryDims(
        3,
        11,
        FAST["dataset"]["history_length"],
        FAST["dataset"]["repurchase_length"],
        FAST["two_tower"]["embedding_dim"],
        len(served),
        len(s.ARTICLE_DENSE) + 2,  # missing indicators: mean price, days since first sale
        384,
    )
    # ANN, history (the repurchase list, R = 24), co-purchase, popular
    assert manifest["dims"]["candidates"] == 20 + 24 + 50 + 20
    assert manifest["dims"]["max_k"] == 10
    served_config = ExportConfig.from_dict(manifest["export_config"])
    assert served_config == replace(
        TINY_EXPORT,
        ranker=RankerKind.DLRM,
        tuning=served_config.tuning,
        exclude_purchased=A.trained_exclusion(tiny.models_dir),  # what train decided
    )
    rendered = render_model_configs(dims, served_config)
    for model in MODELS:
        text = (tiny.repo / model / "config.pbtxt").read_text()
        assert text == rendered[model]
        assert str(tiny.repo.parent) not in text
        assert (tiny.repo / model / "1").is_dir()
    assert str(tiny.repo.parent) not in (tiny.repo / MANIFEST_FILE).read_text()
    _check_wiring({m: _parse(t) for m, t in rendered.items()})
    assert np.array_equal(
        np.load(tiny.repo / "ranking" / "1" / "article_ids.npy"), served.astype(str)
    )
    for model in STEP_MODELS:
        assert (tiny.repo / model / "1" / "model.py").read_text().count(
            "from shoprec.serving.runtime import"
        ) == 1


def test_serving_readers_read_what_the_export_wrote(tiny: TinyRun, tmp_path: Path) -> None:
    manifest = read_repository_manifest(tiny.repo)
    assert manifest == json.loads((tiny.repo / MANIFEST_FILE).read_text())
    assert manifest["models"] == list(MODELS)
    text_ids = A.read_ids(tiny.models_dir / A.TEXT_IDS_FILE).astype(str).tolist()
    assert similar_items_article_ids(tiny.repo) == text_ids
    assert len(text_ids) == manifest["text_articles"]
    with pytest.raises(ArtifactError, match=f"{MANIFEST_FILE} not found: export the Triton"):
        read_repository_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="text_article_ids.npy not found: export the Triton"):
        similar_items_article_ids(tmp_path)


def test_export_is_deterministic_and_relocatable(tiny: TinyRun, tmp_path: Path) -> None:
    again = tmp_path / "again"
    files = export_triton_repository(tiny.models_dir, tiny.dataset_dir, again, TINY_EXPORT)
    assert files == sorted(files)
    rel = sorted(p.relative_to(again) for p in files)
    assert rel == sorted(p.relative_to(tiny.repo) for p in tiny.repo.rglob("*") if p.is_file())
    for r in rel:
        assert (again / r).read_bytes() == (tiny.repo / r).read_bytes(), r
    moved = tmp_path / "elsewhere" / "repo"
    shutil.move(again, moved)
    query = np.array([[A.read_ids(tiny.models_dir / A.TEXT_IDS_FILE)[0].encode()]], dtype=object)
    here, there = (load_step(r / s.TRITON_SIMILAR_ITEMS) for r in (tiny.repo, moved))
    assert isinstance(here, SimilarItemsStep) and isinstance(there, SimilarItemsStep)
    np.testing.assert_array_equal(there.similar(query)[0], here.similar(query)[0])


def test_export_replaces_its_own_folders_only(tiny: TinyRun, tmp_path: Path) -> None:
    (tmp_path / ".gitkeep").touch()
    (tmp_path / s.TRITON_RANKING / "1").mkdir(parents=True)
    (tmp_path / s.TRITON_RANKING / "1" / "stale.npy").touch()
    export_triton_repository(tiny.models_dir, tiny.dataset_dir, tmp_path, TINY_EXPORT)
    assert (tmp_path / ".gitkeep").exists()
    assert not (tmp_path / s.TRITON_RANKING / "1" / "stale.npy").exists()


@pytest.mark.parametrize("missing", ["dlrm.pt", A.TEXT_INDEX_FILE, A.WORKFLOW_FILE])
def test_export_names_a_missing_artifact(tiny: TinyRun, tmp_path: Path, missing: str) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny.models_dir, models)
    (models / missing).unlink()
    with pytest.raises(ArtifactError, match=missing.replace(".", r"\.")):
        export_triton_repository(models, tiny.dataset_dir, tmp_path / "repo", TINY_EXPORT)
    assert not (tmp_path / "repo").exists()


def test_export_rejects_an_index_of_another_catalog(tiny: TinyRun, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny.models_dir, models)
    A.write_ids(A.read_ids(models / A.ITEM_IDS_FILE)[1:], models / A.ITEM_IDS_FILE)
    with pytest.raises(ArtifactError, match="served articles"):
        export_triton_repository(models, tiny.dataset_dir, tmp_path / "repo", TINY_EXPORT)


# ---- runtime steps ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def steps(tiny: TinyRun) -> dict[str, Step]:
    return {m: load_step(tiny.repo / m) for m in STEP_MODELS}


@pytest.fixture(scope="module")
def offline(tiny: TinyRun) -> SimpleNamespace:
    """The offline evaluation path run on the serving snapshot (as one window, 0)."""
    models = A.TrainedModels.load(tiny.models_dir)
    data = load_dataset(tiny.dataset_dir)
    window = pl.lit(0, dtype=pl.Int32).alias(s.WINDOW)
    snapshot = dataclasses.replace(
        data,
        customer_features=data.latest_customers.with_columns(window),
        article_features=data.latest_articles.with_columns(window),
        copurchase=data.copurchase_of(SERVING_WINDOW).with_columns(window),
    )
    enc = encode_dataset(models.workflow, snapshot, models.config.dataset.history_length)
    config = dataclasses.replace(
        models.config,
        eval=dataclasses.replace(
            models.config.eval,
            candidates=TINY_EXPORT.candidates,
            history_candidates=True,
            copurchase_candidates=TINY_EXPORT.copurchase_candidates,
            popular_candidates=TINY_EXPORT.popular_candidates,
        ),
    )
    wc = window_candidates(models.two_tower, enc, snapshot, 0, config)
    cust_rows, cands = wc.customer_rows, wc.candidates
    rows, scores = rank_candidates(
        models.load_ranker(),
        enc.customers,
        cust_rows,
        enc.articles,
        enc.attributes,
        cands,
        TINY_EXPORT.max_k,
        purchased_mask(
            np.where(cands != PAD, enc.articles.sparse[cands, 0], 0),
            enc.customers.hist_ids[cust_rows],
        )
        if A.trained_exclusion(tiny.models_dir)
        else None,
        source_features=wc.features,
    )
    ids = np.append(enc.articles.ids, "")  # row PAD (-1) -> ""
    return SimpleNamespace(
        customers=enc.customers.take(cust_rows),
        candidate_ids=ids[cands],
        source_features=wc.features,
        top_ids=ids[rows],
        top_scores=scores,
    )


def _chain(
    steps: dict[str, Step], c: Any
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
    """((candidates, source features), article ids, scores) of the served steps in turn."""
    qt, ret, rank = (steps[m] for m in RECOMMEND_STEPS)
    assert isinstance(qt, QueryTowerStep) and isinstance(ret, RetrievalStep)
    assert isinstance(rank, RankingStep)
    q = qt.embed(c.sparse, c.dense, c.hist_ids)
    cands, feats = ret.retrieve(q, c.hist_ids, c.hist_counts, c.repurchase_ids, c.repurchase_counts)
    ids, scores = rank.rank(
        c.sparse,
        c.dense,
        c.hist_ids,
        c.hist_counts,
        cands,
        feats,
        c.hist_last_days,
        c.hist_first_days,
    )
    return (cands, feats), ids, scores


def test_chained_steps_match_the_offline_two_stage_path(
    steps: dict[str, Step], offline: SimpleNamespace
) -> None:
    c = offline.customers
    assert len(c.ids) > 100
    (cands, feats), ids, scores = _chain(steps, c)
    rank = steps[s.TRITON_RANKING]
    assert isinstance(rank, RankingStep)
    served = np.append(rank.articles.ids, "")
    width = 20 + 24 + TINY_EXPORT.copurchase_candidates + TINY_EXPORT.popular_candidates
    assert cands.shape == (len(c.ids), width)
    np.testing.assert_array_equal(served[cands], offline.candidate_ids)
    np.testing.assert_allclose(
        feats.reshape(offline.source_features.shape), offline.source_features, rtol=1e-5
    )
    # every source contributed candidates (scores > 0 somewhere in each source's column)
    assert (offline.source_features.reshape(-1, len(s.SOURCE_DENSE)).max(0)[0::2] > 0).all()
    assert ids.shape == scores.shape == (len(c.ids), TINY_EXPORT.max_k)
    np.testing.assert_array_equal(ids.astype(str), offline.top_ids.astype(str))
    np.testing.assert_allclose(scores, offline.top_scores, rtol=1e-5)
    finite = np.isfinite(scores)
    assert finite[:, 0].all()
    assert (np.diff(np.where(finite, scores, -1.0), axis=1) <= 0).all()
    assert ((ids == b"") == ~finite).all()


def test_exclude_purchased_drops_history_articles(
    tiny: TinyRun, steps: dict[str, Step], offline: SimpleNamespace
) -> None:
    c = offline.customers
    rank = steps[s.TRITON_RANKING]
    assert isinstance(rank, RankingStep)
    excluding = RankingStep(
        rank.model, rank.articles, rank.attributes, TINY_EXPORT.max_k, exclude_purchased=True
    )
    (cands, feats), ids, _ = _chain(steps, c)
    kept, _ = excluding.rank(
        c.sparse,
        c.dense,
        c.hist_ids,
        c.hist_counts,
        cands,
        feats,
        c.hist_last_days,
        c.hist_first_days,
    )
    vocab = Workflow.load(tiny.models_dir / A.WORKFLOW_FILE).categorical_ops[s.ARTICLE_ID].vocab

    def repurchases(lists: np.ndarray) -> int:
        return sum(
            vocab.get(a.decode(), -1) in set(hist)
            for row, hist in zip(lists, c.hist_ids, strict=True)
            for a in row
        )

    assert repurchases(ids) > 0  # without exclusion, history articles do get recommended
    assert repurchases(kept) == 0


def test_similar_items_excludes_the_query_and_matches_brute_force(
    tiny: TinyRun, steps: dict[str, Step]
) -> None:
    step = steps[s.TRITON_SIMILAR_ITEMS]
    assert isinstance(step, SimilarItemsStep)
    text_ids = A.read_ids(tiny.models_dir / A.TEXT_IDS_FILE).astype(str)
    vectors = np.load(tiny.models_dir / A.TEXT_EMBEDDINGS_FILE)
    queries = np.array([[text_ids[0].encode()], [text_ids[5].encode()]], dtype=object)
    ids, scores = step.similar(queries)
    assert ids.shape == scores.shape == (2, TINY_EXPORT.max_k)
    for b, row in enumerate((0, 5)):
        assert text_ids[row].encode() not in set(ids[b])
        sims = np.sort(np.delete(vectors @ vectors[row], row))[::-1]
        self_score = float(vectors[row] @ vectors[row])
        expected: list[float] = []  # brute force, duplicates (equal scores) collapsed
        for sim in sims:
            if abs(sim - self_score) > 1e-5 and (not expected or abs(sim - expected[-1]) > 1e-5):
                expected.append(float(sim))
        expected = (expected + [-np.inf] * TINY_EXPORT.max_k)[: TINY_EXPORT.max_k]
        np.testing.assert_allclose(scores[b], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(RequestError, match=r"^unknown article_id \(4 bytes\)$"):
        step.similar(np.array([[b"nope"]], dtype=object))


def test_similar_items_collapses_articles_with_identical_text() -> None:
    import faiss

    q = [1.0, 0.0, 0.0]
    b = [0.6, 0.8, 0.0]  # cosine 0.6 to q
    d = [0.8, 0.0, 0.6]  # cosine 0.8 to q
    e, f = [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]  # both cosine 0 to q, different articles
    index = faiss.IndexFlatIP(3)
    index.add(np.array([q, q, b, b, d, e, f], dtype=np.float32))
    step = SimilarItemsStep.build(index, ["q", "q-twin", "b1", "b2", "d", "e", "f"], max_k=5)
    ids, scores = step.similar(np.array([[b"q"], [b"q-twin"], [b"b2"]], dtype=object))
    got = [[x.decode() for x in row] for row in ids]
    # q-twin has the query's text, b2 b1's: one article per text, the first in catalog order;
    # e and f tie on score but differ: both kept; 4 other texts for k = 5: one empty slot
    assert got[0][:2] == ["d", "b1"] and sorted(got[0][2:4]) == ["e", "f"] and got[0][4] == ""
    np.testing.assert_allclose(scores[0], [0.8, 0.6, 0.0, 0.0, -np.inf], atol=1e-6)
    assert got[1] == got[0]  # the twin asks the same question
    assert "b1" not in got[2] and "b2" not in got[2]
    assert got[2][:4] == ["f", "q", "d", "e"]  # cosine to b: 0.8, 0.6, 0.48, 0
    np.testing.assert_allclose(scores[2][:4], [0.8, 0.6, 0.48, 0.0], atol=1e-6)


def test_steps_reject_bad_requests_with_the_offending_value(
    steps: dict[str, Step], offline: SimpleNamespace
) -> None:
    c = offline.customers.take(np.arange(2))
    (cands, feats), _, _ = _chain(steps, c)
    rank = steps[s.TRITON_RANKING]
    assert isinstance(rank, RankingStep)
    bad = cands.copy()
    bad[1, 0] = 10_000
    with pytest.raises(RequestError, match=r"candidates: id 10000 outside \[-1, "):
        rank.rank(
            c.sparse,
            c.dense,
            c.hist_ids,
            c.hist_counts,
            bad,
            feats,
            c.hist_last_days,
            c.hist_first_days,
        )
    with pytest.raises(RequestError, match="batch size 1 differs from 2"):
        rank.rank(
            c.sparse,
            c.dense,
            c.hist_ids[:1],
            c.hist_counts,
            cands,
            feats,
            c.hist_last_days,
            c.hist_first_days,
        )
    with pytest.raises(RequestError, match="source_features: expected width"):
        rank.rank(
            c.sparse,
            c.dense,
            c.hist_ids,
            c.hist_counts,
            cands,
            feats[:, :3],
            c.hist_last_days,
            c.hist_first_days,
        )
    qt = steps[s.TRITON_QUERY_TOWER]
    assert isinstance(qt, QueryTowerStep)
    with pytest.raises(RequestError, match="customer_dense: expected width 11"):
        qt.embed(c.sparse, c.dense[:, :5], c.hist_ids)


def _fake_pb_utils() -> SimpleNamespace:
    """The parts of ``triton_python_backend_utils`` that ``execute_requests`` uses."""

    class Tensor:
        def __init__(self, name: str, array: np.ndarray):
            self.name, self.array = name, array

        def as_numpy(self) -> np.ndarray:
            return self.array

    class TritonError:
        INVALID_ARG = 3

        def __init__(self, message: str, code: int | None = None):
            self.message, self.code = message, code

    class Response:
        def __init__(self, output_tensors: list[Tensor], error: Any = None):
            self.outputs = {t.name: t.array for t in output_tensors}
            self.error = error

    return SimpleNamespace(
        Tensor=Tensor,
        InferenceResponse=Response,
        TritonError=TritonError,
        get_input_tensor_by_name=lambda request, name: Tensor(name, request[name]),
    )


def test_execute_requests_answers_each_request_and_isolates_bad_ones(
    tiny: TinyRun, steps: dict[str, Step]
) -> None:
    step = steps[s.TRITON_SIMILAR_ITEMS]
    text_ids = A.read_ids(tiny.models_dir / A.TEXT_IDS_FILE).astype(str)
    good = {
        s.T_ARTICLE_ID: np.array([[text_ids[1].encode()], [text_ids[2].encode()]], dtype=object)
    }
    bad = {s.T_ARTICLE_ID: np.array([[b"nope"]], dtype=object)}
    pb = _fake_pb_utils()
    batched = execute_requests(step, [good, bad, good], pb)
    assert len(batched) == 3
    error = batched[1].error
    assert (error.message, error.code) == ("unknown article_id (4 bytes)", 3)
    assert not batched[1].outputs
    alone = step(good)
    for response in (batched[0], batched[2]):
        assert response.error is None
        np.testing.assert_array_equal(response.outputs[s.T_ARTICLE_IDS], alone[s.T_ARTICLE_IDS])
    together = execute_requests(step, [good, good], pb)
    assert [r.outputs[s.T_SCORES].shape for r in together] == [(2, TINY_EXPORT.max_k)] * 2
    assert execute_requests(step, [], pb) == []


def test_ranking_step_serves_the_guardrails_rule(
    tiny: TinyRun, steps: dict[str, Step], offline: SimpleNamespace
) -> None:
    """With ``served`` = a rule the step ranks the same candidates by it (no ranker)."""
    from shoprec.models.rules import RuleKind, RuleRanker

    c = offline.customers.take(np.arange(20))
    (cands, feats), _, _ = _chain(steps, c)
    version = tiny.repo / s.TRITON_RANKING / "1"
    step = RankingStep.load(version, TINY_EXPORT.max_k, False, RankerKind.DLRM, served="popularity")
    assert isinstance(step.model, RuleRanker) and step.model.rule is RuleKind.POPULARITY
    ids, _ = step.rank(
        c.sparse, c.dense, c.hist_ids, c.hist_counts, cands, feats, c.hist_last_days,
        c.hist_first_days,
    )  # fmt: skip
    folder = tiny.repo / s.TRITON_RETRIEVAL / "1"
    popular = np.load(folder / "popular_rows.npy")[: TINY_EXPORT.popular_candidates]
    score = dict(
        zip(
            step.articles.ids[popular].astype(str),
            np.load(folder / "popular_scores.npy")[: len(popular)].tolist(),
            strict=True,
        )
    )
    best = sorted(score.values(), reverse=True)[: TINY_EXPORT.max_k]
    # every customer gets last week's best sellers, best first (ties in any order)
    for row in ids.astype(str):
        assert [score[a] for a in row[: len(best)]] == best
    with pytest.raises(ArtifactError, match="unknown recommender 'best'"):
        RankingStep.load(version, TINY_EXPORT.max_k, False, RankerKind.DLRM, served="best")
