"""A checkpoint as a command is given it, on this machine: every command that takes a checkpoint opens it with
:func:`local_checkpoint`, so each accepts the same four things.

    runs/x/checkpoints/step-000048        a checkpoint folder
    runs/x                                a run's output folder: its best, else its latest checkpoint
    s3://bucket/run/checkpoints/step-48/  a checkpoint an ftc run published to a store (s3:// or gs://)
    s3://bucket/run/                      a published run: the checkpoint its ``best`` pointer names, else ``latest``;
    s3://bucket/run/best                  ... or the pointer named (``latest`` too; with no trailing slash)

A checkpoint in a store is fetched through the content cache (a second command downloads nothing again) into a folder
of this command's own under ftc's cache, each file checked against the sha256 its marker names as it arrives and the
lineage record against those, before anything reads it; a pointer is outside bytes (``ftc.stores.pointers``), and
the checkpoint it names must hold the record_id it names. The folder is removed when the command is done.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import InputUnresolvable, LineageBroken, UsageError
from ftc.spec.text import for_terminal

from .record import LINEAGE_FILE

__all__ = ["Located", "checkpoint_folder", "in_store", "local_checkpoint"]

STORE_SCHEMES = ("s3://", "gs://")
#: a pointer is at most a few hundred bytes (parse_pointer refuses more than 4 KiB); past this it is not read at all
_POINTER_READ = 64 * 1024
#: the run's files beside its checkpoints that ``ftc report`` draws (outside input there too: read bounded)
_RUN_FILES = {"metrics.jsonl": 32 << 20, "summary.json": 16 << 20}
_MARKER = re.compile(r"checkpoints/(step-[0-9]+)\.complete")


@dataclass(frozen=True)
class Located:
    """A checkpoint on this machine: its ``folder``, how messages name it (``shown``: the folder, or the checkpoint's
    URI in a store), and for a fetched one the sha256 of each file as checked on arrival (``digests``) and the
    pointer it was reached through (``pointer``)."""

    folder: Path
    shown: str
    digests: dict[str, str] | None = None
    pointer: str | None = None
    given: Path | None = None

    @property
    def path(self) -> Path:
        """What to hand a function that takes a checkpoint's path: a local one as given (a run folder stays one, as
        records and messages name it), a fetched one's folder."""
        return self.given if self.given is not None else self.folder


def in_store(given: str | Path) -> bool:
    """Whether ``given`` names a location in an object store (s3://, gs://)."""
    return str(given).startswith(STORE_SCHEMES)


def checkpoint_folder(path: Path | str) -> Path:
    """The checkpoint ``path`` names: a checkpoint folder, or a run's output folder (its best, else latest)."""
    if in_store(path) or str(path).startswith(("s3:/", "gs:/")):  # (a URI that a path type cut to one slash)
        raise UsageError(f"{path}: a location in a store, not a folder on this machine: this takes a checkpoint folder")
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path}: no such checkpoint folder")
    if (path / LINEAGE_FILE).exists() or (path / LINEAGE_FILE).is_symlink():
        return path  # whatever it is: reading it says what is wrong with it
    for link in ("best", "latest"):
        if (path / link / LINEAGE_FILE).exists():
            return (path / link).resolve()
    raise UsageError(f"{path}: no {LINEAGE_FILE} here (nor in best/ or latest/): not a checkpoint written by ftc")


@contextmanager
def local_checkpoint(
    given: str | Path, *, run_files: bool = False, say: Callable[[str], None] | None = None
) -> Iterator[Located]:
    """The checkpoint ``given`` names (see the module), as a folder on this machine for as long as the ``with``
    lasts. A store's checkpoint is fetched and verified against its marker first (:class:`LineageBroken` for bytes
    or a record that are not what the marker names, or a pointer that names another record); ``run_files``: the
    run's metrics.jsonl and summary.json too, beside ``checkpoints/`` as in a run folder (unverified, as there).
    ``say``: told which checkpoint a pointer named (a line, its control characters shown escaped)."""
    text = str(given)
    if not in_store(text):
        folder = checkpoint_folder(Path(text))
        yield Located(folder, str(folder), given=Path(text))
        return
    store = _store(text)
    uri, pointer = _resolve(store, text)
    if pointer is not None and say is not None:
        say(for_terminal(f"{pointer[0]}: {uri}"))
    with _scratch() as scratch:
        yield _fetch(store, uri, scratch, pointer, run_files)


