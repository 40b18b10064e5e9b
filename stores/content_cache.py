"""A content-addressed cache of downloaded inputs: one file per sha256, written once, shared by every run.

    $FTC_CACHE_DIR/objects/ab/abcdef...     the bytes, named by their sha256
    $FTC_CACHE_DIR/pins/<key>.json          which sha256 a remote pin (bucket, key, version, etag) resolved to
    $FTC_CACHE_DIR/partial/<key>.part       a download in progress, resumed where it stopped
    $FTC_CACHE_DIR/partial/<key>.parts      which byte ranges of a large download are complete

Small objects stream in one request and are hashed as they arrive; large ones are fetched as byte ranges in
parallel (as boto3's transfer manager does), written in place and hashed in order as the ranges complete. Either
way the bytes are checked against what the plan expects and only then renamed into objects/, so nothing half-written
or wrong is ever found there. A lock per pin makes two processes that need the same input at once download it once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .atomic import open_regular, write_text_atomic
from .hashing import StatCache, cache_dir, hash_file
from .objects import TRANSIENT_HINT, RemoteProblem
from .storage import storage_failure

__all__ = ["ContentCache", "DigestMismatch", "DownloadStopped", "run_downloads"]

Opener = Callable[
    [int, int | None], Iterator[bytes]
]  # opener(start, end) -> chunks of bytes [start, end), each its own object (kept until written)


_SHA256 = re.compile(r"[0-9a-f]{64}")
_STORAGE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _warn(message: str) -> None:
    from ftc.spec.text import for_terminal, redact  # a pin's URI may come from a plan someone else wrote

    print(f"warning: {for_terminal(redact(message))}", file=sys.stderr, flush=True)


#: set while the downloads of this process are being stopped (a failure elsewhere, Ctrl-C): each ends at its next chunk
_STOP = threading.Event()


def run_downloads(jobs: dict[str, Callable[[], Any]], *, first_failure_stops: bool) -> dict[str, Any]:
    """Run ``jobs`` at once; each result, or the exception it raised, by key. Ctrl-C (and, with
    ``first_failure_stops``, the first job that fails) stops every download still running at its next chunk, so
    nothing keeps downloading for minutes after the answer is known; the partial files stay for a resume."""
    from concurrent.futures import ALL_COMPLETED, FIRST_EXCEPTION, wait

    pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs))))
    stopped_here = False  # a stop this call did not start (an outer one's) is left for that one to end
    try:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        wait(futures.values(), return_when=FIRST_EXCEPTION if first_failure_stops else ALL_COMPLETED)
        if any(f.done() and f.exception() is not None for f in futures.values()) and not _STOP.is_set():
            stopped_here = True
            _STOP.set()
        wait(futures.values())
        return {key: f.exception() or f.result() for key, f in futures.items()}
    except BaseException:  # Ctrl-C while waiting
        if not _STOP.is_set():
            stopped_here = True
            _STOP.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if stopped_here:
            _STOP.clear()


class DownloadStopped(Exception):
    """A download stopped because another failed, or Ctrl-C: its job's result is never used."""


class DigestMismatch(Exception):
    def __init__(self, expected: str, found: str, algorithm: str = "sha256"):
        super().__init__(f"expected {algorithm}:{expected}, found {algorithm}:{found}")
        self.expected, self.found, self.algorithm = expected, found, algorithm


def _open_in_cache(path: Path, flags: int) -> int:
    """``os.open`` of a file in the cache, which may be shared: a link (or anything but a file of its own) planted
    at its name is refused, never followed."""
    fix = "remove it (and find out how it got there), or set FTC_CACHE_DIR to a folder of your own"
    return open_regular(path, flags, 0o644, fix=fix)


