"""The preference tuning recipe (dpo, ``task: preference_tuning``): one plan of preference pairs in, checkpoints out.
``train`` reads top to bottom as ``sft``'s does: check, set up (the model, the pairs, the engine, then the reference
log-probabilities), resume, evaluate the starting point, the loop, finish. What is its own is here: a step is a
batch of pairs, both answers of each in one forward pass, and its loss is the pairwise preference loss (DPO's, or
IPO's) against the reference; an evaluation reports the rewards. Everything else is the training library's, the
step's mechanics included: as sft's, its micro-batches (with their pairs' reference log-probabilities) are collated
a step ahead in a thread, and the step waits for the device once, when its loss is read.

The reference is the model as training starts: the base weights, the adapter a stage continues (an SFT stage's),
or the whole weights. Its log-probabilities are computed once with the weights the run loaded, before the first
step, so LoRA and full fine-tuning alike need no second copy of the model; they are cached by digest and pinned in
every checkpoint, and ``--resume`` checks it continues with the same numbers (docs/training.md, Preference tuning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ftc.errors import TrainingFailed
from ftc.lineage.run import Lineage
from ftc.runtime.training.checkpoint import is_complete
from ftc.runtime.training.data import conversations_at, data_cache
from ftc.runtime.training.distributed import Dist, init_distributed
from ftc.runtime.training.engine import build_engine
from ftc.runtime.training.evaluation import exact_match_share
from ftc.runtime.training.inputs import FoundInputs
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
from ftc.runtime.training.preference import PairBatch, load_pairs, pair_batch, pair_metrics, preference_step
from ftc.runtime.training.preflight import Checked, check_run
from ftc.runtime.training.progress import MetricsLog, Progress, log
from ftc.runtime.training.reference import Reference, check_reference, reference_cache, reference_logps
from ftc.runtime.training.startup import Loaded, execution_of, load_for_training, new_checkpointer, open_reporting
from ftc.runtime.training.step import Prefetched
from ftc.runtime.training.summary import RunSummary, matched_text
from ftc.runtime.training.trackers import open_tracker
from ftc.spec.plan import Plan

__all__ = ["RunSummary", "train"]

#: a sigmoid loss this close to ln 2 after training began: the policy has not moved off the reference
_STUCK = 1e-3


@dataclass(kw_only=True)
class Run(RecipeRun):
    """What set-up built: fixed for the whole run (``RecipeRun``'s fields; ``data`` holds ``Pairs``), with the
    preference settings and each data input's reference log-probabilities."""

    beta: float
    loss_type: str
    token_loss: TokenLoss  # how the answers' log-probabilities go through the output layer (chunked or full logits)
    reference_batch: int
    references: dict[str, Reference]
    pad_to: int | None  # padding: max_length: every training row as wide as context_length
    #: evaluation.generate: the validation pairs' chosen conversations, whose answers are generated and compared
    answered: list[list[dict[str, Any]]] | None = None

    def epoch_steps(self, epoch: int) -> list[list[list[tuple[int, ...]]]]:
        return epoch_steps(self.spec, self.dist, self.data["train"].lengths, None, epoch)

    def epoch_batches(self, epoch: int) -> Prefetched:
        """The epoch's steps as micro-batches of pairs, the next step's collated while one trains."""
        return Prefetched(self.epoch_steps(epoch), self.collate_step, pin=self.dist.device.type == "cuda")

    def collate_step(self, micro_rows: list[list[tuple[int, ...]]]) -> list[PairBatch]:
        """Each micro-batch of a step (its rows: one pair each) with its pairs' reference log-probabilities."""
        pairs, reference, pad_id = self.data["train"], self.references["train"].values, self.tokenizer.pad_token_id
        return [
            pair_batch(pairs, [i for (i,) in rows], reference, pad_id=pad_id, pad_to=self.pad_to) for rows in micro_rows
        ]


def train(
    plan: Plan,
    *,
    resume: bool = False,
    checked: Checked | None = None,
    tracker: bool = True,
    inputs_checked: bool = False,
) -> RunSummary:
    """Run ``plan`` (already read and verified) in this process, as one rank of its topology (the arguments are
    ``sft.train``'s)."""
    quiet_library_warnings()
    dist = init_distributed(plan.launch.world_size)
    checked = checked or check_run(plan, resume=resume, inputs_checked=inputs_checked)
    previous = checked.previous
    if previous is not None and is_complete(previous.folder):
        return already_complete(plan, dist, previous.folder)
    plan.output_path.mkdir(parents=True, exist_ok=True)
    run = _set_up(plan, dist, checked.paths, checked.lineage, tracker=tracker)
    state = TrainState()
    if previous is not None:
        state, saved = resume_state(run, previous)
        check_reference(run.references, saved.get("reference_logprobs"), previous.folder.name)
    metrics, bar = open_reporting(run, state.global_step, resume=resume, resumed=previous is not None)
    with training_session(run, metrics, bar):
        if state.global_step == 0 and "valid" in run.data:  # the baseline: the reference itself (loss ln 2)
            record = _log_eval(run, state, metrics, epoch=0, train_loss=None)
            bar.note(f"eval loss before training: {record['eval_loss']:.4f}{matched_text(record)}")
        run_epochs(
            run, state, steps_of=run.epoch_batches, step=lambda batches: _step(run, state, batches),
            after_step=lambda epoch: log_step(run, state, metrics, bar, epoch),
            save=lambda epoch, step_in_epoch: _save(run, state, metrics, bar, epoch, step_in_epoch),
        )  # fmt: skip
    return finish_run(run, state)


def _set_up(plan: Plan, dist: Dist, paths: FoundInputs, lineage: Lineage, *, tracker: bool) -> Run:
    """Model loaded, pairs tokenized, DeepSpeed engine built, the reference log-probabilities computed (or read
    from the cache)."""
    spec = plan.spec
    preference = spec.preference_tuning_config
    say = log if dist.main else (lambda message: None)
    loaded = load_for_training(plan, dist, paths)
    lm, precision = loaded.model, loaded.precision  # the model, its tokenizer and its parameter counts
    data, skipped = load_pairs(plan, dist, paths, lm.tokenizer, lm.tokenizer_source)
    for role, pairs in data.items():
        dropped = f", {skipped[role]} skipped (skip_bad_examples)" if skipped[role] else ""
        say(f"{role}: {len(pairs):,} pairs, {int(pairs.lengths.sum()):,} tokens, {pairs.trained_tokens:,} of them "
            f"in the answers compared{dropped}")  # fmt: skip
    steps_per_epoch = [
        len(epoch_steps(spec, dist, data["train"].lengths, None, epoch)) for epoch in range(spec.num_epochs)
    ]
    engine = build_engine(
        lm.model, spec, plan.deepspeed, precision=precision, total_steps=sum(steps_per_epoch), world=dist.world,
    )  # fmt: skip
    token_loss = TokenLoss(engine.module, zero_stage=plan.zero_stage)
    say(f"loss: {preference.loss_type} (beta {preference.beta:g}) against the model as training starts; answer "
        f"log-probabilities: {token_loss.reason}")  # fmt: skip
    run = Run(
        plan=plan, spec=spec, dist=dist, out=plan.output_path, precision=precision, engine=engine,
        tokenizer=lm.tokenizer, tokenizer_source=lm.tokenizer_source, data=data, skipped=skipped,
        steps_per_epoch=steps_per_epoch, lineage=lineage, checkpointer=new_checkpointer(plan, dist),
        execution=execution_of(plan, dist, precision), beta=preference.beta, loss_type=preference.loss_type,
        token_loss=token_loss, references={},
        reference_batch=preference.reference.batch_size or spec.eval_batch_size_per_device,
        pad_to=spec.context_length if spec.padding == "max_length" else None,
    )  # fmt: skip
    if spec.evaluation.generate and "valid" in data:
        run.answered = conversations_at(paths["valid"], data["valid"].lines, side="chosen")
    paths.check_unchanged()  # everything of the inputs is read: was any written after it was checked?
    run.references = _references(run, loaded)  # (cached under the pinned digests: only once they are checked)
    run.tracker = open_tracker(plan, main=dist.main, off=not tracker)
    return run


def _references(run: Run, loaded: Loaded) -> dict[str, Reference]:
    """Each data input's reference log-probabilities, read from the cache or computed now (before any step)."""
    plan, dist, spec = run.plan, run.dist, run.spec
    identity = {
        "weights": {role: item.digest for role, item in plan.inputs.items() if role in ("base_model", "adapter")},
        "mode": plan.mode, "precision": run.precision, "attention": loaded.attention, "kernels": loaded.kernels,
        "device": dist.device.type, "batch_size": run.reference_batch, "world": dist.world,
        "rope": repr(spec.rope_scaling),
    }  # fmt: skip
    if run.token_loss.chunked:  # other last bits than from the full logits (whose numbers keep their earlier key)
        identity["output_layer"] = "chunked"
    if plan.mode == "lora-new" and spec.lora_config.init_lora_weights is not True:  # a new adapter that is not zero
        identity["adapter_init"] = {"seed": spec.seed, "lora": repr(spec.lora_config)}
    found = {}
    for role, pairs in run.data.items():
        sides = tuple(
            data_cache(plan, role, run.tokenizer, run.tokenizer_source, side) for side in ("chosen", "rejected")
        )
        found[role] = reference_logps(
            run.engine, pairs, token_loss=run.token_loss, cache_file=reference_cache(sides, identity),
            pad_id=run.tokenizer.pad_token_id, batch_size=run.reference_batch, dist=dist,
        )  # fmt: skip
        how = "read from the cache" if found[role].cached else "computed"
        run.say(f"reference log-probabilities of the {role} pairs {how}: {found[role].digest[:19]}…")
    return found


def _step(run: Run, state: TrainState, micro_batches: list[PairBatch]) -> None:
    """One optimizer step over ``micro_batches`` (this rank's pairs): every pair of the global step weighs the same,
    whatever its micro-batch or rank."""
    loss = preference_step(
        run.engine, micro_batches, run.dist, token_loss=run.token_loss, beta=run.beta, loss_type=run.loss_type
    )
    state.global_step += 1
    state.tokens_trained += loss.real_tokens
    state.last_loss = loss.value(run.dist)
    if not math.isfinite(state.last_loss):
        raise TrainingFailed(
            f"the preference loss became {state.last_loss} at step {state.global_step}; "
            "lower learning_rate or beta, or check the data"
        )


def _log_eval(
    run: Run, state: TrainState, metrics: MetricsLog, *, epoch: int, train_loss: float | None
) -> dict[str, Any]:
    """Evaluate over the validation pairs (every rank its share): the preference loss and the rewards; logged and
    returned. A sigmoid loss still at ln 2 once training has begun is warned about."""
    record: dict[str, Any] = {"type": "eval", "step": state.global_step, "epoch": epoch, "eval_loss": None}
    if "valid" in run.data:
        record.update(
            pair_metrics(
                run.engine, run.data["valid"], run.references["valid"].values, token_loss=run.token_loss,
                beta=run.beta, loss_type=run.loss_type, pad_id=run.tokenizer.pad_token_id,
                batch_size=run.spec.eval_batch_size_per_device, dist=run.dist,
            )
        )  # fmt: skip
    record["train_loss"] = train_loss
    if run.answered is not None:  # the share of validation prompts answered with the chosen answer
        record["exact_match"] = exact_match_share(
            run.engine, run.tokenizer, run.answered, generation=run.spec.generation_config,
            max_new_tokens=run.spec.evaluation.max_new_tokens, dist=run.dist,
            lockstep=run.plan.zero_stage == 3 and run.dist.world > 1,
        )  # fmt: skip
    first_after_start = state.global_step > 0 and not any(e["step"] > 0 for e in state.evals)
    state.evals.append(record)
    metrics.write(record)
    if first_after_start and run.loss_type == "sigmoid" and record["eval_loss"] is not None:
        _warn_if_stuck(run, record["eval_loss"])
    return record


def _warn_if_stuck(run: Run, eval_loss: float) -> None:
    if abs(eval_loss - math.log(2)) < _STUCK:
        run.say(
            f"warning: the eval loss is {eval_loss:.4f}, still ln 2 = 0.6931: the model has not moved off the "
            "reference. Likely causes: learning_rate too low for the steps taken, beta too small for the "
            "differences between the answers, LoRA targeting modules that do not change the answers, or chosen "
            "and rejected answers that barely differ"
        )


def _save(run: Run, state: TrainState, metrics: MetricsLog, bar: Progress, epoch: int, step_in_epoch: int) -> None:
    """Evaluate, then write a checkpoint (every rank), its state and lineage pinning the reference log-probs."""
    evaluated = _log_eval(run, state, metrics, epoch=epoch, train_loss=state.last_loss)
    pinned = {role: ref.pinned() for role, ref in run.references.items()}
    save_checkpoint(run, state, evaluated, bar, (epoch, step_in_epoch), own={"reference_logprobs": pinned})
