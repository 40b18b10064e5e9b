"""sha256 of files and folders, with a stat cache so an unchanged multi-GB input is never hashed twice.

A folder's digest is the sha256 of its manifest, format ``ftc-manifest/2``: the canonical JSON (sorted keys, no
spaces, ASCII) of ``{"format": "ftc-manifest/2", "files": [[relative path, sha256], ...]}`` sorted by path. A name is
a JSON string, so no file name can forge an entry (format 1, ``"<sha256>  <path>\\n"`` lines, could be: a file
*named* ``a\\n<sha256>  b`` added a line). Names holding a control character (or a character that hides or
reorders text) are refused: they cannot be shown, nor pinned. Entries whose name starts with a dot are not part of a
folder's content (``.git``, ``.cache``, editor files).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.spec.locations import cache_dir
from ftc.spec.reading import regular_file_problem

from .listing import NotAnInput, name_problem, walk_files
from .stamps import ReadRecord, stat_key

__all__ = [
    "FileDigest",
    "NotAnInput",
    "StatCache",
    "cache_dir",
    "describe_changes",
    "file_changes",
    "hash_file",
    "hash_tree",
    "MANIFEST_FORMAT",
    "legacy_manifest_digest",
    "manifest_digest",
    "manifest_text",
    "name_problem",
    "walk_files",
]

_CHUNK = 1 << 20


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FileDigest:
    path: str  # relative to the folder, with forward slashes
    size: int
    sha256: str  # hex

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])  # releases the GIL: folders hash on several threads
    return h.hexdigest()


class StatCache:
    """sha256 per (path, device, inode, size, mtime, ctime), in SQLite under the cache folder.

    A file modified less than a second before it was hashed is not cached: its content may still be changing
    within the same timestamp. Any SQLite failure (read-only disk, locked database) just disables the cache.
    ``reuse=False``: every file is hashed again (an audit), and what was found is remembered for later checks.
    ``read``: every file looked up and folder listed, as it was then (:class:`~ftc.stores.stamps.ReadRecord`).
    """

    _RACY_NS = 1_000_000_000
    _WAIT_S = 2.0

    def __init__(self, path: Path | None = None, *, reuse: bool = True):
        self.path = path if path is not None else cache_dir() / "statcache.sqlite3"
        self.reuse = reuse
        self._db: sqlite3.Connection | None = None
        self._broken = False
        self._lock = threading.Lock()  # one connection, shared by the hashing threads
        self.hits = 0
        self.misses = 0
        self.read = ReadRecord()

    def _conn(self) -> sqlite3.Connection | None:
        with self._lock:
            return None if self._broken else self._open()

    def _open(self) -> sqlite3.Connection | None:
        if self._db is None and not self._broken:
            try:
                self._db = self._connect()
            except sqlite3.DatabaseError as exc:
                if not ("malformed" in str(exc) or "not a database" in str(exc)):
                    self._give_up(str(exc))  # locked, read-only, unreadable: go on without it, touch nothing
                else:  # not a database (any more): it only ever held what can be computed again
                    _warn(f"{self.path}: damaged ({exc}); starting it afresh")
                    try:
                        for suffix in ("", "-wal", "-shm"):
                            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                        self._db = self._connect()
                    except (sqlite3.Error, OSError) as again:
                        self._give_up(str(again))
            except OSError as exc:
                self._give_up(str(exc))
        return self._db

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):  # the cache may be shared: SQLite would follow a planted link
            found = Path(f"{self.path}{suffix}")
            if found.is_symlink() or (found.exists() and not found.is_file()):
                raise OSError(f"{found} is a link or not a file, so not one ftc wrote: it is left as it is")
        # a lock held by another process is waited for briefly, then the cache is done without
        # autocommit: each write is its own short transaction, so no connection (of this process or another) holds
        # the write lock for longer than one statement
        db = sqlite3.connect(self.path, timeout=self._WAIT_S, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, dev INT, ino INT, size INT,"
                " mtime INT, ctime INT, sha256 TEXT)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, value TEXT)")
            db.execute("SELECT count(*) FROM files WHERE path = ''").fetchone()  # reads a page: catches damage
        except BaseException:
            db.close()
            raise
        return db

    def _failed(self, exc: sqlite3.Error) -> None:
        """One wait for a lock per run: after that, the run goes on without the cache."""
        if ("locked" in str(exc) or "busy" in str(exc)) and not self._broken:
            self._give_up(f"it is locked by another connection ({exc})")

    def _give_up(self, why: str) -> None:
        self._broken = True
        _warn(f"{self.path}: not used ({why}); every file is hashed in full this time")

    def lookup(self, path: Path, st: os.stat_result) -> str | None:
        db = self._conn() if self.reuse else None
        if db is None:
            return None
        try:
            with self._lock:
                row = db.execute(
                    "SELECT dev, ino, size, mtime, ctime, sha256 FROM files WHERE path = ?", (str(path),)
                ).fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        if row is not None and tuple(row[:5]) == stat_key(st):
            return row[5]
        return None

    def store(self, path: Path, st: os.stat_result, sha256: str) -> None:
        if time.time_ns() - st.st_mtime_ns < self._RACY_NS:
            return
        db = self._conn()
        if db is None:
            return
        try:
            with self._lock:
                db.execute(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", (str(path), *stat_key(st), sha256)
                )
        except sqlite3.Error as exc:
            self._failed(exc)

    def note(self, key: str) -> Any:
        """A JSON value remembered under ``key`` (for example the result of checking a data file by digest)."""
        db = self._conn()
        if db is None:
            return None
        try:
            with self._lock:
                row = db.execute("SELECT value FROM notes WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        return json.loads(row[0]) if row else None

    def remember(self, key: str, value: Any) -> None:
        db = self._conn()
        if db is None:
            return
        try:
            with self._lock:
                db.execute("INSERT OR REPLACE INTO notes VALUES (?, ?)", (key, json.dumps(value)))
        except sqlite3.Error as exc:
            self._failed(exc)

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.commit()
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def __enter__(self) -> StatCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cached(path: Path, cache: StatCache | None) -> tuple[Path, os.stat_result, str | None]:
    """(real path, its stat, its sha256 from the stat cache or None)."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAnInput(f"{path} is a symlink loop (the link points back at itself)") from None
        raise
    st = real.stat()
    problem = regular_file_problem(path, st)
    if problem is not None:
        raise NotAnInput(problem)
    if cache is None:
        return real, st, None
    cache.read.files[path] = (real, stat_key(st))  # before hashing: a write while it is hashed shows later
    found = cache.lookup(real, st)
    if found is not None:
        cache.hits += 1
    else:
        cache.misses += 1
    return real, st, found


