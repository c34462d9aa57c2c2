"""Peak resident memory of the offline steps, for the step tables (``shoprec pipeline``,
``shoprec train``): how much RAM a build needs, step by step.

On Linux the kernel keeps the process's high-water mark of resident memory (``VmHWM`` in
``/proc/self/status``) and resets it to the current RSS when ``5`` is written to
``/proc/self/clear_refs`` (proc(5), Linux >= 4.0), so a step's own peak is exact, with no
sampling. Spans nest: before a reset, the high-water mark is folded into every open span, so
an enclosing step (``pipeline``'s ``train``) still sees the peaks of the steps inside it
(``train``'s ``two_tower``, ``ranker``, ...). Elsewhere the peak is
``getrusage(RUSAGE_SELF).ru_maxrss``, the peak since the process started: an upper bound.
"""

from __future__ import annotations

import contextlib
import re
import resource
import sys
from pathlib import Path
from types import TracebackType
from typing import Final

_STATUS: Final = Path("/proc/self/status")
_CLEAR_REFS: Final = Path("/proc/self/clear_refs")
_RESET_PEAK: Final = "5"  # proc(5): "reset the peak resident set size"
_HWM: Final = re.compile(r"^VmHWM:\s+(\d+)\s+kB$", re.M)
_RSS: Final = re.compile(r"^VmRSS:\s+(\d+)\s+kB$", re.M)
_MIB: Final = 1024.0

_open: list[PeakSpan] = []  # spans entered and not yet left, outermost first


def high_water_mib() -> float:
    """The process's peak resident set size since the last reset (or its start), MiB."""
    try:
        match = _HWM.search(_STATUS.read_text())
    except OSError:
        match = None
    if match is not None:
        return int(match.group(1)) / _MIB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (_MIB * _MIB) if sys.platform == "darwin" else peak / _MIB


def current_rss_mib() -> float:
    """The process's resident set size now, MiB (``VmRSS``; elsewhere the peak so far)."""
    try:
        match = _RSS.search(_STATUS.read_text())
    except OSError:
        match = None
    if match is not None:
        return int(match.group(1)) / _MIB
    return high_water_mib()


def _reset() -> None:
    """Fold the high-water mark into the open spans, then reset it (where the kernel can)."""
    current = high_water_mib()
    for span in _open:
        span.folded = max(span.folded, current)
    # Without a reset the high-water mark stays the peak since the process started.
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text(_RESET_PEAK)


class PeakSpan:
    """Peak resident memory over a ``with`` block, MiB (:attr:`mib`, set on exit).

    Example::

        with PeakSpan() as span:
            data = bytearray(200 * 2**20)
        assert span.mib >= 200
    """

    def __init__(self) -> None:
        self.folded = 0.0
        self.mib = float("nan")

    def __enter__(self) -> PeakSpan:
        _reset()
        _open.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _open.remove(self)
        self.mib = max(self.folded, high_water_mib())
