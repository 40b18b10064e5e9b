"""The header of a safetensors file, read and checked without trusting it: what tensors it claims to hold.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and
byte range, then the bytes. Only the header is read (bounded); every claim in it is checked against the file: a
sane length, JSON text, known dtypes, shapes whose sizes match their byte ranges, and ranges that cover the data
exactly (no gap, no overlap, nothing past the end). A file that fails is named with the reason.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MAX_HEADER",
    "BadSafetensors",
    "SafetensorsHeader",
    "TensorInfo",
    "read_safetensors_header",
    "safetensors_header_of",
]

#: the safetensors library refuses headers above 100 MB; so does this reader
MAX_HEADER = 100_000_000

_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    #: its bytes, from the start of the data (after the header)
    offsets: tuple[int, int] = field(default=(0, 0), compare=False)


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    #: where the data starts in the file (8 + the header's length)
    data_start: int = field(default=0, compare=False)


class BadSafetensors(ValueError):
    """``str()`` says what is wrong with the file."""


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """The tensors ``path`` holds, after checking its header against the file. Raises :class:`BadSafetensors`."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        length = _length(path.name, prefix, size)
        return _parsed(path.name, f.read(length), size)


def safetensors_header_of(data: bytes, name: str) -> SafetensorsHeader:
    """:func:`read_safetensors_header` of a file's bytes (``name``: the file's, for the errors)."""
    length = _length(name, data[:8], len(data))
    return _parsed(name, data[8 : 8 + length], len(data))


def _length(name: str, prefix: bytes, size: int) -> int:
    if len(prefix) < 8:
        raise BadSafetensors(f"{name}: {size} bytes, too short for a safetensors file")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER or 8 + length > size:
        raise BadSafetensors(f"{name}: its header claims {length:,} bytes, the file holds {size - 8:,}")
    return length


def _parsed(name: str, raw: bytes, size: int) -> SafetensorsHeader:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadSafetensors(f"{name}: its header is not JSON text ({exc})") from None
    if not isinstance(header, dict):
        raise BadSafetensors(f"{name}: its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadSafetensors(f"{name}: its __metadata__ is not an object of strings")
    tensors = {key: _tensor(name, key, entry) for key, entry in header.items()}
    _check_coverage(name, sorted((*t.offsets, key) for key, t in tensors.items()), size - 8 - len(raw))
    return SafetensorsHeader(tensors, metadata, 8 + len(raw))


def _tensor(file: str, name: str, entry: object) -> TensorInfo:
    where = f"{file}: tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise BadSafetensors(f"{where}: not an entry of dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPE_BYTES:
        raise BadSafetensors(f"{where}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadSafetensors(f"{where}: its shape {shape!r} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and o >= 0 for o in offsets)):
        raise BadSafetensors(f"{where}: its data_offsets {offsets!r} are not [start, end]")
    start, end = offsets
    if end - start != math.prod(shape) * _DTYPE_BYTES[dtype]:
        raise BadSafetensors(f"{where}: {dtype} {shape} needs {math.prod(shape) * _DTYPE_BYTES[dtype]:,} bytes, "
                             f"its range holds {end - start:,}")  # fmt: skip
    return TensorInfo(dtype, tuple(shape), (start, end))


def _check_coverage(file: str, ranges: list[tuple[int, int, str]], data_size: int) -> None:
    """The tensors' byte ranges, sorted, must tile the data exactly."""
    position = 0
    for start, end, name in ranges:
        if start != position:
            what = "overlaps the tensor before it" if start < position else f"leaves {start - position:,} bytes unused"
            raise BadSafetensors(f"{file}: tensor {name!r} {what}")
        position = end
    if position != data_size:
        raise BadSafetensors(f"{file}: the tensors end at byte {position:,} of {data_size:,} bytes of data")
