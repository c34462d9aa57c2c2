"""Versions of a feature repo: every materialization is written whole, then published at once.

A dataset's feature repo (``models/<name>/feature_repo/``) holds one complete Feast repo per
materialization and a pointer to the one being served::

    CURRENT                 the served version's name, replaced atomically (os.replace)
    versions/<version>/     feature_store.yaml, definitions.py, data/ (tables, manifest,
                            registry.db, SQLite online_store.db); Feast project
                            ``<base project>_<version>``, so its rows never mix with another
                            version's in a shared Redis

A materialization writes a new version next to the served one, marks it complete in the store
(the sentinel of :mod:`shoprec.featurestore.store`, written last), and only then moves
``CURRENT``; readers (:class:`~shoprec.featurestore.store.OnlineFeatures`) switch when they
see the pointer move. There is no moment when readers see a half-written or torn-down store
(issue 13: re-materializing under load served 3 s of silent popular lists).

A folder that is a Feast repo itself (``feature_store.yaml`` at its top, no ``CURRENT``) is
read as one unversioned repo.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from shoprec.errors import ArtifactError

CURRENT_FILE: Final = "CURRENT"
VERSIONS_DIR: Final = "versions"
FEATURE_STORE_YAML: Final = "feature_store.yaml"
_VERSION: Final = re.compile(r"v\d{8}t\d{12}_[0-9a-f]{6}")


def new_version(now: datetime | None = None) -> str:
    """A fresh version name, ``v<UTC yyyymmddThhmmssffffff>_<6 hex>`` in lower case: sorts by
    time (microseconds), valid inside a Feast project name."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dt%H%M%S%f")
    return f"v{stamp}_{secrets.token_hex(3)}"


def version_dir(repo: Path, version: str) -> Path:
    """The folder of ``version`` in the feature repo ``repo``.

    Raises:
        ValueError: ``version`` is not a version name (no path tricks from a pointer file).
    """
    if _VERSION.fullmatch(version) is None:
        raise ValueError(f"not a feature repo version name: {version!r}")
    return repo / VERSIONS_DIR / version


def current_version(repo: Path) -> str | None:
    """The version ``repo``'s ``CURRENT`` names, None when there is no pointer."""
    try:
        return (repo / CURRENT_FILE).read_text().strip()
    except FileNotFoundError:
        return None


def resolve(repo: Path) -> tuple[Path, str | None]:
    """The Feast repo folder to read for ``repo`` and its version name: the current version's
    folder, or ``repo`` itself (version None) for an unversioned Feast repo.

    Raises:
        ArtifactError: neither a pointer nor a ``feature_store.yaml`` (never materialized), or
            the pointer names a missing version.
    """
    version = current_version(repo)
    if version is None:
        if (repo / FEATURE_STORE_YAML).is_file():
            return repo, None
        raise ArtifactError(f"{repo}: no materialized feature store (run shoprec materialize)")
    folder = version_dir(repo, version)
    if not (folder / FEATURE_STORE_YAML).is_file():
        raise ArtifactError(f"{repo}: {CURRENT_FILE} names {version}, which is not complete")
    return folder, version


def publish(repo: Path, version: str) -> None:
    """Make ``version`` the served one: write ``CURRENT`` beside it and rename it into place
    (atomic on POSIX), fsyncing the file and the folder so the switch survives a crash."""
    version_dir(repo, version)  # validates the name
    tmp = repo / f".{CURRENT_FILE}.{secrets.token_hex(4)}"
    with tmp.open("w") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, repo / CURRENT_FILE)
    fd = os.open(repo, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_versions(repo: Path) -> list[str]:
    """Names of the version folders under ``repo``, oldest first."""
    root = repo / VERSIONS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir())


def current_dir(repo: Path) -> Path:
    """The served Feast repo folder of ``repo`` (see :func:`resolve`)."""
    return resolve(repo)[0]