def _store(uri: str) -> Any:
    from ftc.stores.remote import RemoteProblem, store_for

    try:
        return store_for(uri)
    except RemoteProblem as exc:
        raise _unreadable(exc) from None


def _unreadable(exc: Exception) -> InputUnresolvable:
    """A store that cannot be read (not there, denied, unreachable, no client): its reason picks the exit code."""
    return InputUnresolvable(f"{exc}\n    fix: {getattr(exc, 'hint', '') or 'check the location'}", exc.reason)  # type: ignore[attr-defined]


def _read(store: Any, uri: str, limit: int) -> bytes | None:
    from ftc.stores.remote import RemoteProblem

    try:
        return store.read_small(uri, limit)
    except RemoteProblem as exc:
        raise _unreadable(exc) from None


def _resolve(store: Any, text: str) -> tuple[str, tuple[str, str] | None]:
    """The checkpoint URI ``text`` names, and the pointer (its URI, the record_id it names) it was named through."""
    from ftc.stores.pointers import POINTER_NAMES, parse_pointer
    from ftc.stores.publish import published_layout

    if published_layout(text):
        return text.rstrip("/") + "/", None
    base, _, last = text.rpartition("/")
    explicit = last in POINTER_NAMES and base.count("/") >= 3  # s3://bucket/run/best: that pointer alone
    prefix = base + "/" if explicit else text.rstrip("/") + "/"
    for name in [last] if explicit else POINTER_NAMES:
        raw = _read(store, prefix + name, _POINTER_READ)
        if raw is not None:
            checkpoint, record_id = parse_pointer(raw, prefix + name)
            return prefix + checkpoint + "/", (prefix + name, record_id)
    raise InputUnresolvable(_nothing_named(store, prefix, text if explicit else None))


def _nothing_named(store: Any, prefix: str, pointer: str | None) -> str:
    """What is under ``prefix`` when no pointer names a checkpoint there, and what to type instead."""
    from ftc.stores.remote import RemoteProblem

    try:
        names = store.names(prefix)
    except RemoteProblem as exc:
        raise _unreadable(exc) from None
    published = [m.group(1) for m in map(_MARKER.fullmatch, names) if m]
    missing = f"{pointer}: no such pointer" if pointer else f"{prefix}: no best or latest pointer here"
    if published:
        shown = ", ".join(f"{prefix}checkpoints/{n}/" for n in published[-5:])
        more = f" (and {len(published) - 5} earlier)" if len(published) > 5 else ""
        return (
            f"{missing}; the checkpoints published there: {shown}{more}\n    fix: name one of them, e.g. "
            f"{prefix}checkpoints/{published[-1]}/ (a run publishes best and latest after each checkpoint's marker)"
        )
    if names:
        # object names are the store's (outside bytes): escaped before they reach a terminal
        unfinished = sorted({n.split("/")[1] for n in names if n.startswith("checkpoints/step-") and "/" in n[12:]})
        unfinished = [for_terminal(n) for n in unfinished]
        why = (
            f"checkpoints whose upload has not finished (no marker): {', '.join(unfinished[:5])}"
            if unfinished
            else f"{len(names)} object(s), none a checkpoint ftc published: {', '.join(map(for_terminal, names[:5]))}"
        )
        return f"{missing}; it holds {why}\n    fix: {_WHAT_TO_TYPE}"
    return f"{missing}; nothing is stored under {prefix}\n    fix: {_WHAT_TO_TYPE}"


_WHAT_TO_TYPE = (
    "give a published run's output_dir (s3://bucket/run/, its best checkpoint), s3://bucket/run/latest, or a "
    "checkpoint s3://bucket/run/checkpoints/step-N/ (gs:// alike)"
)


