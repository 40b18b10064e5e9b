"""The training recipe: one plan in, checkpoints out. Reads top to bottom: set up, train, evaluate, save.

Every process (rank) runs ``train``; rank 0 also writes the files everyone shares. One code path through
``deepspeed.initialize`` for every topology: gloo on CPU, NCCL on GPUs.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import TrainingFailed, UsageError
from ftc.spec import JobSpec

from ._checkpoint import Checkpointer, finished_checkpoints, latest_checkpoint, read_state, restore_rng
from ._data import cache_key, collate, epoch_rows, group, shard_rows, tokenize_file, usable_examples
from ._inputs import verify_inputs
from ._lineage import Lineage
from ._model import attention_for, describe_mode, kernels_for, load_model
from ._progress import MetricsLog, Progress, duration, log
from ._render import renderer_for

__all__ = ["RunSummary", "train"]


@dataclass
class RunSummary:
    output_dir: Path
    checkpoints: list[Path]
    best: Path | None
    evals: list[dict[str, Any]]
    skipped: dict[str, int]


@dataclass(frozen=True)
class _Dist:
    rank: int
    local_rank: int
    world: int
    device: Any

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def sum(self, *values: float) -> list[float]:
        import torch
        import torch.distributed as dist

        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def _init_distributed(world_size: int) -> _Dist:
    import deepspeed
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        # DeepSpeed's CPU comm backend compiles its shared-memory all-reduce op when it starts (a C++ toolchain and
        # ninja at run time; tens of seconds on a fresh machine), but only inference_all_reduce uses that op:
        # training's collectives go through torch.distributed (gloo). Marking it unavailable skips the build.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ["WORLD_SIZE"])
    if world != world_size:
        raise UsageError(f"the plan is for {world_size} processes but {world} started; launch it with `ftc run`")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return _Dist(rank, local_rank, world, device)


def _token_cache(data: dict[str, Any], tokenizer_folder: dict[str, Any] | None, renderer: Any) -> Path | None:
    """Where the tokenized ``data`` input is cached: keyed by its digest, the tokenizer's files and the rendering.
    None when the tokenizer is not pinned (the published one of a hub model)."""
    from ftc._hashing import cache_dir

    if tokenizer_folder is None or not tokenizer_folder.get("files"):
        return None
    tokenizer = sorted([f["path"], f.get("sha256"), f.get("pin")] for f in tokenizer_folder["files"] if not f["path"].endswith(".safetensors"))
    return cache_dir() / "tokens" / f"{cache_key(data['digest'], tokenizer, renderer)}.safetensors"


def train(plan: dict[str, Any], plan_dir: Path, *, resume: bool = False, paths: dict[str, Path | str] | None = None) -> RunSummary:
    """Run ``plan`` (already validated) in this process, as one rank of its topology. ``paths``: the inputs as
    ``verify_inputs`` found them, when the caller has just verified them (else each rank verifies)."""
    import deepspeed
    import torch
    from transformers import get_scheduler

    from ._loss import TokenLoss

    # deprecation notices about DeepSpeed's and peft's own calls, printed at every step: nothing a user can act on
    warnings.filterwarnings("ignore", message=r"`(torch\.distributed\.\w+|is_gradient_checkpointing)` is deprecated")
    spec = JobSpec.from_dict(plan["spec"])
    mode = plan["mode"]
    dist = _init_distributed(plan["launch"]["world_size"])
    say = log if dist.main else (lambda message: None)
    out = Path(os.path.expanduser(plan["output"]["dir"]))
    out = out if out.is_absolute() else plan_dir / out

    # ---- set up: inputs, model, data, engine -------------------------------------------------------------
    paths = paths if paths is not None else verify_inputs(plan, plan_dir)
    lineage = Lineage.check(plan, paths)  # a parent checkpoint must still be what its own record says
    previous = latest_checkpoint(out)
    if previous is not None and not resume:
        raise UsageError(f"{out} already holds checkpoints ({previous.name}); resume with `ftc run PLAN --resume`, or choose another output_dir")
    if resume and previous is not None and read_state(previous)["plan_id"] != plan["plan_id"]:
        raise UsageError(f"{previous} was written by another plan ({read_state(previous)['plan_id']}); it cannot be resumed with {plan['plan_id']}")
    out.mkdir(parents=True, exist_ok=True)

    precision = plan["precision"]
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    ds_config = dict(plan["deepspeed"])
    ds_config["bf16"] = {"enabled": precision == "bf16"}
    own_weights = isinstance(paths["base_model"], Path)
    say(f"plan {plan['plan_id'][:19]}…: {describe_mode(mode, own_weights)} ({plan['architecture']['model_id']})")
    zero_stage = ds_config.get("zero_optimization", {}).get("stage", 0)
    cuda = dist.device.type == "cuda"
    attention = attention_for(spec, cuda=cuda)
    kernels = kernels_for(spec, cuda=cuda, model_type=plan["architecture"]["config"].get("model_type"))
    checkpointing = ", activation checkpointing" if spec.activation_checkpointing else ""
    say(f"{dist.world} process(es) on {dist.device.type}, {precision}, ZeRO stage {zero_stage}, {attention} attention, {kernels} kernels{checkpointing}")

    torch.manual_seed(spec.seed)  # new adapters' initial weights, dropout
    # loaded straight in the training precision: DeepSpeed casts the module to it anyway, and keeps its fp32
    # master weights (for the trainable parameters only) in the optimizer
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    loaded = load_model(spec, mode, paths["base_model"], paths.get("adapter"), dtype=dtype, attention=attention, kernels=kernels)
    model, tokenizer = loaded.model, loaded.tokenizer
    say(f"{loaded.trainable_parameters:,} of {loaded.total_parameters:,} parameters trainable; tokenizer from the {loaded.tokenizer_source}")

    render = renderer_for(spec.generation_config.prompt_format, tokenizer)
    renderer_key = plan["spec"]["generation_config"]["prompt_format"] or ["chat_template", tokenizer.chat_template]
    tokenizer_folder = {"base weights": plan["inputs"]["base_model"], "adapter": plan["inputs"].get("adapter")}.get(loaded.tokenizer_source)
    data, skipped = {}, {}
    for role in ("train", "valid"):
        if role not in paths:
            continue
        cache_file = _token_cache(plan["inputs"][role], tokenizer_folder, renderer_key)
        if dist.main:  # one process tokenizes; the others read its cache
            examples, bad = tokenize_file(paths[role], render=render, tokenizer=tokenizer, cache_file=cache_file)
        dist.barrier()
        if not dist.main:
            examples, bad = tokenize_file(paths[role], render=render, tokenizer=tokenizer, cache_file=cache_file)
        data[role], skipped[role] = usable_examples(
            examples, bad, context_length=spec.context_length, skip=spec.skip_bad_examples, display=plan["inputs"][role]["uri"]
        )
        if skipped[role]:
            say(f"{role}: skipped {skipped[role]} bad example(s) (skip_bad_examples)")
    train_set = data["train"]
    lengths = train_set.lengths
    pack_to = spec.context_length if spec.sample_packing else None
    # FlexAttention compiles its kernels per shape: packed rows, nearly full anyway, always get the same width
    fixed_width = spec.padding == "max_length" or (pack_to is not None and attention == "flex_attention")
    pad_to = spec.context_length if fixed_width else None

    def epoch_steps(epoch: int) -> list[list[list[tuple[int, ...]]]]:
        rows = epoch_rows(lengths, epoch=epoch, seed=spec.seed, shuffle=True, pack_to=pack_to)
        mine = shard_rows(rows, dist.rank, dist.world)
        return group(group(mine, spec.train_batch_size_per_device), spec.gradient_accumulation_steps)

    steps_per_epoch = [len(epoch_steps(e)) for e in range(spec.num_epochs)]
    total_steps = sum(steps_per_epoch)

    trainable = [p for p in model.parameters() if p.requires_grad]
    # fused on GPUs: one kernel updates all parameters
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, weight_decay=spec.weight_decay, fused=cuda)
    scheduler = get_scheduler(spec.lr_scheduler_type, optimizer, num_warmup_steps=spec.num_warmup_steps, num_training_steps=total_steps)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    token_loss = TokenLoss(engine.module, zero_stage=zero_stage)
    say(f"loss: {token_loss.reason}")
    checkpointer = Checkpointer(out, is_lora=mode != "full", zero_stage=zero_stage, rank=dist.rank, barrier=dist.barrier, keep=spec.num_checkpoints_to_keep, model_id=spec.model_id)
    checkpointer.discard_partial()
    device = f"cuda ({torch.cuda.get_device_name(dist.device)})" if dist.device.type == "cuda" else dist.device.type
    launch = plan["launch"]
    execution = {"nodes": launch["nodes"], "processes_per_node": launch["processes_per_node"], "world_size": dist.world, "device": device, "precision": precision, "zero_stage": zero_stage}

    # ---- resume -----------------------------------------------------------------------------------------
    start_epoch, start_step, global_step, tokens_trained, wall_before = 0, 0, 0, 0, 0.0
    evals: list[dict[str, Any]] = []
    if resume and previous is not None:
        state = read_state(previous)
        engine.load_checkpoint(str(previous / "training_state"), tag="state", load_module_strict=mode == "full")
        restore_rng(previous, dist.rank)
        start_epoch, start_step = state["epoch"], state["step_in_epoch"]
        global_step, tokens_trained, evals = state["global_step"], state["tokens_trained"], state["evals"]
        wall_before = state.get("wall_time_s", 0.0)
        say(f"resuming from {previous.name}: step {global_step} of {total_steps}")
    metrics = MetricsLog(out / "metrics.jsonl", enabled=dist.main, keep_until_step=global_step if resume else -1)

    def evaluate() -> float | None:
        if "valid" not in data:
            return None
        valid = data["valid"]
        batches = group([(i,) for i in range(len(valid))], spec.eval_batch_size_per_device * dist.world)
        loss_sum, count = 0.0, 0
        engine.eval()
        with torch.no_grad():
            for chunk in batches:
                mine = chunk[dist.rank :: dist.world] or chunk[:1]  # every rank joins every forward (ZeRO-3)
                weight = 1.0 if chunk[dist.rank :: dist.world] else 0.0
                batch = collate(mine, valid, pad_id=tokenizer.pad_token_id, packed=False)
                loss = token_loss(engine, {k: v.to(dist.device) for k, v in batch.inputs.items()}, batch.labels.to(dist.device))
                loss_sum += weight * loss.item()
                count += int(weight) * batch.loss_tokens
        engine.train()
        total, tokens = dist.sum(loss_sum, count)
        return total / max(tokens, 1)

    def save(epoch: int, step_in_epoch: int, train_loss: float | None) -> None:
        eval_loss = evaluate()
        record = {"type": "eval", "step": global_step, "epoch": epoch, "eval_loss": eval_loss, "train_loss": train_loss}
        evals.append(record)
        metrics.write(record)
        state = {
            "plan_id": plan["plan_id"], "mode": mode, "global_step": global_step, "total_steps": total_steps,
            "epoch": epoch, "step_in_epoch": step_in_epoch, "tokens_trained": tokens_trained,
            "eval_loss": eval_loss, "train_loss": train_loss, "evals": evals, "precision": precision,
            "world_size": dist.world, "skipped_examples": skipped, "tokenizer_source": loaded.tokenizer_source,
            "wall_time_s": wall_before + time.perf_counter() - started,
        }
        results = {
            "step": global_step, "total_steps": total_steps, "epoch": epoch, "status": "complete" if global_step == total_steps else "intermediate",
            "eval_loss": eval_loss, "train_loss": train_loss, "evals": evals, "tokens_trained": tokens_trained,
            "wall_time_s": round(state["wall_time_s"], 3), "skipped": skipped, "used": {role: len(examples) for role, examples in data.items()},
        }
        path = checkpointer.save(engine, tokenizer, state, lambda folder, final: lineage.record(folder, final, results, execution))
        loss_text = f"eval loss {eval_loss:.4f}" if eval_loss is not None else "no valid_path"
        progress.note(f"checkpoint {path.name} at step {global_step}/{total_steps}: {loss_text}")

    # ---- train ------------------------------------------------------------------------------------------
    freq = spec.checkpoint_and_evaluation_frequency
    progress = Progress(total_steps, global_step, enabled=dist.main)
    engine.train()
    last_loss: float | None = None
    started = time.perf_counter()
    tokens_at_start = tokens_trained
    try:
        if global_step == 0 and "valid" in data:  # the baseline every later evaluation is compared with
            record = {"type": "eval", "step": 0, "epoch": 0, "eval_loss": evaluate(), "train_loss": None}
            evals.append(record)
            metrics.write(record)
            progress.note(f"eval loss before training: {record['eval_loss']:.4f}")
        for epoch in range(start_epoch, spec.num_epochs):
            steps = epoch_steps(epoch)
            first = start_step if epoch == start_epoch else 0
            for step_in_epoch in range(first, len(steps)):
                micro_batches = [collate(rows, train_set, pad_id=tokenizer.pad_token_id, packed=pack_to is not None, pad_to=pad_to) for rows in steps[step_in_epoch]]
                loss_tokens, real_tokens = dist.sum(sum(b.loss_tokens for b in micro_batches), sum(b.real_tokens for b in micro_batches))
                # sum of token losses / tokens of the whole global step: every token weighs the same, whatever its
                # micro-batch or rank (DeepSpeed averages gradients over ranks, hence * world)
                scale = dist.world / max(loss_tokens, 1)
                step_loss = torch.zeros((), dtype=torch.float32, device=dist.device)
                for batch in micro_batches:
                    inputs = {k: v.to(dist.device, non_blocking=True) for k, v in batch.inputs.items()}
                    loss = token_loss(engine, inputs, batch.labels.to(dist.device, non_blocking=True))
                    engine.backward(loss * scale, scale_wrt_gas=False)
                    step_loss += loss.detach()
                engine.step()
                global_step += 1
                tokens_trained += int(real_tokens)
                (total_loss,) = dist.sum(step_loss.item())  # the step's one wait for the device
                last_loss = total_loss / max(loss_tokens, 1)
                if not math.isfinite(last_loss):
                    raise TrainingFailed(f"the training loss became {last_loss} at step {global_step}; lower learning_rate or check the data")
                elapsed = time.perf_counter() - started
                tokens_per_s = (tokens_trained - tokens_at_start) / elapsed if elapsed > 0 else 0.0
                metrics.write({"type": "train", "step": global_step, "epoch": epoch, "loss": last_loss, "lr": engine.get_lr()[0], "tokens": tokens_trained, "tokens_per_s": tokens_per_s, "time": time.time()})
                progress.update(epoch, last_loss, tokens_per_s)
                end_of_epoch = step_in_epoch + 1 == len(steps)
                if freq.unit == "steps" and global_step % freq.frequency == 0 and not end_of_epoch:
                    save(epoch, step_in_epoch + 1, last_loss)
            last_epoch = epoch + 1 == spec.num_epochs
            if last_epoch or (freq.unit == "epochs" and (epoch + 1) % freq.frequency == 0) or (freq.unit == "steps" and global_step % freq.frequency == 0):
                save(epoch + 1, 0, last_loss)
    finally:
        progress.close()
        metrics.close()

    best = out / "best"
    summary = RunSummary(out, finished_checkpoints(out), best.resolve() if best.exists() else None, evals, skipped)
    if dist.main:
        _write_summary(out, plan, summary, steps=global_step, tokens=tokens_trained, train_loss=last_loss)
        elapsed = time.perf_counter() - started
        say(f"done: {spec.num_epochs} epoch(s), {global_step} steps, {tokens_trained:,} tokens; training took {duration(elapsed)}")
        for record in evals:
            train_loss = "   n/a" if record["train_loss"] is None else f"{record['train_loss']:.4f}"
            loss = "n/a" if record["eval_loss"] is None else f"{record['eval_loss']:.4f}"
            say(f"  step {record['step']:>6}  train loss {train_loss}  eval loss {loss}")
        where = summary.best or (summary.checkpoints[-1] if summary.checkpoints else out)
        say(f"checkpoint{' (best eval loss)' if summary.best else ''}: {os.path.relpath(where)}")
    return summary


def _write_summary(out: Path, plan: dict[str, Any], summary: RunSummary, *, steps: int, tokens: int, train_loss: float | None) -> None:
    """``summary.json``: the run's numbers in one flat file (for `dvc metrics`, dashboards, scripts); the eval
    curve is in ``evals`` (for `dvc plots`), every step in metrics.jsonl."""
    import json

    losses = [e["eval_loss"] for e in summary.evals if e["eval_loss"] is not None]
    data = {
        "plan_id": plan["plan_id"], "steps": steps, "tokens_trained": tokens, "train_loss": train_loss,
        "eval_loss": losses[-1] if losses else None, "best_eval_loss": min(losses) if losses else None,
        "evals": [{"step": e["step"], "epoch": e["epoch"], "eval_loss": e["eval_loss"]} for e in summary.evals],
    }
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")
