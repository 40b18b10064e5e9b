"""``output_dir: s3://…`` / ``gs://…``: the run writes into a local staging folder (Plan.output_path) as always, and
this uploads each checkpoint once it is whole, with its lineage record and a marker last (stores/publish.py), then
the metrics and summary. A cluster without a shared filesystem keeps every checkpoint, and a later spec can continue
from one by its URI.

One process per run publishes: the launching process of node 0 (local and docker backends: it sees the staging
folder the workers or the container write), or the rank-0 worker on Ray (whose node holds what it wrote). Uploads
run beside training, one checkpoint at a time; a checkpoint already published (its marker is there) is not sent
again, so ``--resume`` and a restarted Ray worker pick up where the last upload stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftc.errors import InputUnresolvable, UsageError
from ftc.runtime.training.checkpoint import finished_checkpoints, is_complete
from ftc.runtime.training.progress import byte_progress, log, size_text
from ftc.runtime.training.trackers import TRACKER_FILE, TRACKER_FILE_LIMIT
from ftc.spec.plan import Plan
from ftc.stores.atomic import write_text_atomic
from ftc.stores.publish import MARKER_SUFFIX, publish_checkpoint
from ftc.stores.remote import RemoteProblem, store_for

__all__ = ["Publisher", "publishing"]

#: seconds between looks for a new checkpoint to upload
_INTERVAL = 2.0
_RUN_FILES = ("metrics.jsonl", "summary.json", TRACKER_FILE)


def _failed(exc: RemoteProblem, doing: str, *, uploading: bool = True) -> InputUnresolvable:
    """A store that refuses or fails an upload: the store's reason picks the exit code (9 denied, 10 unreachable)."""
    kept = "\n    the checkpoints are kept in the staging folder; `ftc run PLAN --resume` uploads what is missing"
    return InputUnresolvable(
        f"output_dir: {doing}: {exc}\n    fix: {exc.hint or 'check the bucket and its permissions'}"
        + (kept if uploading else ""),
        exc.reason,
    )


def _published(names: list[str]) -> list[str]:
    """The checkpoints (step-N) whose marker is among ``names`` (relative to the prefix), oldest first."""
    found = (n.removeprefix("checkpoints/") for n in names if n.startswith("checkpoints/"))
    return sorted(n.removesuffix(MARKER_SUFFIX) for n in found if n.endswith(MARKER_SUFFIX) and "/" not in n)


