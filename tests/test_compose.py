"""docker-compose files, validated without a Docker engine by `docker-compose config`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shoprec.gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    COMPOSE is None,
    reason="docker-compose not installed (make test installs it with apt-get where it can)",
)


def _config(*files: Path) -> subprocess.CompletedProcess[str]:
    args = [str(COMPOSE)]
    for f in files:
        args += ["-f", str(f)]
    return subprocess.run(
        [*args, "config"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


def test_compose_file_is_valid_and_wires_the_stack() -> None:
    result = _config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"redis", "triton", "materialize", "gateway", "perf"}
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
