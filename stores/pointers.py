"""A published run's ``best`` and ``latest`` pointers: small objects under the output prefix, beside
``checkpoints/``, each naming one checkpoint of the run and its record_id.

    PREFIX/best      {"format": "ftc.pointer/1", "checkpoint": "checkpoints/step-000048", "record_id": "…"}
    PREFIX/latest    the same shape, for the newest published checkpoint

A pointer is written only after the marker of the checkpoint it names, so it never names an upload cut short. It is
outside bytes to a reader: bounded, exactly these keys, and its ``checkpoint`` can name only a checkpoint under the
same prefix (never another prefix or bucket); the record downloaded through it must carry the record_id it names.
"""

from __future__ import annotations

import json
import re

from ftc.errors import LineageBroken

__all__ = ["POINTER_FORMAT", "POINTER_LIMIT", "POINTER_NAMES", "parse_pointer", "pointer_body"]

POINTER_FORMAT = "ftc.pointer/1"
#: what a reader tries, in this order, for a run prefix
POINTER_NAMES = ("best", "latest")
#: a pointer is a few hundred bytes; anything larger is not one
POINTER_LIMIT = 4096
_CHECKPOINT = re.compile(r"checkpoints/step-[0-9]{1,12}")
_RECORD_ID = re.compile(r"sha256:[0-9a-f]{64}")


def pointer_body(checkpoint: str, record_id: str) -> bytes:
    """The bytes of a pointer to ``checkpoint`` (``checkpoints/step-N``, relative to the prefix)."""
    if not _CHECKPOINT.fullmatch(checkpoint):
        raise ValueError(f"not a checkpoint under a run prefix: {checkpoint!r}")
    body = {"format": POINTER_FORMAT, "checkpoint": checkpoint, "record_id": record_id}
    return (json.dumps(body, sort_keys=True) + "\n").encode()


def parse_pointer(raw: bytes, where: str) -> tuple[str, str]:
    """(checkpoint, record_id) from a pointer's bytes read at ``where``; :class:`LineageBroken` naming ``where`` when
    they are not a pointer ftc wrote."""
    broken = f"{where}: not a pointer ftc wrote"
    if len(raw) > POINTER_LIMIT:
        raise LineageBroken(f"{broken} ({len(raw)} bytes; a pointer is at most {POINTER_LIMIT})")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise LineageBroken(f"{broken} (not JSON)") from None
    if not isinstance(body, dict) or set(body) != {"format", "checkpoint", "record_id"}:
        raise LineageBroken(f"{broken} (expected the keys format, checkpoint, record_id)")
    if body["format"] != POINTER_FORMAT:
        raise LineageBroken(f"{broken} (format {str(body['format'])[:40]!r}, expected {POINTER_FORMAT!r})")
    checkpoint, record_id = body["checkpoint"], body["record_id"]
    if not isinstance(checkpoint, str) or not _CHECKPOINT.fullmatch(checkpoint):
        raise LineageBroken(f"{broken} (its checkpoint must be checkpoints/step-N under the same prefix)")
    if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id):
        raise LineageBroken(f"{broken} (its record_id is not a sha256)")
    return checkpoint, record_id
