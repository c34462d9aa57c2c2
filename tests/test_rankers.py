"""The compared rankers (issue #4): architectures, trees, ``compare_rankers``, export, Triton.

Unit tests run on small random ``RankingInputs``; the comparison, export and server tests on
the tiny models ``test_export.tiny_run`` trains through the CLI on synthetic data.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.cli import app
from shoprec.config import Paths, PipelineConfig, RankerKind, RankersConfig
from shoprec.data.dataset import SPLIT_TEST, load_dataset
from shoprec.errors import ArtifactError
from shoprec.evaluation.metrics import binary_classification_metrics
from shoprec.evaluation.ranker_comparison import LABELS, REFERENCE_HM, mean_std, metric_names
from shoprec.evaluation.testsets import ranker_test_sets
from shoprec.export.triton import export_triton_repository
from shoprec.features.assemble import RANKING_HISTORY_FEATURE, RankingInputs
from shoprec.features.encode import EncodedCustomers, encode_customers
from shoprec.features.workflow import Workflow
from shoprec.inference.scoring import predict, rank_candidates
from shoprec.models.modules import SparseArch
from shoprec.models.rankers import (
    CrossNet,
    DCNv2,
    FlatFeatureArch,
    MLPRanker,
    Ranker,
    TreeRanker,
    WideAndDeep,
    WideArch,
    build_ranker,
    load_ranker,
    ranker_files,
    save_ranker,
)
from shoprec.models.rules import RuleRanker
from shoprec.models.trees import tree_features
from shoprec.models.two_tower import load_two_tower
from shoprec.pipeline.compare import compare_rankers
from shoprec.serving.ranking import RankingStep
from shoprec.serving.runtime import load_step
from shoprec.serving.tritonserver import TritonServer
from shoprec.training.encoded import encode_dataset
from shoprec.training.examples import example_groups
from shoprec.training.ranker import fit_ranker, grouped_map_at_k
from test_export import TINY_EXPORT, TinyRun, tiny_run
from test_triton_server import _in_process, _recommend

CARDS = [4, 5, 6, 10, 3, 3, 3, 3, 3]  # customer sparse (3), then article sparse (id first)
NUM_DENSE = 6
NEURAL = [RankerKind.DLRM, RankerKind.WIDE_DEEP, RankerKind.DCN, RankerKind.MLP]
TREES = [RankerKind.RF, RankerKind.GBDT, RankerKind.LAMBDARANK]
SMALL = PipelineConfig(
    rankers=RankersConfig(
        deep_mlp=(32,),
        cross_layers=2,
        rf_trees=20,
        rf_min_samples_leaf=5,
        gbdt_rounds=60,
        gbdt_num_leaves=15,
        gbdt_min_child_samples=10,
    )
)
SEEDS = 2


def _inputs(n: int, rng: np.random.Generator) -> tuple[RankingInputs, np.ndarray]:
    """Random inputs whose label is learnable by every ranker: dense 0 and a customer id."""
    sparse = np.stack([rng.integers(0, c, n) for c in CARDS], axis=1)
    dense = rng.normal(size=(n, NUM_DENSE)).astype(np.float32)
    labels = ((dense[:, 0] > 0) ^ (sparse[:, 0] == 3)).astype(np.int8)
    hist = rng.integers(0, CARDS[RANKING_HISTORY_FEATURE], (n, 4))
    return RankingInputs(dense, sparse, hist), labels


# (train inputs, train labels, validation inputs, validation labels)
Data = tuple[RankingInputs, np.ndarray, RankingInputs, np.ndarray]


@pytest.fixture(scope="module")
def data() -> Data:
    rng = np.random.default_rng(0)
    return (*_inputs(3000, rng), *_inputs(500, rng))


def _fit(
    kind: RankerKind, data: Data, seed: int = 0
) -> tuple[Ranker, list[tuple[float, float, float]], PipelineConfig]:
    train, y, val, yv = data
    config = dataclasses.replace(
        SMALL,
        ranker=dataclasses.replace(SMALL.ranker, epochs=3, batch_size=128, learning_rate=1e-2),
    )
    ranker = build_ranker(kind, CARDS, NUM_DENSE, config, seed)
    groups = (np.full(len(y) // 10, 10), np.full(len(yv) // 10, 10))  # 10 examples a customer
    history = fit_ranker(ranker, train, y, val, yv, config.ranker, seed, None, groups)
    return ranker, history, config


# ---- every ranker --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(RankerKind))
def test_every_ranker_learns_and_outputs_probabilities(kind: RankerKind, data: Data) -> None:
    ranker, history, _ = _fit(kind, data)
    assert ranker.kind is kind
    assert ranker.cardinalities == CARDS and ranker.num_dense == NUM_DENSE
    val, yv = data[2], data[3]
    p = predict(ranker, val)
    assert p.shape == (500,) and p.dtype == np.float32
    assert ((p >= 0) & (p <= 1)).all()
    auc = binary_classification_metrics(yv, p)["auc"]
    assert auc > 0.9
    if kind.is_tree and kind is not RankerKind.RF:  # the forest has no model selection
        assert max(a for _, a, _ in history) == pytest.approx(auc, abs=1e-6)
    elif not kind.is_tree:  # a neural ranker keeps the epoch of the best validation MAP@12
        kept = grouped_map_at_k(yv, p, np.full(len(yv) // 10, 10))
        assert max(m for _, _, m in history) == pytest.approx(kept, abs=1e-6)
        assert len(history) == 3
    assert predict(ranker, val.slice(0, 0)).shape == (0,)


def test_neural_rankers_share_the_dlrm_front_end() -> None:
    for kind in NEURAL:
        model = build_ranker(kind, CARDS, NUM_DENSE, SMALL, seed=0)
        assert isinstance(model, torch.nn.Module)
        arch = model.sparse_arch
        assert type(arch) is SparseArch, kind
        assert arch.history_feature == RANKING_HISTORY_FEATURE
        assert [t.num_embeddings for t in arch.embeddings] == CARDS
        assert arch.dim == SMALL.ranker.embedding_dim
        if kind is not RankerKind.DLRM:
            assert type(model.feature_arch) is FlatFeatureArch
            assert model.feature_arch.out_dim == (len(CARDS) + 1) * arch.dim + NUM_DENSE
    assert {type(build_ranker(k, CARDS, NUM_DENSE, SMALL, 0)) for k in NEURAL[1:]} == {
        WideAndDeep,
        DCNv2,
        MLPRanker,
    }


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    for kind in NEURAL:
        a, b, c = (build_ranker(kind, CARDS, NUM_DENSE, SMALL, seed) for seed in (1, 1, 2))
        assert isinstance(a, torch.nn.Module) and isinstance(b, torch.nn.Module)
        assert all(
            torch.equal(x, y)
            for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )
        assert isinstance(c, torch.nn.Module)
        assert not all(
            torch.equal(x, y)
            for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
        )


# ---- DCN-v2 cross layers and the wide part, by hand -------------------------------------------


def test_cross_layer_computed_by_hand() -> None:
    cross = CrossNet(in_dim=2, layers=2)
    first, second = cross.layers
    assert isinstance(first, torch.nn.Linear) and isinstance(second, torch.nn.Linear)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
        first.bias.copy_(torch.tensor([0.5, 1.0]))
        second.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        second.bias.copy_(torch.tensor([-1.0, 0.0]))
    x0 = torch.tensor([[1.0, 2.0]])
    # layer 1: W x0 + b = [1 + 4 + 0.5, -2 + 1] = [5.5, -1]; x1 = x0 * that + x0 = [6.5, 0]
    # layer 2: W x1 + b = [0 - 1, 6.5 + 0] = [-1, 6.5];  x2 = x0 * that + x1 = [5.5, 13]
    assert cross(x0).tolist() == [[5.5, 13.0]]
    with pytest.raises(ValueError, match="cross_layers must be >= 1, got 0"):
        CrossNet(2, 0)


def test_wide_part_is_a_linear_model_over_one_hot_ids() -> None:
    wide = WideArch([3, 4], num_dense=2)
    with torch.no_grad():
        first, second = wide.sparse_arch.embeddings
        first.weight.copy_(torch.tensor([[0.0], [1.0], [2.0]]))
        second.weight.copy_(torch.tensor([[0.0], [10.0], [20.0], [30.0]]))
        wide.dense_arch.weight.copy_(torch.tensor([[1.0, -1.0]]))
        wide.dense_arch.bias.copy_(torch.tensor([0.25]))
    dense = torch.tensor([[3.0, 1.0], [0.0, 0.0]])
    sparse = torch.tensor([[2, 3], [0, 1]])  # id 0 = padding: weighs 0
    assert wide(dense, sparse).tolist() == [2.0 + 30.0 + 2.0 + 0.25, 0.0 + 10.0 + 0.25]


def test_wide_and_deep_sums_the_wide_and_the_deep_logit() -> None:
    model = build_ranker(RankerKind.WIDE_DEEP, CARDS, NUM_DENSE, SMALL, seed=0)
    assert isinstance(model, WideAndDeep)
    x = _inputs(8, np.random.default_rng(1))[0]
    args = (torch.from_numpy(x.dense), torch.from_numpy(x.sparse), torch.from_numpy(x.hist_ids))
    with torch.no_grad():
        wide = model.wide(*args[:2])
        deep = model.over_arch(model.feature_arch(*args)).squeeze(-1)
        torch.testing.assert_close(model(*args), wide + deep)
        assert wide.abs().min() > 0 and deep.abs().min() > 0


# ---- trees ---------------------------------------------------------------------------------


def test_tree_features_layout() -> None:
    x = RankingInputs(
        dense=np.array([[0.5, -1.0]], np.float32),
        sparse=np.array([[3, 7]]),
        hist_ids=np.array([[2, 8, 0, 1]]),  # 0 = padding, 1 = OOV: not counted
    )
    got = tree_features(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.5, -1.0, 3.0, 7.0, 2.0, (1.0 + 3.0) / 2]])
    assert tree_features(dataclasses.replace(x, hist_ids=np.zeros((1, 4), np.int64)))[
        0, -2:
    ].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("kind", TREES)
def test_tree_rankers_save_load_round_trip(kind: RankerKind, data: Data, tmp_path: Path) -> None:
    ranker, _, config = _fit(kind, data)
    files = save_ranker(ranker, config, tmp_path)
    assert [p.name for p in files] == list(ranker_files(kind))
    loaded = load_ranker(tmp_path, kind, threads=1)
    assert isinstance(loaded, TreeRanker) and loaded.kind is kind
    np.testing.assert_array_equal(predict(loaded, data[2]), predict(ranker, data[2]))
    meta = json.loads((tmp_path / f"{kind.value}.json").read_text())
    assert (
        meta["format"]
        == {
            "rf": "sklearn-joblib",
            "gbdt": "lightgbm-text",
            "lambdarank": "lightgbm-text",
        }[kind.value]
    )
    if kind is RankerKind.GBDT:
        assert (tmp_path / "gbdt.txt").read_text().startswith("tree\n")  # LightGBM model text
        assert ranker.categorical == [NUM_DENSE + j for j in range(len(CARDS))]
    (tmp_path / ranker_files(kind)[1]).unlink()
    with pytest.raises(ArtifactError, match=f"compare-rankers --rankers {kind.value}"):
        load_ranker(tmp_path, kind)


def test_lambdarank_needs_groups_that_cover_the_examples(data: Data) -> None:
    train, y, val, yv = data
    ranker = TreeRanker(RankerKind.LAMBDARANK, CARDS, NUM_DENSE, SMALL.rankers, 0)
    with pytest.raises(ValueError, match="lambdarank needs the example groups"):
        ranker.fit(train, y, val, yv)
    with pytest.raises(ValueError, match="groups sum to 3000 / 490 examples, inputs hold 3000"):
        ranker.fit(train, y, val, yv, np.full(300, 10), np.full(49, 10))


def test_example_groups_are_runs_of_window_and_customer() -> None:
    frame = pl.DataFrame(
        {s.WINDOW: [2, 2, 2, 3, 3, 3], s.CUSTOMER_ID: ["a", "a", "b", "b", "b", "c"]}
    )
    assert example_groups(frame).tolist() == [2, 1, 2, 1]
    assert example_groups(frame.head(0)).tolist() == []


def test_tree_ranker_rejects_inputs_of_other_widths(data: Data) -> None:
    ranker, _, _ = _fit(RankerKind.GBDT, data)
    assert isinstance(ranker, TreeRanker)
    val = data[2]
    with pytest.raises(ValueError, match="inputs have 5 dense and 9 sparse features"):
        ranker.predict(dataclasses.replace(val, dense=val.dense[:, :5]))
    with pytest.raises(ValueError, match="not fitted"):
        TreeRanker(RankerKind.RF, CARDS, NUM_DENSE, SMALL.rankers, 0).predict(val)


@pytest.mark.parametrize("kind", NEURAL)
def test_neural_rankers_save_load_round_trip(kind: RankerKind, data: Data, tmp_path: Path) -> None:
    model = build_ranker(kind, CARDS, NUM_DENSE, SMALL, seed=3)
    (path,) = save_ranker(model, SMALL, tmp_path)
    assert path.name == f"{kind.value}.pt"
    loaded = load_ranker(tmp_path, kind)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(predict(loaded, data[2]), predict(model, data[2]))


def test_loading_a_checkpoint_as_another_kind_fails(tmp_path: Path) -> None:
    save_ranker(build_ranker(RankerKind.DCN, CARDS, NUM_DENSE, SMALL, 0), SMALL, tmp_path)
    (tmp_path / "dcn.pt").rename(tmp_path / "mlp.pt")
    with pytest.raises(ArtifactError, match="holds a dcn ranker, expected mlp"):
        load_ranker(tmp_path, RankerKind.MLP)


# ---- compare_rankers on tiny data ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def compared(tiny: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Paths, dict]:
    """All six rankers, two seeds, on a copy of the tiny models."""
    models = tmp_path_factory.mktemp("compared") / "syn"
    shutil.copytree(tiny.models_dir, models)
    paths = Paths(data_dir=tiny.dataset_dir.parent, models_dir=models)
    return paths, compare_rankers(paths, _tiny_config(paths), tuple(RankerKind), SEEDS)


def _tiny_config(paths: Paths) -> PipelineConfig:
    trained = PipelineConfig.from_dict(A.read_json(paths.models_dir / A.CONFIG_FILE))
    return dataclasses.replace(trained, rankers=SMALL.rankers)


def test_compare_writes_json_markdown_and_png(compared: tuple[Paths, dict]) -> None:
    paths, result = compared
    out = paths.models_dir / A.RANKERS_DIR
    assert json.loads((out / A.COMPARISON_JSON).read_text()) == json.loads(json.dumps(result))
    assert (out / A.COMPARISON_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(result["rankers"]) == [k.value for k in RankerKind]
    k = result["k"]
    for kind, r in result["rankers"].items():
        assert set(r["metrics"]) == set(metric_names(k))
        for name, m in r["metrics"].items():
            assert len(m["values"]) == SEEDS
            if name in ("history_candidate_auc", "new_candidate_auc") and m["mean"] is None:
                assert None in m["values"]  # a subset with one class on tiny data: undefined
                continue
            assert m["mean"] == pytest.approx(np.mean(m["values"]))
            assert m["std"] == pytest.approx(np.std(m["values"], ddof=1))
            if name != "fit_seconds":
                assert all(0.0 <= v <= 1.0 for v in m["values"]), (kind, name)
        assert len(r["val_auc"]) == SEEDS
    md = (out / A.COMPARISON_MD).read_text()
    for label in LABELS.values():
        assert f"| {label} | " in md
    dlrm = result["rankers"]["dlrm"]["metrics"]
    assert f"| DLRM | {dlrm['auc']['mean']:.4f} ± {dlrm['auc']['std']:.4f} |" in md
    assert "| Random Forest | 0.8050 | 0.8326 | 0.7488 |" in md  # the reference's, labelled
    assert REFERENCE_HM["DLRM"]["auc"] == 0.8794
    assert set(result["map_vs_first"]["rankers"]) == {k.value for k in RankerKind} - {"dlrm"}
    for kind in RankerKind:  # every ranker's first seed is saved for export
        assert result["rankers"][kind.value]["files"] == list(ranker_files(kind))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [A.COMPARISON_JSON, A.COMPARISON_MD, A.COMPARISON_PNG]
        + [f for kind in RankerKind for f in ranker_files(kind)]
    )


def test_history_split_of_the_candidate_auc() -> None:
    from shoprec.evaluation.testsets import in_history, subset_auc

    f = RANKING_HISTORY_FEATURE
    sparse = np.zeros((3, f + 1), dtype=np.int64)
    sparse[:, f] = [5, 6, 7]
    hist = np.array([[5, 9, 0], [0, 0, 0], [7, 7, 2]])
    inputs = RankingInputs(np.zeros((3, 1), np.float32), sparse, hist)
    np.testing.assert_array_equal(in_history(inputs), [True, False, True])
    sparse[:, f] = [1, 0, 2]  # OOV (1) and missing (0) ids are never "in the history"
    hist = np.array([[1, 0, 0], [0, 0, 0], [2, 1, 0]])
    inputs = RankingInputs(np.zeros((3, 1), np.float32), sparse, hist)
    np.testing.assert_array_equal(in_history(inputs), [False, False, True])
    assert subset_auc(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.2])) == pytest.approx(1.0)
    assert subset_auc(np.array([1, 0, 1]), np.array([0.1, 0.9, 0.2])) == pytest.approx(0.0)
    assert np.isnan(subset_auc(np.array([1, 1]), np.array([0.1, 0.9])))
    assert mean_std([0.5, float("nan")]) == {"mean": None, "std": None, "values": [0.5, None]}


def test_compare_is_seed_deterministic(compared: tuple[Paths, dict], tmp_path: Path) -> None:
    paths, result = compared
    models = tmp_path / "syn"
    shutil.copytree(paths.models_dir, models)
    again_paths = dataclasses.replace(paths, models_dir=models)
    kinds = (RankerKind.MLP, RankerKind.GBDT, RankerKind.RF)
    again = compare_rankers(again_paths, _tiny_config(paths), kinds, SEEDS)
    for kind in kinds:
        for name in metric_names(result["k"])[:-1]:  # all but the wall time
            assert (
                again["rankers"][kind.value]["metrics"][name]["values"]
                == result["rankers"][kind.value]["metrics"][name]["values"]
            ), (kind, name)
    # the seeds matter: two seeds of a neural ranker score differently
    auc = result["rankers"]["mlp"]["metrics"]["candidate_auc"]["values"]
    assert auc[0] != auc[1]


def test_compare_dlrm_first_seed_is_the_trained_dlrm(compared: tuple[Paths, dict]) -> None:
    """Same examples, split, labels and seed as ``shoprec train``: the same model."""
    paths, result = compared
    config = _tiny_config(paths)
    data = load_dataset(paths.dataset)
    enc = encode_dataset(
        Workflow.load(paths.models_dir / A.WORKFLOW_FILE), data, config.dataset.history_length
    )
    (test,) = data.window(SPLIT_TEST)
    sets = ranker_test_sets(
        load_two_tower(paths.models_dir / A.TWO_TOWER_FILE), enc, data, test.index, config
    )
    trained = load_ranker(paths.models_dir, RankerKind.DLRM)
    auc = binary_classification_metrics(sets.labels, predict(trained, sets.labelled))["auc"]
    assert result["rankers"]["dlrm"]["metrics"]["auc"]["values"][0] == pytest.approx(auc, abs=1e-7)


def test_compare_rejects_bad_arguments(compared: tuple[Paths, dict]) -> None:
    paths, _ = compared
    with pytest.raises(ValueError, match="seeds must be >= 1, got 0"):
        compare_rankers(paths, None, (RankerKind.MLP,), 0)
    with pytest.raises(ValueError, match=r"need distinct rankers, got \['mlp', 'mlp'\]"):
        compare_rankers(paths, None, (RankerKind.MLP, RankerKind.MLP), 1)


# ---- export of a non-DLRM ranker -----------------------------------------------------------


def _export(compared: tuple[Paths, dict], kind: RankerKind, repo: Path) -> Path:
    paths, _ = compared
    export_triton_repository(
        paths.models_dir, paths.dataset, repo, dataclasses.replace(TINY_EXPORT, ranker=kind)
    )
    return repo


@pytest.fixture(scope="module")
def customers(tiny: TinyRun) -> EncodedCustomers:
    wf = Workflow.load(tiny.models_dir / A.WORKFLOW_FILE)
    data = load_dataset(tiny.dataset_dir)
    history = A.read_json(tiny.models_dir / A.CONFIG_FILE)["dataset"]["history_length"]
    return encode_customers(wf, data.latest_customers, history, data.repurchase_length)


@pytest.mark.parametrize("kind", [RankerKind.GBDT, RankerKind.MLP, RankerKind.RF])
def test_exported_ranker_scores_like_the_in_process_ranker(
    kind: RankerKind, compared: tuple[Paths, dict], customers: EncodedCustomers, tmp_path: Path
) -> None:
    paths, _ = compared
    repo = _export(compared, kind, tmp_path / "repo")
    version = repo / s.TRITON_RANKING / "1"
    for name in ranker_files(kind):
        assert (version / name).read_bytes() == (
            paths.models_dir / A.RANKERS_DIR / name
        ).read_bytes()
    assert not (version / "dlrm.pt").exists()
    config = text_format.Parse(
        (repo / s.TRITON_RANKING / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.parameters["ranker"].string_value == kind.value
    assert json.loads((repo / "manifest.json").read_text())["export_config"]["ranker"] == kind.value

    step = load_step(repo / s.TRITON_RANKING)
    assert isinstance(step, RankingStep) and not isinstance(step.model, RuleRanker)
    assert step.model.kind is kind
    c = customers.take(np.arange(60))
    run = TinyRun(paths.models_dir, paths.dataset, repo)
    ids, scores = _in_process(run, c)  # query tower -> retrieval -> this ranking step
    ranker = load_ranker(paths.models_dir / A.RANKERS_DIR, kind)
    retrieval = load_step(repo / s.TRITON_RETRIEVAL)
    query = load_step(repo / s.TRITON_QUERY_TOWER)
    q = query(
        {s.T_CUSTOMER_SPARSE: c.sparse, s.T_CUSTOMER_DENSE: c.dense, s.T_HIST_IDS: c.hist_ids}
    )
    out = retrieval(
        {
            **q,
            s.T_HIST_IDS: c.hist_ids,
            s.T_HIST_COUNTS: c.hist_counts,
            s.T_REPURCHASE_IDS: c.repurchase_ids,
            s.T_REPURCHASE_COUNTS: c.repurchase_counts,
        }
    )
    cands = out[s.T_CANDIDATES]
    feats = out[s.T_SOURCE_FEATURES].reshape(*cands.shape, len(s.SOURCE_DENSE))
    rows, ref_scores = rank_candidates(
        ranker,
        c,
        np.arange(len(c.ids)),
        step.articles,
        step.attributes,
        cands,
        TINY_EXPORT.max_k,
        source_features=feats,
    )
    np.testing.assert_array_equal(ids.astype(str), step.articles.ids[rows].astype(str))
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    assert np.isfinite(scores[:, 0]).all()


def test_export_of_a_ranker_not_compared_names_the_command(tiny: TinyRun, tmp_path: Path) -> None:
    with pytest.raises(
        ArtifactError,
        match=r"rankers/gbdt\.json not found \(run `shoprec "
        r"compare-rankers --rankers gbdt` or `shoprec train --ranker gbdt` first\)",
    ):
        export_triton_repository(
            tiny.models_dir,
            tiny.dataset_dir,
            tmp_path / "repo",
            dataclasses.replace(TINY_EXPORT, ranker=RankerKind.GBDT),
        )
    assert not (tmp_path / "repo").exists()


# ---- a tree ranker served by the real tritonserver ---------------------------------------------


@pytest.fixture(scope="module")
def gbdt_server(
    compared: tuple[Paths, dict], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TinyRun, grpcclient.InferenceServerClient]]:
    paths, _ = compared
    repo = _export(compared, RankerKind.GBDT, tmp_path_factory.mktemp("gbdt") / "repo")
    with TritonServer(repo) as server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        yield TinyRun(paths.models_dir, paths.dataset, repo), client


def test_triton_recommend_ensemble_serves_the_gbdt_ranker(
    gbdt_server: tuple[TinyRun, grpcclient.InferenceServerClient],
    customers: EncodedCustomers,
    tiny: TinyRun,
) -> None:
    run, client = gbdt_server
    assert client.is_model_ready(s.TRITON_RECOMMEND)
    pair = customers.take(np.array([3, 11]))
    ids, scores = _recommend(client, pair)
    assert ids.shape == scores.shape == (2, TINY_EXPORT.max_k)
    ref_ids, ref_scores = _in_process(run, pair)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()
    _, dlrm_scores = _in_process(tiny, pair)  # the DLRM repository: other scores
    assert not np.allclose(scores, dlrm_scores)


# ---- the command line ------------------------------------------------------------------------


def _flat(output: str) -> str:
    """CLI output without rich's panel borders and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def _cli_copy(tiny: TinyRun, root: Path) -> tuple[list[str], Path]:
    """A copy of the tiny models under ``root/models/syn``; the CLI's common options."""
    shutil.copytree(tiny.models_dir, root / "models" / "syn")
    common = [
        "--name",
        "syn",
        "--data-root",
        str(tiny.dataset_dir.parent.parent),
        "--models-root",
        str(root / "models"),
    ]
    return common, root / "models" / "syn"


