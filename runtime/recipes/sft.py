"""The supervised fine-tuning recipe (sft): one plan in, checkpoints out. ``train`` reads top to bottom: set up, resume,
evaluate the starting point, the loop (steps, evaluations and checkpoints), finish. Each step is a short function below
it, over two objects: ``Run`` (what set-up built, fixed for the run) and ``TrainState`` (where training stands, saved in
every checkpoint and restored on resume). The recipe is one file on purpose (about 450 lines), so it reads top to
bottom; what is not the recipe's own (tokens, batches, model, loss, checkpoints, processes) is in the training library
(``ftc.runtime.training``), the only part of the runtime it imports; the launch layer starts it.

Every process (rank) runs ``train``; rank 0 also writes the files everyone shares. One code path through
``deepspeed.initialize`` for every topology: gloo on CPU, NCCL on GPUs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.errors import StorageFailed, TrainingFailed
from ftc.images import image_from_env
from ftc.lineage.record import read_record
from ftc.lineage.run import Lineage
from ftc.runtime.training.batches import collate, epoch_rows, group, shard_rows
from ftc.runtime.training.chat_template import chat_template
from ftc.runtime.training.checkpoint import (
    Checkpointer,
    finished_checkpoints,
    is_complete,
    load_training_state,
    read_state,
    restore_rng,
    resume_point,
)
from ftc.runtime.training.distributed import Dist, init_distributed
from ftc.runtime.training.inputs import verify_inputs
from ftc.runtime.training.model import attention_for, describe_mode, kernels_for, load_model
from ftc.runtime.training.progress import MetricsLog, Progress, duration, log, size_text
from ftc.runtime.training.render import renderer_for
from ftc.runtime.training.tokens import token_cache, tokenize_file, usable_examples
from ftc.runtime.training.trackers import open_tracker
from ftc.spec import JobSpec
from ftc.spec.plan import Plan
from ftc.stores.atomic import write_text_atomic
from ftc.stores.storage import storage_failure

__all__ = ["RunSummary", "train"]


@dataclass
class RunSummary:
    output_dir: Path
    checkpoints: list[Path]
    best: Path | None
    evals: list[dict[str, Any]]
    skipped: dict[str, int]


@dataclass
class Run:
    """What set-up built: fixed for the whole run."""

    plan: Plan
    spec: JobSpec
    dist: Dist
    out: Path
    precision: str
    engine: Any
    tokenizer: Any
    tokenizer_source: str
    token_loss: Any
    data: dict[str, Any]  # role -> Examples
    skipped: dict[str, int]
    pack_to: int | None
    pad_to: int | None
    steps_per_epoch: list[int]
    lineage: Lineage
    checkpointer: Checkpointer
    execution: dict[str, Any]
    #: evaluation.generate: the validation conversations (as data["valid"] holds them) whose answers are generated
    answered: list[list[dict[str, Any]]] | None = None
    tracker: Any = None  # the spec's logger, on process 0

    def say(self, message: str) -> None:
        if self.dist.main:
            log(message)

    @property
    def total_steps(self) -> int:
        return sum(self.steps_per_epoch)

    def epoch_steps(self, epoch: int) -> list[list[list[tuple[int, ...]]]]:
        return _epoch_steps(self.spec, self.dist, self.data["train"].lengths, self.pack_to, epoch)


def _epoch_steps(
    spec: JobSpec, dist: Dist, lengths: Any, pack_to: int | None, epoch: int
) -> list[list[list[tuple[int, ...]]]]:
    """This rank's optimizer steps of ``epoch``: each a list of micro-batches, each a list of rows (example indices)."""
    rows = epoch_rows(lengths, epoch=epoch, seed=spec.seed, shuffle=True, pack_to=pack_to)
    mine = shard_rows(rows, dist.rank, dist.world)
    return group(group(mine, spec.train_batch_size_per_device), spec.gradient_accumulation_steps)


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


