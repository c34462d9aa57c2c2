from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shoprec.errors import ArtifactError
from shoprec.features.workflow import (
    OOV_ID,
    PAD_ID,
    Categorify,
    Normalize,
    Workflow,
    ragged_positions,
)


def test_categorify_orders_by_frequency_and_maps_rare_and_unseen_to_oov() -> None:
    cat = Categorify("colour", min_frequency=2).fit(
        pl.Series("colour", ["red", "blue", "red", "green", "blue", "red", None])
    )
    assert cat.vocab == {"red": 2, "blue": 3}  # green seen once < min_frequency
    assert cat.cardinality == 4
    out = cat.transform(["red", "blue", "green", "purple", None])
    assert out.tolist() == [2, 3, OOV_ID, OOV_ID, PAD_ID]
    assert out.dtype == np.int64


def test_categorify_ties_are_broken_by_value_so_fitting_is_deterministic() -> None:
    cat = Categorify("x").fit(pl.Series("x", ["b", "a", "c", "a", "b"]))
    assert cat.vocab == {"a": 2, "b": 3, "c": 4}


def test_categorify_lists_are_right_padded_and_truncated() -> None:
    cat = Categorify("a").fit(pl.Series("a", ["x", "y", "x"]))
    lists = pl.Series("h", [["x", "y", "zz"], [], ["y"]], dtype=pl.List(pl.Utf8))
    assert cat.transform_lists(lists, 2).tolist() == [[2, 3], [0, 0], [3, 0]]


def test_categorify_rejects_min_frequency_below_one() -> None:
    with pytest.raises(ValueError, match="min_frequency must be >= 1, got 0"):
        Categorify("x", min_frequency=0).fit(pl.Series("x", ["a"]))


def test_normalize_log_with_missing_indicator() -> None:
    x = pl.Series("n", [0.0, math.e - 1, None])
    norm = Normalize("n", log=True, missing_indicator=True).fit(x)
    assert norm.mean == pytest.approx(0.5)
    assert norm.std == pytest.approx(0.5)
    out = norm.transform(x)
    np.testing.assert_allclose(out, [[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], atol=1e-6)
    assert norm.output_names == ["n", "n_missing"]


def test_normalize_constant_column_keeps_unit_std() -> None:
    norm = Normalize("c").fit(pl.Series("c", [3.0, 3.0]))
    assert norm.std == 1.0
    assert norm.transform(pl.Series("c", [4.0]))[0, 0] == pytest.approx(1.0)


def test_workflow_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    frame = pl.DataFrame({"c": ["a", "b", "a"], "n": [1.0, 2.0, None]})
    wf = Workflow([Categorify("c")], [Normalize("n", missing_indicator=True)]).fit(frame)
    wf.save(tmp_path / "wf.json")
    loaded = Workflow.load(tmp_path / "wf.json")
    np.testing.assert_array_equal(
        loaded.categorical_matrix(frame, ["c"]), wf.categorical_matrix(frame, ["c"])
    )
    np.testing.assert_array_equal(loaded.dense(frame, ["n"]), wf.dense(frame, ["n"]))
    assert loaded.dense_names(["n"]) == ["n", "n_missing"]


def test_workflow_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="column 'missing' not in frame"):
        Workflow([Categorify("missing")]).fit(pl.DataFrame({"c": ["a"]}))
    with pytest.raises(ArtifactError, match="workflow file not found"):
        Workflow.load(tmp_path / "nope.json")
    (tmp_path / "old.json").write_text('{"format_version": 0}')
    with pytest.raises(ArtifactError, match="format_version 0, expected 1"):
        Workflow.load(tmp_path / "old.json")


def test_ragged_positions_enumerate_each_list_left_aligned() -> None:
    rows, cols = ragged_positions(np.array([3, 0, 2, 1]))
    assert rows.tolist() == [0, 0, 0, 2, 2, 3]
    assert cols.tolist() == [0, 1, 2, 0, 1, 0]
    lengths = np.random.default_rng(3).integers(0, 9, size=500)
    rows, cols = ragged_positions(lengths)
    assert rows.tolist() == np.repeat(np.arange(500), lengths).tolist()
    assert cols.tolist() == [c for n in lengths for c in range(n)]
    empty_rows, empty_cols = ragged_positions(np.array([], dtype=np.int64))
    assert empty_rows.size == empty_cols.size == 0