def test_cli_compare_rankers_prints_and_writes_the_table(tiny: TinyRun, tmp_path: Path) -> None:
    common, models = _cli_copy(tiny, tmp_path)
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"rankers": dataclasses.asdict(SMALL.rankers)}))
    result = CliRunner().invoke(
        app,
        [
            "compare-rankers",
            *common,
            "--rankers",
            "MLP, gbdt",
            "--seeds",
            "2",
            "--config",
            str(small),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    written = json.loads((models / A.RANKERS_DIR / A.COMPARISON_JSON).read_text())
    assert list(written["rankers"]) == ["mlp", "gbdt"]
    assert written["seeds"] == [written["seeds"][0], written["seeds"][0] + 1]
    k = written["k"]
    mlp = written["rankers"]["mlp"]["metrics"]
    assert len(mlp[f"map@{k}"]["values"]) == 2
    out = _flat(result.output)  # rich wraps the table
    assert "MLP" in out and "GBDT (LightGBM)" in out
    assert f"{mlp['auc']['mean']:.4f}" in out
    assert "comparison.md" in out and "comparison.png" in out
    # the trees saved by the command export and load like the API's
    repo = tmp_path / "repo"
    export = CliRunner().invoke(
        app, ["export", *common, "--ranker", "gbdt", "--triton-repo", str(repo)]
    )
    assert export.exit_code == 0, export.output
    assert "ranker gbdt" in export.output
    step = load_step(repo / s.TRITON_RANKING)
    assert isinstance(step, RankingStep) and not isinstance(step.model, RuleRanker)
    assert step.model.kind is RankerKind.GBDT


def test_cli_compare_rankers_with_sampled_negatives_elsewhere(
    tiny: TinyRun, tmp_path: Path
) -> None:
    """``--negatives sampled --out DIR``: the reference design's training examples, written
    to DIR; the exportable rankers in models/<name>/rankers are left alone."""
    common, models = _cli_copy(tiny, tmp_path)
    out = tmp_path / "sampled"
    result = CliRunner().invoke(
        app,
        [
            "compare-rankers",
            *common,
            "--rankers",
            "gbdt,dlrm",
            "--seeds",
            "1",
            "--negatives",
            "sampled",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    written = json.loads((out / A.COMPARISON_JSON).read_text())
    assert written["negatives"] == "sampled"
    assert list(written["rankers"]) == ["gbdt", "dlrm"]
    assert "popularity samples" in (out / A.COMPARISON_MD).read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            A.COMPARISON_JSON,
            A.COMPARISON_MD,
            A.COMPARISON_PNG,
            *ranker_files(RankerKind.GBDT),
            *ranker_files(RankerKind.DLRM),
        ]
    )
    assert not (models / A.RANKERS_DIR).exists()
    default = json.loads((models / A.CONFIG_FILE).read_text())["ranker"]["negatives"]
    assert default == "candidates"  # the trained configuration is not rewritten
    # trained on the labelled dataset: its 1:1 purchases and popularity negatives
    ex = written["examples"]
    assert ex["train_positive"] / ex["train"] == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rankers", "dlrm,xgboost"], "unknown ranker 'xgboost'; choose from dlrm, wide_deep"),
        (["--rankers", "mlp,mlp"], "need distinct rankers, got 'mlp,mlp'"),
        (["--seeds", "0"], "--seeds': Input should be greater than or equal to 1"),
        (["--config", "LIST_JSON"], "expected a JSON object, got [1, 2]"),
    ],
)
def test_cli_compare_rankers_rejects_bad_values(
    tiny: TinyRun, tmp_path: Path, args: list[str], message: str
) -> None:
    common, models = _cli_copy(tiny, tmp_path)
    (tmp_path / "list.json").write_text("[1, 2]")
    args = [str(tmp_path / "list.json") if a == "LIST_JSON" else a for a in args]
    result = CliRunner().invoke(app, ["compare-rankers", *common, *args])
    assert result.exit_code == 2
    assert message in _flat(result.output)
    assert not (models / A.RANKERS_DIR).exists()  # nothing trained, nothing written