class Publisher:
    """Mirrors the staging folder ``staging`` to the store prefix ``prefix``."""

    def __init__(self, prefix: str, staging: Path):
        self.prefix, self.staging = prefix, staging
        try:
            self.store = store_for(prefix)
        except RemoteProblem as exc:
            raise _failed(exc, "cannot write there", uploading=False) from None
        self._sent: set[str] = set()
        self._stamps: dict[str, tuple[int, int]] = {}  # run file -> (size, mtime) last uploaded

    def check_start(self, *, resume: bool, staged_here: bool = True) -> None:
        """Before any training: the prefix can be listed with these credentials and holds no other run (unless
        resuming this one). Resuming where the staging folder lacks the newest published checkpoint (another
        machine, a Ray worker on a new node), that checkpoint is downloaded into it first (``staged_here``: this
        process stages the run; the Ray driver does not)."""
        try:
            names = self.store.names(self.prefix)  # type: ignore[attr-defined]
        except RemoteProblem as exc:
            raise _failed(exc, "cannot list it", uploading=False) from None
        if names and not resume:
            raise UsageError(
                f"{self.prefix} already holds {len(names)} object(s) ({names[0]}, ...); resume with "
                "`ftc run PLAN --resume`, or choose another output_dir"
            )
        self._sent = set(_published(names))
        if resume and staged_here and self._sent:
            self._restore(max(self._sent))

    def _restore(self, name: str) -> None:
        from ftc.stores.publish import download_checkpoint, read_marker

        if any(p.name >= name for p in finished_checkpoints(self.staging)):
            return  # staged here already (or newer, not uploaded yet)
        uri = f"{self.prefix}checkpoints/{name}/"
        dest = self.staging / "checkpoints" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        progress = None
        try:
            marker = read_marker(self.store, uri)
            total = sum(f["size"] for f in marker["files"]) if marker else 0
            log(f"--resume: {name} is not staged in {self.staging}; downloading it from {uri} ({size_text(total)})")
            progress = byte_progress(total, f"--resume: downloading {name}")  # as for inputs
            on_bytes = progress.add if progress is not None else None
            download_checkpoint(self.store, uri, dest, on_bytes=on_bytes, marker=marker)
            # where the run is in its tracker: the resumed run continues that tracker run
            tracker = self.store.read_small(self.prefix + TRACKER_FILE, TRACKER_FILE_LIMIT)  # type: ignore[attr-defined]
        except RemoteProblem as exc:
            raise _failed(exc, f"cannot resume from {uri}") from None
        finally:
            if progress is not None:
                progress.close()
        if tracker is not None and not (self.staging / TRACKER_FILE).exists():
            write_text_atomic(self.staging / TRACKER_FILE, tracker.decode("utf-8", errors="replace"))

    def finished(self) -> bool:
        """Whether the newest checkpoint published is the run's last (every step trained)."""
        from ftc.stores.publish import read_marker

        try:
            steps = _published(self.store.names(self.prefix))  # type: ignore[attr-defined]
            marker = read_marker(self.store, f"{self.prefix}checkpoints/{steps[-1]}/") if steps else None
        except RemoteProblem as exc:
            raise _failed(exc, "reading what the run published") from None
        return bool(marker and marker.get("last"))

    def sync(self) -> None:
        """Upload every whole checkpoint not yet published, oldest first, then the run's metrics and summary."""
        from ftc.lineage.record import read_record

        for folder in finished_checkpoints(self.staging):
            if folder.name in self._sent:
                continue
            uri = f"{self.prefix}checkpoints/{folder.name}/"
            record = read_record(folder)
            if record is None:  # not whole yet (a checkpoint is renamed into place with its record)
                continue
            started = time.perf_counter()
            try:
                sent = publish_checkpoint(self.store, uri, folder, record, last=is_complete(folder))
            except RemoteProblem as exc:
                raise _failed(exc, f"uploading {folder.name}") from None
            self._sent.add(folder.name)
            rate = sent / max(time.perf_counter() - started, 1e-9)
            log(f"published {folder.name} to {uri} ({size_text(sent)}, {size_text(rate)}/s)")
        for name in _RUN_FILES:
            path = self.staging / name
            if path.is_file():
                st = path.stat()
                if self._stamps.get(name) == (st.st_size, st.st_mtime_ns):
                    continue  # unchanged since its last upload
                try:
                    self.store.put_file(self.prefix + name, str(path))  # type: ignore[attr-defined]
                except RemoteProblem as exc:
                    raise _failed(exc, f"uploading {name}") from None
                self._stamps[name] = (st.st_size, st.st_mtime_ns)


@contextmanager
def publishing(plan: Plan, *, resume: bool) -> Iterator[Publisher | None]:
    """While the body trains into the staging folder, upload each checkpoint as it appears; at the end (also after
    a failure or Ctrl-C), upload whatever whole checkpoint is left. Nothing happens for a plan whose output_dir
    is a folder."""
    if plan.output_store is None:
        yield None
        return
    publisher = Publisher(plan.output_store, plan.output_path)
    publisher.check_start(resume=resume)
    log(f"output_dir {plan.output_store}: staging in {plan.output_path}, each checkpoint uploaded once whole")
    stop = threading.Event()
    failure: list[BaseException] = []

    def watch() -> None:
        while not stop.wait(_INTERVAL):
            try:
                publisher.sync()
            except BaseException as exc:  # reported when the run ends; training goes on meanwhile
                log(f"warning: {exc}\n    training goes on; the run will exit with this error when it ends")
                failure.append(exc)
                return

    watcher = threading.Thread(target=watch, name="ftc-publish", daemon=True)
    watcher.start()
    try:
        yield publisher
    except BaseException:
        stop.set()
        watcher.join()
        try:  # the checkpoints written before the failure are still worth having in the store
            publisher.sync()
        except Exception as exc:
            log(f"warning: {exc}")
        raise
    stop.set()
    watcher.join()
    if failure:
        raise failure[0]
    publisher.sync()
