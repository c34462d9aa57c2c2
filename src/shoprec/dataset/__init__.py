"""Labelled dataset: chronological windows, positives, popularity-sampled negatives."""

from shoprec.dataset.build import (
    DatasetArtifacts,
    Window,
    build_dataset,
    load_dataset,
    make_windows,
    sample_negatives,
)

__all__ = [
    "DatasetArtifacts", "Window", "build_dataset", "load_dataset", "make_windows",
    "sample_negatives",
]  # fmt: skip
