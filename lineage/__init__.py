"""Checkpoint lineage: the record in every checkpoint (``record``), checking a chain (``verify``), showing it
(``show``) and exporting it to other tools' formats (``export``). Light: no training stack is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftc.errors import LineageBroken, UsageError

from .record import LINEAGE_FILE, SIGNATURE_FILE, read_record
from .signature_check import SignatureState, signature_state
from .signing import signer_from_env
from .trusted_keys import TrustedKey, load_trusted_keys, trusted_keys_from_env
from .verify import _Signatures, verify_checkpoint

__all__ = [
    "LINEAGE_FILE",
    "SIGNATURE_FILE",
    "SignatureState",
    "TrustedKey",
    "checkpoint_folder",
    "load",
    "load_trusted_keys",
    "read_record",
    "sign",
    "signature_state",
    "trusted_keys_from_env",
    "verify",
    "verify_checkpoint",
]


def checkpoint_folder(path: Path) -> Path:
    """The checkpoint ``path`` names: a checkpoint folder, or a run's output folder (its best, else latest)."""
    if not path.is_dir():
        raise UsageError(f"{path}: no such checkpoint folder")
    if (path / LINEAGE_FILE).exists() or (path / LINEAGE_FILE).is_symlink():
        return path  # whatever it is: reading it says what is wrong with it
    for link in ("best", "latest"):
        if (path / link / LINEAGE_FILE).exists():
            return (path / link).resolve()
    raise UsageError(f"{path}: no {LINEAGE_FILE} here (nor in best/ or latest/): not a checkpoint written by ftc")


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
) -> tuple[dict[str, Any], int, list[str], list[str]]:
    """Verify the chain of the checkpoint at ``path`` (a folder, or a checkpoint an ftc run published to
    ``s3://…/checkpoints/step-N/`` or ``gs://…``): the record, how many records it holds, the parents whose files
    were re-hashed, and the local parents that could not be found to re-hash. Raises :class:`LineageBroken` listing
    every file or record that does not match. ``signatures``, when given, receives (node, signature state) for the
    checkpoint and each parent checkpoint verified, checked against ``trusted_keys``."""
    found = _Signatures(trusted_keys or []) if signatures is not None else None
    if str(path).startswith(("s3://", "gs://")):
        result = _verify_published(str(path).rstrip("/") + "/", found)
    else:
        folder = checkpoint_folder(Path(path))
        result = _verify_folder(folder, str(folder), signatures=found)
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


def _verify_published(uri: str, signatures: _Signatures | None) -> tuple[dict[str, Any], int, list[str], list[str]]:
    """A published checkpoint: downloaded (each file against its marker's sha256), then verified as a folder."""
    import tempfile

    from ftc.errors import InputUnresolvable
    from ftc.stores.publish import download_checkpoint
    from ftc.stores.remote import RemoteProblem, store_for

    with tempfile.TemporaryDirectory(prefix="ftc-verify-") as scratch:
        folder = Path(scratch) / uri.rstrip("/").rsplit("/", 1)[-1]
        try:
            marker = download_checkpoint(store_for(uri), uri, folder)
        except RemoteProblem as exc:
            if exc.changed:
                raise LineageBroken(f"{uri}: the lineage does not verify:\n    {exc}") from None
            raise InputUnresolvable(f"{uri}: {exc}\n    fix: {exc.hint}", exc.reason) from None
        # each file was checked against the marker's sha256 as it arrived: the record is checked against those
        digests = {f["path"]: f["sha256"] for f in marker["files"]}
        return _verify_folder(folder, uri.rstrip("/"), digests, signatures=signatures)


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
