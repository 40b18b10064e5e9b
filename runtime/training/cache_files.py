"""ftc's caches of computed arrays (tokenized data, DPO reference log-probabilities): each entry a safetensors file
named by its key and by the sha256 of its own bytes, written to a temp file and renamed; read once, hashed, and parsed
from those same bytes (nothing mapped from the file), so what is used is what was verified."""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ftc.spec.reading import NotReadable, read_bounded_bytes
from ftc.stores.hashing import hash_file

from .progress import log

__all__ = ["CacheEntry", "read_cache_file", "store_cache_file"]


def store_cache_file(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """Store ``tensors`` as the cache file for ``path``'s key (safetensors, named by its sha256, written to a temp
    file and renamed: readers never see a half-written one); its sha256."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cache-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        sha, _ = hash_file(Path(tmp))
        os.replace(tmp, _named(path, sha))
    finally:
        Path(tmp).unlink(missing_ok=True)
    return sha


def _named(cache_file: Path, sha256: str) -> Path:
    """The cache file as stored: named by its key and by the sha256 of its own bytes, so it can be verified."""
    return cache_file.with_name(f"{cache_file.stem}.{sha256}{cache_file.suffix}")


@dataclass(frozen=True)
class CacheEntry:
    """A cache file as read: its tensors (read-only arrays over the bytes that were verified) and metadata."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]


_SHA256 = re.compile(r"[0-9a-f]{64}")

#: the numpy dtype of each safetensors dtype a cache file may hold (little-endian, as safetensors stores them)
_NUMPY = {"BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "F32": "<f4", "F64": "<f8"}


def read_cache_file(cache_file: Path, parse: Callable[[CacheEntry], Any], what: str = "the tokenized data") -> Any:
    """``parse`` of the stored cache file for ``cache_file``'s key, read once: what is parsed is the bytes whose
    sha256 was checked against the one in its name (nothing is mapped from the file, so nothing written to it later
    reaches the run); None when there is none. A file that does not verify, or is not one ftc wrote (``parse``
    raises KeyError, TypeError or ValueError), is removed with a warning: it is made again. ``what`` the file holds,
    as the warning says it."""
    from ftc.spec.text import for_terminal
    from ftc.stores.safetensors_header import safetensors_header_of

    if not cache_file.parent.is_dir():
        return None
    for stored in sorted(cache_file.parent.glob(f"{cache_file.stem}.*{cache_file.suffix}")):
        named = stored.name[len(cache_file.stem) + 1 : -len(cache_file.suffix)]
        if not _SHA256.fullmatch(named):
            continue  # not a name ftc gives (nothing is read of it)
        try:
            data = read_bounded_bytes(stored, limit=None, what="cache")  # (the size it has: named by its digest)
            found = hashlib.sha256(data).hexdigest()
        except (NotReadable, OSError) as exc:
            data, found = b"", f"unreadable ({exc})"
        if found == named:
            try:
                header = safetensors_header_of(data, stored.name)
                tensors = {
                    name: np.frombuffer(
                        data, _NUMPY[t.dtype], math.prod(t.shape), header.data_start + t.offsets[0]
                    ).reshape(t.shape)
                    for name, t in header.tensors.items()
                }
                return parse(CacheEntry(tensors, header.metadata))
            except (KeyError, TypeError, ValueError, RecursionError) as exc:  # not ftc's there, or not this run's
                why = for_terminal(f"{type(exc).__name__}: {exc}"[:300])  # (a planted file's text: escaped)
                log(f"warning: {what} cached at {stored} cannot be used ({why}); making it again")
        else:
            log(f"warning: {what} cached at {stored} is not the bytes it was stored as; making it again")
        try:
            stored.unlink(missing_ok=True)
        except OSError as exc:  # a folder so named, a cache this user cannot write: made again, not stored
            log(f"warning: {stored} could not be removed ({exc.strerror or exc})")
    return None