@dataclass(frozen=True)
class Checked:
    """What the launcher checked just before starting this process: the inputs as found on this machine, the
    checkpoint to resume from (verified against its lineage record) with that record, and the parents' lineage."""

    paths: dict[str, Path | str]
    previous: tuple[Path, dict[str, Any]] | None
    lineage: Lineage


def train(plan: Plan, *, resume: bool = False, checked: Checked | None = None) -> RunSummary:
    """Run ``plan`` (already read and verified) in this process, as one rank of its topology. ``checked``: what the
    caller has just checked (else each rank checks the inputs and the checkpoint to resume itself)."""
    # deprecation notices about DeepSpeed's and peft's own calls, printed at every step: nothing a user can act on
    warnings.filterwarnings("ignore", message=r"`(torch\.distributed\.\w+|is_gradient_checkpointing)` is deprecated")
    dist = init_distributed(plan.launch.world_size)
    paths = checked.paths if checked is not None else verify_inputs(plan)
    # a parent must still be what its record says
    lineage = checked.lineage if checked is not None else Lineage.check(plan, paths, image=image_from_env())
    # the checkpoint to continue, verified before anything of it is read
    previous = checked.previous if checked is not None else resume_point(plan.output_path, plan.plan_id, resume=resume)
    if previous is not None and is_complete(previous[0]):
        return _already_complete(plan, dist, previous[0])
    plan.output_path.mkdir(parents=True, exist_ok=True)
    run = _set_up(plan, dist, paths, lineage)
    state = _resume(run, *previous) if previous is not None else TrainState()
    if run.tracker is not None:
        run.tracker.start(plan, run.out, resumed_at=state.global_step if previous is not None else None)
    metrics = MetricsLog(
        run.out / "metrics.jsonl", enabled=dist.main, keep_until_step=state.global_step if resume else -1,
        also=run.tracker.log if run.tracker is not None else None,
    )  # fmt: skip
    bar = Progress(run.total_steps, state.global_step, enabled=dist.main)
    run.engine.train()
    status = "FAILED"
    try:
        if state.global_step == 0 and "valid" in run.data:  # the baseline every later evaluation is compared with
            record = _log_eval(run, state, metrics, epoch=0, train_loss=None)
            bar.note(f"eval loss before training: {record['eval_loss']:.4f}{_matched_text(record)}")
        _loop(run, state, metrics, bar)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except (OSError, RuntimeError) as exc:  # writing metrics or a checkpoint
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
    summary = _finish(run, state, tracker=run.tracker.link if run.tracker is not None else None)
    if run.tracker is not None:
        run.tracker.finish("FINISHED", [run.out / "summary.json"])
    return summary


def _already_complete(plan: Plan, dist: Dist, last: Path) -> RunSummary:
    """``--resume`` of a finished run: nothing is trained or written."""
    if dist.main:
        log(f"{last} is the last checkpoint of this plan: the run is complete; nothing to resume")
    state = read_state(last)
    out = plan.output_path
    best = out / "best"
    best_path = best.resolve() if best.exists() else None
    return RunSummary(out, finished_checkpoints(out), best_path, state["evals"], state["skipped_examples"])


