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

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from .hashing import cache_dir

__all__ = ["ContentCache", "DigestMismatch"]

Opener = Callable[
    [int, int | None], Iterator[bytes]
]  # opener(start, end) -> chunks of bytes [start, end), each its own object (kept until written)


class DigestMismatch(Exception):
    def __init__(self, expected: str, found: str, algorithm: str = "sha256"):
        super().__init__(f"expected {algorithm}:{expected}, found {algorithm}:{found}")
        self.expected, self.found, self.algorithm = expected, found, algorithm


class ContentCache:
    #: objects larger than this are fetched as parallel byte ranges of ``part_size``
    ranged_above = 32 << 20
    part_size = 16 << 20
    parallel_parts = 4

    def __init__(self, root: Path | None = None):
        self.root = root if root is not None else cache_dir()

    def _key(self, pin: dict) -> str:
        return hashlib.sha256(json.dumps(pin, sort_keys=True).encode()).hexdigest()

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def known(self, pin: dict) -> Path | None:
        """The cached bytes of ``pin``, when they were downloaded before."""
        note = self.root / "pins" / f"{self._key(pin)}.json"
        if note.exists():
            path = self.object_path(json.loads(note.read_text())["sha256"])
            if path.exists():
                return path
        return None

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{key}.lock", "w") as handle:
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
            if size is not None and size > self.ranged_above and parts > 1:
                digests = self._ranged(partial, opener, size, algorithms, parts)
            else:
                digests = self._streamed(partial, opener, algorithms)
            sha = digests["sha256"]
            for name, expected in (("md5", expected_md5), ("sha256", expected_sha256)):
                if expected and digests[name] != expected:
                    partial.unlink()
                    raise DigestMismatch(expected, digests[name], name)
            final = self.object_path(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
            note = self.root / "pins" / f"{key}.json"
            note.parent.mkdir(parents=True, exist_ok=True)
            tmp = note.with_suffix(".tmp")
            tmp.write_text(json.dumps({"sha256": sha, "pin": pin}))
            os.replace(tmp, note)
            return final, sha

    def _streamed(self, partial: Path, opener: Opener, algorithms: tuple[str, ...]) -> dict[str, str]:
        hashers = [hashlib.new(name) for name in algorithms]
        start = 0
        if partial.with_suffix(".parts").exists():  # a ranged download's file is not a prefix of the object
            partial.unlink(missing_ok=True)
            partial.with_suffix(".parts").unlink()
        if partial.exists():  # resume: hash what is there, ask for the rest
            with open(partial, "rb") as f:
                while chunk := f.read(1 << 20):
                    for h in hashers:
                        h.update(chunk)
            start = partial.stat().st_size
        with open(partial, "ab") as out:
            with _BackgroundWriter(out) as writer:
                for chunk in opener(start, None):
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
        done = set(json.loads(record.read_text())) if record.exists() and partial.exists() else set()
        with open(partial, "ab"):
            pass
        os.truncate(partial, size)
        every = list(range(0, size, self.part_size))
        ready = threading.Condition()
        failed = threading.Event()
        hashers = [hashlib.new(name) for name in algorithms]
        buffer = memoryview(bytearray(1 << 20))
        fd = os.open(partial, os.O_RDWR)
        try:

            def part(start: int) -> None:
                offset = start
                for chunk in opener(start, min(start + self.part_size, size)):
                    os.pwrite(fd, chunk, offset)
                    offset += len(chunk)
                with ready:  # resume point: the ranges that are complete
                    done.add(start)
                    record.write_text(json.dumps(sorted(done)))
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

    def view(self, name: str, members: dict[str, str]) -> Path:
        """A folder of symlinks (relative path -> cached sha256), so a downloaded folder reads like the original."""
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
