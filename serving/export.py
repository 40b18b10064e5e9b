"""``ftc export``: a checkpoint as a standalone Hugging Face model folder that needs no ftc to serve.

    <out>/config.json, model*.safetensors (+ index)    the adapter merged into its exact base (or whole weights)
      or adapter_config.json, adapter_model.safetensors  (--no-merge: the adapter; README.md names its base)
    tokenizer files                                     the chat template renders the spec's prompt_format
    generation_config.json                              eos_token_id: the end-of-sequence and stop tokens
    README.md                                           a model card: base, relation, results, lineage
    lineage.json                                        relation merged/exported to the checkpoint and its chain

A classifier's export also holds its label map, so a server reads each label's probability from the next-token
logits: config.json's ``id2label``/``label2id`` (class index <-> label) and ``label_token_ids`` (label -> token
id), the same labels and ids in the record's ``export.classifier`` and in the model card, with a snippet that
computes them.

The merge is done in fp32 and saved in the base's dtype. The folder is built beside ``out`` and renamed into place
when whole: an interrupted export leaves no folder that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import UsageError
from ftc.lineage.record import LINEAGE_FILE, LINEAGE_VERSION, checkpoint_parent, checkpoint_section, environment, seal
from ftc.lineage.signing import signer_from_env
from ftc.runtime.training import save_tokenizer
from ftc.spec.rope import RopeScaling
from ftc.spec.text import for_terminal
from ftc.stores.atomic import check_output_path, clear_planted
from ftc.stores.safetensors_header import read_safetensors_header
from ftc.stores.storage import storage_failure

from .card import model_card
from .classify import config_label_map
from .trained import Trained, load_model, open_trained

__all__ = ["Exported", "export_checkpoint"]

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: what a whole-weights checkpoint holds besides its weights that a server needs (its training state stays behind)
_MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


@dataclass(frozen=True)
class Exported:
    folder: Path
    merged: bool
    dtype: str
    record_id: str
    files: int
    size: int


def export_checkpoint(
    path: Path, out: Path, *, merge: bool | None = None, max_shard_size: str = "5GB", log: Any = print
) -> Exported:
    """Export the checkpoint at ``path`` to the new folder ``out``. ``merge``: merge an adapter into its base
    (default: yes for adapters; whole weights are copied as they are)."""
    check_output_path(out, folder=True)  # not a link, a file or a device: before the merge, not after it
    signer = signer_from_env()  # FTC_SIGNING_KEY: a key that cannot be used is refused before the merge
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} already exists; export into a new folder (nothing is overwritten)")
    trained = open_trained(path, need_base=merge is not False)
    if trained.is_export:
        raise UsageError(f"{trained.folder} is already an export; export the checkpoint it was made from")
    merge = trained.adapter if merge is None else merge and trained.adapter
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.export-tmp")
    clear_planted(tmp)  # a link there goes, not what it points to
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        exported = _write(trained, tmp, out, merge=merge, max_shard_size=max_shard_size, log=log, given=str(path))
        if signer is not None:
            signer.sign(tmp)  # model.sig over every file of the export, its record included, before the rename
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except OSError as exc:
        failure = storage_failure(out.parent, exc, "writing the export")
        if failure is None:
            raise
        raise failure from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exported


def _base_dtype(base: Path | str) -> str:
    """The dtype most of the base's weight bytes are in (its headers, checked, not trusted)."""
    if not isinstance(base, Path):  # the published weights of a model id: their config says
        from ftc.runtime.training import pretrained_config

        found = getattr(pretrained_config(base, "the published base weights"), "dtype", None)
        return str(found).removeprefix("torch.") if found is not None else "float32"
    counts: Counter[str] = Counter()
    for file in sorted(base.glob("*.safetensors")):
        for tensor in read_safetensors_header(file).tensors.values():
            if tensor.dtype in _DTYPES:
                counts[_DTYPES[tensor.dtype]] += math.prod(tensor.shape)
    return counts.most_common(1)[0][0] if counts else "float32"


