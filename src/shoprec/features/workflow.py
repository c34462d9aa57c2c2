"""Preprocessing workflow: fitted once on training data, applied identically offline and in Triton.

The role NVTabular's ``Workflow`` played in the Merlin reference design, without its pins:

* ``Categorify``: value -> contiguous int64 id. Id 0 = missing / padding, id 1 = out of
  vocabulary (unseen, or seen fewer than ``min_frequency`` times in the fitting data), ids 2..
  = vocabulary in descending frequency (ties by value, so fitting is deterministic).
* ``Normalize``: float -> ``(log1p(x) if log else x - mean) / std`` with mean/std from the
  fitting data; a missing value becomes 0 after normalisation (the mean) and, where
  ``missing_indicator`` is set, an extra 0/1 column ``<name>_missing`` records it.

The fitted state is plain JSON (``Workflow.save`` / ``Workflow.load``), so the Triton Python
backend loads it without pickles.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from shoprec.errors import ArtifactError

PAD_ID = 0
OOV_ID = 1
FIRST_ID = 2
FORMAT_VERSION = 1


def ragged_positions(
    lengths: npt.NDArray[np.integer[Any]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(row, column) of every element of left-aligned lists with these lengths, row after row.

    Args:
        lengths: (B,) non-negative list lengths.

    Returns:
        Two int64 arrays of ``lengths.sum()`` elements: row ``i`` repeated ``lengths[i]`` times,
        and ``0 .. lengths[i] - 1`` for each row.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(len(rows), dtype=np.int64) - np.repeat(starts, lengths)
    return rows, cols


@dataclass
class Categorify:
    """Categorical column -> contiguous ids (0 missing, 1 OOV, 2.. vocabulary)."""

    name: str
    min_frequency: int = 1
    vocab: dict[str, int] = field(default_factory=dict)

    def fit(self, values: pl.Series, weights: pl.Series | None = None) -> Categorify:
        """Fit on a Utf8 series (nulls ignored). Frequency = number of occurrences, or the sum
        of ``weights`` (integers, one per value: how many occurrences a row stands for)."""
        if self.min_frequency < 1:
            raise ValueError(f"{self.name}: min_frequency must be >= 1, got {self.min_frequency}")
        weight = pl.lit(1, dtype=pl.Int64) if weights is None else weights.cast(pl.Int64)
        counts = (
            pl.DataFrame({values.name: values.cast(pl.Utf8)})
            .with_columns(weight.alias("n"))
            .drop_nulls(values.name)
            .group_by(values.name)
            .agg(pl.col("n").sum())
            .filter(pl.col("n") >= self.min_frequency)
            .sort(["n", values.name], descending=[True, False])
        )
        keys = counts.get_column(values.name).to_list()
        self.vocab = {k: i + FIRST_ID for i, k in enumerate(keys)}
        return self

    @property
    def cardinality(self) -> int:
        """Embedding-table rows needed: vocabulary + padding + OOV."""
        return len(self.vocab) + FIRST_ID

    def transform(self, values: pl.Series | Sequence[str | None]) -> npt.NDArray[np.int64]:
        """Encode values. Returns int64 (N,). Nulls -> 0, unknown -> 1."""
        series = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.Utf8)
        series = series.cast(pl.Utf8)
        mapped = series.replace_strict(self.vocab, default=OOV_ID, return_dtype=pl.Int64)
        mapped = pl.select(pl.when(series.is_null()).then(PAD_ID).otherwise(mapped)).to_series()
        return mapped.to_numpy().astype(np.int64, copy=False)

    def transform_lists(self, lists: pl.Series, length: int) -> npt.NDArray[np.int64]:
        """Encode a list[str] column into a right-padded int64 (N, length) matrix (0 = pad)."""
        out = np.zeros((len(lists), length), dtype=np.int64)
        lengths = lists.list.len().fill_null(0).clip(upper_bound=length).to_numpy()
        flat = lists.list.head(length).explode()
        ids = self.transform(flat.drop_nulls())
        rows, cols = ragged_positions(lengths)
        out[rows, cols] = ids
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "min_frequency": self.min_frequency, "vocab": self.vocab}


@dataclass
class Normalize:
    """Numeric column -> standardised float32, optionally log1p first."""

    name: str
    log: bool = False
    missing_indicator: bool = False
    mean: float = 0.0
    std: float = 1.0

    def _prepare(self, values: pl.Series) -> npt.NDArray[np.float64]:
        x = values.cast(pl.Float64).to_numpy()
        if self.log:
            x = np.log1p(np.clip(x, 0.0, None))
        return x

    def fit(self, values: pl.Series) -> Normalize:
        x = self._prepare(values)
        x = x[~np.isnan(x)]
        self.mean = float(x.mean()) if x.size else 0.0
        std = float(x.std()) if x.size else 1.0
        self.std = std if std > 1e-8 else 1.0
        return self

    @property
    def output_names(self) -> list[str]:
        return [self.name, f"{self.name}_missing"] if self.missing_indicator else [self.name]

    def transform(self, values: pl.Series) -> npt.NDArray[np.float32]:
        """Returns float32 (N, 1) or (N, 2) with the missing indicator."""
        x = self._prepare(values)
        missing = np.isnan(x)
        z = np.where(missing, 0.0, (x - self.mean) / self.std).astype(np.float32)
        if self.missing_indicator:
            return np.stack([z, missing.astype(np.float32)], axis=1)
        return z[:, None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "log": self.log,
            "missing_indicator": self.missing_indicator,
            "mean": self.mean,
            "std": self.std,
        }


class Workflow:
    """A named set of fitted Categorify and Normalize ops.

    Example::

        wf = Workflow([Categorify("colour")], [Normalize("price", log=True)])
        wf.fit(train_frame)
        ids = wf.categorical("colour", frame.get_column("colour"))   # int64 (N,)
        dense = wf.dense(frame, ["price"])                           # float32 (N, 1)
    """

    def __init__(self, categorical: Iterable[Categorify] = (), numeric: Iterable[Normalize] = ()):
        self.categorical_ops = {op.name: op for op in categorical}
        self.numeric_ops = {op.name: op for op in numeric}

    def fit(self, frame: pl.DataFrame) -> Workflow:
        """Fit every op whose column is in ``frame``; a missing column raises ``KeyError``."""
        for name, cat in self.categorical_ops.items():
            cat.fit(self._column(frame, name))
        for name, num in self.numeric_ops.items():
            num.fit(self._column(frame, name))
        return self

    @staticmethod
    def _column(frame: pl.DataFrame, name: str) -> pl.Series:
        if name not in frame.columns:
            raise KeyError(f"column {name!r} not in frame (columns: {frame.columns})")
        return frame.get_column(name)

    def categorical(
        self, name: str, values: pl.Series | Sequence[str | None]
    ) -> npt.NDArray[np.int64]:
        """Encode one categorical column. Returns int64 (N,)."""
        return self.categorical_ops[name].transform(values)

    def categorical_matrix(
        self, frame: pl.DataFrame, names: Sequence[str]
    ) -> npt.NDArray[np.int64]:
        """Encode several categorical columns. Returns int64 (N, len(names))."""
        if not names:
            return np.zeros((frame.height, 0), dtype=np.int64)
        return np.stack([self.categorical(n, self._column(frame, n)) for n in names], axis=1)

    def dense(self, frame: pl.DataFrame, names: Sequence[str]) -> npt.NDArray[np.float32]:
        """Normalise numeric columns. Returns float32 (N, sum of output widths)."""
        if not names:
            return np.zeros((frame.height, 0), dtype=np.float32)
        return np.concatenate(
            [self.numeric_ops[n].transform(self._column(frame, n)) for n in names], axis=1
        )

    def dense_names(self, names: Sequence[str]) -> list[str]:
        return [out for n in names for out in self.numeric_ops[n].output_names]

    def dense_columns(self, names: Sequence[str], kept: Sequence[str]) -> list[int]:
        """Columns of ``dense(frame, names)`` that come from the features ``kept`` (their
        missing indicators included), in order.

        Raises:
            KeyError: a name of ``kept`` not in ``names``.
        """
        missing = sorted(set(kept) - set(names))
        if missing:
            raise KeyError(f"dense features {missing} are not among {list(names)}")
        widths = [len(self.numeric_ops[n].output_names) for n in names]
        starts = np.cumsum([0, *widths[:-1]])
        return [
            int(start) + i
            for n, start, width in zip(names, starts, widths, strict=True)
            if n in kept
            for i in range(width)
        ]

    def cardinalities(self, names: Sequence[str]) -> list[int]:
        return [self.categorical_ops[n].cardinality for n in names]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "categorical": [op.to_dict() for op in self.categorical_ops.values()],
            "numeric": [op.to_dict() for op in self.numeric_ops.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workflow:
        if data.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"workflow format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        return cls(
            [Categorify(**c) for c in data["categorical"]],
            [Normalize(**n) for n in data["numeric"]],
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> Workflow:
        if not path.exists():
            raise ArtifactError(f"workflow file not found: {path} (run `shoprec train` first)")
        return cls.from_dict(json.loads(path.read_text()))
