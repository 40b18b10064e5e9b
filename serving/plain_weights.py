"""Plain weights scored as a spec says: a base model's folder has no lineage record and no plan, so nothing in it
says how to prompt it. ``ftc eval BASE --spec job.yaml`` takes that from the job spec a run of those weights would
use (its prompt format and stops, its task and a classifier's labels, its RoPE scaling), so the base gets the number
that run's evaluation before training reports: the baseline a fine-tune is measured against.

The folder is outside bytes, read as a run reads base weights: refused when it holds anything a loader could run,
safetensors only, never its code; the spec is checked as ``ftc compile`` checks it, every problem at once.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftc.errors import InputUnresolvable, UsageError
from ftc.lineage import LINEAGE_FILE, checkpoint_folder
from ftc.lineage.outputs import check_output_outside
from ftc.spec import JobSpec, LoadedSpec, load_spec
from ftc.spec.reading import MiB, NotReadable, read_bounded_text
from ftc.spec.rope import resolve_rope_scaling
from ftc.spec.text import for_terminal
from ftc.stores.hashing import NotAnInput, StatCache, hash_tree, manifest_digest
from ftc.stores.weights_folder import refuse_code

from .trained import PlainWeights, Trained, open_trained

__all__ = ["check_scored_output", "open_base", "open_scored"]

#: a model's config.json is a page of settings
_CONFIG_LIMIT = 16 * MiB


def check_scored_output(out: Path, path: Path, *, spec: Path | None, data: Path) -> Path:
    """Refuse ``ftc eval``'s output ``out`` before any work (``check_output_outside``): inside the ``data`` file, or
    inside what is scored, the checkpoint at ``path`` or, with ``spec``, the plain weights folder ``path``; a folder
    without a lineage record scored without ``spec`` is told to pass it. Returns ``out``."""
    if spec is not None:
        check_output_outside(out, also=path)
        return check_output_outside(out, also=data)
    _record_or_spec(path)
    return check_output_outside(out, reads=path, also=data)


def open_scored(path: Path, spec: Path | None = None) -> Trained:
    """What ``ftc eval`` scores: with ``spec``, the plain weights folder ``path`` (:func:`open_base`); else the
    checkpoint or export at ``path`` (``open_trained``), a folder without a lineage record told to pass ``--spec``."""
    if spec is not None:
        return open_base(path, spec)
    _record_or_spec(path)
    return open_trained(path)


def _record_or_spec(path: Path) -> None:
    """A folder at ``path`` without a lineage record (nor a run's best/ or latest/) is refused, naming --spec."""
    if path.is_dir():
        try:
            checkpoint_folder(path)
        except UsageError as exc:
            raise UsageError(
                f"{exc}\n    fix: to score plain weights (a base model), pass --spec JOB.yaml: the job spec whose "
                "prompt format, task and labels they are scored with, as a run of that spec evaluates before training"
            ) from None


def open_base(path: Path, spec_file: Path) -> Trained:
    """The plain weights folder ``path`` to be scored as the spec at ``spec_file`` says, checked: the spec as
    ``ftc compile`` checks it (every problem at once), the folder for code a loader could run and for safetensors
    weights, its RoPE scaling resolved against the folder's config.json; and the folder's content digest (the one a
    plan pins; the stat cache spares reading files hashed before). A checkpoint or an export is refused: its own
    plan or record says how to prompt it."""
    from ftc.runtime.training.chat_template import stop_texts

    loaded = load_spec(spec_file)
    loaded.raise_if_problems()
    if not path.is_dir():
        raise UsageError(f"{for_terminal(str(path))}: no such weights folder")
    folder = path.resolve()
    if any((folder / sub / LINEAGE_FILE).exists() for sub in (".", "best", "latest")):
        raise UsageError(
            f"{for_terminal(str(path))} is a checkpoint, an export or a run written by ftc: its own plan says how to "
            "prompt it\n    fix: drop --spec"
        )
    refuse_code(folder, "the base weights")  # before anything of it is read
    if not any(folder.glob("*.safetensors")):
        raise InputUnresolvable(
            f"{for_terminal(str(folder))}: no *.safetensors weights; ftc never unpickles weights (*.bin, *.pt)"
        )
    spec = _rope_resolved(loaded, folder)
    try:
        with StatCache() as cache:
            digest = manifest_digest(hash_tree(folder, cache))
    except NotAnInput as exc:
        raise InputUnresolvable(str(exc)) from None
    generation, classifier = spec.generation_config, spec.classifier_config
    return Trained(
        folder, None, False, False, None, generation.prompt_format,
        stop_texts(generation.prompt_format, generation.stopping_sequences), spec.model_id,
        labels=classifier.label_tokens if classifier else None, plain=PlainWeights(spec, spec_file, digest),
        read=cache.read,
    )  # fmt: skip


def _rope_resolved(loaded: LoadedSpec, folder: Path) -> JobSpec:
    """The spec with its RoPE scaling (if any) resolved against the folder's config.json as the compiler resolves it
    against the base's; a scaling that does not fit them is a problem of the spec, at rope_scaling."""
    spec = loaded.spec
    if spec.rope_scaling is None:
        return spec
    try:
        config = json.loads(read_bounded_text(folder / "config.json", limit=_CONFIG_LIMIT, what="model config"))
    except (NotReadable, ValueError, RecursionError) as exc:
        raise InputUnresolvable(f"{for_terminal(str(folder))}: its config.json cannot be read ({exc})") from None
    if not isinstance(config, dict):
        raise InputUnresolvable(f"{for_terminal(str(folder))}: its config.json is not a JSON object")
    rope, found = resolve_rope_scaling(spec.rope_scaling, config, spec.context_length)
    loaded.problems += [loaded.problem(("rope_scaling", *at), message, fix) for at, message, fix in found]
    loaded.raise_if_problems()
    return spec.replace(rope_scaling=rope)
