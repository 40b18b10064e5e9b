"""One writer per output folder: ``ftc run`` holds a lock on it for as long as it trains.

The lock is an ``flock`` on ``<output>/.ftc-lock-node<K>`` (one per node of a multi-node plan: the nodes share the
folder). The kernel releases it when the holder ends, however it ends (a crash, ``kill -9``), so a lock is never
stale; while it is held, the file names its holder (host, process, plan, since when) for the refusal message. A
container run takes it inside the container, so a container left running after its ``ftc run`` was killed still
holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftc.errors import UsageError

from ._storage import storage_failure

__all__ = ["output_lock"]


@contextmanager
def output_lock(out: Path, *, node_rank: int, plan_id: str) -> Iterator[None]:
    """Hold the lock of node ``node_rank`` on the output folder ``out`` (made if needed) while the block runs.
    Raises :class:`UsageError` naming the holder when another run holds it."""
    path = out / f".ftc-lock-node{node_rank}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise storage_failure(out, exc, "creating the output folder's lock") or exc from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{out} is being written by another ftc run ({_holder(path)}); two runs into one output folder "
                "would overwrite each other's checkpoints\n    fix: wait for it to end, or stop it (a container run: "
                "`docker ps --filter label=dev.ftc.plan-id` lists them), or choose another output_dir"
            ) from None
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "plan_id": plan_id, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_bytes()[:4096])
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        return f"process {holder['pid']} on {holder['host']}, plan {holder['plan_id'][:19]}…, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its holder is starting"
