"""Ingest: raw sources (H&M Kaggle files, Complete Journey, synthetic) -> canonical tables."""

from shoprec.data.ingest.canonical import (
    Canonical,
    IngestReport,
    read_canonical,
    read_report,
    validate_canonical,
    write_canonical,
)
from shoprec.data.ingest.completejourney import age_range_midpoint, ingest_completejourney
from shoprec.data.ingest.hm import ingest_hm, read_hm
from shoprec.data.ingest.synthetic import SCALES, SyntheticScale, generate_synthetic

__all__ = [
    "SCALES",
    "Canonical",
    "IngestReport",
    "SyntheticScale",
    "age_range_midpoint",
    "generate_synthetic",
    "ingest_completejourney",
    "ingest_hm",
    "read_canonical",
    "read_hm",
    "read_report",
    "validate_canonical",
    "write_canonical",
]
