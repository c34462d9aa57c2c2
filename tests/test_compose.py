"""docker-compose files, validated without a Docker engine by `docker-compose config`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shoprec.gateway.settings import Settings
from shoprec.storefront.settings import StorefrontSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    COMPOSE is None,
    reason="docker-compose not installed (make test installs it with apt-get where it can)",
)


PASSWORD = "test-password"
LOG_PASSWORD = "test-log-password"
SECRETS = ("REDIS_PASSWORD", "REDIS_LOG_PASSWORD", "TRITON_ADMIN_KEY")


def _config(
    *files: Path, password: str | None = PASSWORD, log_password: str | None = LOG_PASSWORD
) -> subprocess.CompletedProcess[str]:
    args = [str(COMPOSE)]
    for f in files:
        args += ["-f", str(f)]
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    if password is not None:
        env["REDIS_PASSWORD"] = password
    if log_password is not None:
        env["REDIS_LOG_PASSWORD"] = log_password
    return subprocess.run(
        [*args, "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env=env,
    )


def test_compose_file_is_valid_and_wires_the_stack() -> None:
    result = _config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {
        "redis",
        "redis-log",
        "triton",
        "materialize",
        "gateway",
        "updater",
        "storefront",
        "perf",
    }
    triton = services["triton"]
    assert triton["build"]["dockerfile"] == "Dockerfile.triton"
    assert triton["shm_size"] in ("2gb", 2147483648)
    assert triton["volumes"] == [f"{ROOT / 'triton_repo'}:/models:ro"]
    assert services["perf"]["profiles"] == ["perf"]
    assert "perf_analyzer" in services["perf"]["command"]
    gateway_env = services["gateway"]["environment"]
    fields = {f"SHOPREC_{name.upper()}" for name in Settings.model_fields}
    assert set(gateway_env) <= fields, set(gateway_env) - fields
    assert gateway_env["SHOPREC_TRITON_URL"] == "triton:8001"
    assert gateway_env["SHOPREC_REDIS_URL"] == f"redis:6379,password={PASSWORD}"
    # the write API: its log on its own Redis, hashed keys from a secret, reads behind a key
    assert gateway_env["SHOPREC_EVENT_LOG"] == f"redis://:{LOG_PASSWORD}@redis-log:6379/0"
    assert gateway_env["SHOPREC_API_KEYS_FILE"] == "/run/secrets/shoprec_api_keys"
    assert gateway_env["SHOPREC_REQUIRE_READ_KEY"] == "true"
    assert services["gateway"]["depends_on"]["redis-log"] == {"condition": "service_healthy"}
    # the near-real-time updater reads the same log and writes the same online store
    updater = services["updater"]
    assert updater["command"] == ["python", "-m", "shoprec.updater.main"]
    for name in ("SHOPREC_EVENT_LOG", "SHOPREC_REDIS_URL", "SHOPREC_FEATURE_REPO"):
        assert updater["environment"][name] == gateway_env[name]
    assert "ports" not in updater and list(updater["networks"]) == ["backend"]
    assert updater["restart"] == "unless-stopped" and "healthcheck" in updater


def test_only_the_gateway_is_published_and_the_rest_is_internal() -> None:
    result = _config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert published == {
        "gateway": [{"published": 8080, "target": 8080}],
        "storefront": [{"published": 8090, "target": 8090}],
    }
    assert config["networks"]["backend"] == {"internal": True}
    for name in ("redis", "redis-log", "triton", "materialize", "perf"):
        assert list(services[name]["networks"]) == ["backend"], name
    assert set(services["gateway"]["networks"]) == {"backend", "frontend"}
    assert list(services["storefront"]["networks"]) == ["frontend"]  # reaches the gateway only
    for name in ("redis", "redis-log", "triton", "gateway", "storefront"):
        assert services[name]["restart"] == "unless-stopped", name
        assert services[name]["healthcheck"]["test"], name
    assert services["materialize"]["restart"] == "no"  # one-shot


def test_the_storefront_calls_the_gateway_with_keys_from_secrets() -> None:
    result = _config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    shop = config["services"]["storefront"]
    env = shop["environment"]
    fields = {f"SHOPREC_STOREFRONT_{name.upper()}" for name in StorefrontSettings.model_fields}
    assert set(env) <= fields, set(env) - fields
    assert env["SHOPREC_STOREFRONT_GATEWAY_URL"] == "http://gateway:8080"
    assert env["SHOPREC_STOREFRONT_WRITE_KEY_FILE"] == "/run/secrets/shoprec_storefront_write_key"
    assert env["SHOPREC_STOREFRONT_READ_KEY_FILE"] == "/run/secrets/shoprec_storefront_read_key"
    assert "SHOPREC_STOREFRONT_WRITE_KEY" not in env  # never the key itself
    assert {secret["source"] for secret in shop["secrets"]} == {
        "shoprec_storefront_write_key",
        "shoprec_storefront_read_key",
    }
    assert shop["command"][:2] == ["shoprec", "storefront"]
    assert shop["depends_on"]["gateway"] == {"condition": "service_healthy"}


def test_redis_has_a_password_and_an_append_only_file() -> None:
    result = _config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    redis = yaml.safe_load(result.stdout)["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == PASSWORD
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert [v.split(":")[:2] for v in redis["volumes"]] == [["redis-data", "/data"]]
    missing = _config(ROOT / "docker-compose.yml", password=None)
    assert missing.returncode != 0
    assert "set REDIS_PASSWORD" in missing.stderr


def test_the_event_log_redis_fsyncs_every_write_and_never_evicts() -> None:
    result = _config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    log = yaml.safe_load(result.stdout)["services"]["redis-log"]
    command = log["command"]
    assert command[command.index("--requirepass") + 1] == LOG_PASSWORD
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert log["user"] == "redis"
    assert [v.split(":")[:2] for v in log["volumes"]] == [["redis-log-data", "/data"]]
    missing = _config(ROOT / "docker-compose.yml", log_password=None)
    assert missing.returncode != 0
    assert "set REDIS_LOG_PASSWORD" in missing.stderr


def test_containers_run_as_non_root_users() -> None:
    result = _config(ROOT / "docker-compose.yml")
    assert yaml.safe_load(result.stdout)["services"]["redis"]["user"] == "redis"
    for dockerfile, user in (("Dockerfile", "shoprec"), ("Dockerfile.triton", "triton-server")):
        lines = (ROOT / dockerfile).read_text().splitlines()
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        assert users == [user], dockerfile


def test_the_triton_image_has_the_2025_security_fixes_and_restricted_apis() -> None:
    text = (ROOT / "Dockerfile.triton").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ARG TRITON_IMAGE=")]
    year, month = line.split(":")[-1].split("-")[0].split(".")
    assert (int(year), int(month)) >= (25, 7)
    for api in ("--http-restricted-api=$RESTRICTED", "--grpc-restricted-protocol=$RESTRICTED"):
        assert api in text
    assert "RESTRICTED=model-repository,shared-memory,logging,trace:shoprec-admin-key=" in text


def test_gpu_override_reserves_a_gpu_for_triton() -> None:
    result = _config(ROOT / "docker-compose.yml", ROOT / "docker-compose.gpu.yml")
    assert result.returncode == 0, result.stderr
    triton = yaml.safe_load(result.stdout)["services"]["triton"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_an_invalid_compose_file_is_rejected_naming_the_key(tmp_path: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text().replace("shm_size:", "shm_sizez:", 1)
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(text)
    result = _config(bad)
    assert result.returncode != 0
    assert "shm_sizez" in result.stderr
