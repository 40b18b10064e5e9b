"""What a run on Ray shows its user: what a local run shows, each line once. The rank-0 worker's output reaches the
driver through a queue on the cluster (:func:`forwarding`, in the worker; :func:`shown`, in the driver), and the
rest of the cluster's output (Ray's own messages, its controller's, every worker's as Ray forwards it) goes to a log
file on the driver's machine (:func:`logged_to`, :func:`ray_log_path`), named at the end of the run.

Ray forwards every worker's output to the driver itself (``log_to_driver``), prefixed with the worker's pid, and Ray
Train copies each ``print`` of a worker into its logger as well: the user saw every line two or four times, between
Ray's warnings. Those copies now land in the log file only.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any, TextIO

__all__ = ["QUEUE_OPTIONS", "descriptors_logged_to", "forwarding", "logged_to", "ray_log_path", "shown"]

#: the queue's actor takes no CPU: the workers have every CPU the plan asks for
QUEUE_OPTIONS = {"num_cpus": 0}
#: a path printed relative to a worker's working directory (Ray's own folder on its node), which means nothing
#: where the user reads it: ``../../../../w/out/checkpoints/step-000048``
_RELATIVE = re.compile(r"(?<![\w./-])(?:\.\./)+[^\s,;:()\[\]'\"]*")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def ray_log_path(plan_id: str) -> Path:
    """Where the driver keeps a run's Ray log: ftc's cache folder, ``logs/ray-<time>-<plan>.log``."""
    from ftc.spec.locations import cache_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cache_dir() / "logs" / f"ray-{stamp}-{plan_id.removeprefix('sha256:')[:12]}.log"


@contextlib.contextmanager
def logged_to(path: Path) -> Iterator[None]:
    """During the block, what this process writes to sys.stdout and sys.stderr (Ray's forwarding of the cluster's
    output and its own messages write there) goes to the file at ``path``, without terminal colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", errors="replace") as raw:
        sink = _Plain(raw)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):  # type: ignore[type-var]
            yield


@contextlib.contextmanager
def descriptors_logged_to(path: Path) -> Iterator[None]:
    """During the block, what is written to this process's file descriptors 1 and 2 goes to the file at ``path``:
    Ray's C++ core writes its log lines there, past Python's streams (connecting, it retries for half a minute,
    a warning a second)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "ab") as raw:
            os.dup2(raw.fileno(), 1)
            os.dup2(raw.fileno(), 2)
            try:
                yield
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


@contextlib.contextmanager
def shown(queue: Any, out: TextIO, err: TextIO) -> Iterator[None]:
    """During the block, the lines the rank-0 worker sends through ``queue`` (a ``ray.util.queue.Queue``, whose
    Empty is the standard library's) are written to ``out`` or ``err`` (where the user reads: the streams as they
    were before :func:`logged_to`); on leaving it, those still queued too."""
    stop = threading.Event()

    def show(line: tuple[str, str]) -> None:
        stream = err if line[0] == "err" else out
        stream.write(line[1])
        stream.flush()

    def pump() -> None:
        while not stop.is_set():
            try:
                show(queue.get(block=True, timeout=0.5))
            except Empty:
                continue
            except Exception:  # the queue's actor is gone (the cluster stopped): nothing more will come
                return

    thread = threading.Thread(target=pump, name="ftc-ray-output", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        with contextlib.suppress(Exception):
            while True:
                show(queue.get_nowait())  # Empty ends it


@contextlib.contextmanager
def forwarding(queue: Any) -> Iterator[None]:
    """In the rank-0 worker: what it writes to stdout and stderr goes on to its own streams (Ray's log of the
    worker) and, line by line, to the driver through ``queue``; a path relative to this process's working directory
    is sent absolute. A queue that fails (the driver gone) only ends the forwarding, never the run."""
    out, err = _Forward(sys.stdout, queue, "out"), _Forward(sys.stderr, queue, "err")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # type: ignore[type-var]
            yield
    finally:
        out.end()
        err.end()


class _Forward(io.TextIOBase):
    """A text stream that writes through to ``stream`` and sends each whole line to ``queue`` as (kind, line)."""

    def __init__(self, stream: TextIO, queue: Any, kind: str):
        self.stream, self.queue, self.kind = stream, queue, kind
        self.pending = ""
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        self.stream.write(text)
        with self.lock:
            if self.queue is not None:
                self.pending += text
                *lines, self.pending = self.pending.split("\n")
                for line in lines:
                    self._send(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False  # the user reads it through the driver: progress as log lines, never a bar

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def end(self) -> None:
        """Send what is left of the last line, and forward nothing more (writes still reach the stream)."""
        with self.lock:
            if self.pending and self.queue is not None:
                self._send(self.pending + "\n")
            self.pending, self.queue = "", None

    def _send(self, line: str) -> None:
        try:
            self.queue.put((self.kind, _absolute(line)))
        except Exception:  # the driver or its queue is gone: the run goes on, its output in Ray's log
            self.queue = None


def _absolute(line: str) -> str:
    """``line`` with each path written relative to this process's working directory made absolute (when it names
    something that exists)."""

    def fix(found: re.Match[str]) -> str:
        path = os.path.normpath(os.path.join(os.getcwd(), found.group(0)))
        return path if os.path.exists(path) else found.group(0)

    return _RELATIVE.sub(fix, line)


class _Plain(io.TextIOBase):
    """A text stream into a log file, without the terminal colours Ray puts around the prefixes of what it forwards."""

    def __init__(self, file: TextIO):
        self.file = file

    def write(self, text: str) -> int:
        self.file.write(_ANSI.sub("", text))
        return len(text)

    def flush(self) -> None:
        self.file.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.file.fileno()
