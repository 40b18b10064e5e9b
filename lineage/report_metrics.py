"""The training losses ``ftc report`` draws from a run's metrics.jsonl, the file beside a checkpoint that no lineage
record covers: read as outside input, line by line and bounded (a torn, foreign or endless line is skipped), a value
that cannot be drawn kept as a gap in its curve."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ftc.spec.reading import MiB, regular_file_problem

from .report_charts import Point

__all__ = ["point", "run_metrics"]

#: how much of metrics.jsonl the page reads (the start of a longer one: the page says so)
METRICS_LIMIT = 32 * MiB
#: a metrics line longer than this is not one ftc wrote: it is skipped, unread
LINE_LIMIT = 64 * 1024
#: the largest step or value drawn: beyond it (or NaN, infinite) a point is a gap in its curve
PLOTTABLE = 1e15


def _plottable(value: Any) -> float | None:
    """``value`` as a coordinate, or None where it cannot be drawn (not a number, NaN, infinite, huge)."""
    if type(value) is float:
        return value if -PLOTTABLE <= value <= PLOTTABLE else None  # NaN compares false
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and not -PLOTTABLE <= value <= PLOTTABLE:
        return None
    value = float(value)
    return value if math.isfinite(value) and abs(value) <= PLOTTABLE else None


def point(step: Any, value: Any) -> Point:
    x, y = _plottable(step), _plottable(value)
    return None if x is None or y is None else (x, y)


#: metrics lines as JSON, NaN and infinities read as floats: they are gaps, not unreadable lines
_LENIENT = json.JSONDecoder(parse_constant=float)


def run_metrics(folder: Path, step: int) -> tuple[list[Point], str | None]:
    """The train losses of the run the checkpoint belongs to (its metrics.jsonl, up to the checkpoint's step), when
    the checkpoint is still in its run's folder: read line by line, at most :data:`METRICS_LIMIT` bytes; a torn or
    foreign line is skipped, a train line whose step or loss cannot be drawn is a gap. With a note for the page
    when not all of it was read."""
    path = folder.parent.parent / "metrics.jsonl"
    if folder.parent.name != "checkpoints":
        return [], None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except OSError:  # none, or not readable: the curve is an extra, the page is made without it
        return [], None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if regular_file_problem(path, st) is not None:
            return [], None
        points: list[Point] = []
        read = skipped = 0
        while read < METRICS_LIMIT:
            line = f.readline(LINE_LIMIT + 1)
            if not line:
                break
            read += len(line)
            if len(line) > LINE_LIMIT and not line.endswith(b"\n"):  # skip the rest of it, a chunk at a time
                skipped += 1
                rest = b""
                while read < METRICS_LIMIT and (rest := f.readline(LINE_LIMIT)) and not rest.endswith(b"\n"):
                    read += len(rest)  # a line with no end (a sparse file) stops at the read limit too
                read += len(rest) if rest.endswith(b"\n") else 0
                continue
            if b'"train"' not in line:  # an eval or summary line: not parsed
                continue
            try:
                record = _LENIENT.decode(line.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                continue
            if not isinstance(record, dict) or record.get("type") != "train":
                continue
            at = record.get("step")
            if isinstance(at, int) and not isinstance(at, bool) and at > step:
                continue
            points.append(point(at, record.get("loss")))
    notes = []
    if read >= METRICS_LIMIT and st.st_size > read:
        notes.append(f"the first {read // MiB} MiB of its {st.st_size / MiB:.0f} MiB were read")
    if skipped:
        notes.append(f"{skipped} line(s) longer than {LINE_LIMIT // 1024} KiB skipped")
    return points, "; ".join(notes) or None
