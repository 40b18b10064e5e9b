"""Checking a lineage chain: every ``record_id`` recomputed (embedded parents' too), every file of the checkpoint
re-hashed, and every parent that can be reached from here re-hashed and verified in turn.

Each finding is one line naming the file and the expected vs found digest.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from ftc.stores.hashing import (
    NotAnInput,
    StatCache,
    changed_file_lines,
    hash_file,
    hash_tree,
    walk_files,
)
from ftc.stores.sources import kind_named
from ftc.stores.stamps import ReadRecord

from .plan import written_in
from .record import LINEAGE_FILE, MAX_CHAIN_DEPTH, SIGNATURE_FILE, located, read_record, record_ids
from .signature_check import SignatureState, signature_state
from .trusted_keys import TrustedKey

__all__ = [
    "checkpoint_problems",
    "files_problems",
    "record_problems",
    "verified_record",
    "verify_checkpoint",
]


def record_problems(record: dict[str, Any], where: str, _ids: dict[int, str] | None = None) -> list[str]:
    """The record and every record embedded in it hash to their ``record_id``s."""
    problems = []
    ids = _ids if _ids is not None else record_ids(record)  # every id of the chain, each record encoded once
    found = ids[id(record)]
    if found != record.get("record_id"):
        problems.append(
            f"{where}: the lineage record was edited: record_id {record.get('record_id')} written, {found} computed"
        )
    for parent in record.get("parents", []):
        embedded = parent.get("lineage")
        if embedded is None:
            continue
        if embedded.get("record_id") != parent.get("record_id"):
            problems.append(
                f"{where}: parent {parent['role']}'s embedded record is {embedded.get('record_id')},"
                f" the entry names {parent.get('record_id')}"
            )
        problems += record_problems(embedded, f"{where} -> {parent['role']}", ids)
    return problems


def files_problems(expected: list[dict[str, Any]], found: dict[str, str], where: str) -> list[str]:
    """One line per file that is missing, extra or different."""
    return changed_file_lines(
        {f["path"]: f["sha256"] for f in expected}, found, prefix=f"{where}/", unlisted="not in the lineage record"
    )


def _unlisted(expected: set[str], path: str, skip_record: bool) -> bool:
    """Whether ``path`` is a file of the folder the record does not name: its own record, and its signature (written
    after the record, over it), are not."""
    if path in expected:
        return False
    return not ((skip_record and path == LINEAGE_FILE) or path == SIGNATURE_FILE)


def _unlisted_problem(folder: Path, path: str) -> str:
    """What is wrong with ``path``, a file in ``folder`` that the record does not name, found without reading it."""
    try:
        os.stat(folder / path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{folder}/{path} is a symlink loop (the link points back at itself)"
    return f"{folder}/{path}: not in the lineage record (not hashed)"


def _folder_problems(
    expected: list[dict[str, Any]], folder: Path, skip_record: bool, read: ReadRecord | None = None
) -> list[str]:
    """Every file under ``folder`` against ``expected``; a FIFO, a device or a symlink loop in it is the problem.
    Names are compared first: a file the record does not name is reported without a byte of it read (a 100 GB
    file dropped in is named, not hashed). ``read`` gains each file hashed, as it was then."""
    names = {f["path"] for f in expected}
    try:
        present = list(walk_files(folder))
    except NotAnInput as exc:
        return [str(exc)]
    unlisted = [p for p in present if _unlisted(names, p, skip_record)]
    if unlisted:  # said by name, with what is missing; the rest is hashed once the folder holds only its files
        missing = [f"{folder}/{p}: missing" for p in sorted(names - set(present))]
        return [_unlisted_problem(folder, p) for p in unlisted] + missing
    try:
        with StatCache(reuse=False) as cache:  # hashed again; what was found spares the checks that follow a verify
            found = {
                f.path: f.sha256
                for f in hash_tree(folder, cache)
                if not (skip_record and f.path == LINEAGE_FILE)
                and not (f.path == SIGNATURE_FILE and f.path not in names)
            }
    except NotAnInput as exc:
        return [str(exc)]
    if read is not None:
        read.update(cache.read)
    return files_problems(expected, found, str(folder))


def checkpoint_problems(
    folder: Path, digests: dict[str, str] | None = None, read: ReadRecord | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """The record of the checkpoint in ``folder`` and everything wrong with it: its record_id (and embedded records')
    and every file against the record (``digests``: path -> sha256 of its files, when just verified while fetching
    them; else each is hashed, and ``read`` gains it as it was then). Its parents are not visited (see
    :func:`verify_checkpoint`)."""
    try:
        record = read_record(folder)
    except ValueError as exc:
        return None, [str(exc)]
    if record is None:
        return None, [f"{folder}: no {LINEAGE_FILE}: not a checkpoint written by ftc (or from before lineage records)"]
    problems = record_problems(record, str(folder))
    if digests is not None:
        found = {path: sha for path, sha in digests.items() if path not in (LINEAGE_FILE, SIGNATURE_FILE)}
        problems += files_problems(record["checkpoint"]["files"], found, str(folder))
    else:
        problems += _folder_problems(record["checkpoint"]["files"], folder, skip_record=True, read=read)
    return record, problems


def verified_record(folder: Path, refusal: str, fix: str, read: ReadRecord | None = None) -> dict[str, Any]:
    """The record of the checkpoint in ``folder`` once it and every file verify; else :class:`LineageBroken` saying
    ``refusal`` (what will not be done with it), every problem, and ``fix``. ``read`` gains each file hashed, as it
    was then (:meth:`~ftc.stores.stamps.ReadRecord.changed`, once they are read)."""
    from ftc.errors import LineageBroken

    record, problems = checkpoint_problems(folder, read=read)
    if problems or record is None:
        raise LineageBroken(f"{folder}: {refusal}\n    " + "\n    ".join(problems) + f"\n    fix: {fix}")
    return record


def _in_store(parent: dict[str, Any]) -> bool:
    """A parent folder in an object store whose record pins each file (size, sha256 and the store's pin): fetchable."""
    source, files = parent["source"], parent.get("files") or []
    kind = kind_named(source.get("source"))
    return (
        kind is not None
        and kind.store_pins
        and source.get("kind") == "dir"
        and bool(files)
        and all(isinstance(f.get("pin"), dict) and type(f.get("size")) is int and f["size"] >= 0 for f in files)
    )


def _store_parent_problems(
    parent: dict[str, Any],
    child: Path,
    seen: set[str],
    unreached: list[str] | None,
    rehashed: list[str] | None,
    signatures: _Signatures | None = None,
) -> list[str]:
    """A parent in a store: every file fetched again (the pinned object, checked against its sha256), then its own
    chain verified from the fetched copy. A store that cannot be read leaves it unreached, as a missing disk does."""
    from ftc.stores.publish import fetch_pinned_folder

    uri = parent["source"]["uri"]
    if f"{uri} {parent.get('digest')}" in seen:
        return []
    seen.add(f"{uri} {parent.get('digest')}")
    copy, problems, unreadable = fetch_pinned_folder(uri, parent["files"])
    if unreadable is not None:
        if unreached is not None:
            unreached.append(f"{parent['role']} of {child.name}: {uri}: {unreadable}")
        return problems
    if copy is None:
        return problems
    if rehashed is not None:
        rehashed.append(
            f"{parent['role'].replace('_', ' ')} {uri} ({len(parent['files'])} files, fetched from the store)"
        )
    if parent.get("lineage") is None:
        return []
    digests = {f["path"]: f["sha256"] for f in parent["files"]}  # each fetched file was just checked against these
    # the fetched copy holds what the child pinned: its signature too when it was there then (else: unsigned)
    _note_signature(signatures, f"{parent['role']} {uri}", copy, parent["files"], [], fetched=True)
    _, more = verify_checkpoint(
        copy, _seen=seen, unreached=unreached, rehashed=rehashed, _digests=digests, signatures=signatures, _top=False
    )
    return [p.replace(str(copy.resolve()), uri.rstrip("/")) for p in more]


class _Signatures:
    """What ``verify_checkpoint`` collects about signatures: the keys trusted, and (node, state) per checkpoint of
    the chain it verified."""

    def __init__(self, trusted: list[TrustedKey]):
        self.trusted = trusted
        self.found: list[tuple[str, SignatureState]] = []


def _note_signature(
    signatures: _Signatures | None,
    name: str,
    folder: Path,
    files: list[dict[str, Any]],
    problems: list[str],
    fetched: bool = False,
) -> None:
    """The signature state of the checkpoint in ``folder`` whose ``files`` (path, sha256) were just verified (when
    ``problems`` is empty): a signed file's sha256 is taken from there, not hashed again."""
    if signatures is None:
        return
    if problems:
        signatures.found.append((name, SignatureState("broken", None, "the lineage does not verify")))
        return
    digests = {f["path"]: f["sha256"] for f in files}
    if (folder / SIGNATURE_FILE).exists() and LINEAGE_FILE not in digests:
        try:
            digests[LINEAGE_FILE], _ = hash_file(folder / LINEAGE_FILE)
        except (OSError, NotAnInput):
            pass  # the signature check reads it itself, and says what is wrong
    state = signature_state(folder, signatures.trusted, digests=digests, _links=fetched)
    signatures.found.append((name, state))


def verify_checkpoint(
    folder: Path,
    *,
    _seen: set[str] | None = None,
    unreached: list[str] | None = None,
    rehashed: list[str] | None = None,
    _digests: dict[str, str] | None = None,
    signatures: _Signatures | None = None,
    _top: bool = True,
    _depth: int = 1,
) -> tuple[dict[str, Any] | None, list[str]]:
    """The record of the checkpoint in ``folder`` and everything wrong with its chain (empty: all verified).

    Parents are re-hashed where they can be reached (a local parent, located relative to the checkpoint); a
    parent with its own record is verified the same way, recursively. Local parents that are not found (moved,
    deleted, or on another machine) are added to ``unreached``: their records were still checked, their files not.
    ``signatures`` collects the signature state of the checkpoint and of each parent checkpoint verified here."""
    seen = _seen if _seen is not None else set()
    folder = folder.resolve()  # locations are relative to the checkpoint's real folder (not a best/ symlink)
    record, problems = checkpoint_problems(folder, _digests)
    if record is None:
        return None, problems
    if _top:
        _note_signature(signatures, folder.name, folder, record["checkpoint"]["files"], problems)
    seen.add(str(folder.resolve()))
    anchor = written_in(folder, record)  # where a relative location of a local parent starts from
    for parent in record.get("parents", []):
        if _in_store(parent):
            problems += _store_parent_problems(parent, folder, seen, unreached, rehashed, signatures)
            continue
        location = parent["source"].get("location")
        if location is None:
            continue  # not on this machine's disk (a hub id, a record from before stores were pinned per file)
        path = located(location, anchor)  # never another user's home: the record is outside input
        if not path.exists():
            if unreached is not None:
                unreached.append(f"{parent['role']} of {folder.name}: {path}")
            if signatures is not None and parent.get("lineage") is not None:
                shown = parent["source"].get("given") or str(path)
                gone = SignatureState(
                    "unverified", "no one known", "not found here, so its signature cannot be checked"
                )
                signatures.found.append((f"{parent['role']} {shown}", gone))
            continue
        hashed_as = f"{path.resolve()} {parent.get('digest')}"  # the base of two stages is re-hashed once
        if parent.get("files") is not None and hashed_as not in seen:
            seen.add(hashed_as)
            if path.is_dir():
                found = _folder_problems(parent["files"], path, skip_record=False)
                problems += found
                if parent.get("lineage") is not None:  # a checkpoint: a node of the chain, signed or not
                    shown = parent["source"].get("given") or str(path)
                    _note_signature(signatures, f"{parent['role']} {shown}", path, parent["files"], found)
            else:
                problems += files_problems(parent["files"], {}, str(path))
            if rehashed is not None:
                shown = parent["source"].get("given") or str(path)
                rehashed.append(f"{parent['role'].replace('_', ' ')} {shown} ({len(parent['files'])} files)")
        if parent.get("lineage") is not None and path.is_dir() and str(path.resolve()) not in seen:
            if _depth >= MAX_CHAIN_DEPTH:  # folders that name each other on and on: no chain ftc writes is longer
                problems.append(
                    f"{path}: the chain goes on past {MAX_CHAIN_DEPTH} checkpoints on disk (folders naming each other"
                    " as parents): not followed; no chain ftc writes is longer"
                )
                continue
            _, more = verify_checkpoint(
                path, _seen=seen, unreached=unreached, rehashed=rehashed, signatures=signatures, _top=False,
                _depth=_depth + 1,
            )  # fmt: skip
            problems += [p for p in more if p not in problems]
    return record, problems
