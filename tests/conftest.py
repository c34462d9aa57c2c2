"""Shared fixtures."""

from __future__ import annotations

import pytest
from toydata import make_canonical

from shoprec.ingest.canonical import Canonical


@pytest.fixture
def toy() -> Canonical:
    return make_canonical()