@contextmanager
def _scratch() -> Iterator[Path]:
    """A new folder under ftc's cache (beside the objects it is copied from), removed when the command is done."""
    import shutil
    import tempfile

    from ftc.spec.locations import cache_dir

    root = cache_dir() / "checkpoints"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _sweep(root)
        folder = Path(tempfile.mkdtemp(prefix="fetched-", dir=root))
    except OSError as exc:
        raise _storage(root, exc) from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: a fetched copy older than this was left by a command that was killed (each removes its own when it ends)
_LEFT_BEHIND_S = 3 * 24 * 3600


def _sweep(root: Path) -> None:
    """Remove the fetched copies under ``root`` that killed commands left (older than three days: not a running
    command's), so that copies do not pile up in the cache."""
    import shutil
    import time

    for left in root.glob("fetched-*"):
        try:
            if left.is_dir() and not left.is_symlink() and time.time() - left.stat().st_mtime > _LEFT_BEHIND_S:
                shutil.rmtree(left, ignore_errors=True)
        except OSError:
            continue


def _storage(root: Path, exc: OSError) -> Exception:
    from ftc.stores.storage import storage_failure

    return storage_failure(root, exc, "copying a checkpoint fetched from a store", "cache") or exc


def _fetch(store: Any, uri: str, scratch: Path, pointer: tuple[str, str] | None, run_files: bool) -> Located:
    """The published checkpoint at ``uri`` in ``scratch/checkpoints/``, every file and its record verified."""
    from ftc.stores.publish import download_checkpoint, read_marker
    from ftc.stores.remote import RemoteProblem

    from .verify import checkpoint_problems

    shown = uri.rstrip("/")
    folder = scratch / "checkpoints" / shown.rsplit("/", 1)[-1]
    folder.parent.mkdir()
    try:
        marker = read_marker(store, uri)
        if pointer is not None and marker is not None and marker["record_id"] != pointer[1]:
            raise LineageBroken(
                f"{pointer[0]} names record {pointer[1]}, but {uri} holds record {for_terminal(marker['record_id'])}"
                f" (its marker): the pointer is not this checkpoint's; nothing of it was read\n    fix: name the "
                f"checkpoint by its URI, or publish the run's pointers again (`ftc run PLAN --resume`)"
            )
        marker = download_checkpoint(store, uri, folder, marker=marker)
    except RemoteProblem as exc:
        if exc.changed:  # no marker, or bytes the marker does not name: an upload cut short, or a change
            raise LineageBroken(
                f"{shown}: the lineage does not verify:\n    {for_terminal(str(exc), newlines=True)}"
            ) from None
        raise _unreadable(exc) from None
    except OSError as exc:
        raise _storage(scratch, exc) from None
    # each file was checked against the marker's sha256 as it arrived: the record is checked against those
    digests = {f["path"]: f["sha256"] for f in marker["files"]}
    record, problems = checkpoint_problems(folder, digests)
    if record is not None and record.get("record_id") != marker["record_id"]:
        problems.append(
            f"{shown}/{LINEAGE_FILE}: record {record.get('record_id')}, its marker names "
            + for_terminal(str(marker["record_id"]))
        )
    if problems:
        problems = [for_terminal(p.replace(str(folder), shown)) for p in problems]
        raise LineageBroken(f"{shown}: the lineage does not verify:\n    " + "\n    ".join(problems))
    if run_files:
        _fetch_run_files(store, shown.rsplit("/checkpoints/", 1)[0] + "/", scratch)
    return Located(folder, shown, digests, pointer[0] if pointer else None)


def _fetch_run_files(store: Any, prefix: str, scratch: Path) -> None:
    """The run's metrics and summary where the store holds them: an extra (as beside a local checkpoint), so one
    that cannot be read is left out."""
    from ftc.stores.remote import RemoteProblem

    for name, limit in _RUN_FILES.items():
        try:
            data = store.read_small(prefix + name, limit)
        except RemoteProblem:
            continue
        if data is not None:
            try:
                (scratch / name).write_bytes(data)
            except OSError as exc:
                raise _storage(scratch, exc) from None
