"""The stages of a chain, for ``ftc report``: a checkpoint that continues an earlier ftc run's checkpoint (stage 2
continuing stage 1's adapter, a full fine-tune of an earlier run's weights, through an export of them) is the last
of several trainings, and its page draws them all on one axis. Each stage's steps are continued from where the
stage before it ended (stage 2's step 0 is stage 1's checkpoint's step), its epochs too.

A stage's evaluations come from its lineage record, which its child's record embeds whole (verified with the
chain), so they are always known; its train losses come from its run's metrics.jsonl where that run's folder is on
this machine, else from its record's evaluations, and the page says which."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.spec.text import for_html
from ftc.stores.sources import SOURCES

from .record import located
from .report_charts import Band, Point, Series
from .report_metrics import point, run_metrics
from .show import source_name

__all__ = ["MAX_STAGES", "Stage", "chain_stages", "eval_curves", "stage_bands", "stages_note", "train_curves"]

#: the most stages the charts draw (the latest ones; the steps before them still count)
MAX_STAGES = 12
#: the parents through which the trained weights go on, the most telling first: an adapter trained further, weights
#: fine-tuned (or adapted) further, an export's checkpoint (an export trains nothing: it is passed through)
_CONTINUED = ("adapter-continued", "finetune", "adapter", "merged", "exported")


@dataclass(frozen=True)
class Stage:
    """One training of the chain: its evaluations and train losses at its own steps, and where it sits."""

    number: int  # 1: the oldest stage known
    name: str  # "this checkpoint", or the parent as its child's spec named it
    offset: int  # the steps of the chain's stages before it
    step: int  # its checkpoint's step (the steps it trained)
    epochs_before: int  # the epochs of the stages before it
    epoch: int | None  # its checkpoint's epoch
    evals: list[dict[str, Any]]
    train: list[Point]
    train_source: str  # where its train curve comes from, in words

    @property
    def label(self) -> str:
        return f"stage {self.number}"


def _predecessor(record: dict[str, Any]) -> dict[str, Any] | None:
    """The parent entry whose weights this record's training went on from, where that parent was trained by ftc
    (its record embedded), else where no record is embedded, the adapter continued (known, but not drawn)."""
    parents = [p for p in record.get("parents", []) if isinstance(p, dict)]
    for relation in _CONTINUED:
        found = next((p for p in parents if p.get("relation") == relation and p.get("lineage")), None)
        if found is not None:
            return found
    return next((p for p in parents if p.get("relation") == "adapter-continued"), None)


def _parent_folder(parent: dict[str, Any], child: Path | None) -> Path | None:
    """Where the parent's checkpoint is on this machine (its location, relative to its child's folder), for a kind of
    source that is on disk."""
    source = parent.get("source", {})
    location = source.get("location")
    kind = SOURCES.get(source.get("source"))
    if child is None or kind is None or not kind.on_disk or not isinstance(location, str):
        return None
    return located(location, child)


def _train(folder: Path | None, results: dict[str, Any], own: bool) -> tuple[list[Point], str]:
    """A stage's train losses and where they come from: its run's metrics.jsonl, else its record's evaluations."""
    points, note = run_metrics(folder, results.get("step", 0)) if folder is not None else ([], None)
    if any(p is not None for p in points):
        source = "from the run's metrics.jsonl, which the lineage record does not cover (not verified)"
        return points, source + (f"; {note}" if note else "")
    evals = results.get("evals", [])
    points = [point(e["step"], e.get("train_loss")) for e in evals if e.get("train_loss") is not None]
    if own:
        return points, "from the lineage record (its evaluations), verified with it" if points else "none recorded"
    if folder is None:
        where = "its checkpoint is not a local folder, so its run's metrics.jsonl is not read"
    else:
        where = f"its run's metrics.jsonl is not on this machine (its checkpoint: {folder})"
    if points:
        return points, f"from its lineage record's evaluations ({where})"
    return points, f"not available: {where}, and its lineage record holds no train losses"


