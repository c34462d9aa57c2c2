"""Shared fixtures."""

from __future__ import annotations

import pytest

from shoprec.data.ingest.canonical import Canonical
from toydata import make_canonical


@pytest.fixture
def toy() -> Canonical:
    return make_canonical()
