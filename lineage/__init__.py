"""Checkpoint lineage: the record in every checkpoint (``record``), a checkpoint as a command is given it (a folder,
a run folder, or in a store: ``addressed``), checking a chain (``verify``), showing it (``show``) and exporting it to
other tools' formats (``export``). Light: no training stack is imported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftc.errors import LineageBroken, UsageError

from .addressed import Located, checkpoint_folder, in_store, local_checkpoint
from .record import LINEAGE_FILE, SIGNATURE_FILE, read_record
from .signature_check import SignatureState, signature_state
from .signing import signer_from_env
from .trusted_keys import TrustedKey, load_trusted_keys, trusted_keys_from_env
from .verify import _Signatures, verify_checkpoint

__all__ = [
    "LINEAGE_FILE",
    "Located",
    "SIGNATURE_FILE",
    "SignatureState",
    "TrustedKey",
    "checkpoint_folder",
    "in_store",
    "load",
    "load_trusted_keys",
    "local_checkpoint",
    "read_record",
    "sign",
    "signature_state",
    "trusted_keys_from_env",
    "verify",
    "verify_checkpoint",
]


def load(path: Path) -> dict[str, Any]:
    """The lineage record of the checkpoint at ``path``."""
    folder = checkpoint_folder(path)
    try:
        return read_record(folder)  # type: ignore[return-value]
    except ValueError as exc:
        raise LineageBroken(str(exc)) from None


def verify(
    path: Path | str,
    *,
    trusted_keys: list[TrustedKey] | None = None,
    signatures: list[tuple[str, SignatureState]] | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], int, list[str], list[str]]:
    """Verify the chain of the checkpoint at ``path`` (a folder, a run folder, or in a store: a checkpoint an ftc run
    published to ``s3://…/checkpoints/step-N/`` or ``gs://…``, or the run's prefix through its best or latest
    pointer; see :func:`local_checkpoint`): the record, how many records it holds, the parents whose files were
    re-hashed, and the local parents that could not be found to re-hash. Raises :class:`LineageBroken` listing every
    file or record that does not match. ``signatures``, when given, receives (node, signature state) for the
    checkpoint and each parent checkpoint verified, checked against ``trusted_keys``. ``say``: told which checkpoint
    a pointer named."""
    found = _Signatures(trusted_keys or []) if signatures is not None else None
    with local_checkpoint(path, say=say) as checkpoint:
        result = _verify_folder(checkpoint.folder, checkpoint.shown, checkpoint.digests, signatures=found)
    if signatures is not None and found is not None:
        signatures += found.found
    return result


def sign(path: Path) -> tuple[Path, str]:
    """Sign the checkpoint (or export) at ``path`` after the fact, with the key ``FTC_SIGNING_KEY`` names: its record
    and every file are verified first (what is signed is what the record says), then ``model.sig`` is written beside
    them. For checkpoints written where no key was (a container). Returns (the folder, who signed)."""
    from .verify import verified_record

    folder = checkpoint_folder(path)
    signer = signer_from_env()
    if signer is None:
        raise UsageError(
            f"{folder}: no signing key: set FTC_SIGNING_KEY to an EC private key in PEM (docs/security.md)"
        )
    signature = folder / SIGNATURE_FILE
    if signature.exists() or signature.is_symlink():
        raise UsageError(f"{folder}: already signed ({SIGNATURE_FILE}); remove it first to sign the folder again")
    verified_record(folder, "will not be signed: it is not what its lineage record says", "sign an intact checkpoint")
    signer.sign(folder)
    return folder, signer.describe()


def _verify_folder(
    folder: Path, shown: str, digests: dict[str, str] | None = None, *, signatures: _Signatures | None = None
) -> tuple[dict[str, Any], int, list[str], list[str]]:
    unreached: list[str] = []
    rehashed: list[str] = []
    record, problems = verify_checkpoint(
        folder, unreached=unreached, rehashed=rehashed, _digests=digests, signatures=signatures
    )
    if problems or record is None:
        problems = [p.replace(str(folder.resolve()), shown).replace(str(folder), shown) for p in problems]
        raise LineageBroken(f"{shown}: the lineage does not verify:\n    " + "\n    ".join(problems))
    count, stack = 0, [record]
    while stack:
        count += 1
        stack += [p["lineage"] for p in stack.pop().get("parents", []) if p.get("lineage")]
    return record, count, rehashed, unreached
