from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shoprec import schema as s
from shoprec.config import (
    DLRMConfig,
    IndexConfig,
    IndexKind,
    PipelineConfig,
    RankerConfig,
    RankerKind,
    TwoTowerConfig,
    to_plain,
)
from shoprec.features.assemble import RANKING_HISTORY_FEATURE, RankingInputs
from shoprec.inference.candidates import PAD, dedupe_rows
from shoprec.inference.index import build_index, load_index, save_index, search
from shoprec.inference.scoring import predict, rank_candidates
from shoprec.models.dlrm import DLRM, DotInteraction
from shoprec.models.modules import SparseArch, save_model
from shoprec.models.rankers import load_ranker, save_ranker
from shoprec.models.two_tower import TwoTower, load_two_tower
from shoprec.training.ranker import train_ranker
from shoprec.training.two_tower import (
    InBatchSoftmaxTask,
    RetrievalExamples,
    build_two_tower,
    sampling_log_q,
)

CUST_CARDS, ART_CARDS = [4, 5, 6], [10, 3, 3, 3, 3, 3]


def _two_tower(seed: int = 0) -> TwoTower:
    return build_two_tower(
        CUST_CARDS, 7, ART_CARDS, [0, 1, 2, 3], TwoTowerConfig(embedding_dim=8, seed=seed)
    )


def test_two_tower_output_shapes_and_unit_norm() -> None:
    m = _two_tower()
    q = m.query_tower(
        torch.ones(5, 3, dtype=torch.long), torch.zeros(5, 7), torch.tensor([[2, 3, 0]] * 5)
    )
    v = m.item_tower(torch.ones(5, 6, dtype=torch.long), torch.zeros(5, 4))
    assert q.shape == (5, 8) and v.shape == (5, 8)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(5))
    assert m.query_tower.article_table is m.item_tower.article_table


def test_item_tower_reads_only_its_dense_columns(tmp_path: Path) -> None:
    """The item tower reads the dense columns it was built with: the others (the ranker's
    all-time sales and trend, ``schema.ITEM_TOWER_DENSE``) never change an embedding, also
    after a save and load."""
    m = build_two_tower(CUST_CARDS, 7, ART_CARDS, [0, 2], TwoTowerConfig(embedding_dim=8))
    sparse = torch.ones(4, 6, dtype=torch.long)
    dense = torch.randn(4, 5)
    other = dense.clone()
    other[:, [1, 3, 4]] = torch.randn(4, 3)
    torch.testing.assert_close(m.item_tower(sparse, dense), m.item_tower(sparse, other))
    moved = dense.clone()
    moved[:, 2] += 1.0
    assert not torch.allclose(m.item_tower(sparse, dense), m.item_tower(sparse, moved))
    hparams = {
        "customer_cardinalities": CUST_CARDS,
        "customer_dense": 7,
        "article_cardinalities": ART_CARDS,
        "article_dense_columns": [0, 2],
        "config": to_plain(TwoTowerConfig(embedding_dim=8)),
    }
    save_model(m, hparams, tmp_path / "tt.pt")
    loaded = load_two_tower(tmp_path / "tt.pt")
    torch.testing.assert_close(loaded.item_tower(sparse, other), m.item_tower(sparse, dense))


def test_same_seed_gives_same_weights() -> None:
    a, b, c = _two_tower(1), _two_tower(1), _two_tower(2)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    last_a, last_c = a.item_tower.mlp[-1], c.item_tower.mlp[-1]
    assert isinstance(last_a, torch.nn.Linear) and isinstance(last_c, torch.nn.Linear)
    assert not torch.equal(last_a.weight, last_c.weight)


def test_in_batch_softmax_by_hand() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    task = InBatchSoftmaxTask(None, temperature=1.0)
    # row 0: logits [1, 1] target 0 -> log 2; row 1: logits [0, 0] target 1 -> log 2
    assert task(q, v, torch.tensor([3, 4])).item() == pytest.approx(np.log(2))
    # same article in both columns: the other column is masked, loss 0
    assert task(q, v, torch.tensor([3, 3])).item() == pytest.approx(0.0, abs=1e-6)
    log_q = torch.log(torch.tensor([0.5, 0.5, 0.5, 0.25, 0.75]))
    corrected = InBatchSoftmaxTask(log_q, 1.0)(q, v, torch.tensor([3, 4]))
    # row 0 logits [1 - log .25, 1 - log .75]; row 1 [-log .25, -log .75], targets 0 and 1
    rows = torch.tensor([[1 - np.log(0.25), 1 - np.log(0.75)], [-np.log(0.25), -np.log(0.75)]])
    expected = torch.nn.functional.cross_entropy(rows.float(), torch.tensor([0, 1]))
    assert corrected.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        InBatchSoftmaxTask(None, 0.0)


