"""What every recipe's ``train`` does around its own step and evaluation: where training stands (``TrainState``),
resuming it, the epochs with their evaluations and checkpoints at the plan's frequency, a checkpoint with its
state and lineage record, and the run's last words. A recipe keeps what is its own (its set-up, its step, its
evaluation) and calls these in its ``train``, top to bottom, as ``sft`` does.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from ftc.lineage.record import read_record
from ftc.stores.storage import storage_failure

from .batches import epoch_rows, group, shard_rows
from .checkpoint import describe_sizes, load_training_state, read_state, restore_rng, trained_seconds
from .distributed import Dist
from .progress import MetricsLog, Progress, duration, log
from .resume import ResumePoint
from .summary import RunSummary, eval_table, eval_text, write_summary

__all__ = [
    "RecipeRun",
    "TrainState",
    "already_complete",
    "epoch_steps",
    "finish_run",
    "log_step",
    "quiet_library_warnings",
    "resume_state",
    "run_epochs",
    "save_checkpoint",
    "training_session",
]


@dataclass(kw_only=True)
class RecipeRun:
    """What a recipe's set-up built, fixed for the whole run: the part every recipe has (a recipe's own ``Run``
    adds its own fields)."""

    plan: Any
    spec: Any
    dist: Dist
    out: Path
    precision: str
    engine: Any
    tokenizer: Any
    tokenizer_source: str
    data: dict[str, Any]  # role -> the recipe's examples (``Examples``, ``Pairs``)
    skipped: dict[str, int]
    steps_per_epoch: list[int]
    lineage: Any
    checkpointer: Any
    execution: dict[str, Any]
    tracker: Any = None  # the spec's logger, on process 0

    def say(self, message: str) -> None:
        if self.dist.main:
            log(message)

    @property
    def total_steps(self) -> int:
        return sum(self.steps_per_epoch)


@dataclass
class TrainState:
    """Where training stands: saved in every checkpoint (ftc_state.json), restored by ``--resume``."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    tokens_trained: int = 0
    wall_before: float = 0.0  # training time of the runs this one resumes
    evals: list[dict[str, Any]] = field(default_factory=list)
    last_loss: float | None = None
    started: float = field(default_factory=time.perf_counter)
    tokens_at_start: int = 0


def epoch_steps(spec: Any, dist: Dist, lengths: Any, pack_to: int | None, epoch: int) -> list[list[list[tuple]]]:
    """This rank's optimizer steps of ``epoch``: each a list of micro-batches, each a list of rows (example indices)."""
    rows = epoch_rows(lengths, epoch=epoch, seed=spec.seed, shuffle=True, pack_to=pack_to)
    mine = shard_rows(rows, dist.rank, dist.world)
    return group(group(mine, spec.train_batch_size_per_device), spec.gradient_accumulation_steps)


def already_complete(plan: Any, dist: Dist, last: Path) -> RunSummary:
    """``--resume`` of a finished run: nothing is trained or written."""
    if dist.main:
        log(f"{last} is the last checkpoint of this plan: the run is complete; nothing to resume")
    state = read_state(last)
    return RunSummary.of_output(plan.output_path, state["evals"], state["skipped_examples"])


def resume_state(run: RecipeRun, point: ResumePoint) -> tuple[TrainState, dict[str, Any]]:
    """Engine, optimizer, scheduler and random state as the checkpoint ``point`` (verified against its lineage
    record) saved them; every checkpoint of this run records where it resumed. Also the saved state itself
    (ftc_state.json: what a recipe saved of its own)."""
    previous, record = point.folder, point.record
    state = read_state(previous)
    load_training_state(run.engine, previous, strict=run.plan.mode == "full")
    restore_rng(previous, run.dist.rank)
    point.check_unchanged()  # all of it is read: was any of it written after it was verified?
    run.execution["resumed_from"] = {
        "checkpoint": previous.name,
        "digest": record["checkpoint"]["digest"],
        "record_id": record["record_id"],
    }
    run.say(f"resuming from {previous.name}: step {state['global_step']} of {run.total_steps}")
    return TrainState(
        epoch=state["epoch"], step_in_epoch=state["step_in_epoch"], global_step=state["global_step"],
        tokens_trained=state["tokens_trained"], wall_before=trained_seconds(record, state), evals=state["evals"],
        tokens_at_start=state["tokens_trained"],
    ), state  # fmt: skip


