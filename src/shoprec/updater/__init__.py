"""The near-real-time feature updater (``shoprec updater``): event log -> online store.

See :mod:`shoprec.updater.process`.
"""

from shoprec.updater.process import FeatureUpdater, UpdaterConfig

__all__ = ["FeatureUpdater", "UpdaterConfig"]
