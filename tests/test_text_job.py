"""pipeline.text_job: article text embeddings in a second process beside ``shoprec train``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from shoprec import artifacts as A
from shoprec.config import PipelineConfig
from shoprec.data.ingest.canonical import read_canonical_table, write_canonical
from shoprec.errors import ArtifactError
from shoprec.models.modules import usable_cpus
from shoprec.pipeline.text_job import TextEmbeddingJob, TextJobError, embed_catalog
from toydata import make_canonical

CONFIG = PipelineConfig()


@pytest.fixture(scope="module")
def canonical_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text_job")
    write_canonical(make_canonical(), root / "canonical", {"source": "toy"})
    return root / "canonical"


def test_the_second_process_writes_what_the_train_process_would(
    canonical_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "here").mkdir()
    with TextEmbeddingJob(canonical_dir, CONFIG, tmp_path / "job") as job:
        done = job.result()
        assert job.result() is done  # asked again: the same result, no second wait
    here = embed_catalog(read_canonical_table(canonical_dir, "articles"), CONFIG, tmp_path / "here")
    assert done.counts == here.counts and done.counts.articles == 8
    assert done.dim == here.dim == 384
    assert done.seconds > 0 and done.peak_rss_mib > 100  # torch and the encoder were loaded
    # waited for at once: its batches ran on every usable CPU, not the one thread it started with
    assert done.threads == usable_cpus()
    for name in (A.TEXT_EMBEDDINGS_FILE, A.TEXT_INDEX_FILE, A.TEXT_IDS_FILE):
        assert (tmp_path / "job" / name).is_file(), name
    assert (tmp_path / "job" / A.TEXT_IDS_FILE).read_bytes() == (
        tmp_path / "here" / A.TEXT_IDS_FILE
    ).read_bytes()
    # one torch thread there, torch's default here: the same vectors up to float rounding
    np.testing.assert_allclose(
        np.load(tmp_path / "job" / A.TEXT_EMBEDDINGS_FILE),
        np.load(tmp_path / "here" / A.TEXT_EMBEDDINGS_FILE),
        atol=1e-5,
    )


def test_an_error_in_the_second_process_is_raised_in_the_caller(tmp_path: Path) -> None:
    with (
        TextEmbeddingJob(tmp_path / "nowhere", CONFIG, tmp_path) as job,
        pytest.raises(
            ArtifactError, match=r"canonical table 'articles' missing: .*nowhere"
        ) as raised,
    ):
        job.result()
    # with the process's own traceback, which pickling the exception drops
    (note,) = raised.value.__notes__
    assert note.startswith("in the text-embedding process:") and "read_canonical_table" in note


def test_a_killed_process_is_an_error_naming_the_exit_code(
    canonical_dir: Path, tmp_path: Path
) -> None:
    with TextEmbeddingJob(canonical_dir, CONFIG, tmp_path) as job:
        pid = job._process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(TextJobError, match=r"exit code -9; -9 is a kill.*text.concurrent"):
            job.result()


def test_leaving_the_block_stops_a_running_process(canonical_dir: Path, tmp_path: Path) -> None:
    with TextEmbeddingJob(canonical_dir, CONFIG, tmp_path) as job:
        process = job._process
        assert process.is_alive()
    assert not process.is_alive() and process.exitcode == -signal.SIGTERM
    time.sleep(0.5)
    assert not (tmp_path / A.TEXT_IDS_FILE).exists()  # stopped before it wrote