class ContentCache:
    #: objects larger than this are fetched as parallel byte ranges of ``part_size``
    ranged_above = 32 << 20
    part_size = 16 << 20
    parallel_parts = 4

    def __init__(self, root: Path | None = None, warn: Callable[[str], None] | None = None):
        self.root = root if root is not None else cache_dir()
        self.warn = warn or _warn

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
        try:
            with StatCache(self.root / "statcache.sqlite3") as stamps:
                found, _ = hash_file(path, stamps)
        except FileNotFoundError:
            return None
        except OSError as exc:  # NotAnInput (a FIFO, a loop) or unreadable: not an object this cache wrote
            found = f"unreadable ({exc})"
        if found == sha:
            return path
        self.warn(
            f"the cached copy of {pin.get('uri', 'an input')} ({path}) is not the bytes it was stored as "
            f"(found {found}); removed, downloading it again"
        )
        path.unlink(missing_ok=True)
        note.unlink(missing_ok=True)
        return None

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
        with os.fdopen(_open_in_cache(lock, os.O_WRONLY | os.O_CREAT), "w") as handle:
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
                    self._discard(partial)
                resumed = partial.exists()
                digests = self._download(partial, opener, size, algorithms, parts)
                wrong = [(name, want) for name, want in expected.items() if want and digests[name] != want]
                if wrong and resumed:  # the bytes kept from an earlier attempt may be what is wrong: start over
                    self.warn(f"{pin.get('uri', 'a download')}: the resumed download does not verify; starting over")
                    self._discard(partial)
                    digests = self._download(partial, opener, size, algorithms, parts)
                    wrong = [(name, want) for name, want in expected.items() if want and digests[name] != want]
                if wrong:
                    name, want = wrong[0]
                    raise DigestMismatch(want, digests[name], name)
                sha = digests["sha256"]
                final = self.object_path(sha)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partial, final)
            except DigestMismatch:
                self._discard(partial)
                raise
            except OSError as exc:
                if exc.errno in _STORAGE_FAULTS:  # a full disk would stay full; a foreign cache keeps nothing of it
                    self._discard(partial)
                raise
            write_text_atomic(self.root / "pins" / f"{key}.json", json.dumps({"sha256": sha, "pin": pin}))
            return final, sha

    def _download(
        self, partial: Path, opener: Opener, size: int | None, algorithms: tuple[str, ...], parts: int
    ) -> dict[str, str]:
        if size is not None and size > self.ranged_above and parts > 1:
            return self._ranged(partial, opener, size, algorithms, parts)
        digests = self._streamed(partial, opener, algorithms)
        if size is not None and partial.stat().st_size != size:  # a stream that ended early (or ran on)
            got = partial.stat().st_size
            if got > size:
                self._discard(partial)  # not a prefix of the object: nothing to resume from
            raise RemoteProblem(f"the download ended after {got} of {size} bytes", TRANSIENT_HINT, "unreachable")
        return digests

    @staticmethod
    def _discard(partial: Path) -> None:
        partial.unlink(missing_ok=True)
        partial.with_suffix(".parts").unlink(missing_ok=True)

    def _streamed(self, partial: Path, opener: Opener, algorithms: tuple[str, ...]) -> dict[str, str]:
        hashers = [hashlib.new(name) for name in algorithms]
        start = 0
        if partial.with_suffix(".parts").exists():  # a ranged download's file is not a prefix of the object
            partial.unlink(missing_ok=True)
            partial.with_suffix(".parts").unlink()
        if os.path.lexists(partial):  # resume: hash what is there, ask for the rest
            with os.fdopen(_open_in_cache(partial, os.O_RDONLY), "rb") as f:
                while chunk := f.read(1 << 20):
                    for h in hashers:
                        h.update(chunk)
                start = os.fstat(f.fileno()).st_size
        with os.fdopen(_open_in_cache(partial, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as out:
            with _BackgroundWriter(out) as writer:
                for chunk in opener(start, None):
                    if _STOP.is_set():
                        raise DownloadStopped()
                    writer.write(chunk)
                    for h in hashers:
                        h.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        return {h.name: h.hexdigest() for h in hashers}

    def _ranged(
        self, partial: Path, opener: Opener, size: int, algorithms: tuple[str, ...], parts: int
    ) -> dict[str, str]:
        """Fetch ``size`` bytes as parallel ranges written in place; a thread hashes the file in order as ranges
        complete, so the digest is ready (almost) when the last byte lands."""
        record = partial.with_suffix(".parts")
        every = list(range(0, size, self.part_size))
        done = self._completed_ranges(record, partial, set(every))
        write_text_atomic(record, json.dumps(sorted(done)))  # before the file has its full size: never a "prefix"
        ready = threading.Condition()
        failed = threading.Event()
        hashers = [hashlib.new(name) for name in algorithms]
        buffer = memoryview(bytearray(1 << 20))
        fd = _open_in_cache(partial, os.O_RDWR | os.O_CREAT)  # never through a link planted in a shared cache
        try:
            os.ftruncate(fd, size)

            def part(start: int) -> None:
                offset, end = start, min(start + self.part_size, size)
                for chunk in opener(start, end):
                    if _STOP.is_set():
                        raise DownloadStopped()
                    if offset + len(chunk) > end:
                        raise OSError(f"{partial}: the store sent more than bytes {start}-{end - 1}")
                    os.pwrite(fd, chunk, offset)
                    offset += len(chunk)
                if offset != end:  # a body that ended early: the range is not complete
                    got = f"{offset - start} of {end - start} bytes"
                    raise RemoteProblem(f"the download ended early ({got} of a range)", TRANSIENT_HINT, "unreachable")
                with ready:  # resume point: the ranges that are complete (never a torn record)
                    done.add(start)
                    write_text_atomic(record, json.dumps(sorted(done)))
                    ready.notify_all()

            hash_error: list[BaseException] = []

            def hash_in_order() -> None:
                try:
                    for start in every:
                        with ready:
                            ready.wait_for(lambda start=start: start in done or failed.is_set())
                        if failed.is_set():
                            return
                        offset, end = start, min(start + self.part_size, size)
                        while offset < end:  # from the page cache: these bytes were just written
                            n = os.preadv(fd, [buffer[: min(len(buffer), end - offset)]], offset)
                            if n <= 0:
                                raise OSError(f"{partial}: short read at byte {offset} of {size}")
                            for h in hashers:
                                h.update(buffer[:n])
                            offset += n
                except BaseException as exc:  # re-raised by the downloading thread: never a digest of wrong bytes
                    hash_error.append(exc)

            hasher = threading.Thread(target=hash_in_order, name="ftc-hash", daemon=True)
            hasher.start()
            try:
                with ThreadPoolExecutor(max_workers=parts) as pool:
                    list(pool.map(part, [s for s in every if s not in done]))
            except BaseException:
                failed.set()
                with ready:
                    ready.notify_all()
                raise
            finally:
                hasher.join()
            if hash_error:
                raise hash_error[0]
            os.fsync(fd)
        finally:
            os.close(fd)
        record.unlink(missing_ok=True)
        return {h.name: h.hexdigest() for h in hashers}

    def _completed_ranges(self, record: Path, partial: Path, starts: set[int]) -> set[int]:
        """The ranges an interrupted download completed, from its record; an unreadable record (or one naming
        ranges this download does not have) is discarded with its partial file, and the download starts over."""
        if not (record.exists() and partial.exists()):
            return set()
        try:
            done = json.loads(record.read_bytes()[: 1 << 20])
            if isinstance(done, list) and all(isinstance(d, int) and d in starts for d in done):
                return set(done)
        except (OSError, ValueError):
            pass
        self.warn(f"{record}: not a record of completed ranges; starting the download over")
        self._discard(partial)
        return set()

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
        return folder


class _BackgroundWriter:
    """Writes chunks to a file on its own thread, up to ``depth`` chunks behind, so a disk that stalls on
    write-back does not stall the connection the chunks come from (the kernel throttles the writing thread; here
    that is not the one reading the socket). Every chunk handed over is in the file once the block exits, also when
    the reading fails (a resumable prefix); a write error is raised in the reading thread."""

    def __init__(self, out, depth: int = 64):
        import queue

        self._out = out
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="ftc-write", daemon=True)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if not self._error:
                try:
                    self._out.write(chunk)
                except BaseException as exc:  # re-raised by the reading thread; the rest is drained unwritten
                    self._error.append(exc)

    def write(self, chunk: bytes) -> None:
        if self._error:
            raise self._error[0]
        self._queue.put(chunk)

    def __enter__(self) -> _BackgroundWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error and exc_info[0] is None:
            raise self._error[0]
