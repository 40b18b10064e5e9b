"""The supervised fine-tuning recipe (sft): one plan in, checkpoints out. ``train`` reads top to bottom: check, set up,
resume, evaluate the starting point, the loop (steps, evaluations and checkpoints), finish. Each step is a short
function below it, over two objects: ``Run`` (what set-up built, fixed for the run) and ``TrainState`` (where training
stands, saved in every checkpoint and restored on resume). What is the recipe's own is here (which examples make a
step, the loss of a step, when to evaluate and save, what a checkpoint records); the pieces any recipe uses (checks
before training, tokens and batches, the model, the engine, evaluation, checkpoints, the summary) are the training
library's (``ftc.runtime.training``), the only part of the runtime it imports; the launch layer starts it.

Every process (rank) runs ``train``; rank 0 also writes the files everyone shares. One path through DeepSpeed for
every topology (gloo on CPU, NCCL on GPUs); a classifier is trained here too (docs/training.md, Classification).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ftc.errors import TrainingFailed
from ftc.lineage.run import Lineage
from ftc.runtime.training.attention import VARLEN
from ftc.runtime.training.batches import Batch, collate
from ftc.runtime.training.checkpoint import is_complete
from ftc.runtime.training.data import conversations_at, describe_data, load_data
from ftc.runtime.training.distributed import Dist, init_distributed
from ftc.runtime.training.engine import build_engine
from ftc.runtime.training.evaluation import exact_match_share, mean_token_loss
from ftc.runtime.training.inputs import FoundInputs
from ftc.runtime.training.label_tokens import classifier_record
from ftc.runtime.training.loop import (
    RecipeRun,
    TrainState,
    already_complete,
    epoch_steps,
    finish_run,
    log_step,
    quiet_library_warnings,
    resume_state,
    run_epochs,
    save_checkpoint,
    training_session,
)
from ftc.runtime.training.loss import TokenLoss
from ftc.runtime.training.preflight import Checked, check_run
from ftc.runtime.training.progress import MetricsLog, Progress, log
from ftc.runtime.training.startup import execution_of, load_for_training, new_checkpointer, open_reporting
from ftc.runtime.training.step import Prefetched, train_step
from ftc.runtime.training.summary import RunSummary, matched_text
from ftc.runtime.training.trackers import open_tracker
from ftc.spec.plan import Plan

__all__ = ["RunSummary", "train"]


@dataclass(kw_only=True)
class Run(RecipeRun):
    """What set-up built: fixed for the whole run (``RecipeRun``'s fields, and how sft batches and scores)."""

    token_loss: Any
    pack_to: int | None
    pad_to: int | None
    flat: bool  # a micro-batch's rows end to end in one, unpadded unless pad_to (the varlen attention's layout)
    #: evaluation.generate: the validation conversations (as data["valid"] holds them) whose answers are generated
    answered: list[list[dict[str, Any]]] | None = None

    def epoch_steps(self, epoch: int) -> list[list[list[tuple[int, ...]]]]:
        return epoch_steps(self.spec, self.dist, self.data["train"].lengths, self.pack_to, epoch)

    def epoch_batches(self, epoch: int) -> Prefetched:
        """The epoch's steps as micro-batches, the next step's collated while one trains."""
        return Prefetched(self.epoch_steps(epoch), self.collate_step, pin=self.dist.device.type == "cuda")

    def collate_step(self, micro_rows: list[list[tuple[int, ...]]]) -> list[Batch]:
        train_set, pad_id, packed = self.data["train"], self.tokenizer.pad_token_id, self.pack_to is not None
        return [
            collate(rows, train_set, pad_id=pad_id, packed=packed, pad_to=self.pad_to, flat=self.flat)
            for rows in micro_rows
        ]


def train(
    plan: Plan,
    *,
    resume: bool = False,
    checked: Checked | None = None,
    tracker: bool = True,
    inputs_checked: bool = False,
) -> RunSummary:
    """Run ``plan`` (already read and verified) in this process, as one rank of its topology. ``checked``: what the
    caller has just checked (else each rank checks the inputs and the checkpoint to resume itself). Without
    ``tracker``, the spec's tracker is not fed (the launcher found it unreachable, and the spec says to go on).
    ``inputs_checked``: fetched inputs are read from the cache the launcher filled (``check_run``)."""
    quiet_library_warnings()
    dist = init_distributed(plan.launch.world_size)
    checked = checked or check_run(plan, resume=resume, inputs_checked=inputs_checked)
    previous = checked.previous
    if previous is not None and is_complete(previous.folder):
        return already_complete(plan, dist, previous.folder)
    plan.output_path.mkdir(parents=True, exist_ok=True)
    run = _set_up(plan, dist, checked.paths, checked.lineage, tracker=tracker)
    state = resume_state(run, previous)[0] if previous is not None else TrainState()
    metrics, bar = open_reporting(run, state.global_step, resume=resume, resumed=previous is not None)
    with training_session(run, metrics, bar):
        if state.global_step == 0 and "valid" in run.data:  # the baseline every later evaluation is compared with
            record = _log_eval(run, state, metrics, epoch=0, train_loss=None)
            bar.note(f"eval loss before training: {record['eval_loss']:.4f}{matched_text(record)}")
        run_epochs(
            run, state, steps_of=run.epoch_batches, step=lambda batches: _step(run, state, batches),
            after_step=lambda epoch: log_step(run, state, metrics, bar, epoch),
            save=lambda epoch, step_in_epoch: _save(run, state, metrics, bar, epoch, step_in_epoch),
        )  # fmt: skip
    return finish_run(run, state)


def _set_up(plan: Plan, dist: Dist, paths: FoundInputs, lineage: Lineage, *, tracker: bool) -> Run:
    """Model loaded, data tokenized, DeepSpeed engine built."""
    spec = plan.spec
    say = log if dist.main else (lambda message: None)
    loaded = load_for_training(plan, dist, paths)
    lm, precision = loaded.model, loaded.precision  # the model, its tokenizer and its parameter counts
    data, skipped = load_data(plan, dist, paths, lm.tokenizer, lm.tokenizer_source)
    describe_data(data, skipped, spec.task, say)

    pack_to = spec.context_length if spec.sample_packing else None
    # FlexAttention compiles its kernels per shape: packed rows, nearly full anyway, always get the same width
    fixed_width = spec.padding == "max_length" or (pack_to is not None and loaded.attention == "flex_attention")
    lengths = data["train"].lengths
    steps_per_epoch = [len(epoch_steps(spec, dist, lengths, pack_to, epoch)) for epoch in range(spec.num_epochs)]
    engine = build_engine(
        lm.model, spec, plan.deepspeed, precision=precision, total_steps=sum(steps_per_epoch), world=dist.world,
    )  # fmt: skip
    token_loss = TokenLoss(engine.module, zero_stage=plan.zero_stage)
    say(f"loss: {token_loss.reason}")
    run = Run(
        plan=plan, spec=spec, dist=dist, out=plan.output_path, precision=precision, engine=engine,
        tokenizer=lm.tokenizer, tokenizer_source=lm.tokenizer_source, token_loss=token_loss, data=data,
        skipped=skipped, pack_to=pack_to, pad_to=spec.context_length if fixed_width else None,
        flat=loaded.attention in VARLEN,  # (fixed widths: the flat row padded to them)
        steps_per_epoch=steps_per_epoch, lineage=lineage, checkpointer=new_checkpointer(plan, dist),
        execution=execution_of(plan, dist, precision),
    )  # fmt: skip
    if spec.evaluation.generate and "valid" in data:
        run.answered = conversations_at(paths["valid"], data["valid"].lines)
    paths.check_unchanged()  # everything of the inputs is read: was any written after it was checked?
    run.tracker = open_tracker(plan, main=dist.main, off=not tracker)
    return run


def _step(run: Run, state: TrainState, micro_batches: list[Batch]) -> None:
    """One optimizer step over ``micro_batches`` (this rank's)."""
    loss = train_step(run.engine, run.token_loss, micro_batches, run.dist)
    state.global_step += 1
    state.tokens_trained += loss.real_tokens
    state.last_loss = loss.value(run.dist)
    if not math.isfinite(state.last_loss):
        raise TrainingFailed(
            f"the training loss became {state.last_loss} at step {state.global_step}; "
            "lower learning_rate or check the data"
        )


def _log_eval(
    run: Run, state: TrainState, metrics: MetricsLog, *, epoch: int, train_loss: float | None
) -> dict[str, Any]:
    """Evaluate (every rank its share): the token loss over the validation data, and with evaluation.generate the
    share of validation examples whose generated answer equals the reference; logged and returned."""
    eval_loss = None
    if "valid" in run.data:
        eval_loss = mean_token_loss(
            run.engine, run.token_loss, run.data["valid"], pad_id=run.tokenizer.pad_token_id,
            batch_size=run.spec.eval_batch_size_per_device, dist=run.dist,
        )  # fmt: skip
    record = {"type": "eval", "step": state.global_step, "epoch": epoch, "eval_loss": eval_loss}
    record["train_loss"] = train_loss
    record.update(classifier_record(run.engine, run.data.get("valid"), run.tokenizer, run.spec, run.dist))
    if run.answered is not None:
        record["exact_match"] = exact_match_share(
            run.engine, run.tokenizer, run.answered, generation=run.spec.generation_config,
            max_new_tokens=run.spec.evaluation.max_new_tokens, dist=run.dist,
            lockstep=run.plan.zero_stage == 3 and run.dist.world > 1,
        )  # fmt: skip
    state.evals.append(record)
    metrics.write(record)
    return record


def _save(run: Run, state: TrainState, metrics: MetricsLog, bar: Progress, epoch: int, step_in_epoch: int) -> None:
    """Evaluate, then write a checkpoint (every rank) with its state and lineage record."""
    evaluated = _log_eval(run, state, metrics, epoch=epoch, train_loss=state.last_loss)
    save_checkpoint(run, state, evaluated, bar, (epoch, step_in_epoch))
