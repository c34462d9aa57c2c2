"""New articles into the article delta: the updater's part of issue 11's fourth point.

An article put through the write API (``article_put`` in the event log) that the served model
does not know is encoded by the served encoders (the Triton ``article_encoder`` model: item
tower with the trained workflow, the pipeline's text encoder) and written to the article delta
(:mod:`shoprec.serving.article_delta`), which the Triton ``retrieval``, ``ranking`` and
``similar_items`` steps merge at query time. A deleted article keeps its slot, marked deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from shoprec import schema as s
from shoprec.events import ArticleFields
from shoprec.serving.article_delta import ArticleDelta, DeltaRow

log = logging.getLogger(__name__)


class ArticleEncoder(Protocol):
    """The served article encoder: ids (B,) and fields -> the ``article_encoder`` outputs
    (``schema.T_ITEM_EMBEDDING`` ... ``schema.T_EXPORT_ID``), each (B, ...)."""

    def encode(
        self, article_ids: Sequence[str], fields: Sequence[ArticleFields]
    ) -> dict[str, npt.NDArray[Any]]: ...

    def close(self) -> None: ...


def fields_tensor(fields: Sequence[ArticleFields]) -> npt.NDArray[np.object_]:
    """bytes (B, AF) ``schema.ARTICLE_FIELDS`` of each article, b"" for null."""
    rows = [[(getattr(f, name) or "").encode() for name in s.ARTICLE_FIELDS] for f in fields]
    return np.array(rows, dtype=object).reshape(len(fields), len(s.ARTICLE_FIELDS))


class TritonArticleEncoder:
    """:class:`ArticleEncoder` over Triton gRPC (``tritonclient.grpc``, blocking).

    Args:
        url: Triton's gRPC address ``host:port``.
        timeout_s: per call.
    """

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url)
        self.timeout_s = timeout_s

    def encode(
        self, article_ids: Sequence[str], fields: Sequence[ArticleFields]
    ) -> dict[str, npt.NDArray[Any]]:
        ids = np.array([[a.encode()] for a in article_ids], dtype=object)
        inputs = []
        for name, array in ((s.T_ARTICLE_ID, ids), (s.T_ARTICLE_FIELDS, fields_tensor(fields))):
            tensor = self._grpc.InferInput(name, list(array.shape), s.TENSORS[name].triton)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [self._grpc.InferRequestedOutput(n) for n in s.ARTICLE_ENCODER_OUTPUTS]
        result = self._client.infer(
            s.TRITON_ARTICLE_ENCODER, inputs, outputs=outputs, client_timeout=self.timeout_s
        )
        return {o.name(): result.as_numpy(o.name()) for o in outputs}

    def close(self) -> None:
        self._client.close()


class ArticleIndexer:
    """Keeps the article delta equal to the API's articles the served model does not know.

    ``put``/``delete`` record what the log said; :meth:`flush` encodes the pending articles
    in batches and writes them (an exception leaves them pending: the updater retries).

    Args:
        encoder: the served encoder.
        delta: the delta store.
        batch: articles per encoder call.
        probe_every_s: while idle, how often :meth:`idle` asks the encoder which export it
            serves (one article, one call), so that API articles are encoded into a newly
            served export without waiting for the next article put.
    """

    def __init__(
        self,
        encoder: ArticleEncoder,
        delta: ArticleDelta,
        batch: int = 64,
        probe_every_s: float = 10.0,
    ) -> None:
        self.encoder = encoder
        self.delta = delta
        self.batch = batch
        self.probe_every_s = probe_every_s
        self._probed_at = time.monotonic()
        self.fields: dict[str, ArticleFields] = {}
        self.pending: set[str] = set()
        self.rows: dict[str, tuple[str, DeltaRow]] = {}  # written: id -> (export id, row)
        self.export_id: str | None = None

    def put(self, article_id: str, fields: ArticleFields) -> None:
        self.fields[article_id] = fields
        self.pending.add(article_id)

    def delete(self, article_id: str) -> None:
        self.fields.pop(article_id, None)
        self.pending.add(article_id)

    def flush(self) -> int:
        """Encode and write every pending article; rows written."""
        written = 0
        while self.pending:
            chunk = sorted(self.pending)[: self.batch]
            written += self._write(chunk)
            self.pending.difference_update(chunk)
        return written

    def idle(self) -> int:
        """Called when the log has nothing new: flush what is pending (replayed at start, or a
        failed flush), else every ``probe_every_s`` encode one API article to learn the served
        export (a re-export marks every API article pending, written by the next call).
        Rows written; an encoder error propagates (the updater logs it and retries)."""
        if self.pending:
            return self.flush()
        if not self.fields or time.monotonic() - self._probed_at < self.probe_every_s:
            return 0
        self._probed_at = time.monotonic()
        probe = min(self.fields)
        out = self.encoder.encode([probe], [self.fields[probe]])
        self._follow(_text(out[s.T_EXPORT_ID][0, 0]))
        return self.flush()

    def _write(self, article_ids: list[str]) -> int:
        live = [a for a in article_ids if a in self.fields]
        by_export: dict[str, list[DeltaRow]] = {}
        if live:
            out = self.encoder.encode(live, [self.fields[a] for a in live])
            for i, article_id in enumerate(live):
                export = _text(out[s.T_EXPORT_ID][i, 0])
                self._follow(export)
                if bool(out[s.T_KNOWN][i, 0]):
                    continue
                row = DeltaRow(
                    article_id,
                    out[s.T_ITEM_EMBEDDING][i],
                    out[s.T_TEXT_EMBEDDING][i],
                    out[s.T_ARTICLE_SPARSE][i],
                    out[s.T_ARTICLE_DENSE][i],
                )
                by_export.setdefault(export, []).append(row)
        for article_id in article_ids:
            if article_id not in self.fields and article_id in self.rows:
                export, row = self.rows[article_id]
                by_export.setdefault(export, []).append(replace(row, deleted=True))
        for export, rows in by_export.items():
            self.delta.put(export, rows)
            for row in rows:
                self.rows[row.article_id] = (export, row)
        return sum(len(r) for r in by_export.values())

    def _follow(self, export: str) -> None:
        """A new export is served: every API article is encoded again into its scope."""
        if self.export_id is not None and export != self.export_id:
            log.info("article encoder moved to export %s: re-encoding API articles", export)
            self.pending.update(self.fields)
        self.export_id = export


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
