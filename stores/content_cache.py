"""A content-addressed cache of downloaded inputs: one file per sha256, written once, shared by every run.

    $FTC_CACHE_DIR/objects/ab/abcdef...     the bytes, named by their sha256
    $FTC_CACHE_DIR/pins/<key>.json          which sha256 a remote pin (bucket, key, version, etag) resolved to
    $FTC_CACHE_DIR/partial/<key>.part       a download in progress, resumed where it stopped
    $FTC_CACHE_DIR/partial/<key>.parts      which byte ranges of a large download are complete

A download (``downloads``: streamed, or as parallel ranges) is checked against what the plan expects and only then
renamed into objects/, so nothing half-written or wrong is ever found there; an object found changed later is evicted
and downloaded again. A lock per pin makes two processes that need the same input at once download it once. This
module is the cache's layout, its locks and what it verifies.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import write_text_atomic
from .downloads import Opener, discard, download, open_in_cache
from .hashing import StatCache, cache_dir, hash_file
from .stamps import ReadRecord, stamp
from .storage import storage_failure

__all__ = ["ContentCache", "DigestMismatch"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_STORAGE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _warn(message: str) -> None:
    from ftc.spec.text import for_terminal, redact  # a pin's URI may come from a plan someone else wrote

    print(f"warning: {for_terminal(redact(message))}", file=sys.stderr, flush=True)


class DigestMismatch(Exception):
    def __init__(self, expected: str, found: str, algorithm: str = "sha256"):
        super().__init__(f"expected {algorithm}:{expected}, found {algorithm}:{found}")
        self.expected, self.found, self.algorithm = expected, found, algorithm


class ContentCache:
    """The cache under ``root`` (``FTC_CACHE_DIR``, or ftc's folder in the user's cache): :meth:`fetch` an object
    by its pin, :meth:`known` whether it is here and intact, :meth:`view` a folder of cached objects. ``read``:
    each object verified, as it was then (:class:`~ftc.stores.stamps.ReadRecord`)."""

    #: objects larger than this are fetched as parallel byte ranges of ``part_size``
    ranged_above = 32 << 20
    part_size = 16 << 20
    parallel_parts = 4

    def __init__(self, root: Path | None = None, warn: Callable[[str], None] | None = None):
        self.root = root if root is not None else cache_dir()
        self.warn = warn or _warn
        self.read = ReadRecord()

    def _key(self, pin: dict) -> str:
        return hashlib.sha256(json.dumps(pin, sort_keys=True).encode()).hexdigest()

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def known(self, pin: dict) -> Path | None:
        """The cached bytes of ``pin``, when they were downloaded before and still hash to the sha256 they are named
        by. Checked through the stat cache, so an unchanged object is not re-read while any write to it is caught;
        an object that fails is evicted (the next fetch downloads it again) with a warning."""
        note = self.root / "pins" / f"{self._key(pin)}.json"
        sha = self._pinned_sha256(note)
        if sha is None:
            return None
        path = self.object_path(sha)
        found = self._found(path, sha)
        if found is None:
            return None
        if found == sha:
            return path
        self.warn(
            f"the cached copy of {pin.get('uri', 'an input')} ({path}) is not the bytes it was stored as "
            f"(found {found}); removed, downloading it again"
        )
        path.unlink(missing_ok=True)
        note.unlink(missing_ok=True)
        return None

    def _found(self, path: Path, sha: str) -> str | None:
        """What the object at ``path`` hashes to (None: there is none; "unreadable (...)": not one this cache wrote),
        through the stat cache; when it is ``sha``, it is stamped in ``read`` as it was hashed."""
        try:
            with StatCache(self.root / "statcache.sqlite3") as stamps:
                found, _ = hash_file(path, stamps)
        except FileNotFoundError:
            return None
        except OSError as exc:  # NotAnInput (a FIFO, a loop) or unreadable
            return f"unreadable ({exc})"
        if found == sha:
            self.read.update(stamps.read)
        return found

    def _pinned_sha256(self, note: Path) -> str | None:
        """The sha256 a pin note names; None (and the note removed, with a warning) when it is not one."""
        try:
            record = json.loads(note.read_bytes()[:4096])
            sha = record["sha256"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            sha = f"({type(exc).__name__})"
        if isinstance(sha, str) and _SHA256.fullmatch(sha):
            return sha
        self.warn(f"{note}: not a pin record of this cache; removed")
        note.unlink(missing_ok=True)
        return None

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / f"{key}.lock"  # the cache may be shared: a link planted there is refused, never truncated
        with os.fdopen(open_in_cache(lock, os.O_WRONLY | os.O_CREAT), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def fetch(
        self,
        pin: dict,
        opener: Opener,
        *,
        size: int | None = None,
        expected_sha256: str | None = None,
        expected_md5: str | None = None,
        parts: int | None = None,
    ) -> tuple[Path, str]:
        """Path and sha256 of the bytes ``pin`` names, downloading them with ``opener`` unless cached. ``size``
        (when known) lets a large object come as ``parts`` (default ``parallel_parts``) parallel byte ranges; with
        ``parts=1`` it streams in one request, hashed as it arrives (best when many objects come at once).

        Raises :class:`DigestMismatch` (and keeps nothing) when the bytes are not ``expected_sha256`` (or, for
        objects named by their md5 as DVC's are, ``expected_md5``).
        """
        try:
            return self._fetch(pin, opener, size, expected_sha256, expected_md5, parts)
        except OSError as exc:  # a read-only, full or foreign cache folder is the user's to fix, not a traceback
            failure = storage_failure(self.root, exc, f"storing {pin.get('uri', 'a download')}", "cache")
            if failure is None:
                raise
            raise failure from None

    def _fetch(
        self,
        pin: dict,
        opener: Opener,
        size: int | None,
        expected_sha256: str | None,
        expected_md5: str | None,
        parts: int | None,
    ) -> tuple[Path, str]:
        key = self._key(pin)
        with self._lock(key):
            cached = self.known(pin)
            if cached is not None:
                sha = cached.name
                if expected_sha256 and sha != expected_sha256:
                    raise DigestMismatch(expected_sha256, sha)
                return cached, sha
            partial = self.root / "partial" / f"{key}.part"
            partial.parent.mkdir(parents=True, exist_ok=True)
            algorithms = ("sha256", "md5") if expected_md5 else ("sha256",)
            parts = self.parallel_parts if parts is None else parts
            expected = {"md5": expected_md5, "sha256": expected_sha256}
            try:
                if not (expected_sha256 or expected_md5) and partial.exists():
                    # nothing to check the kept bytes against (an S3 object uploaded in parts, not yet pinned by
                    # sha256): a byte changed in them would be cached unseen, so the download starts over
                    discard(partial)
                resumed = partial.exists()
                digests = self._download(partial, opener, size, algorithms, parts)
                wrong = [(name, want) for name, want in expected.items() if want and digests[name] != want]
                if wrong and resumed:  # the bytes kept from an earlier attempt may be what is wrong: start over
                    self.warn(f"{pin.get('uri', 'a download')}: the resumed download does not verify; starting over")
                    discard(partial)
                    digests = self._download(partial, opener, size, algorithms, parts)
                    wrong = [(name, want) for name, want in expected.items() if want and digests[name] != want]
                if wrong:
                    name, want = wrong[0]
                    raise DigestMismatch(want, digests[name], name)
                sha = digests["sha256"]
                final = self.object_path(sha)
                final.parent.mkdir(parents=True, exist_ok=True)
                self._place(partial, final, sha)
            except DigestMismatch:
                discard(partial)
                raise
            except OSError as exc:
                if exc.errno in _STORAGE_FAULTS:  # a full disk would stay full; a foreign cache keeps nothing of it
                    discard(partial)
                raise
            write_text_atomic(self.root / "pins" / f"{key}.json", json.dumps({"sha256": sha, "pin": pin}))
            return final, sha

    def _place(self, partial: Path, final: Path, sha: str) -> None:
        """The verified download ``partial`` as the object ``final``, stamped in ``read``. The same bytes fetched for
        another pin (a base's and an adapter's tokenizer.json), by another thread or process, are kept as they are:
        a reader of them keeps the file it verified. One placement per object at a time (its own lock)."""
        with self._lock(f"object-{sha}"):
            if self._found(final, sha) == sha:
                discard(partial)
            else:
                os.replace(partial, final)
                self.read.files[final] = stamp(final)  # (a rename changes the ctime)

    def _download(
        self, partial: Path, opener: Opener, size: int | None, algorithms: tuple[str, ...], parts: int
    ) -> dict[str, str]:
        settings = {"ranged_above": self.ranged_above, "part_size": self.part_size, "warn": self.warn}
        return download(partial, opener, size, algorithms, parts, **settings)

    def view(self, name: str, members: dict[str, str]) -> Path:
        """A folder of symlinks (relative path -> cached sha256), so a downloaded folder reads like the original."""
        try:
            return self._view(name, members)
        except OSError as exc:
            failure = storage_failure(self.root, exc, "making a folder of downloaded files", "cache")
            if failure is None:
                raise
            raise failure from None

    def _view(self, name: str, members: dict[str, str]) -> Path:
        folder = self.root / "views" / name
        for rel, sha in members.items():
            parts = rel.split("/")
            if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"{rel!r}: not a relative path inside the folder")  # a listing must not escape it
            link = folder / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            target = self.object_path(sha)
            if link.is_symlink() and os.readlink(link) == str(target):
                continue
            tmp = link.with_name(f".{link.name}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, link)
        for stray in _strays(folder, set(members)):  # left by nothing ftc wrote: it would be read too
            stray.unlink()
        return folder


def _strays(folder: Path, members: set[str]) -> list[Path]:
    """The files and links of a view that are none of its ``members`` (dot-entries aside, as in a listing). Links are
    not followed: a stray link is itself removed, never what it points at."""
    above = {"/".join(m.split("/")[:i]) for m in members for i in range(1, m.count("/") + 1)}
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # (os.walk follows no links by default)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        for name in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
            path = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
            if not name.startswith(".") and path not in members and path not in above:
                found.append(Path(dirpath) / name)
    return found
