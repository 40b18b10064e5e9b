"""One writer per output folder: ``ftc run`` holds a lock on it for as long as it trains.

The lock is an ``flock`` on ``<output>/.ftc-lock-node<K>`` (one per node of a multi-node plan: the nodes share the
folder). The kernel releases it when the holder ends, however it ends (a crash, ``kill -9``), so a lock is never
stale; while it is held, the file names its holder (host, process, plan, since when) for the refusal message. A
container run takes it inside the container, so a container left running after its ``ftc run`` was killed still
holds it. The lock file is opened without following a link (an output folder may be shared): a link or anything but
a regular file planted at its name is refused (exit 15), never truncated through.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftc.errors import StorageFailed, UsageError
from ftc.stores.atomic import open_regular
from ftc.stores.storage import storage_failure

__all__ = ["output_lock"]

#: the files a run writes in its output folder by name (besides checkpoints): a link or anything but a regular file
#: planted at one of them is refused when the lock is taken (tracker.json is not one: a tracker never stops training,
#: and one that cannot be written, a link there included, is a warning)
WRITTEN_IN_PLACE = ("metrics.jsonl", "summary.json")


@contextmanager
def output_lock(out: Path, *, node_rank: int, plan_id: str, container: str | None = None) -> Iterator[None]:
    """Hold the lock of node ``node_rank`` on the output folder ``out`` (made if needed) while the block runs.
    Raises :class:`UsageError` naming the holder when another run holds it. ``container``: the name of the container
    this runs in (the docker backend names it), so that a refusal can say which container holds the lock."""
    path = out / f".ftc-lock-node{node_rank}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        # never through a link planted there (it would empty whatever it points to), never into a device or FIFO
        fd = open_regular(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise storage_failure(out, exc, "creating the output folder's lock") or exc from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder, container = _holder(path)
            stop = f"stop it with `docker rm -f {container}`" if container else "stop it"
            raise UsageError(
                f"{out} is being written by another ftc run ({holder}); two runs into one output folder "
                f"would overwrite each other's checkpoints\n    fix: wait for it to end, or {stop} and continue with "
                "`ftc run PLAN --resume`, or choose another output_dir"
            ) from None
        for name in WRITTEN_IN_PLACE:  # refused now, before training, rather than when first written
            try:
                os.close(open_regular(out / name, os.O_RDONLY))
            except OSError:
                pass  # absent (or unreadable: writing it says so)
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "plan_id": plan_id, "since": time.time()}
        if container:
            holder["container"] = container
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(path: Path) -> tuple[str, str | None]:
    """Who holds the lock at ``path``, in words, and the name of its container (None: not a container run)."""
    try:
        fd = open_regular(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            holder = json.loads(f.read(4096))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        container = holder.get("container")
        if not (isinstance(container, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", container)):
            container = None  # only a name the engine could have given is put into a command to run
        where = f"in container {container}" if container else f"on {holder['host']}"
        text = f"process {holder['pid']} {where}, plan {holder['plan_id'][:19]}…, since {since}"
        return text, container
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UsageError, StorageFailed):
        return "its holder is starting", None
