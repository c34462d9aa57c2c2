"""Shared fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from shoprec.data.ingest.canonical import Canonical
from toydata import make_canonical


@pytest.fixture
def toy() -> Canonical:
    return make_canonical()


# ---- Playwright (pytest-playwright) on Debian's chromium ----------------------------------
# `playwright install` cannot download its own browser here; `make test` installs Debian's
# chromium with apt-get and the browser tests drive it (they skip where it is missing).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium not installed (make test installs it with apt-get where it can)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_FLAGS}