def test_sampling_log_q_sums_to_one() -> None:
    lq = sampling_log_q(np.array([2, 2, 3]), 5)
    assert lq.exp().sum().item() == pytest.approx(1.0)
    assert lq[2] > lq[3] > lq[4] - 1e-9


def test_dot_interaction_upper_triangle() -> None:
    x = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]]])
    assert DotInteraction(3)(x).tolist() == [[2.0, 0.0, 3.0]]


def _ranking_inputs(n: int, rng: np.random.Generator) -> tuple[RankingInputs, np.ndarray]:
    sparse = np.stack([rng.integers(0, c, n) for c in CUST_CARDS + ART_CARDS], axis=1)
    dense = rng.normal(size=(n, 6)).astype(np.float32)
    labels = (sparse[:, RANKING_HISTORY_FEATURE] % 2).astype(np.int8)  # learnable from article id
    hist = rng.integers(0, ART_CARDS[0], (n, 4))
    return RankingInputs(dense, sparse, hist), labels


def test_dlrm_learns_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train, y = _ranking_inputs(2000, rng)
    val, yv = _ranking_inputs(400, rng)
    cfg = RankerConfig(epochs=3, batch_size=128, learning_rate=1e-2)
    torch.manual_seed(0)
    m = DLRM(CUST_CARDS + ART_CARDS, 6, cfg.embedding_dim, DLRMConfig(), RANKING_HISTORY_FEATURE)
    hist = train_ranker(m, train, y, val, yv, cfg)
    assert len(hist) == 3
    assert max(auc for _, auc, _ in hist) > 0.95
    p = predict(m, val)
    assert p.shape == (400,) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    save_ranker(m, PipelineConfig(ranker=cfg), tmp_path)
    np.testing.assert_array_equal(predict(load_ranker(tmp_path, RankerKind.DLRM), val), p)


def test_two_tower_round_trip(tmp_path: Path) -> None:
    m = _two_tower()
    save_model(
        m,
        {
            "customer_cardinalities": CUST_CARDS,
            "customer_dense": 7,
            "article_cardinalities": ART_CARDS,
            "article_dense_columns": [0, 1, 2, 3],
            "config": to_plain(TwoTowerConfig(embedding_dim=8)),
        },
        tmp_path / "tt.pt",
    )
    loaded = load_two_tower(tmp_path / "tt.pt")
    x = (torch.ones(2, 6, dtype=torch.long), torch.zeros(2, 4))
    torch.testing.assert_close(loaded.item_tower(*x), m.item_tower(*x))


def test_sparse_arch_history_pooling_ignores_padding() -> None:
    arch = SparseArch([6], dim=2, history_feature=0)
    out = arch(torch.tensor([[1]]), torch.tensor([[2, 0, 0]]))
    torch.testing.assert_close(out[0, 1], arch.embeddings[0].weight[2])
    with pytest.raises(ValueError, match="hist_ids is required"):
        arch(torch.tensor([[1]]))