def test_cli_compare_rankers_names_a_missing_model_and_a_bad_config(
    tiny: TinyRun, tmp_path: Path
) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        app,
        [
            "compare-rankers",
            "--name",
            "nothing-here",
            "--models-root",
            str(tmp_path),
            "--rankers",
            "mlp",
        ],
    )
    assert missing.exit_code == 2
    assert "nothing-here" in missing.output
    assert ".json not found (run `shoprec train` first)" in _flat(missing.output)
    common, _ = _cli_copy(tiny, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rankers": {"rf_treez": 5}}))
    result = runner.invoke(app, ["compare-rankers", *common, "--config", str(bad)])
    assert result.exit_code == 2
    assert "rf_treez" in result.output


def test_cli_export_rejects_an_unknown_ranker(tiny: TinyRun, tmp_path: Path) -> None:
    common, _ = _cli_copy(tiny, tmp_path)
    result = CliRunner().invoke(
        app, ["export", *common, "--ranker", "svm", "--triton-repo", str(tmp_path / "repo")]
    )
    assert result.exit_code == 2
    assert "'svm' is not one of" in _flat(result.output)
    assert not (tmp_path / "repo").exists()


def test_grouped_map_at_k_by_hand() -> None:
    labels = np.array([1, 0, 0, 1, 0, 0, 0])
    perfect = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.4, 0.3])
    # group 1 (rows 0-2): positive first; group 2 (rows 3-5): positive first; group 3 (row 6)
    # has no positive and does not count
    assert grouped_map_at_k(labels, perfect, np.array([3, 3, 1]), 12) == 1.0
    worst = -perfect
    # group 1: the positive ranked 3rd -> 1/3; group 2: 3rd -> 1/3
    assert grouped_map_at_k(labels, worst, np.array([3, 3, 1]), 12) == pytest.approx(1 / 3)
    assert grouped_map_at_k(labels, worst, np.array([3, 3, 1]), 2) == 0.0  # beyond k: no hit
    assert np.isnan(grouped_map_at_k(np.zeros(2), np.zeros(2), np.array([2])))
    with pytest.raises(ValueError, match="group sizes sum to 3"):
        grouped_map_at_k(labels, perfect, np.array([3]))


