"""What a run shows while it works: a progress bar on a terminal, plain log lines elsewhere; and metrics.jsonl."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ftc.stores.atomic import open_regular

__all__ = [
    "CLASSIFIER_SCALARS",
    "EVAL_SCALARS",
    "PREFERENCE_SCALARS",
    "EVERY_S",
    "ByteProgress",
    "CountProgress",
    "MetricsLog",
    "Progress",
    "byte_progress",
    "duration",
    "log",
    "size_text",
]


#: a classifier's scalar metrics in an evaluation record (``Classified.record_fields``: the metrics that
#: ``eval_metrics`` names), with the words the run's notes give those the notes show; beside them a record holds
#: ``eval_classes`` (per class) and ``eval_confusion_matrix``
CLASSIFIER_SCALARS = {
    "eval_accuracy": "accuracy",
    "eval_precision_macro": None,
    "eval_recall_macro": None,
    "eval_f1_macro": "macro F1",
    "eval_prauc_macro": "macro PR-AUC",
}
#: a preference model's scalar metrics in an evaluation record (``pair_metrics``), the same way
PREFERENCE_SCALARS = {
    "eval_reward_accuracy": "reward accuracy",
    "eval_reward_margin": "reward margin",
    "eval_rewards_chosen": None,
    "eval_rewards_rejected": None,
    "eval_logps_chosen": None,
    "eval_logps_rejected": None,
}
#: every task's scalar metrics beside eval_loss (what summary.json, the notes and the trackers carry)
EVAL_SCALARS = {**CLASSIFIER_SCALARS, **PREFERENCE_SCALARS}


def log(message: str, stream: TextIO | None = None) -> None:
    print(f"[ftc] {message}", file=stream or sys.stderr, flush=True)


def size_text(n: float) -> str:
    """``n`` bytes in the unit that reads best: 512 B, 8.2 kB, 19.6 MB, 4.1 GB."""
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class Progress:
    """Step, epoch, loss, tokens/s and ETA: a tqdm bar on a terminal, else a log line every few percent."""

    def __init__(self, total_steps: int, done: int, enabled: bool, stream: TextIO | None = None):
        self.total = total_steps
        self.done = done
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.first_done = done
        self.bar = None
        self.every = max(1, total_steps // 20)
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=done, unit="step", file=self.stream, dynamic_ncols=True)

    def update(self, epoch: int, loss: float, tokens_per_s: float) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"epoch {epoch + 1} loss {loss:.4f} {tokens_per_s:,.0f} tok/s", refresh=False)
            self.bar.update(1)
            return
        if self.done in (self.first_done + 1, self.total) or self.done % self.every == 0:
            elapsed = time.perf_counter() - self.start
            rate = (self.done - self.first_done) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            log(
                f"step {self.done}/{self.total} epoch {epoch + 1} loss {loss:.4f}"
                f" {tokens_per_s:,.0f} tok/s eta {duration(eta)}",
                self.stream,
            )

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(f"[ftc] {message}", file=self.stream)
        else:
            log(message, self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ByteProgress:
    """Bytes downloaded of a known total, from many threads: a tqdm bar on a terminal, else a log line every
    ``every_s`` seconds."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, every_s: float = 10.0):
        import threading

        self.total, self.label, self.every_s = total, label, every_s
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.lock = threading.Lock()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=self.stream,
                dynamic_ncols=True,
            )

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            if self.bar is not None:
                self.bar.update(n)
                return
            now = time.perf_counter()
            if now - self.last >= self.every_s:
                self.last = now
                rate = self.done / (now - self.start)
                log(
                    f"{self.label}: {self.done / 1e9:,.2f} of {self.total / 1e9:,.2f} GB, {rate / 1e6:,.0f} MB/s,"
                    f" eta {duration((self.total - self.done) / rate if rate else 0)}",
                    self.stream,
                )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


#: how often a long piece of work (an evaluation) reports: at most one line in this many seconds, none for work done
#: sooner (a bar on a terminal appears only after it)
EVERY_S = 10.0


class CountProgress:
    """Items done of a known ``total`` (an evaluation's answers or batches), for work that may take minutes and must
    not look hung: on a terminal a tqdm bar that appears once the work has run ``every_s`` seconds and is gone when
    it ends; elsewhere a log line at most every ``every_s`` seconds (``evaluation: answer 12/40, 0:45 so far, eta
    1:30``) and, when it ran that long, a last one with the time it took. Work done sooner says nothing. Only where
    ``enabled`` (rank 0); used as a context manager, it says nothing more when the work fails."""

    def __init__(
        self,
        total: int,
        label: str,
        unit: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        every_s: float | None = None,
    ):
        self.total, self.label, self.unit = total, label, unit
        self.enabled = enabled and total > 0
        self.stream = stream or sys.stderr
        self.every_s = EVERY_S if every_s is None else every_s
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.shown = False
        self.bar = None
        if self.enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=label, unit=unit, file=self.stream, dynamic_ncols=True, delay=self.every_s,
                leave=False,
            )  # fmt: skip

    def __enter__(self) -> CountProgress:
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        self.close(finished=kind is None)

    def update(self, n: int = 1) -> None:
        if not self.enabled:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last, self.shown = now, True
            elapsed = now - self.start
            eta = elapsed / self.done * (self.total - self.done)
            log(
                f"{self.label}: {self.unit} {self.done}/{self.total}, {duration(elapsed)} so far, eta {duration(eta)}",
                self.stream,
            )

    def close(self, finished: bool = True) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and finished:
            took = time.perf_counter() - self.start
            if self.shown or took >= self.every_s:
                log(f"{self.label}: {self.unit} {self.done}/{self.total}, took {duration(took)}", self.stream)
        self.enabled = False  # closed: says nothing more


def byte_progress(total: int, label: str) -> ByteProgress | None:
    """A progress display for a transfer of ``total`` bytes, or None for one too small to need it (under 64 MiB)."""
    return ByteProgress(total, label) if total >= 64 << 20 else None


def _step_of(raw: bytes) -> int | None:
    """The step of one metrics.jsonl line; None for a line that is not a whole record."""
    try:
        step = json.loads(raw).get("step")
    except (ValueError, AttributeError, RecursionError):
        return None
    return step if isinstance(step, int) else None


class MetricsLog:
    """metrics.jsonl: one JSON object per train step and per evaluation, flushed as written."""

    def __init__(
        self,
        path: Path,
        enabled: bool,
        keep_until_step: int | None = None,
        also: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.path = path
        self.enabled = enabled
        self.also = also  # each record goes there too (the run's tracker)
        # the output folder may be shared: a link planted at metrics.jsonl is refused, never read or appended through
        if enabled and keep_until_step is not None and os.path.lexists(path):
            # a resumed run continues from its checkpoint: records written after it by the interrupted run go, and
            # so does a line torn by a kill in mid-write (read a line at a time: the file grows with every step)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # a new file
            try:
                with os.fdopen(fd, "wb") as new, os.fdopen(open_regular(path, os.O_RDONLY), "rb") as old:
                    for raw in old:
                        if _step_of(raw) is not None and _step_of(raw) <= keep_until_step:
                            new.write(raw.rstrip(b"\n") + b"\n")
                os.chmod(tmp, 0o644)  # as the file it replaces was made (mkstemp's are private)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self.file = None
        if enabled:
            fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.file = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record, sort_keys=True) + "\n")
            self.file.flush()
        if self.also is not None:
            self.also(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
