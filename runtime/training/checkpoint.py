"""Checkpoints: Hugging Face layout plus the state to resume, written atomically; pruning; best and latest.

    <output>/checkpoints/step-000012/
        adapter_model.safetensors, adapter_config.json     (LoRA)   or   model*.safetensors, config.json (full)
        tokenizer files                                     with the chat template of the spec's prompt_format
        plan.json                                           the plan that wrote it (its sha256 is the record's plan_id)
        ftc_state.json                                      where training stood, losses, mode, skipped examples
        lineage.json                                        the lineage record (ftc.lineage): parents, data, run
        model.sig                                           its signature over every file, when FTC_SIGNING_KEY is set
        training_state/                                     DeepSpeed's optimizer, scheduler, module state (safetensors)
        rng_state_rank*.safetensors                         random number generator state of each process
    <output>/best, <output>/latest                          symlinks to checkpoints
    <output>/.ftc-lock-node<K>                              held while a run writes here (runtime/launch/lock.py)

A checkpoint is written to ``checkpoints/.step-000012.tmp`` and renamed when complete, so a folder named ``step-*``
is always whole, and a signed one is signed whole (the signature is written before the rename). Resuming trusts
nothing unverified (``resume.py``): every file of the checkpoint must be what its lineage record says before
anything is read, and is looked at again once its state is read. DeepSpeed's training state is safetensors with its
structure in JSON (``state_file``), so nothing is unpickled: a file that is not ftc's is refused unread.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.errors import LineageBroken, UsageError
from ftc.lineage.plan import PLAN_FILE
from ftc.lineage.record import LINEAGE_FILE
from ftc.lineage.signing import Signer, signer_from_env
from ftc.spec.reading import MiB, read_bounded_text
from ftc.stores.atomic import clear_planted

from .model import save_tokenizer
from .progress import log, size_text

__all__ = [
    "Checkpointer",
    "checkpoint_sizes",
    "describe_sizes",
    "finished_checkpoints",
    "frozen_left_out",
    "is_complete",
    "latest_checkpoint",
    "load_training_state",
    "read_state",
    "restore_rng",
    "stable_adapter_config",
    "trained_seconds",
]

STATE_FILE = "ftc_state.json"
TAG = "state"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def read_state(path: Path) -> dict[str, Any]:
    """The checkpoint's ftc_state.json (a regular file, bounded: it grows by one eval record per evaluation)."""
    return json.loads(read_bounded_text(path / STATE_FILE, limit=16 * MiB, what="checkpoint state"))


def finished_checkpoints(root: Path) -> list[Path]:
    folder = root / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: Path) -> Path | None:
    found = finished_checkpoints(root)
    return found[-1] if found else None


def describe_sizes(checkpoint: Path) -> str:
    """What a checkpoint's state says it weighs, in words: its weights, and what resuming it reads besides."""
    parts = read_state(checkpoint).get("sizes", {})
    return f"{size_text(parts.get('weights', 0))} weights, {size_text(parts.get('training_state', 0))} to resume"


def trained_seconds(record: dict[str, Any], state: dict[str, Any]) -> float:
    """The training time a checkpoint had taken, from its lineage ``record`` (older checkpoints: their ``state``): a
    resumed run adds its own."""
    found = record.get("measured", {}).get("wall_time_s")
    if found is None:
        found = state.get("wall_time_s", record["results"].get("wall_time_s", 0.0))
    return float(found)