def _set_up(plan: Plan, dist: Dist, paths: dict[str, Path | str], lineage: Lineage) -> Run:
    """Model loaded, data tokenized, DeepSpeed engine built."""
    import deepspeed
    import torch
    from transformers import get_scheduler

    from ftc.runtime.training.loss import TokenLoss

    spec = plan.spec
    say = log if dist.main else (lambda message: None)
    cuda = dist.device.type == "cuda"
    precision = spec.precision if spec.precision != "auto" else ("bf16" if cuda else "fp32")
    ds_config = {**plan.deepspeed, "bf16": {"enabled": precision == "bf16"}}
    own_weights = isinstance(paths["base_model"], Path)
    say(f"plan {plan.plan_id[:19]}…: {describe_mode(plan.mode, own_weights)} ({plan.architecture.model_id})")
    attention = attention_for(spec, cuda=cuda)
    kernels = kernels_for(spec, cuda=cuda, model_type=plan.architecture.model_type)
    checkpointing = ", activation checkpointing" if spec.activation_checkpointing else ""
    say(
        f"{dist.world} process(es) on {dist.device.type}, {precision}, ZeRO stage {plan.zero_stage}, "
        f"{attention} attention, {kernels} kernels{checkpointing}"
    )

    torch.manual_seed(spec.seed)  # new adapters' initial weights, dropout
    # loaded straight in the training precision: DeepSpeed casts the module to it anyway, and keeps its fp32
    # master weights (for the trainable parameters only) in the optimizer
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    loaded = load_model(
        spec, plan.mode, paths["base_model"], paths.get("adapter"), dtype=dtype, attention=attention, kernels=kernels
    )
    if spec.generation_config.prompt_format is not None:  # checkpoints carry the format as serving reads it
        loaded.tokenizer.chat_template = chat_template(spec.generation_config.prompt_format)
    say(
        f"{loaded.trainable_parameters:,} of {loaded.total_parameters:,} parameters trainable; "
        f"tokenizer from the {loaded.tokenizer_source}"
    )
    data, skipped = _load_data(plan, dist, paths, loaded.tokenizer, loaded.tokenizer_source)
    for role, examples in data.items():
        tokens, trained = int(examples.lengths.sum()), sum(int(m.sum()) for m in examples.trainable)
        say(
            f"{role}: {len(examples):,} examples, {tokens:,} tokens, {trained:,} of them trained "
            f"({100 * trained / max(tokens, 1):.1f}%, the assistant turns)"
        )
    for role, count in skipped.items():
        if count:
            say(f"{role}: skipped {count} bad example(s) (skip_bad_examples)")

    pack_to = spec.context_length if spec.sample_packing else None
    # FlexAttention compiles its kernels per shape: packed rows, nearly full anyway, always get the same width
    fixed_width = spec.padding == "max_length" or (pack_to is not None and attention == "flex_attention")
    lengths = data["train"].lengths
    steps_per_epoch = [len(_epoch_steps(spec, dist, lengths, pack_to, epoch)) for epoch in range(spec.num_epochs)]

    trainable = [p for p in loaded.model.parameters() if p.requires_grad]
    # fused on GPUs: one kernel updates all parameters
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, weight_decay=spec.weight_decay, fused=cuda)
    scheduler = get_scheduler(
        spec.lr_scheduler_type,
        optimizer,
        num_warmup_steps=spec.num_warmup_steps,
        num_training_steps=sum(steps_per_epoch),
    )
    engine, _, _, _ = deepspeed.initialize(
        model=loaded.model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    token_loss = TokenLoss(engine.module, zero_stage=plan.zero_stage)
    say(f"loss: {token_loss.reason}")
    checkpointer = Checkpointer(
        plan.output_path, is_lora=plan.mode != "full", zero_stage=plan.zero_stage, rank=dist.rank,
        barrier=dist.barrier, keep=spec.num_checkpoints_to_keep, model_id=spec.model_id, plan_text=plan.text(),
    )  # fmt: skip
    checkpointer.discard_partial()
    device = f"cuda ({torch.cuda.get_device_name(dist.device)})" if cuda else dist.device.type
    execution = {
        "nodes": plan.launch.nodes, "processes_per_node": plan.launch.processes_per_node, "world_size": dist.world,
        "device": device, "precision": precision, "zero_stage": plan.zero_stage,
    }  # fmt: skip
    run = Run(
        plan=plan, spec=spec, dist=dist, out=plan.output_path, precision=precision, engine=engine,
        tokenizer=loaded.tokenizer, tokenizer_source=loaded.tokenizer_source, token_loss=token_loss, data=data,
        skipped=skipped, pack_to=pack_to, pad_to=spec.context_length if fixed_width else None,
        steps_per_epoch=steps_per_epoch, lineage=lineage, checkpointer=checkpointer, execution=execution,
    )  # fmt: skip
    if spec.evaluation.generate and "valid" in data:
        run.answered = _conversations(paths["valid"], data["valid"].lines)
    run.tracker = open_tracker(plan, main=dist.main)
    return run


def _conversations(path: Path, lines: list[int]) -> list[list[dict[str, Any]]]:
    """The conversations at ``lines`` of a chat-JSONL file, in that order (the examples a run evaluates)."""
    from ftc.spec.chat_data import read_chat_jsonl

    found = {item.line: item.messages for item in read_chat_jsonl(path) if item.problem is None}
    return [found[line] for line in lines]


def _load_data(plan: Plan, dist: Dist, paths: dict[str, Path | str], tokenizer: Any, tokenizer_source: str):
    """Each data input rendered, tokenized (rank 0 first, through the token cache) and checked against the context
    length: (role -> examples, role -> examples skipped)."""
    spec = plan.spec
    render = renderer_for(spec.generation_config.prompt_format, tokenizer)
    fmt = spec.generation_config.prompt_format
    renderer_key = dataclasses.asdict(fmt) if fmt is not None else ["chat_template", tokenizer.chat_template]
    tokenizer_folder = {"base weights": plan.inputs["base_model"], "adapter": plan.inputs.get("adapter")}.get(
        tokenizer_source
    )
    data, skipped = {}, {}
    for role in ("train", "valid"):
        if role not in paths:
            continue
        cache_file = token_cache(plan.inputs[role], tokenizer_folder, renderer_key)
        if dist.main:  # one process tokenizes; the others read its cache
            examples, bad = tokenize_file(paths[role], render=render, tokenizer=tokenizer, cache_file=cache_file)
        dist.barrier()
        if not dist.main:
            examples, bad = tokenize_file(paths[role], render=render, tokenizer=tokenizer, cache_file=cache_file)
        data[role], skipped[role] = usable_examples(
            examples,
            bad,
            context_length=spec.context_length,
            skip=spec.skip_bad_examples,
            display=plan.inputs[role].uri,
        )
    return data, skipped


def _resume(run: Run, previous: Path, record: dict[str, Any]) -> TrainState:
    """Engine, optimizer, scheduler and random state as the checkpoint ``previous`` (verified against its lineage
    ``record``) saved them; every checkpoint of this run records where it resumed."""
    state = read_state(previous)
    load_training_state(run.engine, previous, strict=run.plan.mode == "full")
    restore_rng(previous, run.dist.rank)
    run.execution["resumed_from"] = {
        "checkpoint": previous.name,
        "digest": record["checkpoint"]["digest"],
        "record_id": record["record_id"],
    }
    run.say(f"resuming from {previous.name}: step {state['global_step']} of {run.total_steps}")
    return TrainState(
        epoch=state["epoch"], step_in_epoch=state["step_in_epoch"], global_step=state["global_step"],
        tokens_trained=state["tokens_trained"], wall_before=_wall_time(record, state), evals=state["evals"],
        tokens_at_start=state["tokens_trained"],
    )  # fmt: skip


def _wall_time(record: dict[str, Any], state: dict[str, Any]) -> float:
    """The training time a resumed checkpoint had already taken (from its record; older checkpoints: their state)."""
    found = record.get("measured", {}).get("wall_time_s")
    if found is None:
        found = state.get("wall_time_s", record["results"].get("wall_time_s", 0.0))
    return float(found)


def _loop(run: Run, state: TrainState, metrics: MetricsLog, bar: Progress) -> None:
    """Every remaining step of every epoch; evaluate and save at the plan's frequency and at the end."""
    spec = run.spec
    freq = spec.checkpoint_and_evaluation_frequency
    placement = run.plan.placement
    stop_after = placement.stop_after_step if placement is not None else None  # ftc reproduce of an earlier step
    start_epoch, start_step = state.epoch, state.step_in_epoch
    for epoch in range(start_epoch, spec.num_epochs):
        steps = run.epoch_steps(epoch)
        for step_in_epoch in range(start_step if epoch == start_epoch else 0, len(steps)):
            _step(run, state, steps[step_in_epoch])
            elapsed = time.perf_counter() - state.started
            tokens_per_s = (state.tokens_trained - state.tokens_at_start) / elapsed if elapsed > 0 else 0.0
            metrics.write({
                "type": "train", "step": state.global_step, "epoch": epoch, "loss": state.last_loss,
                "lr": run.engine.get_lr()[0], "tokens": state.tokens_trained, "tokens_per_s": tokens_per_s,
                "time": time.time(),
            })  # fmt: skip
            bar.update(epoch, state.last_loss, tokens_per_s)
            end_of_epoch = step_in_epoch + 1 == len(steps)
            if freq.unit == "steps" and state.global_step % freq.frequency == 0 and not end_of_epoch:
                _save(run, state, metrics, bar, epoch, step_in_epoch + 1)
                if state.global_step == stop_after:
                    return
        last_epoch = epoch + 1 == spec.num_epochs
        every_epochs = freq.unit == "epochs" and (epoch + 1) % freq.frequency == 0
        every_steps = freq.unit == "steps" and state.global_step % freq.frequency == 0
        if last_epoch or every_epochs or every_steps:
            _save(run, state, metrics, bar, epoch + 1, 0)
            if state.global_step == stop_after:
                return


def _step(run: Run, state: TrainState, micro_rows: list[list[tuple[int, ...]]]) -> None:
    """One optimizer step over ``micro_rows`` (this rank's micro-batches)."""
    import torch

    dist, engine = run.dist, run.engine
    train_set, pad_id = run.data["train"], run.tokenizer.pad_token_id
    packed = run.pack_to is not None
    micro_batches = [collate(rows, train_set, pad_id=pad_id, packed=packed, pad_to=run.pad_to) for rows in micro_rows]
    loss_tokens, real_tokens = dist.sum(
        sum(b.loss_tokens for b in micro_batches), sum(b.real_tokens for b in micro_batches)
    )
    # sum of token losses / tokens of the whole global step: every token weighs the same, whatever its micro-batch
    # or rank (DeepSpeed averages gradients over ranks, hence * world)
    scale = dist.world / max(loss_tokens, 1)
    step_loss = torch.zeros((), dtype=torch.float32, device=dist.device)
    for batch in micro_batches:
        inputs = {k: v.to(dist.device, non_blocking=True) for k, v in batch.inputs.items()}
        loss = run.token_loss(engine, inputs, batch.labels.to(dist.device, non_blocking=True))
        engine.backward(loss * scale, scale_wrt_gas=False)
        step_loss += loss.detach()
    engine.step()
    state.global_step += 1
    state.tokens_trained += int(real_tokens)
    (total_loss,) = dist.sum(step_loss.item())  # the step's one wait for the device
    state.last_loss = total_loss / max(loss_tokens, 1)
    if not math.isfinite(state.last_loss):
        raise TrainingFailed(
            f"the training loss became {state.last_loss} at step {state.global_step}; "
            "lower learning_rate or check the data"
        )


def _evaluate(run: Run) -> float | None:
    """The mean token loss over the validation data (None without any), every rank taking its share."""
    import torch

    if "valid" not in run.data:
        return None
    dist, engine, valid = run.dist, run.engine, run.data["valid"]
    batches = group([(i,) for i in range(len(valid))], run.spec.eval_batch_size_per_device * dist.world)
    loss_sum, count = 0.0, 0
    engine.eval()
    with torch.no_grad():
        for chunk in batches:
            mine = chunk[dist.rank :: dist.world] or chunk[:1]  # every rank joins every forward (ZeRO-3)
            weight = 1.0 if chunk[dist.rank :: dist.world] else 0.0
            batch = collate(mine, valid, pad_id=run.tokenizer.pad_token_id, packed=False)
            inputs = {k: v.to(dist.device) for k, v in batch.inputs.items()}
            loss = run.token_loss(engine, inputs, batch.labels.to(dist.device))
            loss_sum += weight * loss.item()
            count += int(weight) * batch.loss_tokens
    engine.train()
    total, tokens = dist.sum(loss_sum, count)
    return total / max(tokens, 1)


def _exact_match(run: Run) -> float | None:
    """evaluation.generate: the share of validation examples whose generated answer equals the reference (its last
    assistant turn), every rank answering its share. Under ZeRO-3 each rank answers as many examples, each for
    max_new_tokens steps, so that every rank joins every forward pass."""
    from ftc.runtime.training.chat_template import stop_texts
    from ftc.runtime.training.generation import Sampling, answer, stop_token_ids

    if run.answered is None:
        return None
    dist, spec, module = run.dist, run.spec, run.engine.module
    fmt = spec.generation_config.prompt_format
    stops = stop_texts(fmt, spec.generation_config.stopping_sequences)
    stop_ids = stop_token_ids(run.tokenizer, stops)
    sampling = Sampling(max_new_tokens=spec.evaluation.max_new_tokens)
    lockstep = run.plan.zero_stage == 3 and dist.world > 1
    mine = list(range(dist.rank, len(run.answered), dist.world))
    share = -(-len(run.answered) // dist.world) if lockstep else len(mine)
    matched = 0
    run.engine.eval()
    for k in range(share):
        index = mine[k] if k < len(mine) else 0  # lockstep: a rank with fewer examples repeats one, uncounted
        result = answer(
            module, run.tokenizer, run.answered[index], fmt=fmt, stop_texts=stops, stop_ids=stop_ids,
            sampling=sampling, lockstep=lockstep,
        )  # fmt: skip
        matched += int(k < len(mine) and result.exact_match)
    run.engine.train()
    (total,) = dist.sum(matched)
    return total / max(len(run.answered), 1)


def _log_eval(
    run: Run, state: TrainState, metrics: MetricsLog, *, epoch: int, train_loss: float | None
) -> dict[str, Any]:
    record = {
        "type": "eval",
        "step": state.global_step,
        "epoch": epoch,
        "eval_loss": _evaluate(run),
        "train_loss": train_loss,
    }
    if run.answered is not None:
        record["exact_match"] = _exact_match(run)
    state.evals.append(record)
    metrics.write(record)
    return record


def _save(run: Run, state: TrainState, metrics: MetricsLog, bar: Progress, epoch: int, step_in_epoch: int) -> None:
    """Evaluate, then write a checkpoint (every rank) with its state and lineage record."""
    evaluated = _log_eval(run, state, metrics, epoch=epoch, train_loss=state.last_loss)
    eval_loss = evaluated["eval_loss"]
    wall_time_s = state.wall_before + time.perf_counter() - state.started
    saved = {
        "plan_id": run.plan.plan_id, "mode": run.plan.mode, "global_step": state.global_step,
        "total_steps": run.total_steps, "epoch": epoch, "step_in_epoch": step_in_epoch,
        "tokens_trained": state.tokens_trained, "eval_loss": eval_loss, "train_loss": state.last_loss,
        "evals": state.evals, "precision": run.precision, "world_size": run.dist.world,
        "skipped_examples": run.skipped, "tokenizer_source": run.tokenizer_source,
    }  # fmt: skip
    complete = state.global_step == run.total_steps
    results = {
        "step": state.global_step, "total_steps": run.total_steps, "epoch": epoch,
        "status": "complete" if complete else "intermediate", "eval_loss": eval_loss, "train_loss": state.last_loss,
        "evals": state.evals, "tokens_trained": state.tokens_trained,
        "skipped": run.skipped, "used": {role: len(examples) for role, examples in run.data.items()},
    }  # fmt: skip
    measured = {"wall_time_s": round(wall_time_s, 3)}  # beside the seal: the checkpoint's files and record are the
    # same for two runs of the plan
    record = lambda folder, final: run.lineage.record(folder, final, results, run.execution, measured)  # noqa: E731
    path = run.checkpointer.save(run.engine, run.tokenizer, saved, record)
    if run.tracker is not None:
        run.tracker.checkpoint(path, read_record(path))
    loss_text = f"eval loss {eval_loss:.4f}{_matched_text(evaluated)}" if eval_loss is not None else "no valid_path"
    size = ""
    if run.dist.main:
        parts = read_state(path).get("sizes", {})
        size = f" ({size_text(parts.get('weights', 0))} weights, {size_text(parts.get('training_state', 0))} to resume)"
    bar.note(f"checkpoint {path.name} at step {state.global_step}/{run.total_steps}: {loss_text}{size}")


def _matched_text(record: dict[str, Any]) -> str:
    return f", exact match {record['exact_match']:.3f}" if record.get("exact_match") is not None else ""


def _finish(run: Run, state: TrainState, tracker: dict[str, Any] | None = None) -> RunSummary:
    """The run's summary (summary.json on rank 0) and its last words."""
    out = run.out
    best = out / "best"
    summary = RunSummary(
        out, finished_checkpoints(out), best.resolve() if best.exists() else None, state.evals, run.skipped
    )
    if not run.dist.main:
        return summary
    _write_summary(
        out, run.plan, summary, steps=state.global_step, tokens=state.tokens_trained, train_loss=state.last_loss,
        tracker=tracker,
    )  # fmt: skip
    elapsed = time.perf_counter() - state.started
    stopped = state.global_step < run.total_steps  # ftc reproduce of an earlier checkpoint stops at its step
    run.say(
        (f"stopped after step {state.global_step} of {run.total_steps}, as asked" if stopped else
         f"done: {run.spec.num_epochs} epoch(s), {state.global_step} steps")
        + f", {state.tokens_trained:,} tokens; training took {duration(elapsed)}"
    )  # fmt: skip
    for record in state.evals:
        train_loss = "   n/a" if record["train_loss"] is None else f"{record['train_loss']:.4f}"
        loss = "n/a" if record["eval_loss"] is None else f"{record['eval_loss']:.4f}"
        run.say(f"  step {record['step']:>6}  train loss {train_loss}  eval loss {loss}{_matched_text(record)}")
    where = summary.best or (summary.checkpoints[-1] if summary.checkpoints else out)
    run.say(f"checkpoint{' (best eval loss)' if summary.best else ''}: {os.path.relpath(where)}")
    return summary


def _write_summary(
    out: Path,
    plan: Plan,
    summary: RunSummary,
    *,
    steps: int,
    tokens: int,
    train_loss: float | None,
    tracker: dict[str, Any] | None = None,
) -> None:
    """``summary.json``: the run's numbers in one flat file (for `dvc metrics`, dashboards, scripts); the eval
    curve is in ``evals`` (for `dvc plots`), every step in metrics.jsonl."""
    import json

    losses = [e["eval_loss"] for e in summary.evals if e["eval_loss"] is not None]
    data = {
        "plan_id": plan.plan_id, "steps": steps, "tokens_trained": tokens, "train_loss": train_loss,
        "eval_loss": losses[-1] if losses else None, "best_eval_loss": min(losses) if losses else None,
        "evals": [
            {k: e[k] for k in ("step", "epoch", "eval_loss", "exact_match") if k in e} for e in summary.evals
        ],
    }  # fmt: skip
    matches = [e["exact_match"] for e in summary.evals if e.get("exact_match") is not None]
    if matches:
        data["exact_match"] = matches[-1]
    if tracker:
        data["tracker"] = tracker  # where the run is in the tracker (whose tags name each checkpoint's record_id)
    # a temp file of its own (O_EXCL), renamed: never written through a link planted in the output folder
    write_text_atomic(out / "summary.json", json.dumps(data, indent=2) + "\n", error=StorageFailed)
