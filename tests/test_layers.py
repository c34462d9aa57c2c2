"""What each online process imports, checked in a fresh interpreter (the import-linter
contracts in pyproject.toml check shoprec's own imports; this checks the libraries too)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

OFFLINE = ("shoprec.data", "shoprec.training", "shoprec.pipeline", "shoprec.evaluation",
           "shoprec.export", "shoprec.bench", "shoprec.cli")  # fmt: skip
MODEL_LIBRARIES = ("torch", "faiss", "sklearn", "lightgbm", "implicit", "open_clip",
                   "sentence_transformers")  # fmt: skip


def _imported(module: str) -> set[str]:
    """Top-level names of every module loaded by importing ``module`` in a new interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def test_the_gateway_loads_no_offline_code_and_no_model_library() -> None:
    modules = _imported("shoprec.gateway.main")
    assert "shoprec.gateway.app" in modules  # the check sees what it should
    assert _loaded(modules, OFFLINE) == []
    assert _loaded(modules, (*MODEL_LIBRARIES, "polars", "shoprec.models")) == []


def test_the_storefront_loads_no_other_shoprec_package_and_no_data_library() -> None:
    modules = _imported("shoprec.storefront.server")
    assert "shoprec.storefront.app" in modules  # the check sees what it should
    shoprec = sorted(m for m in modules if m.startswith("shoprec.") and "storefront" not in m)
    assert shoprec == []
    assert _loaded(modules, (*MODEL_LIBRARIES, "polars", "pandas", "numpy", "feast")) == []


@pytest.mark.parametrize(
    ("step", "needs", "never"),
    [
        ("shoprec.serving.similar_items", (), ("torch", "faiss", "polars")),
        ("shoprec.serving.retrieval", ("faiss",), ("torch", "polars")),
        ("shoprec.serving.query_tower", ("torch",), ("faiss", "sklearn", "lightgbm")),
        ("shoprec.serving.ranking", ("torch",), ("faiss", "sklearn", "lightgbm")),
    ],
)
def test_a_triton_step_loads_only_its_own_libraries(
    step: str, needs: tuple[str, ...], never: tuple[str, ...]
) -> None:
    modules = _imported(step)
    assert _loaded(modules, OFFLINE) == []
    assert _loaded(modules, needs) == sorted(needs)
    assert _loaded(modules, never) == []


def test_the_updater_loads_no_offline_code_and_no_model_library() -> None:
    """The feature updater computes features with polars and the shared feature code, and
    loads no model: its process stays small (it runs beside every gateway)."""
    modules = _imported("shoprec.updater.main")
    assert "shoprec.features.state" in modules
    assert _loaded(modules, OFFLINE) == []
    assert _loaded(modules, (*MODEL_LIBRARIES, "shoprec.models")) == []
