"""Entry point of the updater process (``python -m shoprec.updater.main``, ``shoprec updater``,
the ``updater`` service of docker-compose and a child of ``shoprec serve``).

Settings come from the same ``SHOPREC_*`` variables as the gateway's: ``SHOPREC_FEATURE_REPO``
(required), ``SHOPREC_EVENT_LOG`` (default ``events.db`` next to the feature repo),
``SHOPREC_EVENT_LOG_NAMESPACE``, ``SHOPREC_EVENT_LOG_PASSWORD_FILE``, ``SHOPREC_REDIS_URL``,
``SHOPREC_UPDATER_POLL_S`` (0.02), ``SHOPREC_UPDATER_HEARTBEAT`` (a file touched every
5 s, for docker-compose's healthcheck), ``SHOPREC_TRITON_URL`` (Triton's gRPC address: new
articles are encoded by its ``article_encoder`` model; unset: they are not) and
``SHOPREC_ARTICLE_DELTA`` (where the article delta lives; default next to the online store).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from shoprec.events import DEFAULT_LOG_FILE, DEFAULT_NAMESPACE, LogReader, open_log_reader
from shoprec.events.log import EventLogError
from shoprec.updater.articles import TritonArticleEncoder
from shoprec.updater.process import FeatureUpdater, UpdaterConfig

log = logging.getLogger("shoprec.updater")


def _env(name: str) -> str | None:
    return os.environ.get(f"SHOPREC_{name}") or None


def open_reader(wait_s: float = 60.0) -> LogReader:
    """The log reader of the environment's settings; waits up to ``wait_s`` for an embedded
    log file the gateway has not created yet.

    Raises:
        EventLogError: the log cannot be opened within ``wait_s``.
    """
    repo = Path(os.environ["SHOPREC_FEATURE_REPO"])
    url = _env("EVENT_LOG") or str(repo.parent / DEFAULT_LOG_FILE)
    password_file = _env("EVENT_LOG_PASSWORD_FILE")
    password = Path(password_file).read_text().strip() if password_file else None
    namespace = _env("EVENT_LOG_NAMESPACE") or DEFAULT_NAMESPACE
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return open_log_reader(url, namespace=namespace, password=password)
        except EventLogError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> int:
    logging.basicConfig(
        level=_env("LOG_LEVEL") or "INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if "SHOPREC_FEATURE_REPO" not in os.environ:
        print("SHOPREC_FEATURE_REPO is not set", file=sys.stderr)
        return 2
    stop = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    config = UpdaterConfig(poll_s=float(_env("UPDATER_POLL_S") or 0.02))
    triton_url = _env("TRITON_URL")
    updater = FeatureUpdater(
        Path(os.environ["SHOPREC_FEATURE_REPO"]),
        open_reader(),
        redis_url=_env("REDIS_URL"),
        config=config,
        encoder=TritonArticleEncoder(triton_url) if triton_url else None,
    )
    log.info("updater started at offset %d", updater.position)
    try:
        beat = _env("UPDATER_HEARTBEAT")
        updater.run_forever(lambda: stop, heartbeat=Path(beat) if beat else None)
    finally:
        updater.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
