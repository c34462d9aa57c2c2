"""Article text embeddings for item similarity, in a second process beside ``shoprec train``.

``shoprec train`` trains the Two-Tower with one torch thread (``two_tower.num_threads``) and
fits everything else one step after another; the text embeddings need none of its results
(the catalog's texts only). :class:`TextEmbeddingJob` therefore encodes them in a spawned
process with one torch thread from the start of ``train``, on the core the Two-Tower leaves
idle (``text.concurrent``; off: encoded after the models with every thread, as before). Once
``train`` waits for it (:meth:`TextEmbeddingJob.result`), the process uses every CPU for its
remaining batches: the caller's core is idle then. On an H&M-size catalog (35 k distinct
texts, all-MiniLM-L6-v2) the text step took 8 minutes of a 38-minute ``train``.

The process gets the canonical articles table only, writes its files into ``train``'s staging
folder (published with the models; a failed ``train`` leaves the folder to the next run, which
starts it afresh) and returns
what it encoded, its wall time and its peak resident memory. A failure in it (an exception,
or a kill by the OOM killer) is raised by :meth:`TextEmbeddingJob.result`; a failure of
``train`` stops it (:meth:`TextEmbeddingJob.close`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import polars as pl

from shoprec import artifacts as A
from shoprec import schema as s
from shoprec.config import PipelineConfig
from shoprec.data.ingest.canonical import read_canonical_table
from shoprec.errors import ShoprecError
from shoprec.inference.index import build_index, save_index
from shoprec.models.modules import usable_cpus
from shoprec.models.text import TextCounts, embed_articles, make_encoder
from shoprec.pipeline.memory import high_water_mib


class TextJobError(ShoprecError):
    """The text-embedding process died without a result (killed, e.g. by the OOM killer)."""


@dataclass(frozen=True)
class TextEmbeddings:
    """What :func:`embed_catalog` wrote.

    Attributes:
        counts: articles, distinct product texts and variants encoded.
        dim: D of the embeddings.
        seconds: wall time of :func:`embed_catalog` (encoding, indexing, writing; not the
            process's start, its imports and its reading of the catalog), s.
        peak_rss_mib: peak resident memory of the process that ran it, MiB.
        threads: torch's thread count when it ended.
    """

    counts: TextCounts
    dim: int
    seconds: float
    peak_rss_mib: float
    threads: int


def embed_catalog(
    catalog: pl.DataFrame,
    config: PipelineConfig,
    out: Path,
    num_threads: int | None = None,
    progress: bool = False,
    before_batch: Callable[[], None] | None = None,
) -> TextEmbeddings:
    """Embed every catalog article's text (:func:`shoprec.models.text.embed_articles`) and write
    ``A.TEXT_EMBEDDINGS_FILE`` (float32 (N, D)), ``A.TEXT_INDEX_FILE`` (``config.index``) and
    ``A.TEXT_IDS_FILE`` into ``out``.

    Args:
        catalog: the canonical articles table (every article: text similarity is what serves
            articles that never sold, cold items).
        config: ``text`` (encoder, batch size) and ``index``.
        out: an existing folder.
        num_threads: torch threads for this process (``torch.set_num_threads``, left set);
            ``None`` keeps torch's setting.
        progress: show a progress bar over the batches.
        before_batch: called before each batch of texts (:func:`embed_articles`).

    Raises:
        ArtifactError: the encoder's weights are missing.
        ValueError: ``catalog`` lacks ``ARTICLE_ID`` or a text column, or repeats an id.
    """
    import torch

    t = time.perf_counter()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    encoder = make_encoder(config.text)
    ids, vectors, counts = embed_articles(
        catalog, encoder, config.text.batch_size, progress, before_batch
    )
    np.save(out / A.TEXT_EMBEDDINGS_FILE, vectors)
    save_index(build_index(vectors, config.index), out / A.TEXT_INDEX_FILE)
    A.write_ids(np.asarray(ids, dtype=object), out / A.TEXT_IDS_FILE)
    return TextEmbeddings(
        counts,
        int(vectors.shape[1]),
        round(time.perf_counter() - t, 2),
        round(high_water_mib()),
        torch.get_num_threads(),
    )


def _child(
    conn: Connection,
    waited: ctypes.c_byte,
    parent: int,
    canonical_dir: Path,
    config: PipelineConfig,
    out: Path,
) -> None:
    """Process entry point: send ``(True, TextEmbeddings)`` or ``(False, exception, its
    traceback)``. One torch thread until ``waited`` is non-zero (the parent waits), then every
    usable CPU; exits between batches when the process ``parent`` is gone (its files would land
    in a staging folder a later ``train`` may have made again)."""
    import torch

    cpus = usable_cpus()

    def before_batch() -> None:
        if os.getppid() != parent:
            os._exit(1)
        if waited.value and torch.get_num_threads() < cpus:
            torch.set_num_threads(cpus)

    try:
        catalog = read_canonical_table(canonical_dir, s.ARTICLES)
        result = embed_catalog(catalog, config, out, 1, before_batch=before_batch)
        message: tuple[Any, ...] = (True, result)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
        message = (False, exc, traceback.format_exc())
    try:
        conn.send(message)
    except Exception:  # noqa: BLE001 - an exception that cannot be pickled: its text then
        conn.send((False, RuntimeError(f"{type(message[1]).__name__}: {message[1]}"), message[2]))
    conn.close()


class TextEmbeddingJob:
    """:func:`embed_catalog` in a spawned process, started at once: one torch thread until
    :meth:`result` is called, then every usable CPU.

    Use as a context manager (``with TextEmbeddingJob(...) as job: ... job.result()``): leaving
    the block stops the process if it still runs.

    Args:
        canonical_dir: the canonical tables; the process reads ``articles.parquet`` only.
        config / out: as :func:`embed_catalog`.
    """

    def __init__(self, canonical_dir: Path, config: PipelineConfig, out: Path) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
        self._conn, child_conn = context.Pipe(duplex=False)
        # lock-free: a child killed while reading it cannot leave a lock held for the parent
        self._waited = context.RawValue("b", 0)
        self._result: TextEmbeddings | None = None
        self._process = context.Process(
            target=_child,
            args=(child_conn, self._waited, os.getpid(), canonical_dir, config, out),
            name="shoprec-text-embeddings",
            daemon=True,
        )
        self._process.start()
        child_conn.close()  # the child holds it: its exit is the parent's end of file

    def result(self) -> TextEmbeddings:
        """Wait for the process (which then uses every CPU for its remaining batches); returns
        what it wrote (the same object on every later call).

        Raises:
            TextJobError: the process exited without a result (its exit code says how), or its
                result could not be read.
            Exception: whatever :func:`embed_catalog` raised in it, re-raised here with the
                process's traceback as a note.
        """
        if self._result is not None:
            return self._result
        self._waited.value = 1
        try:
            message = self._conn.recv()
        except EOFError:
            self._process.join()
            raise TextJobError(
                "the text-embedding process exited without a result (exit code "
                f"{self._process.exitcode}; -9 is a kill, e.g. by the OOM killer): set "
                "text.concurrent to false to encode the texts in the train process"
            ) from None
        except Exception as exc:  # noqa: BLE001 - e.g. an exception that cannot be rebuilt here
            self._process.join()
            raise TextJobError(
                f"the text-embedding process's result cannot be read: {exc}"
            ) from exc
        self._process.join()
        if not message[0]:
            error: BaseException = message[1]
            error.add_note(f"in the text-embedding process:\n{message[2]}")
            raise error
        self._result = message[1]
        return message[1]

    def close(self) -> None:
        """Stop the process if it still runs and release the pipe."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._conn.close()

    def __enter__(self) -> TextEmbeddingJob:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
