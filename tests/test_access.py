"""API keys (generation, hashing, the keys file, matching), the write API's settings, and
``shoprec api-key``."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from shoprec.cli import app
from shoprec.gateway.keys import (
    ApiKey,
    KeyRing,
    KeysFileError,
    Role,
    generate_key,
    hash_key,
    read_keys_file,
)
from shoprec.gateway.settings import Settings


def test_keys_are_random_256_bit_and_stored_as_sha256() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) == 43 for k in keys)
    assert hash_key("abc") == hashlib.sha256(b"abc").hexdigest()
    assert (
        hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )  # FIPS 180-2 test vector


def test_key_ring_identifies_only_exact_keys() -> None:
    write, read = generate_key(), generate_key()
    ring = KeyRing(
        [
            ApiKey(name="shop", role=Role.WRITE, sha256=hash_key(write)),
            ApiKey(name="web", role=Role.READ, sha256=hash_key(read)),
        ]
    )
    assert ring.identify(write) == ApiKey(name="shop", role=Role.WRITE, sha256=hash_key(write))
    assert ring.identify(read) is not None and ring.identify(read).name == "web"  # type: ignore[union-attr]
    for wrong in ("", write[:-1], write + "x", write.upper(), hash_key(write)):
        assert ring.identify(wrong) is None
    assert ring.has(Role.READ) and len(ring) == 2
    with pytest.raises(ValueError, match=r"API key names must be unique, repeated: \['a'\]"):
        KeyRing([ApiKey(name="a", role=Role.READ, sha256="0" * 64)] * 2)


def test_keys_file_errors_name_the_file_and_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    with pytest.raises(KeysFileError, match=f"API keys file {path}: .*No such file"):
        read_keys_file(path)
    path.write_text(
        json.dumps([{"name": "ok", "role": "write", "sha256": "0" * 64}, {"name": "x"}])
    )
    with pytest.raises(KeysFileError, match=f"API keys file {path}: 1.role: Field required"):
        read_keys_file(path)
    path.write_text(json.dumps([{"name": "k", "role": "admin", "sha256": "0" * 64}]))
    with pytest.raises(KeysFileError, match="0.role: Input should be 'read' or 'write'"):
        read_keys_file(path)
    path.write_text(json.dumps([{"name": "k", "role": "read", "sha256": "plaintext-key"}]))
    with pytest.raises(KeysFileError, match="0.sha256: String should match pattern"):
        read_keys_file(path)


def test_api_key_command_adds_hashed_keys_and_prints_each_once(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "api_keys.json"
    runner = CliRunner()
    first = runner.invoke(app, ["api-key", "--name", "storefront", "--keys-file", str(path)])
    assert first.exit_code == 0, first.output
    key = first.output.strip().splitlines()[-1]
    second = runner.invoke(
        app, ["api-key", "--name", "web", "--role", "read", "--keys-file", str(path)]
    )
    assert second.exit_code == 0
    stored = read_keys_file(path)
    assert [(k.name, k.role) for k in stored] == [("storefront", Role.WRITE), ("web", Role.READ)]
    assert stored[0].sha256 == hash_key(key)
    assert key not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = runner.invoke(app, ["api-key", "--name", "web", "--keys-file", str(path)])
    assert again.exit_code == 2 and "already has a key named 'web'" in again.output
    bad = runner.invoke(
        app, ["api-key", "--name", "x", "--role", "admin", "--keys-file", str(path)]
    )
    assert bad.exit_code == 2 and "'read' or 'write'" in bad.output


def test_write_settings_travel_as_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"SHOPREC_{name.upper()}", raising=False)
    settings = Settings(
        api_keys=[ApiKey(name="s", role=Role.WRITE, sha256="a" * 64)],
        cors_origins=["https://shop.example"],
        require_read_key=True,
        event_log="redis://:pw@redis-log:6379/0",
        rate_limit_events="5000/second",
    )
    env = settings.environment()
    assert json.loads(env["SHOPREC_API_KEYS"]) == [
        {"name": "s", "role": "write", "sha256": "a" * 64}
    ]
    assert env["SHOPREC_REQUIRE_READ_KEY"] == "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings
    default = Settings(feature_repo=Path("models/cj/feature_repo"), event_log=None)
    assert default.event_log_url() == "models/cj/events.db"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rate_limit_reads": "lots"}, "not a rate limit like '100/second': 'lots'"),
        ({"rate_limit_events": "999/second"}, "admits fewer events than one batch of 1000"),
        ({"event_log": "kafka://x"}, "expected sqlite:///path"),
        ({"max_body_bytes": 10}, "greater than or equal to 1024"),
    ],
)
def test_invalid_write_settings_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]
