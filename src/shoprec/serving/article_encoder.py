"""The ``article_encoder`` step: the served encoders of an article put through the write API
(item tower with the workflow's vocabularies, and the text encoder the pipeline used).

The near-real-time updater calls it over gRPC for every ``article_put`` of the event log and
writes what it returns into the article delta (:mod:`shoprec.serving.article_delta`), which the
``retrieval``, ``ranking`` and ``similar_items`` steps merge at query time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl
import torch

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.config import TextConfig, from_plain
from shoprec.features.workflow import Workflow
from shoprec.models.text import TextEncoder, embed_articles, make_encoder
from shoprec.models.two_tower import ItemTower, load_two_tower
from shoprec.serving.repository import TEXT_ARTICLE_IDS_FILE, TEXT_ENCODER_FILE, export_id
from shoprec.serving.runtime import RequestError, Step, batch_size_of, check_width, load_array

# What a new article's dense features are: never sold, no price, no first sale yet.
NEW_ARTICLE_DENSE: Final = {
    s.SALES_7D: 0.0,
    s.SALES_28D: 0.0,
    s.ARTICLE_MEAN_PRICE: None,
    s.DAYS_SINCE_FIRST_SALE: None,
    s.SALES_ALL: 0.0,
    s.SALES_TREND: 0.0,  # log((1 + 0) / (1 + 0))
}
assert set(NEW_ARTICLE_DENSE) == set(s.ARTICLE_DENSE), "a new article needs every dense feature"


class ArticleEncoderStep(Step):
    """Article fields -> item-tower and text embeddings and the encoded attributes.

    The article id and the attributes are encoded with the trained workflow (an id or value it
    never saw gets the unknown id), the dense features are those of an article never sold
    (:data:`NEW_ARTICLE_DENSE`), the item tower (``models.two_tower.ItemTower``) embeds them, and
    the text (``models.text.article_texts``: name, attributes, description) is embedded by the
    pipeline's text encoder (``TextConfig`` of the run; MiniLM by default).

    Inputs: article_id bytes (B, 1); article_fields bytes (B, AF) ``schema.ARTICLE_FIELDS`` in
    order, b"" = null. Outputs: item_embedding float32 (B, D), text_embedding float32 (B, Dt),
    article_sparse int64 (B, Fa), article_dense float32 (B, Fda), known bool (B, 1) (the
    article has a text row in the served ``similar_items`` table: no delta row needed),
    export_id bytes (B, 1) (the repository's ``export_id``: the delta scope of the row).

    Raises (per request): ``RequestError`` for bad shapes or an empty name.

    The text encoder may be given as a factory: it is then loaded in a background thread from
    construction on (MiniLM takes 10-20 s to import and load on 2 busy cores), so that Triton
    reports the model, and with it the server, ready without waiting for it; the first request
    waits for the load (and raises its error, if any).
    """

    name = s.TRITON_ARTICLE_ENCODER
    inputs = (s.T_ARTICLE_ID, s.T_ARTICLE_FIELDS)
    outputs = s.ARTICLE_ENCODER_OUTPUTS

    def __init__(
        self,
        tower: ItemTower,
        workflow: Workflow,
        text_encoder: TextEncoder | Callable[[], TextEncoder],
        known_ids: list[str],
        export: str = "",
    ) -> None:
        self.tower = tower.eval()
        self.workflow = workflow
        self._text_encoder: Future[TextEncoder]
        if callable(text_encoder) and not hasattr(text_encoder, "encode"):
            pool = ThreadPoolExecutor(1, thread_name_prefix="text-encoder")
            self._text_encoder = pool.submit(text_encoder)
            pool.shutdown(wait=False)
        else:
            self._text_encoder = Future()
            self._text_encoder.set_result(text_encoder)  # type: ignore[arg-type]
        self.known = frozenset(known_ids)
        self.export = export

    @property
    def text_encoder(self) -> TextEncoder:
        """The text encoder (waits for a background load to finish)."""
        return self._text_encoder.result()

    @classmethod
    def load(cls, directory: Path) -> ArticleEncoderStep:
        """Load ``two_tower.pt``, ``workflow.json``, the text encoder named by
        ``text_encoder.json`` and the served text ids; ``ArtifactError`` if one is missing."""
        config = from_plain(
            TextConfig, json.loads((directory / TEXT_ENCODER_FILE).read_text()), "text"
        )
        return cls(
            load_two_tower(directory / A.TWO_TOWER_FILE).item_tower,
            Workflow.load(directory / A.WORKFLOW_FILE),
            lambda: make_encoder(config),
            load_array(directory / TEXT_ARTICLE_IDS_FILE).astype(str).tolist(),
            export_id(directory),
        )

    @classmethod
    def from_parameters(cls, directory: Path, params: Mapping[str, str]) -> ArticleEncoderStep:
        return cls.load(directory)

    def encode(self, article_ids: npt.NDArray[Any], fields: npt.NDArray[Any]) -> dict[str, Any]:
        """The outputs (see the class docstring) for (B, 1) ids and (B, AF) fields."""
        batch = batch_size_of({s.T_ARTICLE_ID: article_ids, s.T_ARTICLE_FIELDS: fields})
        check_width(s.T_ARTICLE_ID, article_ids, 1)
        check_width(s.T_ARTICLE_FIELDS, fields, len(s.ARTICLE_FIELDS))
        ids = [_text(v) or "" for v in article_ids[:, 0]]
        columns: dict[str, list[Any]] = {s.ARTICLE_ID: ids}
        for j, name in enumerate(s.ARTICLE_FIELDS):
            columns[name] = [_text(v) for v in fields[:, j]]
        if any(not n for n in columns[s.NAME]):
            raise RequestError(f"{s.T_ARTICLE_FIELDS}: an article has no name")
        for name, value in NEW_ARTICLE_DENSE.items():
            columns[name] = [value] * batch
        frame = pl.DataFrame(
            columns,
            schema={
                **{n: pl.Utf8 for n in s.ARTICLE_COLUMNS},
                **{n: pl.Float64 for n in NEW_ARTICLE_DENSE},
            },
        )
        sparse = self.workflow.categorical_matrix(frame, s.ARTICLE_SPARSE)
        dense = self.workflow.dense(frame, s.ARTICLE_DENSE)
        with torch.inference_mode():
            item = self.tower(torch.from_numpy(sparse), torch.from_numpy(dense)).numpy()
        # The export's own path (models.text.embed_articles: product text and variant encoded
        # apart, word-count-weighted mean), so a copy of an exported article gets its vector;
        # row numbers as ids, since a batch may repeat an article.
        rows = pl.Series(s.ARTICLE_ID, [str(i) for i in range(batch)], dtype=pl.Utf8)
        text = embed_articles(
            frame.with_columns(rows), self.text_encoder, max(batch, 1), progress=False
        )[1]
        return {
            s.T_ITEM_EMBEDDING: item.astype(np.float32, copy=False),
            s.T_TEXT_EMBEDDING: text.astype(np.float32, copy=False),
            s.T_ARTICLE_SPARSE: sparse.astype(np.int64, copy=False),
            s.T_ARTICLE_DENSE: dense.astype(np.float32, copy=False),
            s.T_KNOWN: np.array([[a in self.known] for a in ids], dtype=bool).reshape(batch, 1),
            s.T_EXPORT_ID: np.full((batch, 1), self.export.encode(), dtype=object),
        }

    def __call__(self, tensors: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        return self.encode(tensors[s.T_ARTICLE_ID], tensors[s.T_ARTICLE_FIELDS])


def _text(value: object) -> str | None:
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    return text or None