@contextmanager
def training_session(run: RecipeRun, metrics: MetricsLog, bar: Progress) -> Iterator[None]:
    """Around a run's training: the engine in training mode; a storage failure (writing metrics or a checkpoint)
    becomes a clear error with the partial checkpoint removed; the progress bar and the metrics closed, and the
    tracker told how a run that did not finish ended."""
    run.engine.train()
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except (OSError, RuntimeError, SafetensorError) as exc:  # safetensors' own error for a write that failed
        failure = storage_failure(run.out, exc, "writing the run's output")
        if failure is None:
            raise
        run.checkpointer.discard_partial()
        raise failure from None
    finally:
        bar.close()
        metrics.close()
        if run.tracker is not None and status != "FINISHED":
            run.tracker.finish(status, [])


def run_epochs(
    run: RecipeRun,
    state: TrainState,
    *,
    steps_of: Callable[[int], list[Any]],
    step: Callable[[Any], None],
    after_step: Callable[[int], None],
    save: Callable[[int, int], None],
) -> None:
    """Every remaining step of every epoch (``steps_of(epoch)``: this rank's steps; ``step(micro_batches)``: one
    optimizer step; ``after_step(epoch)``: its metrics), and ``save(epoch, step_in_epoch)`` at the plan's
    frequency and at the end; ``ftc reproduce`` of an earlier checkpoint stops at its step."""
    spec = run.spec
    freq = spec.checkpoint_and_evaluation_frequency
    stop_after = getattr(run.plan.placement, "stop_after_step", None)
    start_epoch, start_step = state.epoch, state.step_in_epoch
    for epoch in range(start_epoch, spec.num_epochs):
        steps = steps_of(epoch)
        for step_in_epoch in range(start_step if epoch == start_epoch else 0, len(steps)):
            step(steps[step_in_epoch])
            after_step(epoch)
            end_of_epoch = step_in_epoch + 1 == len(steps)
            if freq.unit == "steps" and state.global_step % freq.frequency == 0 and not end_of_epoch:
                save(epoch, step_in_epoch + 1)
                if state.global_step == stop_after:
                    return
        last_epoch = epoch + 1 == spec.num_epochs
        every_epochs = freq.unit == "epochs" and (epoch + 1) % freq.frequency == 0
        every_steps = freq.unit == "steps" and state.global_step % freq.frequency == 0
        if last_epoch or every_epochs or every_steps:
            save(epoch + 1, 0)
            if state.global_step == stop_after:
                return


