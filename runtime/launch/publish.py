"""``output_dir: s3://…`` / ``gs://…``: the run writes into a local staging folder (Plan.output_path) as always, and
this uploads each checkpoint once it is whole, with its lineage record and a marker last (stores/publish.py), then
points the prefix's ``best`` and ``latest`` at it (stores/pointers.py), then the metrics and summary. The store keeps
what the staging folder keeps: a checkpoint ``num_checkpoints_to_keep`` pruned there is removed from the store once a
newer one is published and pointed at (never one a pointer names). A later spec continues from a checkpoint by its
URI. When the run succeeded and everything staged is in the store, the staging folder goes, and the last lines name
the store's checkpoints; after a failure it is kept, and said where.

One process per run publishes: the launching process of node 0 (local and docker backends: it sees the staging
folder the workers or the container write), or the rank-0 worker on Ray (whose node holds what it wrote). Uploads
run beside training, one checkpoint at a time; a checkpoint already published (its marker is there) is not sent
again, so ``--resume`` and a restarted Ray worker pick up where the last upload stopped.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftc.errors import InputUnresolvable, LineageBroken, UsageError
from ftc.runtime.training.checkpoint import finished_checkpoints, is_complete
from ftc.runtime.training.progress import byte_progress, log, size_text
from ftc.runtime.training.trackers import TRACKER_FILE, TRACKER_FILE_LIMIT
from ftc.spec.plan import Plan
from ftc.stores.atomic import write_text_atomic
from ftc.stores.objects import WritableStore
from ftc.stores.pointers import POINTER_LIMIT, POINTER_NAMES, parse_pointer, pointer_body
from ftc.stores.publish import MARKER_SUFFIX, publish_checkpoint, unpublish_checkpoint
from ftc.stores.remote import RemoteProblem, store_for

__all__ = ["Publisher", "publishing"]

#: seconds between looks for a new checkpoint to upload
_INTERVAL = 2.0
_RUN_FILES = ("metrics.jsonl", "summary.json", TRACKER_FILE)


def _failed(exc: RemoteProblem, doing: str, staging: Path | None = None) -> InputUnresolvable:
    """A store that refuses or fails an upload: the store's reason picks the exit code (9 denied, 10 unreachable).
    ``staging``: the staging folder, kept, when the run had begun."""
    kept = (
        f"\n    the checkpoints are kept in the staging folder {staging}; "
        "`ftc run PLAN --resume` uploads what is missing"
    )
    return InputUnresolvable(
        f"output_dir: {doing}: {exc}\n    fix: {exc.hint or 'check the bucket and its permissions'}"
        + (kept if staging is not None else ""),
        exc.reason,
    )


def _published(names: list[str]) -> list[str]:
    """The checkpoints (step-N) whose marker is among ``names`` (relative to the prefix), oldest first."""
    found = (n.removeprefix("checkpoints/") for n in names if n.startswith("checkpoints/"))
    return sorted(n.removesuffix(MARKER_SUFFIX) for n in found if n.endswith(MARKER_SUFFIX) and "/" not in n)


def _unmarked(names: list[str]) -> set[str]:
    """The checkpoint folders among ``names`` that have no marker: an upload or a removal cut short."""
    folders = {n.split("/")[1] for n in names if n.startswith("checkpoints/step-") and n.count("/") >= 2}
    return folders - set(_published(names))


class Publisher:
    """Mirrors the staging folder ``staging`` to the store prefix ``prefix``."""

    def __init__(self, prefix: str, staging: Path):
        self.prefix, self.staging = prefix, staging
        try:
            self.store: WritableStore = store_for(prefix)  # type: ignore[assignment]  (s3:// and gs:// write)
        except RemoteProblem as exc:
            raise _failed(exc, "cannot write there") from None
        self._sent: set[str] = set()  # the checkpoints whose marker is in the store
        self._ids: dict[str, str] = {}  # checkpoint -> its record_id, as its pointer names it
        self._unmarked: set[str] = set()  # checkpoint folders in the store without a marker when the run began
        self._foreign: set[str] = set()  # published, never staged here (resumed on another machine): never pruned
        self._pointed: dict[str, tuple[str, str]] = {}  # pointer -> (checkpoint, record_id), as in the store
        self._pruning = True  # until the store refuses a removal
        self._stamps: dict[str, tuple[int, int]] = {}  # run file -> (size, mtime) last uploaded

    def check_start(self, *, resume: bool, staged_here: bool = True) -> None:
        """Before any training: the prefix can be listed with these credentials and holds no other run (unless
        resuming this one). Resuming where the staging folder lacks the newest published checkpoint (another
        machine, a Ray worker on a new node), that checkpoint is downloaded into it first (``staged_here``: this
        process stages the run; the Ray driver does not)."""
        try:
            names = self.store.names(self.prefix)
        except RemoteProblem as exc:
            raise _failed(exc, "cannot list it") from None
        if names and not resume:
            raise UsageError(
                f"{self.prefix} already holds {len(names)} object(s) ({names[0]}, ...); resume with "
                "`ftc run PLAN --resume`, or choose another output_dir"
            )
        self._sent, self._unmarked = set(_published(names)), _unmarked(names)
        self._pointed = self._read_pointers([n for n in POINTER_NAMES if n in names])
        if resume and staged_here and self._sent:
            newest = max(self._sent)
            if self._restore(newest):  # the store holds checkpoints this staging folder never did: kept there
                self._foreign = self._sent - {newest}

    def _read_pointers(self, names: list[str]) -> dict[str, tuple[str, str]]:
        """The pointers of a run being resumed, as the store holds them (one that is not ftc's is rewritten)."""
        found = {}
        for name in names:
            try:
                raw = self.store.read_small(self.prefix + name, POINTER_LIMIT)
            except RemoteProblem as exc:
                raise _failed(exc, "cannot read it") from None
            try:
                checkpoint, record_id = parse_pointer(raw or b"", self.prefix + name)
            except LineageBroken:
                continue
            found[name] = (checkpoint.removeprefix("checkpoints/"), record_id)
        return found

    def _restore(self, name: str) -> bool:
        """Download the published checkpoint ``name`` into the staging folder unless it (or a newer one) is staged
        already; whether it was downloaded."""
        from ftc.stores.publish import download_checkpoint, read_marker

        if any(p.name >= name for p in finished_checkpoints(self.staging)):
            return False  # staged here already (or newer, not uploaded yet)
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
            tracker = self.store.read_small(self.prefix + TRACKER_FILE, TRACKER_FILE_LIMIT)
        except RemoteProblem as exc:
            raise _failed(exc, f"cannot resume from {uri}", self.staging) from None
        finally:
            if progress is not None:
                progress.close()
        if tracker is not None and not (self.staging / TRACKER_FILE).exists():
            write_text_atomic(self.staging / TRACKER_FILE, tracker.decode("utf-8", errors="replace"))
        return True

    def finished(self) -> bool:
        """Whether the newest checkpoint published is the run's last (every step trained)."""
        from ftc.stores.publish import read_marker

        try:
            steps = _published(self.store.names(self.prefix))
            marker = read_marker(self.store, f"{self.prefix}checkpoints/{steps[-1]}/") if steps else None
        except RemoteProblem as exc:
            raise _failed(exc, "reading what the run published") from None
        return bool(marker and marker.get("last"))

    def sync(self) -> None:
        """Upload every whole checkpoint not yet published, oldest first, each followed by the pointers; the run's
        metrics and summary; then remove from the store the checkpoints the staging folder no longer keeps."""
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
            except (RemoteProblem, OSError) as exc:
                if not folder.is_dir():  # pruned from the staging folder while it was sent: no marker, removed later
                    self._unmarked.add(folder.name)
                    continue
                if not isinstance(exc, RemoteProblem):
                    raise
                raise _failed(exc, f"uploading {folder.name}", self.staging) from None
            self._sent.add(folder.name)
            self._ids[folder.name] = record["record_id"]
            rate = sent / max(time.perf_counter() - started, 1e-9)
            log(f"published {folder.name} to {uri} ({size_text(sent)}, {size_text(rate)}/s)")
            self._point()
        self._point()  # the best link may have moved to a checkpoint published before
        for name in _RUN_FILES:
            path = self.staging / name
            if path.is_file():
                st = path.stat()
                if self._stamps.get(name) == (st.st_size, st.st_mtime_ns):
                    continue  # unchanged since its last upload
                try:
                    self.store.put_file(self.prefix + name, str(path))
                except RemoteProblem as exc:
                    raise _failed(exc, f"uploading {name}", self.staging) from None
                self._stamps[name] = (st.st_size, st.st_mtime_ns)
        self._prune()

    def _point(self) -> None:
        """Point ``latest`` at the newest checkpoint published and ``best`` at the one the staging folder's best link
        names, once it is published; each pointer only after the marker of the checkpoint it names."""
        targets = {"best": self._staged_best(), "latest": max(self._sent) if self._sent else None}
        for name in POINTER_NAMES:
            checkpoint = targets[name]
            if checkpoint is None or checkpoint not in self._sent:
                continue
            wanted = (checkpoint, self._record_id(checkpoint))
            if self._pointed.get(name) == wanted:
                continue
            try:
                self.store.put_bytes(self.prefix + name, pointer_body(f"checkpoints/{checkpoint}", wanted[1]))
            except RemoteProblem as exc:
                raise _failed(exc, f"pointing {name} at {checkpoint}", self.staging) from None
            self._pointed[name] = wanted

    def _staged_best(self) -> str | None:
        """The checkpoint the staging folder's ``best`` link names (the run's choice by eval loss), if any."""
        link = self.staging / "best"
        if not link.is_symlink():
            return None
        target = Path(os.path.realpath(link))
        return target.name if target.parent == Path(os.path.realpath(self.staging / "checkpoints")) else None

    def _record_id(self, checkpoint: str) -> str:
        """The record_id of a published checkpoint: as uploaded, else from its staged record or its marker."""
        if checkpoint not in self._ids:
            from ftc.lineage.record import read_record
            from ftc.stores.publish import read_marker

            record = read_record(self.staging / "checkpoints" / checkpoint)
            if record is None:
                try:
                    record = read_marker(self.store, f"{self.prefix}checkpoints/{checkpoint}/")
                except RemoteProblem as exc:
                    raise _failed(exc, f"reading the marker of {checkpoint}", self.staging) from None
            self._ids[checkpoint] = str((record or {}).get("record_id"))
        return self._ids[checkpoint]

    def stale(self) -> list[str]:
        """The checkpoints in the store that the staging folder no longer keeps, oldest first: older than the
        newest staged and the newest published, named by no pointer, and staged here once (or never marked)."""
        staged = {p.name for p in finished_checkpoints(self.staging)}
        if not staged or not self._sent:
            return []
        newest = min(max(staged), max(self._sent))
        kept = staged | self._foreign | {checkpoint for checkpoint, _ in self._pointed.values()}
        return sorted(n for n in self._sent | self._unmarked if n < newest and n not in kept)

    def _prune(self) -> None:
        """Remove the stale checkpoints from the store (each marker first). A store that refuses is said once, and
        the run goes on keeping them."""
        for name in self.stale() if self._pruning else []:
            uri = f"{self.prefix}checkpoints/{name}/"
            try:
                unpublish_checkpoint(self.store, uri)
            except RemoteProblem as exc:
                self._pruning = False
                log(
                    f"warning: output_dir: cannot remove {name} from the store, which num_checkpoints_to_keep no "
                    f"longer keeps: {exc}\n    the store keeps it and the ones after it; remove them by hand, or "
                    "let these credentials delete objects"
                )
                return
            self._sent.discard(name)
            self._unmarked.discard(name)
            log(f"removed {name} from {self.prefix}checkpoints/ (the staging folder no longer keeps it)")

    def finish(self) -> None:
        """After the run succeeded and everything was synced: the staging folder removed when everything in it is in
        the store, and the last lines: where the best and latest checkpoints are in the store."""
        left = [p.name for p in finished_checkpoints(self.staging) if p.name not in self._sent]
        if left:
            log(f"the staging folder {self.staging} is kept: {', '.join(left)} not in the store")
        else:
            try:
                shutil.rmtree(self.staging)
                log(f"removed the staging folder {self.staging}: everything in it is in {self.prefix}")
            except OSError as exc:
                log(f"warning: the staging folder {self.staging} could not be removed ({exc.strerror or exc})")
        for name in POINTER_NAMES:
            if name in self._pointed:
                checkpoint = self._pointed[name][0]
                log(f"{name} checkpoint: {self.prefix}checkpoints/{checkpoint}/ (also {self.prefix}{name})")

    def keep(self, exc: BaseException) -> None:
        """After a failure: say that the staging folder is kept and where (unless ``exc`` says so already)."""
        if self.staging.is_dir() and str(self.staging) not in str(exc):
            log(
                f"the staging folder {self.staging} is kept: it holds the checkpoints written so far; "
                "`ftc run PLAN --resume` continues from them and uploads what is missing"
            )


@contextmanager
def publishing(plan: Plan, *, resume: bool) -> Iterator[Publisher | None]:
    """While the body trains into the staging folder, upload each checkpoint as it appears; at the end (also after
    a failure or Ctrl-C), upload whatever whole checkpoint is left. When the run succeeded, the staging folder goes
    (``Publisher.finish``); after a failure it is kept. Nothing happens for a plan whose output_dir is a folder."""
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
    except BaseException as exc:
        stop.set()
        watcher.join()
        try:  # the checkpoints written before the failure are still worth having in the store
            publisher.sync()
        except Exception as late:
            log(f"warning: {late}")
        publisher.keep(exc)
        raise
    stop.set()
    watcher.join()
    try:
        if failure:
            raise failure[0]
        publisher.sync()
    except BaseException as exc:
        publisher.keep(exc)
        raise
    publisher.finish()
