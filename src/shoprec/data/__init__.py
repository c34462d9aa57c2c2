"""Offline: raw data in (``ingest``: H&M CSVs, Complete Journey, synthetic) and the labelled
dataset out (``dataset``: chronological windows, features as of each window, negatives)."""
