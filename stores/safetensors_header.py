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
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_HEADER", "BadSafetensors", "SafetensorsHeader", "TensorInfo", "read_safetensors_header"]

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


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


class BadSafetensors(ValueError):
    """``str()`` says what is wrong with the file."""


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """The tensors ``path`` holds, after checking its header against the file. Raises :class:`BadSafetensors`."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise BadSafetensors(f"{path.name}: {size} bytes, too short for a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER or 8 + length > size:
            raise BadSafetensors(f"{path.name}: its header claims {length:,} bytes, the file holds {size - 8:,}")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadSafetensors(f"{path.name}: its header is not JSON text ({exc})") from None
    if not isinstance(header, dict):
        raise BadSafetensors(f"{path.name}: its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadSafetensors(f"{path.name}: its __metadata__ is not an object of strings")
    tensors, ranges = {}, []
    for name, entry in header.items():
        tensors[name] = _tensor(path, name, entry)
        ranges.append((entry["data_offsets"][0], entry["data_offsets"][1], name))
    _check_coverage(path, sorted(ranges), size - 8 - length)
    return SafetensorsHeader(tensors, metadata)


def _tensor(path: Path, name: str, entry: object) -> TensorInfo:
    where = f"{path.name}: tensor {name!r}"
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
    return TensorInfo(dtype, tuple(shape))


def _check_coverage(path: Path, ranges: list[tuple[int, int, str]], data_size: int) -> None:
    """The tensors' byte ranges, sorted, must tile the data exactly."""
    position = 0
    for start, end, name in ranges:
        if start != position:
            what = "overlaps the tensor before it" if start < position else f"leaves {start - position:,} bytes unused"
            raise BadSafetensors(f"{path.name}: tensor {name!r} {what}")
        position = end
    if position != data_size:
        raise BadSafetensors(f"{path.name}: the tensors end at byte {position:,} of {data_size:,} bytes of data")
