"""Online feature store: the tables Feast reads, loading them into Feast, reading them back.

The declarations (entities, sources, feature views, feature services) live in the project's
``feature_repo/definitions.py``; :mod:`~shoprec.featurestore.tables` describes the tables
they read, :mod:`~shoprec.featurestore.store` runs Feast (apply, materialize, online reads).
Exporting the tables from a trained dataset is offline work:
:mod:`shoprec.export.online_tables`.
"""

from shoprec.featurestore.store import (
    MaterializeReport,
    OnlineFeatures,
    OnlineStoreError,
    OnlineStoreKind,
)
from shoprec.featurestore.tables import ArticleDisplay, OnlineTables

__all__ = [
    "ArticleDisplay",
    "MaterializeReport",
    "OnlineFeatures",
    "OnlineStoreError",
    "OnlineStoreKind",
    "OnlineTables",
]
