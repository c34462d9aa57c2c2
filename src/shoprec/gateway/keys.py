"""API keys: how they are made, stored (hashed) and recognised (in constant time).

A key is 32 random bytes, URL-safe base64 (43 characters, 256 bits: :func:`generate_key`).
The gateway never holds a key itself, only its SHA-256 (:func:`hash_key`): settings and the
keys file list ``{"name", "role", "sha256"}`` entries. A fast hash is the right one here: the
key has full entropy, so there is nothing for a slow password hash (bcrypt, argon2) to
stretch, and a request pays one SHA-256 (about 1 µs).

Roles: ``write`` keys may call every route, ``read`` keys the read routes only. Requests are
matched by hashing the presented key and comparing the digest against every stored digest
with :func:`hmac.compare_digest` (no early exit, so the time does not depend on which key or
how much of it matched).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, StringConstraints, TypeAdapter, ValidationError

from shoprec.errors import ShoprecError

KEY_BYTES: Final = 32
HEADER: Final = "X-API-Key"


class Role(StrEnum):
    """What a key may do."""

    READ = "read"  # recommendations, similar items, articles, docs, metrics
    WRITE = "write"  # everything, including the write API


class ApiKey(BaseModel):
    """A stored key: a name (for rate limits and metrics; never the key), its role, and the
    SHA-256 of the key (64 lowercase hex characters)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.-]+$")]
    role: Role
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


API_KEYS: Final = TypeAdapter(list[ApiKey])


class KeysFileError(ShoprecError, ValueError):
    """The API keys file is missing or not a JSON list of keys (the message names it)."""


def generate_key() -> str:
    """A new random key (256 bits, URL-safe base64 without padding)."""
    return secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    """SHA-256 of the UTF-8 key, lowercase hex: what settings and the keys file store."""
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys_file(path: Path) -> list[ApiKey]:
    """The keys of a JSON file ``[{"name": ..., "role": "read"|"write", "sha256": ...}]``.

    Raises:
        KeysFileError: the file is missing, not JSON, or an entry is invalid (named by index).
    """
    try:
        return API_KEYS.validate_json(Path(path).read_bytes())
    except OSError as exc:
        raise KeysFileError(f"API keys file {path}: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise KeysFileError(f"API keys file {path}: {where}: {first['msg']}") from None


def write_keys_file(path: Path, keys: list[ApiKey]) -> None:
    """Write ``keys`` as the JSON list :func:`read_keys_file` reads (file mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([key.model_dump(mode="json") for key in keys], indent=2) + "\n"
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(text)


class KeyRing:
    """The stored keys of one gateway; :meth:`identify` finds the one a request presents."""

    def __init__(self, keys: list[ApiKey]) -> None:
        names = [key.name for key in keys]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"API key names must be unique, repeated: {duplicates}")
        self._keys = [(bytes.fromhex(key.sha256), key) for key in keys]

    def __len__(self) -> int:
        return len(self._keys)

    def has(self, role: Role) -> bool:
        """Whether any key has ``role``."""
        return any(key.role is role for _, key in self._keys)

    def identify(self, presented: str) -> ApiKey | None:
        """The stored key whose hash equals the presented key's, or None.

        Compares against every stored digest with :func:`hmac.compare_digest`.
        """
        digest = hashlib.sha256(presented.encode()).digest()
        match: ApiKey | None = None
        for stored, key in self._keys:
            if hmac.compare_digest(stored, digest):
                match = key
        return match
