"""Run the storefront under uvicorn: ``python -m shoprec.storefront`` (settings from
``SHOPREC_STOREFRONT_*``) or ``shoprec storefront`` (which also offers demo customers)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import uvicorn

from shoprec.storefront.app import create_app
from shoprec.storefront.settings import StorefrontSettings

DEFAULT_PORT = 8090


def serve(settings: StorefrontSettings, host: str, port: int) -> None:
    """Serve the storefront on ``host:port`` until interrupted.

    Raises:
        OSError: a key file cannot be read, or the port cannot be bound.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shoprec.storefront [--host H] [--port P] [--gateway-url URL]``."""
    parser = argparse.ArgumentParser(prog="python -m shoprec.storefront")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--gateway-url", default=None, help="overrides the environment")
    args = parser.parse_args(argv)
    settings = StorefrontSettings()
    if args.gateway_url:
        settings = settings.model_copy(update={"gateway_url": args.gateway_url})
    serve(settings, args.host, args.port)