@pytest.mark.parametrize("kind", [IndexKind.FLAT, IndexKind.HNSW, IndexKind.IVF])
def test_index_finds_exact_neighbour_and_round_trips(kind: IndexKind, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = build_index(x, IndexConfig(kind=kind, ivf_nlist=8, ivf_nprobe=8))
    scores, ids = search(index, x[:5], 3)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    save_index(index, tmp_path / "i.faiss")
    np.testing.assert_array_equal(search(load_index(tmp_path / "i.faiss"), x[:5], 3)[1], ids)
    with pytest.raises(ValueError, match="k must be >= 1"):
        search(index, x[:1], 0)
    with pytest.raises(ValueError, match="non-empty"):
        build_index(np.zeros((0, 4), np.float32), IndexConfig())


def test_dedupe_rows_keeps_first_occurrence() -> None:
    got = dedupe_rows(np.array([[3, 1, 3, PAD, 1, 2]]))
    assert got.tolist() == [[3, 1, PAD, PAD, PAD, 2]]


class _ScoreByArticleId(torch.nn.Module):
    """A fake ranker whose logit is the article id: makes rank order predictable."""

    def forward(
        self, dense: torch.Tensor, sparse: torch.Tensor, hist_ids: torch.Tensor
    ) -> torch.Tensor:
        return sparse[:, RANKING_HISTORY_FEATURE].float()


def test_rank_candidates_orders_pads_and_excludes() -> None:
    from shoprec.features.encode import EncodedArticles, EncodedCustomers, dense_width

    cust = EncodedCustomers(
        np.array(["c"], object),
        np.zeros((1, 3), np.int64),
        np.zeros((1, dense_width(s.CUSTOMER_DENSE)), np.float32),
        np.zeros((1, 4), np.int64),
        np.zeros((1, 4), np.float32),
        np.zeros((1, 4), np.float32),
        np.zeros((1, 4), np.float32),
        np.zeros((1, 4), np.int64),
        np.zeros((1, 4), np.float32),
    )
    art_ids = np.array([5, 9, 2, 7])
    arts = EncodedArticles(
        np.array(list("abcd"), object),
        np.stack([art_ids] + [np.zeros(4, np.int64)] * 5, axis=1),
        np.zeros((4, dense_width(s.ARTICLE_DENSE)), np.float32),
    )
    attrs = np.zeros((10, 3), np.int64)
    cands = np.array([[0, 1, 2, 3, PAD]])
    rows, scores = rank_candidates(_ScoreByArticleId(), cust, np.array([0]), arts, attrs, cands, 3)
    assert rows.tolist() == [[1, 3, 0]]  # article ids 9 > 7 > 5
    assert (np.diff(scores) <= 0).all()
    exclude = np.array([[False, True, False, False, False]])
    rows, _ = rank_candidates(
        _ScoreByArticleId(), cust, np.array([0]), arts, attrs, cands, 6, exclude
    )
    assert rows.tolist() == [[3, 0, 2, PAD, PAD, PAD]]  # k larger than candidates: padded


def _tiny_retrieval_examples(b: int, v: int, n: int) -> RetrievalExamples:
    """B random customers with N history slots and V random articles, one positive each."""
    from shoprec.features.encode import EncodedArticles, EncodedCustomers

    rng = np.random.default_rng(0)
    customers = EncodedCustomers(
        np.array([f"c{i}" for i in range(b)], dtype=object),
        rng.integers(0, 3, (b, 2)),
        rng.random((b, 3)).astype(np.float32),
        rng.integers(0, v, (b, n)),
        np.ones((b, n), np.float32),
        np.zeros((b, n), np.float32),
        np.zeros((b, n), np.float32),
        np.zeros((b, n), np.int64),
        np.zeros((b, n), np.float32),
    )
    articles = EncodedArticles(
        np.array([f"a{i}" for i in range(v)], dtype=object),
        np.stack([np.arange(v), rng.integers(0, 4, v)], axis=1),
        rng.random((v, 2)).astype(np.float32),
    )
    return RetrievalExamples(customers, articles, np.arange(b), rng.integers(0, v, b))


def test_two_tower_training_stops_when_on_epoch_says_so() -> None:
    """Early stopping: a true return of ``on_epoch`` ends training after that epoch."""
    from shoprec.training.two_tower import train_two_tower

    v = 30
    config = TwoTowerConfig(epochs=4, batch_size=16, embedding_dim=8, feature_dim=4)
    model = build_two_tower([3, 3], 3, [v, 4], [0, 1], config)
    examples = _tiny_retrieval_examples(64, v, 5)
    seen: list[int] = []

    def stop_after_second(epoch: int, _: float) -> bool:
        seen.append(epoch)
        return epoch == 1

    losses = train_two_tower(model, examples, config, stop_after_second)
    assert seen == [0, 1] and len(losses) == 2
    assert len(train_two_tower(model, examples, config, lambda e, _: None)) == 4


def test_two_tower_trains_with_its_thread_count_and_restores_the_previous() -> None:
    from shoprec.training.two_tower import train_two_tower

    v = 10
    examples = _tiny_retrieval_examples(32, v, 3)
    config = TwoTowerConfig(epochs=1, batch_size=16, embedding_dim=8, feature_dim=4, num_threads=1)
    model = build_two_tower([3, 3], 3, [v, 4], [0, 1], config)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        during: list[int] = []
        train_two_tower(
            model, examples, config, lambda e, _: during.append(torch.get_num_threads())
        )
        assert during == [1] and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="two_tower.num_threads must be >= 0, got -1"):
            train_two_tower(model, examples, TwoTowerConfig(num_threads=-1))
    finally:
        torch.set_num_threads(previous)