def test_example_rows_assemble_the_same_inputs_a_block_at_a_time(tiny: TinyRun) -> None:
    """``ExampleRows`` (what ``shoprec train`` holds) gives the inputs ``example_inputs``
    assembles whole: by slice, by random take, and through the trees' feature matrix."""
    from shoprec.models.trees import tree_features
    from shoprec.training.examples import example_inputs, example_rows

    config = PipelineConfig.from_dict(A.read_json(tiny.models_dir / A.CONFIG_FILE))
    data = load_dataset(tiny.dataset_dir)
    enc = encode_dataset(
        Workflow.load(tiny.models_dir / A.WORKFLOW_FILE), data, config.dataset.history_length
    )
    examples = data.examples.head(500)
    whole, rows = example_inputs(enc, examples), example_rows(enc, examples)
    assert len(rows) == len(whole) == 500
    assert (rows.num_dense, rows.num_sparse) == (whole.num_dense, whole.num_sparse)
    idx = np.random.default_rng(0).permutation(500)[:77]
    for got, want in ((rows.take(idx), whole.take(idx)), (rows.slice(10, 90), whole.slice(10, 90))):
        np.testing.assert_array_equal(got.dense, want.dense)
        np.testing.assert_array_equal(got.sparse, want.sparse)
        np.testing.assert_array_equal(got.hist_ids, want.hist_ids)
    np.testing.assert_array_equal(tree_features(rows), tree_features(whole))
