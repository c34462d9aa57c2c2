"""Export trained artifacts for online serving (a Triton model repository)."""

from shoprec.export.triton import (
    ExportConfig,
    ModelTuning,
    RepositoryDims,
    export_triton_repository,
    render_model_configs,
)

__all__ = [
    "ExportConfig",
    "ModelTuning",
    "RepositoryDims",
    "export_triton_repository",
    "render_model_configs",
]
