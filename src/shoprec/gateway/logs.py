"""Gateway logging: text or JSON lines, and upstream failures logged once per interval.

A gateway whose upstream is down fails every request the same way; logging each one with its
traceback wrote 10.8 MB in 23 s (issue 13). :class:`FailureLog` writes the first failure of a
kind at once, then at most one line per kind per interval that says how many more there were;
every failure is still counted in ``shoprec_gateway_stage_failures_total`` (metrics).

:func:`logging_config` is the ``logging.config.dictConfig`` dictionary uvicorn starts with:
``text`` (default) or ``json`` (one JSON object per line with ``time``, ``level``, ``logger``,
``message`` and any ``extra`` fields, by python-json-logger).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"


class LogFormat(StrEnum):
    """How the gateway writes log records."""

    TEXT = "text"
    JSON = "json"


def logging_config(log_format: LogFormat | str, level: str = "WARNING") -> dict[str, Any]:
    """A ``dictConfig`` dictionary: one stderr handler on the root logger, uvicorn's loggers
    propagating to it, records at ``level`` and above.

    Raises:
        ValueError: unknown ``log_format``.
    """
    if LogFormat(log_format) is LogFormat.JSON:
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level.upper()}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


class FailureLog:
    """Rate-limited warnings: one line per failure ``kind`` per ``interval_s`` seconds.

    The first failure of a kind is logged at once; later ones within the interval are only
    counted, and the next one after it is logged with that count (``"... (41 more in the last
    10.0 s)"``). No traceback is written: the message names the failure (exception type and
    message, cut to :attr:`max_chars`).

    Thread-safe (store calls fail in worker threads).

    Args:
        logger: where the lines go (level WARNING).
        interval_s: seconds between two lines of one kind.
        clock: monotonic seconds (tests pass a fake).
    """

    max_chars: Final = 300

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # kind -> time of its last line
        self._suppressed: dict[str, int] = {}  # kind -> failures since that line

    def failure(self, kind: str, message: str) -> bool:
        """Record one failure of ``kind``; True when a line was written for it."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            more = self._suppressed.pop(kind, 0)
            self._last[kind] = now
        text = message if len(message) <= self.max_chars else message[: self.max_chars] + "..."
        if more:
            text += f" ({more} more in the last {self._interval_s:.1f} s)"
        self._logger.warning("%s: %s", kind, text, extra={"failure_kind": kind, "more": more})
        return True


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` of an exception, on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
