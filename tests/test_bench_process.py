"""Tests of the package as the CLI and the runner use it: what ``import shoprec.bench`` loads,
the load generator's child-process entry point, and the ``shoprec bench`` command's input
checks. No server runs here; the load generator itself is exercised by ``shoprec bench``
against a real stack."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from shoprec.bench.runner import LOADGEN_MODULE
from shoprec.cli import app


def test_importing_bench_does_not_patch_the_standard_library() -> None:
    """locust monkey-patches with gevent at import; only the load-generator child may, and it
    imports locust first, so neither the package nor the load generator's module imports it,
    gRPC, or what might start threads (numpy, pyarrow, Feast, torch)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, shoprec.bench, shoprec.bench.loadgen; "
            "print(sorted(m for m in ('locust', 'gevent', 'grpc', 'numpy', 'pyarrow', 'feast', "
            "'torch') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_the_load_generator_runs_as_a_module_and_checks_its_arguments() -> None:
    out = subprocess.run(
        [sys.executable, "-m", LOADGEN_MODULE, "spec.json"], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        "usage: python -m shoprec.bench.loadgen SPEC_JSON RESULT_JSON "
        "(run by shoprec.bench.run_benchmark)"
    )
    # runpy warns when the package imported the module before running it as __main__
    assert "RuntimeWarning" not in out.stderr


def _plain(output: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0,4"], "Invalid value: users must be 1..256 each, got '0,4'"),
        (["--users", "1,x"], "users must be comma-separated integers, got '1,x'"),
        (["--seconds", "0"], "seconds must be in (0, 600], got 0.0"),
        (
            [
                "--gateway-url",
                "http://10.0.0.1:8080",
                "--triton-grpc-url",
                "127.0.0.1:8001",
                "--triton-metrics-url",
                "http://127.0.0.1:8002/metrics",
            ],
            "benchmark targets must be on loopback, got 'http://10.0.0.1:8080'",
        ),
        (["--gateway-url", "http://127.0.0.1:8080"], "together or none of them"),
    ],
    ids=["levels-range", "levels-format", "seconds", "non-loopback", "some-urls"],
)
def test_shoprec_bench_rejects_bad_options_before_loading(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 2
    assert message in _plain(result.output)