def _write(
    trained: Trained, tmp: Path, out: Path, *, merge: bool, max_shard_size: str, log: Any, given: str
) -> Exported:
    import torch

    from ftc.runtime.training import pretrained_tokenizer
    from ftc.runtime.training.chat_template import chat_template
    from ftc.runtime.training.generation import stop_token_ids
    from ftc.runtime.training.loop import quiet_library_warnings

    quiet_library_warnings()  # the deprecation notices a run filters, about the libraries' own calls (the merge)
    source = trained.folder
    if merge:
        dtype = _base_dtype(trained.base)
        base = os.path.normpath(trained.base) if isinstance(trained.base, Path) else trained.base  # no a/../../b
        log(f"merging the adapter into its base {for_terminal(str(base))} in float32; saving in {dtype}")
        model, _ = load_model(trained, dtype="float32")
        merged = model.merge_and_unload()
        merged.to(getattr(torch, dtype)).save_pretrained(tmp, max_shard_size=max_shard_size)
    else:
        names = _ADAPTER_FILES if trained.adapter else _MODEL_FILES
        weights = [] if trained.adapter else sorted(p.name for p in source.glob("model*.safetensors"))
        for name in [*names, *weights]:
            if (source / name).exists():
                shutil.copyfile(source / name, tmp / name)
        dtype = _base_dtype(source)
    rope = trained.plan.spec.rope_scaling if trained.plan is not None else None
    if rope is not None and (tmp / "config.json").exists():
        _write_rope(tmp / "config.json", rope)
    tokenizer = pretrained_tokenizer(source, "the checkpoint")
    if rope is not None:  # the length the tokenizer warns past is the extended one
        tokenizer.model_max_length = rope.max_positions
    fmt = trained.prompt_format
    if fmt is not None:
        tokenizer.chat_template = chat_template(fmt)
    save_tokenizer(tokenizer, tmp)
    stop_ids = stop_token_ids(tokenizer, trained.stop_texts)
    _generation_config(tmp, trained, tokenizer, stop_ids)
    export_section: dict[str, Any] = {
        "merged": merge,
        "dtype": dtype,
        "chat_template": "prompt_format" if fmt is not None else "tokenizer",
        "stop_strings": trained.stop_texts,
        "eos_token_id": stop_ids,
    }
    if trained.labels is not None:
        export_section["classifier"] = _label_map(tmp / "config.json", trained.labels, tokenizer)
    base_parent = trained.base_parent
    if trained.adapter and not merge and base_parent is not None:
        export_section["base"] = {"digest": base_parent["digest"], "source": base_parent["source"]}
    (tmp / "README.md").write_text(model_card(trained, export_section, out.name), encoding="utf-8")
    trained.check_unchanged()  # what was copied and read is what the record it is sealed beside says
    record = _record(trained, tmp, out, export_section, given)
    (tmp / LINEAGE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    files = [p for p in tmp.rglob("*") if p.is_file()]
    return Exported(out, merge, dtype, record["record_id"], len(files), sum(p.stat().st_size for p in files))


def _generation_config(folder: Path, trained: Trained, tokenizer: Any, stop_ids: list[int]) -> None:
    """generation_config.json: the model's own settings (where it had them), with the stop tokens of the trained
    format as ``eos_token_id`` (what vLLM and TGI stop on) and the stop texts as ``stop_strings``."""
    path = folder / "generation_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config.update({"eos_token_id": stop_ids[0] if len(stop_ids) == 1 else stop_ids})
    if tokenizer.bos_token_id is not None:
        config.setdefault("bos_token_id", tokenizer.bos_token_id)
    if tokenizer.pad_token_id is not None:
        config["pad_token_id"] = tokenizer.pad_token_id
    if trained.stop_texts:  # as text too: a one-token stop may be another token after a space or newline
        config["stop_strings"] = list(trained.stop_texts)
    config.pop("transformers_version", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _label_map(config: Path, labels: tuple[str, ...], tokenizer: Any) -> dict[str, Any]:
    """A classifier's labels and their token ids, as the export's record keeps them; written into ``config``
    (config.json, where the export has one: not an unmerged adapter's) as transformers and servers read them."""
    from ftc.runtime.training import label_token_ids

    ids = label_token_ids(tokenizer, labels)
    if config.exists():
        found = json.loads(config.read_text(encoding="utf-8"))
        found.update(config_label_map(labels, ids))
        config.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    return {"labels": list(labels), "label_token_ids": ids}


def _write_rope(path: Path, rope: RopeScaling) -> None:
    """The run's RoPE scaling in the export's config.json, as every reader looks for it: ``rope_parameters``
    (transformers 5), ``rope_scaling`` and a top-level ``rope_theta`` (transformers 4, vLLM, TGI), and the
    max_position_embeddings it goes with, so a server applies the scaling the model was trained with."""
    config = json.loads(path.read_text(encoding="utf-8"))
    fields = rope.config_fields()
    before = config.get("rope_parameters") or {}
    theta = before.get("rope_theta", config.get("rope_theta", 10000.0))
    kept = {k: before[k] for k in ("partial_rotary_factor",) if k in before}
    config["rope_parameters"] = {**fields["rope"], **kept, "rope_theta": theta}
    config["rope_scaling"] = dict(fields["rope"])
    config["rope_theta"] = theta
    config["max_position_embeddings"] = fields["max_position_embeddings"]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _record(trained: Trained, folder: Path, out: Path, export_section: dict[str, Any], given: str) -> dict[str, Any]:
    """The export's lineage record: its files, and the checkpoint as its one parent (its files, including its
    record, which is embedded whole), so `ftc lineage verify` walks from the export down the whole chain."""
    parent = trained.record  # verified when it was opened
    kind = "merged" if export_section["merged"] else parent["checkpoint"]["kind"]
    relation = "merged" if export_section["merged"] else "exported"
    return seal(
        {
            "lineage_version": LINEAGE_VERSION,
            "checkpoint": {
                **checkpoint_section(folder),
                "name": out.name,
                "model_id": trained.model_id,
                "kind": kind,
            },
            "parents": [checkpoint_parent(trained.folder, parent, relation, out, given)],
            "export": export_section,
            "environment": environment(),
        }
    )
