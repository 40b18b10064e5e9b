"""Canonical JSON and content digests: the bytes that ids and digests are computed over."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["ABSENT", "canonical_json", "sha256_bytes", "digest_of", "differences", "show_value"]

ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "(absent)"})()  # a key one document lacks


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: equal documents give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(obj: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``obj``."""
    return sha256_bytes(canonical_json(obj))


def differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every (dotted key path, value in a, value in b) where two JSON documents differ, walking nested objects;
    a key one side lacks has :data:`ABSENT` there."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(a) | set(b)):
            out += differences(a.get(key, ABSENT), b.get(key, ABSENT), f"{path}.{key}" if path else key)
        return out
    return [] if a == b else [(path, a, b)]


def show_value(value: Any) -> str:
    """A value as one line of JSON (``(absent)`` for :data:`ABSENT`)."""
    return "(absent)" if value is ABSENT else json.dumps(value, ensure_ascii=False, sort_keys=True)
