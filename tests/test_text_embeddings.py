"""Tests for shoprec.models.text: article texts, MiniLM and open_clip encoders, dedup."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from shoprec.config import TextConfig, TextEncoderKind
from shoprec.errors import ArtifactError
from shoprec.models.text import (
    MINILM_DIM,
    MiniLMEncoder,
    OpenClipTextEncoder,
    TextCounts,
    article_text_parts,
    article_texts,
    embed_articles,
    make_encoder,
)
from shoprec.schema import (
    ARTICLE_COLUMNS,
    ARTICLE_ID,
    DEPARTMENT,
    DESCRIPTION,
    NAME,
    PRODUCT_GROUP,
    PRODUCT_TYPE,
    SECTION,
    VARIANT,
)

SMALL_CLIP = "ViT-S-32-alt"  # smallest built-in open_clip text tower: width 256, 10 layers
SMALL_CLIP_DIM = 256
FAKE_DIM = 4  # 16 bytes of a SHA-256 digest as int32
SAMPLE_TEXTS = ["red cotton t-shirt", "frozen crushed ice", "", "denim skinny jeans"]


def articles_table(rows: Sequence[Mapping[str, str | None]]) -> pl.DataFrame:
    """Canonical articles table; columns a row leaves out are null."""
    return pl.DataFrame(
        [{column: row.get(column) for column in ARTICLE_COLUMNS} for row in rows],
        schema=dict.fromkeys(ARTICLE_COLUMNS, pl.String),
    )


ICE = {
    ARTICLE_ID: "1",
    NAME: "Ice - Crushed/Cubed, 22 Lb",
    PRODUCT_TYPE: "ICE - CRUSHED/CUBED",
    PRODUCT_GROUP: "FRZN ICE",
    DEPARTMENT: "GROCERY",
    SECTION: "National",
    VARIANT: "22 LB",
}


class RecordingEncoder:
    """Fake encoder: a fixed unit vector per text (from its hash); records every call."""

    dim = FAKE_DIM

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        self.calls.append(list(texts))
        vectors = np.array(
            [np.frombuffer(hashlib.sha256(t.encode()).digest()[:16], np.int32) for t in texts],
            dtype=np.float32,
        ).reshape(len(texts), FAKE_DIM)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder()


@pytest.fixture(scope="module")
def small_clip() -> OpenClipTextEncoder:
    return OpenClipTextEncoder(SMALL_CLIP, pretrained=None, seed=0)


# ---- article_texts ---------------------------------------------------------------------------


def test_article_texts_joins_parts_and_skips_nulls() -> None:
    table = articles_table(
        [
            ICE,
            {
                ARTICLE_ID: "2",
                NAME: "Jade HW Skinny Denim TRS",
                PRODUCT_TYPE: "Trousers",
                DEPARTMENT: "  ",
                SECTION: "Womens Casual",
                VARIANT: "Dark Blue",
                DESCRIPTION: "High-waisted jeans in washed superstretch denim. ",
            },
            {ARTICLE_ID: "3"},
        ]
    )
    assert article_texts(table) == [
        "Ice - Crushed/Cubed, 22 Lb. ICE - CRUSHED/CUBED. FRZN ICE. GROCERY. National. 22 LB",
        "Jade HW Skinny Denim TRS. Trousers. Womens Casual. Dark Blue. "
        "High-waisted jeans in washed superstretch denim",
        "",
    ]


def test_article_texts_skips_parts_repeating_the_name_or_an_earlier_part() -> None:
    table = articles_table(
        [
            {
                ARTICLE_ID: "1",
                NAME: "Crushed Ice",
                PRODUCT_TYPE: "CRUSHED ICE",
                PRODUCT_GROUP: "Frozen",
                DEPARTMENT: "frozen",
                DESCRIPTION: "crushed ice.",
            }
        ]
    )
    assert article_texts(table) == ["Crushed Ice. Frozen"]


def test_article_texts_names_missing_column() -> None:
    table = articles_table([ICE]).drop(DESCRIPTION)
    with pytest.raises(ValueError, match=rf"missing column\(s\) \['{DESCRIPTION}'\]"):
        article_texts(table)


# ---- MiniLM ----------------------------------------------------------------------------------


def test_minilm_shape_dtype_unit_norm_deterministic(minilm: MiniLMEncoder) -> None:
    first = minilm.encode(SAMPLE_TEXTS, batch_size=2)
    second = minilm.encode(SAMPLE_TEXTS, batch_size=2)
    assert minilm.dim == MINILM_DIM
    assert first.shape == (len(SAMPLE_TEXTS), MINILM_DIM)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, second)


def test_minilm_is_semantic(minilm: MiniLMEncoder) -> None:
    query, near, far = minilm.encode(["red cotton t-shirt", "red t-shirt", "frozen crushed ice"], 8)
    assert float(query @ near) > float(query @ far) + 0.3


def test_minilm_empty_input_and_bad_batch_size(minilm: MiniLMEncoder) -> None:
    assert minilm.encode([], batch_size=8).shape == (0, MINILM_DIM)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        minilm.encode(SAMPLE_TEXTS, batch_size=0)
    with pytest.raises(ValueError, match=r"texts\[1\] is NoneType"):
        minilm.encode(["a", None], batch_size=8)  # type: ignore[list-item]


def test_minilm_restores_torch_threads() -> None:
    before = torch.get_num_threads()
    MiniLMEncoder(num_threads=1).encode(SAMPLE_TEXTS, batch_size=4)
    assert torch.get_num_threads() == before


def test_minilm_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no modules.json"):
        MiniLMEncoder(model_dir=tmp_path)


# ---- open_clip -------------------------------------------------------------------------------


def test_open_clip_random_init_shape_norm_and_seed(small_clip: OpenClipTextEncoder) -> None:
    vectors = small_clip.encode(SAMPLE_TEXTS, batch_size=4)
    assert small_clip.dim == SMALL_CLIP_DIM
    assert vectors.shape == (len(SAMPLE_TEXTS), SMALL_CLIP_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert small_clip.encode([], batch_size=4).shape == (0, SMALL_CLIP_DIM)

    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    same_seed = OpenClipTextEncoder(SMALL_CLIP, pretrained=None, seed=0)
    assert torch.equal(torch.rand(3), expected_draw), "building the model moved the caller's RNG"
    np.testing.assert_array_equal(same_seed.encode(SAMPLE_TEXTS, batch_size=4), vectors)


def test_open_clip_hf_hub_offline_raises_artifact_error() -> None:
    with pytest.raises(ArtifactError) as caught:
        OpenClipTextEncoder("ViT-B-32", pretrained="hf-hub:patrickjohncyh/fashion-clip")
    message = str(caught.value)
    assert "'hf-hub:patrickjohncyh/fashion-clip'" in message
    assert "cannot be fetched offline" in message
    assert "open_clip_pretrained='/path/to/open_clip_pytorch_model.bin'" in message
    assert "open_clip_model='ViT-B-32'" in message


def test_open_clip_local_checkpoint_round_trip(
    small_clip: OpenClipTextEncoder, tmp_path: Path
) -> None:
    path = tmp_path / "text_tower.pt"
    torch.save(small_clip.model.state_dict(), path)
    loaded = OpenClipTextEncoder(SMALL_CLIP, pretrained=str(path))
    np.testing.assert_array_equal(
        loaded.encode(SAMPLE_TEXTS, batch_size=4), small_clip.encode(SAMPLE_TEXTS, batch_size=4)
    )


def test_open_clip_bad_sources(small_clip: OpenClipTextEncoder, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(ArtifactError, match="neither a checkpoint file nor a pretrained tag"):
        OpenClipTextEncoder(SMALL_CLIP, pretrained=str(missing))
    wrong_arch = tmp_path / "wrong.pt"
    torch.save({"text_projection": torch.zeros(3, 3)}, wrong_arch)
    with pytest.raises(
        ArtifactError, match=f"cannot load open_clip weights .* into '{SMALL_CLIP}'"
    ):
        OpenClipTextEncoder(SMALL_CLIP, pretrained=str(wrong_arch))
    with pytest.raises(ValueError, match="unknown open_clip model_name 'ViT-Nope'"):
        OpenClipTextEncoder("ViT-Nope", pretrained=None)


# ---- make_encoder ----------------------------------------------------------------------------


def test_make_encoder_builds_the_configured_kind() -> None:
    clip = make_encoder(
        TextConfig(
            encoder=TextEncoderKind.OPEN_CLIP, open_clip_model=SMALL_CLIP, open_clip_pretrained=None
        )
    )
    assert isinstance(clip, OpenClipTextEncoder)
    assert clip.dim == SMALL_CLIP_DIM
    minilm = make_encoder(TextConfig(encoder=TextEncoderKind.MINILM))
    assert isinstance(minilm, MiniLMEncoder)
    assert minilm.dim == MINILM_DIM


# ---- embed_articles --------------------------------------------------------------------------


def _composed(encoder: Any, product: str, variant: str) -> np.ndarray:
    """The documented composition: word-count-weighted mean of the two parts, normalised."""
    p = encoder.encode([product], 1)[0] * len(product.split())
    v = encoder.encode([variant], 1)[0] * len(variant.split()) if variant else 0
    return (p + v) / np.linalg.norm(p + v)


def test_embed_articles_encodes_each_distinct_product_text_and_variant_once() -> None:
    red, blue = {**ICE, VARIANT: "Red"}, {**ICE, VARIANT: "Blue"}
    rows = [
        {**red, ARTICLE_ID: "a"},
        {ARTICLE_ID: "b", NAME: "Milk", PRODUCT_GROUP: "DAIRY"},
        {**blue, ARTICLE_ID: "c"},
        {ARTICLE_ID: "d", NAME: "Bread", VARIANT: "Red"},
        {ARTICLE_ID: "e", NAME: "Milk", PRODUCT_GROUP: "DAIRY"},
        {**red, ARTICLE_ID: "f"},
    ]
    table = articles_table(rows)
    product, variants = article_text_parts(table)
    assert variants == ["Red", "", "Blue", "Red", "", "Red"]
    assert (
        product[0]
        == product[2]
        == product[5]
        == article_texts(articles_table([ICE]))[0][: -len(". 22 LB")]
    )
    encoder = RecordingEncoder()

    ids, vectors, counts = embed_articles(table, encoder, batch_size=2, progress=False)

    assert ids == ["a", "b", "c", "d", "e", "f"]
    assert vectors.shape == (6, FAKE_DIM) and vectors.dtype == np.float32
    encoded = [text for call in encoder.calls for text in call]
    # the ice product once for three colour variants, each colour once
    assert sorted(encoded) == sorted({product[0], "Milk. DAIRY", "Bread", "Red", "Blue"})
    assert all(len(call) <= 2 for call in encoder.calls)
    assert counts == TextCounts(articles=6, product_texts=3, variants=2)
    fake = RecordingEncoder()
    np.testing.assert_allclose(vectors[0], _composed(fake, product[0], "Red"), rtol=1e-6)
    np.testing.assert_allclose(vectors[1], fake.encode(["Milk. DAIRY"], 1)[0], rtol=1e-6)
    np.testing.assert_array_equal(vectors[0], vectors[5])
    np.testing.assert_array_equal(vectors[1], vectors[4])
    assert not np.array_equal(vectors[0], vectors[2])  # two colours of one product differ


def test_embed_articles_matches_minilm_on_the_composed_parts(minilm: MiniLMEncoder) -> None:
    table = articles_table([ICE, {ARTICLE_ID: "2", NAME: "Red T-shirt", VARIANT: "Red"}])
    ids, vectors, _ = embed_articles(table, minilm, batch_size=1, progress=False)
    assert ids == ["1", "2"]
    product, variants = article_text_parts(table)
    assert variants == ["22 LB", "Red"]
    expected = [_composed(minilm, p, v) for p, v in zip(product, variants, strict=True)]
    np.testing.assert_allclose(vectors, np.array(expected), atol=1e-5)
    # close to encoding the whole text at once (what the split approximates)
    whole = minilm.encode(article_texts(table), 8)
    assert float((vectors * whole).sum(1).min()) > 0.9


def test_embed_articles_empty_table() -> None:
    ids, vectors, _ = embed_articles(articles_table([]), RecordingEncoder(), progress=False)
    assert ids == []
    assert vectors.shape == (0, FAKE_DIM)


def test_embed_articles_rejects_bad_input() -> None:
    table = articles_table([ICE, {ARTICLE_ID: "1", NAME: "Milk"}])
    with pytest.raises(ValueError, match=f"column '{ARTICLE_ID}': id '1' appears more than once"):
        embed_articles(table, RecordingEncoder(), progress=False)
    null_id = articles_table([ICE, {ARTICLE_ID: None, NAME: "Milk"}])
    with pytest.raises(ValueError, match=rf"column '{ARTICLE_ID}': row 1 \(0-based\) is null"):
        embed_articles(null_id, RecordingEncoder(), progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        embed_articles(articles_table([ICE]), RecordingEncoder(), batch_size=0)

    class WrongDim(RecordingEncoder):
        dim = FAKE_DIM + 1

    with pytest.raises(ValueError, match=r"encoder returned shape \(2, 4\) for 2 texts"):
        embed_articles(articles_table([ICE]), WrongDim(), progress=False)
