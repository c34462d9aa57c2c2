"""Triton Python-backend entry point of a shoprec step model (copied by ``shoprec.export``).

Every step model of the repository ships this same file; its config.pbtxt parameter ``step``
names the ``shoprec.serving.runtime`` step it serves, and the step's files lie next to this
file. All logic lives in the package, so it is tested without Triton.
"""

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from shoprec.serving.runtime import execute_requests, step_from_model_config


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.step = step_from_model_config(version_dir, json.loads(args["model_config"]))

    def execute(self, requests: list[Any]) -> list[Any]:
        return execute_requests(self.step, requests, pb_utils)