def _hash_and_store(real: Path, st: os.stat_result, cache: StatCache | None) -> str:
    digest = _sha256_file(real)
    if cache is not None:
        cache.store(real, st, digest)
    return digest


def hash_file(path: Path, cache: StatCache | None = None) -> tuple[str, int]:
    """(sha256 hex, size) of ``path``, from the stat cache when the file is unchanged."""
    real, st, digest = _cached(path, cache)
    return digest or _hash_and_store(real, st, cache), st.st_size


def hash_tree(root: Path, cache: StatCache | None = None, workers: int | None = None) -> list[FileDigest]:
    """Digest of every file under ``root``, sorted by path; files the stat cache does not know are hashed in
    parallel."""
    found = {name: _cached(root / name, cache) for name in walk_files(root)}
    if cache is not None:
        cache.read.folders[root] = frozenset(found)
    misses = [name for name, (_, _, digest) in found.items() if digest is None]
    workers = min(workers or 4, os.cpu_count() or 1, len(misses))
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor  # only when there is something to hash

        with ThreadPoolExecutor(max_workers=workers) as pool:
            hashed = dict(zip(misses, pool.map(lambda n: _hash_and_store(*found[n][:2], cache), misses)))
    else:
        hashed = {n: _hash_and_store(*found[n][:2], cache) for n in misses}
    return [FileDigest(name, st.st_size, digest or hashed[name]) for name, (_, st, digest) in found.items()]


#: the format of a folder's manifest, hashed with it: a digest of another format never equals one of this format
MANIFEST_FORMAT = "ftc-manifest/2"


def manifest_digest(files: list[FileDigest]) -> str:
    """``sha256:<hex>`` of the manifest of ``files`` (format ``ftc-manifest/2``, see the module's description); the
    sizes are not part of it."""
    return "sha256:" + hashlib.sha256(manifest_text(files).encode()).hexdigest()


def manifest_text(files: list[FileDigest]) -> str:
    """The manifest :func:`manifest_digest` hashes: JSON, so it reads back to exactly the entries it was made of."""
    entries = [[f.path, f.sha256] for f in sorted(files, key=lambda f: f.path)]
    return json.dumps({"files": entries, "format": MANIFEST_FORMAT}, ensure_ascii=True, separators=(",", ":"))


def legacy_manifest_digest(files: list[FileDigest]) -> str:
    """The digest format 1 gave ``files`` (``"<sha256>  <path>\\n"`` lines, as older ftc pinned folders): only to
    tell a plan or record of an older ftc from a changed folder, never to accept a folder."""
    manifest = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path))
    return "sha256:" + hashlib.sha256(manifest.encode(errors="surrogateescape")).hexdigest()


def file_changes(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    """(path, sha256 before, sha256 after) for every file that was removed, added or changed, sorted by path."""
    return [(p, before.get(p), after.get(p)) for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]


def describe_changes(
    before: dict[str, str], after: dict[str, str], *, removed: str, added: str, changed: str
) -> list[str]:
    """One line per path removed, added or changed between ``before`` and ``after`` (path -> identity): its template
    with ``{path}``, ``{before}`` and ``{after}`` filled in."""

    def fill(template: str, path: str, old: str | None, new: str | None) -> str:
        return template.replace("{path}", path).replace("{before}", str(old)).replace("{after}", str(new))

    return [
        fill(removed if new is None else added if old is None else changed, path, old, new)
        for path, old, new in file_changes(before, after)
    ]


def changed_file_lines(expected: dict[str, str], found: dict[str, str], *, prefix: str, unlisted: str) -> list[str]:
    """One line per file (path -> sha256) that is missing, not ``expected`` (said as ``unlisted``), or different."""
    return describe_changes(
        expected,
        found,
        removed=prefix + "{path}: missing (expected sha256:{before})",
        added=prefix + "{path}: " + unlisted + " (found sha256:{after})",
        changed=prefix + "{path}: expected sha256:{before}, found sha256:{after}",
    )
