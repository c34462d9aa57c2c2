"""featurestore.wire: Feast Value protos of numeric lists serialized a column at a time, checked
against the protobuf runtime's own serialization."""

from __future__ import annotations

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import FloatList, Int64List
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from shoprec.featurestore.wire import float_list_values, int64_list_values, varint


def _int64_reference(rows: np.ndarray) -> list[bytes]:
    return [ValueProto(int64_list_val=Int64List(val=r.tolist())).SerializeToString() for r in rows]


def _float_reference(rows: np.ndarray) -> list[bytes]:
    return [ValueProto(float_list_val=FloatList(val=r.tolist())).SerializeToString() for r in rows]


def test_int64_lists_equal_the_protobuf_runtime_for_every_varint_length() -> None:
    rng = np.random.default_rng(7)
    rows = np.concatenate(
        [
            rng.integers(-(2**63), 2**63 - 1, size=(200, 7), dtype=np.int64),  # 10-byte varints
            rng.integers(0, 130, size=(200, 7)),  # one and two bytes
            rng.integers(0, 2**40, size=(200, 7)),
        ]
    )
    rows[0] = [0, -1, 127, 128, 2**63 - 1, -(2**63), 16_383]
    rows[1] = [16_384, 2**21 - 1, 2**21, 2**56, 2**62, 1, 0]
    assert int64_list_values(rows) == _int64_reference(rows)


def test_float_lists_equal_the_protobuf_runtime_including_nan_and_signed_zero() -> None:
    rows = np.random.default_rng(8).standard_normal((300, 9)).astype(np.float32)
    rows[0, :4] = [np.nan, -0.0, np.inf, -np.inf]
    rows[1, :2] = [np.finfo(np.float32).tiny, np.finfo(np.float32).max]
    assert float_list_values(rows) == _float_reference(rows)
    # float64 input is rounded to float32 as the runtime rounds a Python float
    wide = np.array([[0.1, 1e-40, 3.4e38]])
    assert float_list_values(wide) == _float_reference(wide.astype(np.float32))


@pytest.mark.parametrize("width", [0, 1, 31, 33, 200])
def test_widths_that_change_the_length_prefixes(width: int) -> None:
    """Width 0 is an empty list (tag and zero length); 32 float values make the packed payload
    128 bytes, the first two-byte length; 200 int64 values of 2**62 make a 1,800-byte payload."""
    ints = np.full((3, width), 2**62, dtype=np.int64)
    floats = np.ones((3, width), dtype=np.float32)
    assert int64_list_values(ints) == _int64_reference(ints)
    assert float_list_values(floats) == _float_reference(floats)


def test_no_rows_and_bad_shapes() -> None:
    assert int64_list_values(np.zeros((0, 4), dtype=np.int64)) == []
    assert float_list_values(np.zeros((0, 4), dtype=np.float32)) == []
    with pytest.raises(ValueError, match=r"must be \(B, W\), got shape \(3,\)"):
        int64_list_values(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"must be \(B, W\), got shape \(1, 2, 3\)"):
        float_list_values(np.zeros((1, 2, 3), dtype=np.float32))


def test_varint() -> None:
    assert varint(0) == b"\x00"
    assert varint(300) == b"\xac\x02"  # the encoding guide's example
    assert varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
    with pytest.raises(ValueError, match="got -1"):
        varint(-1)
