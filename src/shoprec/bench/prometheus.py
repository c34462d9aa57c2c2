"""Prometheus text exposition (format 0.0.4): parsing, and arithmetic on cumulative samples.

A sample is keyed by its name exactly as written and its sorted label pairs
(:data:`SampleKey`); values are floats in the metric's own unit (the name says which:
``_seconds``, ``_us``, counts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted (label, value) pairs


_SAMPLE_LINE: Final = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?$"
)
_LABEL_PAIR: Final = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE: Final = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_prometheus(text: str) -> dict[SampleKey, float]:
    """Samples of a Prometheus text exposition (format 0.0.4), keyed by sample name exactly
    as written (histogram ``_bucket`` / ``_sum`` / ``_count``, counter ``_total`` or not) and
    the sorted label pairs (values unescaped). Comments and blank lines are skipped.

    Raises:
        ValueError: a line that is not a sample (names the line number and the line).
    """
    samples: dict[SampleKey, float] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_LINE.match(line)
        try:
            if match is None:
                raise ValueError
            labels: list[tuple[str, str]] = []
            rest = match["labels"] or ""
            while rest.strip():
                pair = _LABEL_PAIR.match(rest)
                if pair is None:
                    raise ValueError
                value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m[0]], pair[2])
                labels.append((pair[1], value))
                rest = rest[pair.end() :]
            samples[(match["name"], tuple(sorted(labels)))] = float(match["value"])
        except ValueError:
            raise ValueError(f"line {number} is not a Prometheus sample: {raw!r}") from None
    return samples


def metric_delta(
    before: Mapping[SampleKey, float], after: Mapping[SampleKey, float]
) -> dict[SampleKey, float]:
    """``after - before`` per sample of cumulative metrics; a sample absent before counts
    from 0 (labelled children appear on first use). Samples only in ``before`` are dropped."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def metric_sum(samples: Mapping[SampleKey, float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (sample, pairs), value in samples.items()
        if sample == name and all(dict(pairs).get(k) == v for k, v in labels.items())
    )


def label_values(samples: Mapping[SampleKey, float], name: str, label: str) -> list[str]:
    """Sorted distinct values of ``label`` among the samples called ``name``."""
    return sorted(
        {
            dict(pairs)[label]
            for (sample, pairs) in samples
            if sample == name and label in dict(pairs)
        }
    )