def save_checkpoint(
    run: RecipeRun,
    state: TrainState,
    evaluated: dict[str, Any],
    bar: Progress,
    position: tuple[int, int],
    *,
    own: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint (every rank) after the evaluation ``evaluated``, at ``position`` (epoch, step in epoch): its
    training state (ftc_state.json, with the recipe's ``own`` fields) and its lineage record (its results with
    them too)."""
    epoch, step_in_epoch = position
    eval_loss = evaluated["eval_loss"]
    wall_time_s = state.wall_before + time.perf_counter() - state.started
    saved = {
        "plan_id": run.plan.plan_id, "mode": run.plan.mode, "global_step": state.global_step,
        "total_steps": run.total_steps, "epoch": epoch, "step_in_epoch": step_in_epoch,
        "tokens_trained": state.tokens_trained, "eval_loss": eval_loss, "train_loss": state.last_loss,
        "evals": state.evals, "precision": run.precision, "world_size": run.dist.world,
        "skipped_examples": run.skipped, "tokenizer_source": run.tokenizer_source, **(own or {}),
    }  # fmt: skip
    complete = state.global_step == run.total_steps
    results = {
        "step": state.global_step, "total_steps": run.total_steps, "epoch": epoch,
        "status": "complete" if complete else "intermediate", "eval_loss": eval_loss, "train_loss": state.last_loss,
        "evals": state.evals, "tokens_trained": state.tokens_trained,
        "skipped": run.skipped, "used": {role: len(examples) for role, examples in run.data.items()}, **(own or {}),
    }  # fmt: skip
    measured = {"wall_time_s": round(wall_time_s, 3)}  # beside the seal: two runs of a plan seal the same record
    record = lambda folder, final: run.lineage.record(folder, final, results, run.execution, measured)  # noqa: E731
    path = run.checkpointer.save(run.engine, run.tokenizer, saved, record)
    if run.tracker is not None:
        run.tracker.checkpoint(path, read_record(path))
    size = f" ({describe_sizes(path)})" if run.dist.main else ""
    bar.note(f"checkpoint {path.name} at step {state.global_step}/{run.total_steps}: {eval_text(evaluated)}{size}")
    return path


def finish_run(run: RecipeRun, state: TrainState) -> RunSummary:
    """The run's summary (summary.json on rank 0, with where the run is in its tracker), its last words, and the
    tracker told it finished."""
    summary = RunSummary.of_output(run.out, state.evals, run.skipped)
    if not run.dist.main:
        return summary
    write_summary(
        run.plan, summary, steps=state.global_step, tokens=state.tokens_trained, train_loss=state.last_loss,
        tracker=run.tracker.link if run.tracker is not None else None,
    )  # fmt: skip
    elapsed = time.perf_counter() - state.started
    stopped = state.global_step < run.total_steps  # ftc reproduce of an earlier checkpoint stops at its step
    run.say(
        (f"stopped after step {state.global_step} of {run.total_steps}, as asked" if stopped else
         f"done: {run.spec.num_epochs} epoch(s), {state.global_step} steps")
        + f", {state.tokens_trained:,} tokens; training took {duration(elapsed)}"
    )  # fmt: skip
    for line in eval_table(state.evals):
        run.say(line)
    where = summary.best or (summary.checkpoints[-1] if summary.checkpoints else run.out)
    store = run.plan.output_store  # the staging folder goes once published: name where the checkpoint will be
    shown = f"{store}checkpoints/{where.name}/" if store and where != run.out else os.path.relpath(where)
    run.say(f"checkpoint{' (best eval loss)' if summary.best else ''}: {shown}")
    if run.tracker is not None:
        run.tracker.finish("FINISHED", [run.out / "summary.json"])
    return summary


def log_step(run: RecipeRun, state: TrainState, metrics: MetricsLog, bar: Progress, epoch: int) -> None:
    """A step's line in metrics.jsonl (and the tracker) and the progress bar."""
    elapsed = time.perf_counter() - state.started
    tokens_per_s = (state.tokens_trained - state.tokens_at_start) / elapsed if elapsed > 0 else 0.0
    metrics.write({
        "type": "train", "step": state.global_step, "epoch": epoch, "loss": state.last_loss,
        "lr": run.engine.get_lr()[0], "tokens": state.tokens_trained, "tokens_per_s": tokens_per_s,
        "time": time.time(),
    })  # fmt: skip
    bar.update(epoch, state.last_loss, tokens_per_s)


def quiet_library_warnings() -> None:
    """Deprecation notices about DeepSpeed's and peft's own calls, printed at every step: nothing a user can act
    on."""
    warnings.filterwarnings("ignore", message=r"`(torch\.distributed\.\w+|is_gradient_checkpointing)` is deprecated")