def is_complete(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` is the last of its run (every step trained)."""
    state = read_state(checkpoint)
    return state["global_step"] >= state["total_steps"]


def load_training_state(engine: Any, checkpoint: Path, *, strict: bool) -> None:
    """Load the optimizer, scheduler and module state DeepSpeed saved in ``checkpoint`` (verified beforehand), from
    ftc's safetensors files (``state_file``): nothing is unpickled; a file that is not ftc's is refused (exit 12)."""
    from .state_file import NotStateFile, deepspeed_view

    _same_state_files(engine, checkpoint)
    fix = "\n    fix: resume only from checkpoints ftc wrote, or start again into a new output_dir"
    if not any((checkpoint / "training_state" / TAG).glob("*_model_states.safetensors")):  # (DeepSpeed: an assert)
        raise LineageBroken(f"{checkpoint}: it holds no training state under training_state/{TAG}/" + fix)
    try:
        with deepspeed_view(checkpoint / "training_state") as view:
            engine.load_checkpoint(str(view), tag=TAG, load_module_strict=strict)
    except NotStateFile as exc:
        raise LineageBroken(f"{exc}; refused without reading it" + fix) from None
    except KeyError as exc:  # ftc's format, but not the state DeepSpeed saved (a planted one)
        raise LineageBroken(
            f"{checkpoint}: its training state lacks {exc} that DeepSpeed reads; refused" + fix
        ) from None


def _same_state_files(engine: Any, checkpoint: Path) -> None:
    """The checkpoint's training state is in the files this engine reads: a checkpoint written by an earlier ftc (in
    torch's pickle format, or on another DeepSpeed optimizer before one process trained without ZeRO) is refused
    with what to do, not a traceback from inside DeepSpeed."""
    state = checkpoint / "training_state" / TAG
    earlier = (
        "\n    fix: resume it with the ftc that wrote it (its lineage.json names the version), or start the plan again"
        " into a new output_dir"
    )
    if any(state.glob("*.pt")):
        raise UsageError(
            f"{checkpoint}: its training state is in torch's pickle format (training_state/{TAG}/*.pt), as an earlier "
            "ftc wrote it; this ftc never unpickles" + earlier
        )
    kind = type(engine.optimizer).__name__
    # DeepSpeed names an optimizer's files by its precision (bf16_...), ZeRO's and the flat bf16 optimizer's alike
    sharded = kind == "BF16_Optimizer" or engine.zero_optimization()
    wants = ("bf16_" if engine.bfloat16_enabled() else "") + "zero_pp_rank_" if sharded else ""
    holds = {
        "bf16_zero_pp_rank_" if p.name.startswith("bf16_") else "zero_pp_rank_"
        for p in state.glob("*zero_pp_rank_*_optim_states.*")
    }
    if holds == ({wants} if wants else set()):
        return
    written = " and ".join(sorted(f"{p}* files" for p in holds)) or "the module's own file"
    raise UsageError(
        f"{checkpoint}: its optimizer state is in {written}, written by another DeepSpeed optimizer than this run's "
        f"({kind}): it was written by an earlier ftc, which trained this plan on ZeRO's optimizer" + earlier
    )


def _relink(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)


@contextmanager
def frozen_left_out(engine: Any, lora: bool) -> Iterator[None]:
    """For a LoRA run, leave every frozen weight out of DeepSpeed's module state: its own filter walks
    ``named_parameters()``, which names a tied weight once, so a tied output layer (lm_head = embed_tokens, as in
    SmolLM2 or Llama 3.2) would still be saved whole in every checkpoint. Resuming loads the base weights anyway."""
    if not lora:
        yield
        return
    own = engine.module_state_dict

    def module_state_dict(*args: Any, exclude_frozen_parameters: bool = False, **kwargs: Any) -> dict[str, Any]:
        found = own(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
        if exclude_frozen_parameters:
            prefix = kwargs.get("prefix", "")
            for name, param in engine.module.named_parameters(remove_duplicate=False):
                if not param.requires_grad:
                    found.pop(prefix + name, None)
        return found

    engine.module_state_dict = module_state_dict
    try:
        yield
    finally:
        del engine.module_state_dict  # the class's method again


#: adapter_config.json keys that peft keeps as sets: saved in the process's (randomized) set order unless sorted
_SET_KEYS = ("target_modules", "exclude_modules")


def stable_adapter_config(folder: Path) -> None:
    """Rewrite the adapter_config.json peft just saved in ``folder`` with its set-valued lists sorted, so the same
    plan writes the same bytes in every process (Python's string hashing, and so set order, is per process)."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in _SET_KEYS:
        value = config.get(key)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            config[key] = sorted(value)
    path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def checkpoint_sizes(folder: Path) -> dict[str, int]:
    """Bytes per part of a checkpoint: the weights a server loads, the state only resuming needs, and the rest."""
    sizes = {"weights": 0, "training_state": 0, "other": 0}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(folder)
        if rel.parts[0] == "training_state" or rel.name.startswith("rng_state_rank"):
            sizes["training_state"] += path.stat().st_size
        elif rel.suffix == ".safetensors":
            sizes["weights"] += path.stat().st_size
        else:
            sizes["other"] += path.stat().st_size
    return sizes


@dataclass
class Checkpointer:
    root: Path
    is_lora: bool
    zero_stage: int
    rank: int
    barrier: Callable[[], None]
    keep: int | None
    model_id: str
    plan_text: str  # the plan file's text, saved with every checkpoint
    #: signs each checkpoint (rank 0), as FTC_SIGNING_KEY / FTC_SIGNING configure; None: checkpoints are unsigned
    signer: Signer | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # a configured key that cannot be used stops the run here, before the first step (and before any checkpoint)
        self.signer = signer_from_env() if self.rank == 0 else None
        if self.signer is not None:
            log(f"checkpoints are signed: {self.signer.describe()}")

    def discard_partial(self) -> None:
        """Remove checkpoints an interrupted run left half-written (they never had their final name)."""
        if self.rank == 0:
            for partial in (self.root / "checkpoints").glob(".step-*.tmp"):
                shutil.rmtree(partial, ignore_errors=True)

    def save(
        self, engine: Any, tokenizer: Any, state: dict[str, Any], lineage: Callable[[Path, Path], dict[str, Any]]
    ) -> Path:
        """Write a checkpoint of ``engine`` (every rank calls this) and return its folder. ``lineage(folder, final)``
        makes the lineage record of the files in ``folder`` (written last, before the rename)."""
        import torch
        from safetensors.torch import save_file

        final = self.root / "checkpoints" / checkpoint_name(state["global_step"])
        tmp = final.with_name(f".{final.name}.tmp")
        if self.rank == 0:
            clear_planted(tmp)  # a link planted in the output folder goes: nothing is written through it
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        with frozen_left_out(engine, self.is_lora):
            engine.save_checkpoint(
                str(tmp / "training_state"), tag=TAG, save_latest=False, exclude_frozen_parameters=self.is_lora
            )
        self._save_weights(engine, tmp)
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(tmp / f"rng_state_rank{self.rank}.safetensors"))
        self.barrier()
        if self.rank == 0:
            # DeepSpeed's recovery scripts read its pickles, which ftc does not write: not kept
            for script in (tmp / "training_state").glob("zero_to_*.py"):
                script.unlink()
            save_tokenizer(tokenizer, tmp)
            (tmp / PLAN_FILE).write_text(self.plan_text, encoding="utf-8")
            state = {**state, "sizes": checkpoint_sizes(tmp)}  # (the state file itself is a few hundred bytes)
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
            record = lineage(tmp, final)
            (tmp / LINEAGE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            self._sign(tmp)  # over every file, the record included; still under the temporary name
            clear_planted(final)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _relink(self.root / "latest", final)
            self._mark_best_and_prune()
        self.barrier()
        return final

    def _sign(self, folder: Path) -> None:
        """Sign the checkpoint being written in ``folder``. Signing that was asked for and fails is said once, and
        the run goes on writing unsigned checkpoints (`ftc lineage verify --require-signature` refuses them)."""
        if self.signer is None:
            return
        try:
            self.signer.sign(folder)
        except UsageError as exc:
            self.signer = None
            log(f"warning: signing failed; this checkpoint and the ones after it are unsigned: {exc}")

    def _save_weights(self, engine: Any, folder: Path) -> None:
        model = engine.module
        if self.is_lora:
            # the adapter's own weights only: a classifier's grown embedding rows are in it through
            # trainable_token_indices, and every loader grows the base the same way first (label_tokens.py). peft's
            # "auto" would save the whole embedding matrix once the vocabulary grew (hundreds of MB for a real
            # model) and looks the base's config up on the Hub when its path is not a local folder.
            save = {"safe_serialization": True, "save_embedding_layers": False}
            if self.zero_stage == 3:
                import deepspeed

                trainable = [p for p in model.parameters() if p.requires_grad]
                with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
                    if self.rank == 0:
                        model.save_pretrained(folder, **save)
            elif self.rank == 0:
                model.save_pretrained(folder, **save)
            if self.rank == 0:
                stable_adapter_config(folder)
            if self.rank == 0:
                _name_base(folder, self.model_id)
            return
        # full model: under ZeRO-3 the weights are gathered to rank 0
        # (config: stage3_gather_16bit_weights_on_model_save)
        state_dict = engine._zero3_consolidated_16bit_state_dict() if self.zero_stage == 3 else model.state_dict()
        if self.rank == 0:
            model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True, max_shard_size="2GB")

    def _mark_best_and_prune(self) -> None:
        found = finished_checkpoints(self.root)
        scored = [(read_state(p).get("eval_loss"), p) for p in found]
        scored = [(loss, p) for loss, p in scored if loss is not None]
        best = min(scored, key=lambda lp: lp[0])[1] if scored else None
        if best is not None:
            _relink(self.root / "best", best)
        if self.keep is not None:
            for old in found[: -self.keep]:
                if old != best:
                    shutil.rmtree(old)


def _name_base(folder: Path, model_id: str) -> None:
    """The adapter names its architecture (model_id), not this machine's path to the base weights; and peft's
    empty model card template goes (the lineage record tells the adapter's story)."""
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = model_id
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").unlink(missing_ok=True)


def restore_rng(folder: Path, rank: int) -> None:
    import torch
    from safetensors.torch import load_file

    rng = load_file(str(folder / f"rng_state_rank{rank}.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
