"""Downloading: one object's bytes into a partial file in the cache, and many downloads at once.

Small objects stream in one request and are hashed as they arrive, written on a thread of their own so a stalling
disk does not stall the connection; large ones are fetched as byte ranges in parallel (as boto3's transfer manager
does), written in place and hashed in order as the ranges complete. Either way an interrupted download resumes where
it stopped (``<key>.part``, and ``<key>.parts``: which ranges are complete), and :func:`run_downloads` stops every
download of the process at its next chunk when one fails or on Ctrl-C. What the bytes are checked against, and where
they go once they verify, is the cache's (``content_cache``)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .atomic import open_regular, write_text_atomic
from .objects import TRANSIENT_HINT, RemoteProblem

__all__ = ["DownloadStopped", "Opener", "discard", "download", "open_in_cache", "run_downloads"]

Opener = Callable[
    [int, int | None], Iterator[bytes]
]  # opener(start, end) -> chunks of bytes [start, end), each its own object (kept until written)

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


def open_in_cache(path: Path, flags: int) -> int:
    """``os.open`` of a file in the cache, which may be shared: a link (or anything but a file of its own) planted
    at its name is refused, never followed."""
    fix = "remove it (and find out how it got there), or set FTC_CACHE_DIR to a folder of your own"
    return open_regular(path, flags, 0o644, fix=fix)


def download(
    partial: Path,
    opener: Opener,
    size: int | None,
    algorithms: tuple[str, ...],
    parts: int,
    *,
    ranged_above: int,
    part_size: int,
    warn: Callable[[str], None],
) -> dict[str, str]:
    """Download the object ``opener`` reads into ``partial`` (resuming what is there) and return its digests by
    algorithm: as ``parts`` parallel ranges of ``part_size`` when it is larger than ``ranged_above``, else streamed
    in one request. A stream that ends early keeps its bytes for a resume and is a :class:`RemoteProblem`."""
    if size is not None and size > ranged_above and parts > 1:
        return _ranged(partial, opener, size, algorithms, parts, part_size, warn)
    digests = _streamed(partial, opener, algorithms)
    if size is not None and partial.stat().st_size != size:  # a stream that ended early (or ran on)
        got = partial.stat().st_size
        if got > size:
            discard(partial)  # not a prefix of the object: nothing to resume from
        raise RemoteProblem(f"the download ended after {got} of {size} bytes", TRANSIENT_HINT, "unreachable")
    return digests


def discard(partial: Path) -> None:
    """Remove a partial download and its record of completed ranges."""
    partial.unlink(missing_ok=True)
    partial.with_suffix(".parts").unlink(missing_ok=True)


def _streamed(partial: Path, opener: Opener, algorithms: tuple[str, ...]) -> dict[str, str]:
    hashers = [hashlib.new(name) for name in algorithms]
    start = 0
    if partial.with_suffix(".parts").exists():  # a ranged download's file is not a prefix of the object
        partial.unlink(missing_ok=True)
        partial.with_suffix(".parts").unlink()
    if os.path.lexists(partial):  # resume: hash what is there, ask for the rest
        with os.fdopen(open_in_cache(partial, os.O_RDONLY), "rb") as f:
            while chunk := f.read(1 << 20):
                for h in hashers:
                    h.update(chunk)
            start = os.fstat(f.fileno()).st_size
    with os.fdopen(open_in_cache(partial, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as out:
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
    partial: Path,
    opener: Opener,
    size: int,
    algorithms: tuple[str, ...],
    parts: int,
    part_size: int,
    warn: Callable[[str], None],
) -> dict[str, str]:
    """Fetch ``size`` bytes as parallel ranges written in place; a thread hashes the file in order as ranges
    complete, so the digest is ready (almost) when the last byte lands."""
    record = partial.with_suffix(".parts")
    every = list(range(0, size, part_size))
    done = _completed_ranges(record, partial, set(every), warn)
    write_text_atomic(record, json.dumps(sorted(done)))  # before the file has its full size: never a "prefix"
    ready = threading.Condition()
    failed = threading.Event()
    hashers = [hashlib.new(name) for name in algorithms]
    buffer = memoryview(bytearray(1 << 20))
    fd = open_in_cache(partial, os.O_RDWR | os.O_CREAT)  # never through a link planted in a shared cache
    try:
        os.ftruncate(fd, size)

        def part(start: int) -> None:
            offset, end = start, min(start + part_size, size)
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
                    offset, end = start, min(start + part_size, size)
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


def _completed_ranges(record: Path, partial: Path, starts: set[int], warn: Callable[[str], None]) -> set[int]:
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
    warn(f"{record}: not a record of completed ranges; starting the download over")
    discard(partial)
    return set()


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
