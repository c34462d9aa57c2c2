"""Online feature store: export the serving snapshot, materialize it with Feast, read it back.

The declarations (entities, sources, feature views, feature services) live in the project's
``feature_repo/definitions.py``; this package writes the tables they read
(:mod:`~shoprec.featurestore.online`) and runs Feast (:mod:`~shoprec.featurestore.store`).
"""

from shoprec.featurestore.online import OnlineTables, export_online_tables
from shoprec.featurestore.store import (
    ArticleDisplay,
    MaterializeReport,
    OnlineFeatures,
    OnlineStoreError,
    OnlineStoreKind,
    materialize,
)

__all__ = [
    "ArticleDisplay",
    "MaterializeReport",
    "OnlineFeatures",
    "OnlineStoreError",
    "OnlineStoreKind",
    "OnlineTables",
    "export_online_tables",
    "materialize",
]