def chain_stages(folder: Path, record: dict[str, Any]) -> tuple[list[Stage], list[str]]:
    """The stages of the chain ending at the checkpoint in ``folder`` (oldest first, at most :data:`MAX_STAGES`),
    and what the page says of stages it cannot draw."""
    walked: list[tuple[str, dict[str, Any], Path | None]] = []  # newest first: (name, its record, its folder)
    notes: list[str] = []
    name, current, where = "this checkpoint", record, folder
    while True:
        if isinstance(current.get("results"), dict):
            walked.append((name, current, where))
        parent = _predecessor(current)
        if parent is None:
            break
        if not parent.get("lineage"):
            notes.append(
                f"The oldest stage continues {source_name(parent['source'])}, which carries no lineage record: the "
                "training before it is not known here, so it is not drawn (steps count from the oldest stage's start)"
            )
            break
        name, current, where = source_name(parent["source"]), parent["lineage"], _parent_folder(parent, where)
    walked.reverse()
    if len(walked) > MAX_STAGES:
        notes.insert(0, f"{len(walked) - MAX_STAGES} earlier stage(s) not drawn (their steps are counted)")
    stages: list[Stage] = []
    offset = epochs = 0
    for number, (name, rec, where) in enumerate(walked, 1):
        results = rec["results"]
        step, epoch = results.get("step", 0), results.get("epoch")
        if number > len(walked) - MAX_STAGES:  # a metrics.jsonl is read only for a stage drawn
            train, source = _train(where, results, own=number == len(walked))
            stages.append(Stage(number, name, offset, step, epochs, epoch, results.get("evals", []), train, source))
        offset += step
        epochs += epoch or 0
    return stages, notes


def _shade(color: str, stage: int, count: int) -> str:
    """``color`` for stage ``stage`` of ``count``: the latest as it is, earlier ones paler (mixed with white)."""
    if count < 2:
        return color
    mix = 0.6 * (count - stage) / (count - 1)
    rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * mix):02x}" for c in rgb)


def _series(stages: list[Stage], name: str, color: str, points_of) -> list[Series]:
    count = len(stages)
    return [
        Series(
            name if count < 2 else f"{s.label} {name}",
            _shade(color, s.number - stages[0].number + 1, count),
            [None if p is None else (p[0] + s.offset, p[1]) for p in points_of(s)],
            dashed=s is not stages[-1],
        )
        for s in stages
    ]


def eval_curves(stages: list[Stage], key: str, name: str, color: str) -> list[Series]:
    """One curve per stage of its evaluations' ``key`` (a stage without it: no points), at continued steps."""
    return _series(
        stages, name, color, lambda s: [point(e.get("step"), e[key]) for e in s.evals if e.get(key) is not None]
    )


def train_curves(stages: list[Stage], color: str) -> list[Series]:
    """One train-loss curve per stage, at continued steps."""
    return _series(stages, "train loss", color, lambda s: s.train)


def stage_bands(stages: list[Stage]) -> list[Band]:
    """Each stage's span on the continued step axis, labelled with its number and its epochs there (none for a
    single stage: the chart is the run's own)."""
    if len(stages) < 2:
        return []
    return [Band(s.offset, s.offset + s.step, f"{s.label}{_epochs(s)}") for s in stages]


def _epochs(stage: Stage) -> str:
    if not stage.epoch:
        return ""
    first, last = stage.epochs_before + 1, stage.epochs_before + stage.epoch
    return f" · epoch {first}" if first == last else f" · epochs {first}–{last}"


def stages_note(stages: list[Stage], notes: list[str]) -> str:
    """What the charts' stages are and where each one's curves come from, as HTML (nothing for a single stage
    with nothing to say)."""
    if len(stages) < 2 and not notes:
        return ""
    rows = "".join(
        f"<tr><th>{for_html(s.label)}</th><td><code>{for_html(s.name)}</code>: steps {s.offset}–{s.offset + s.step} "
        f"here (its own 0–{s.step}){for_html(_epochs(s))}. Eval losses and metrics: from its lineage record"
        f"{'' if s is stages[-1] else ', embedded in its child’s and verified with it'}. "
        f"Train loss: {for_html(s.train_source)}.</td></tr>"
        for s in stages
    )
    warn = "".join(f"<p class='warn'>{for_html(n)}</p>" for n in notes)
    head = "<p>One axis for the whole chain: each stage's steps continue where the stage before it ended.</p>"
    return (head if len(stages) > 1 else "") + warn + (f"<table>{rows}</table>" if len(stages) > 1 else "")
