"""Peak resident memory per step (shoprec.pipeline.memory): the numbers in the step tables."""

from __future__ import annotations

import sys

import pytest

from shoprec.pipeline.memory import PeakSpan, high_water_mib

MIB = 2**20

linux = pytest.mark.skipif(sys.platform != "linux", reason="exact per-span peaks need Linux")


@linux
def test_a_span_sees_its_own_peak_not_an_earlier_one() -> None:
    big = bytearray(300 * MIB)  # a peak before the span
    big[::4096] = b"x" * len(big[::4096])  # touch every page: resident
    earlier = high_water_mib()
    del big  # freed to the kernel (a block this large is its own mapping)
    with PeakSpan() as small:
        block = bytearray(40 * MIB)
        block[::4096] = b"x" * len(block[::4096])
        del block
    assert small.mib < earlier - 200  # not the earlier peak
    with PeakSpan() as large:
        block = bytearray(200 * MIB)
        block[::4096] = b"x" * len(block[::4096])
        del block
    assert large.mib >= small.mib + 150


@linux
def test_an_enclosing_span_keeps_the_peaks_of_the_spans_inside_it() -> None:
    with PeakSpan() as outer:
        with PeakSpan() as first:
            block = bytearray(200 * MIB)
            block[::4096] = b"x" * len(block[::4096])
            del block
        with PeakSpan() as second:  # resets the kernel's mark: outer must have folded it
            pass
    assert first.mib >= second.mib + 150
    assert outer.mib >= first.mib
