"""Feast ``Value`` protos of numeric list features, serialized for a whole column at once.

Shape letters: B = rows (entities), W = list width (every row of a column has W values).

:func:`~shoprec.featurestore.store.bulk_write_sqlite` loads the encoded customer features
(1.37 M customers x 8 list features on an H&M-size catalog) into Feast's SQLite online store.
Feast's own path converts every value to a Python object and builds one protobuf message per
row and feature (``feast.utils._convert_arrow_to_proto``, then ``SerializeToString``). The
bytes of those messages follow from the protobuf wire format alone, so this module writes
them with numpy, a column at a time:

* ``Value.int64_list_val`` (field 14) holds ``Int64List`` whose ``val`` (field 1) is a packed
  repeated ``int64``: each value a base-128 varint of its 64-bit two's complement (10 bytes
  for a negative value).
* ``Value.float_list_val`` (field 16) holds ``FloatList`` whose ``val`` is a packed repeated
  ``float``: 4 little-endian bytes a value.
* A message field is its tag, the varint length of its payload, then the payload; a packed
  field with no values is left out, so an empty list is the tag and a zero length.

Source: the protobuf encoding guide, https://protobuf.dev/programming-guides/encoding/
(varints, length-delimited records, packed repeated fields), and Feast's
``protos/feast/types/Value.proto`` (field numbers). ``tests/test_feature_wire.py`` checks the
bytes against the protobuf runtime's and against Feast's own converter.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

# Value.proto: Int64List int64_list_val = 14; FloatList float_list_val = 16 (wire type 2)
INT64_LIST_TAG: Final = bytes([14 << 3 | 2])
FLOAT_LIST_TAG: Final = bytes([(16 << 3 | 2) & 0x7F | 0x80, (16 << 3 | 2) >> 7])
_VAL_TAG: Final = bytes([1 << 3 | 2])  # Int64List.val / FloatList.val, packed
_MAX_VARINT: Final = 10  # bytes of a 64-bit varint


def varint(n: int) -> bytes:
    """The base-128 varint of ``n`` (0 <= n < 2**64).

    Raises:
        ValueError: ``n`` is negative or does not fit 64 bits.
    """
    if not 0 <= n < 1 << 64:
        raise ValueError(f"varint takes 0 <= n < 2**64, got {n}")
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _check_matrix(values: npt.NDArray[np.generic]) -> None:
    if values.ndim != 2:
        raise ValueError(f"values must be (B, W), got shape {values.shape}")


def _length_delimited(tag: bytes, payloads: list[bytes]) -> list[bytes]:
    """``tag + varint(len(p)) + p`` for every payload (lengths repeat: cached)."""
    prefixes: dict[int, bytes] = {}
    out = []
    for payload in payloads:
        size = len(payload)
        prefix = prefixes.get(size)
        if prefix is None:
            prefix = prefixes[size] = tag + varint(size)
        out.append(prefix + payload)
    return out


def float_list_values(values: npt.NDArray[np.float32]) -> list[bytes]:
    """Serialized ``Value(float_list_val=FloatList(val=row))`` of every row.

    Args:
        values: (B, W) array, cast to float32 (little-endian) if it is not.

    Returns:
        B ``bytes``, equal to the protobuf runtime's ``SerializeToString`` of each row's message.

    Raises:
        ValueError: ``values`` is not two-dimensional.
    """
    _check_matrix(values)
    rows = np.ascontiguousarray(values, dtype="<f4")
    width = rows.shape[1]
    if width == 0:
        return [FLOAT_LIST_TAG + b"\x00"] * rows.shape[0]
    payload = _VAL_TAG + varint(4 * width)
    prefix = FLOAT_LIST_TAG + varint(len(payload) + 4 * width) + payload
    head = np.frombuffer(prefix, dtype=np.uint8)
    buffer = np.empty((rows.shape[0], len(prefix) + 4 * width), dtype=np.uint8)
    buffer[:, : len(prefix)] = head
    buffer[:, len(prefix) :] = rows.view(np.uint8)
    return [row.tobytes() for row in buffer]


def int64_list_values(values: npt.NDArray[np.int64]) -> list[bytes]:
    """Serialized ``Value(int64_list_val=Int64List(val=row))`` of every row.

    Args:
        values: (B, W) integer array, cast to int64.

    Returns:
        B ``bytes``, equal to the protobuf runtime's ``SerializeToString`` of each row's message.

    Raises:
        ValueError: ``values`` is not two-dimensional.
    """
    _check_matrix(values)
    n_rows, width = values.shape
    if n_rows == 0:
        return []
    if width == 0:
        return [INT64_LIST_TAG + b"\x00"] * n_rows
    unsigned = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    # bytes of each value's varint: 1 + the 7-bit groups above the first that are not zero
    n_bytes = np.ones(unsigned.shape, dtype=np.int64)
    for k in range(1, _MAX_VARINT):
        n_bytes += unsigned >= np.uint64(1 << (7 * k))
    digits = int(n_bytes.max())  # only as many groups as the widest value needs
    shifts = np.arange(digits, dtype=np.uint64) * np.uint64(7)
    groups = (unsigned[:, :, None] >> shifts).astype(np.uint8) & np.uint8(0x7F)  # (B, W, d)
    digit = np.arange(digits)
    used = digit < n_bytes[:, :, None]
    more = digit < (n_bytes - 1)[:, :, None]
    encoded = groups | (more.view(np.uint8) << np.uint8(7))
    stream = encoded[used].tobytes()  # row after row, value after value
    ends = np.cumsum(n_bytes.sum(axis=1))
    starts = np.concatenate(([0], ends[:-1]))
    lists = _length_delimited(
        _VAL_TAG, [stream[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    )
    return _length_delimited(INT64_LIST_TAG, lists)
