"""Item-to-item similarity from article text embeddings (MiniLM or open_clip text towers)."""

from shoprec.similarity.text import (
    MINILM_DIM,
    MiniLMEncoder,
    OpenClipTextEncoder,
    TextEncoder,
    article_texts,
    embed_articles,
    make_encoder,
)

__all__ = [
    "MINILM_DIM",
    "MiniLMEncoder",
    "OpenClipTextEncoder",
    "TextEncoder",
    "article_texts",
    "embed_articles",
    "make_encoder",
]
