"""A trained model as ``ftc export``, ``ftc generate`` and ``ftc eval`` read it: a checkpoint (with the plan that
wrote it) or an export of one. Every file is checked against the lineage record before anything is loaded, and an
adapter's base weights are the exact ones it was trained on: found and verified through the pins of the checkpoint's
own plan (your own weights, local or in a store; never ``model_id``'s published weights in their place). ``ftc eval``
also scores plain weights, a base with no lineage record, as a spec says (``plain_weights.py``): a ``Trained`` with
no record, loaded as a run loads its base."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.errors import InputChanged, InputUnresolvable, LineageBroken
from ftc.lineage import checkpoint_folder
from ftc.lineage.plan import checkpoint_plan, refuse_foreign_endpoints
from ftc.lineage.record import located
from ftc.lineage.verify import verified_record
from ftc.spec import JobSpec, PromptFormat
from ftc.spec.plan import Plan
from ftc.stores.stamps import ReadRecord
from ftc.stores.weights_folder import refuse_code

__all__ = ["PlainWeights", "Trained", "load_model", "open_trained"]


@dataclass(frozen=True)
class PlainWeights:
    """A weights folder with no lineage record (a base model), scored as a spec says (``ftc eval --spec``)."""

    #: the spec, checked as ``ftc compile`` checks it, its RoPE scaling resolved against the folder's config.json
    spec: JobSpec
    spec_file: Path
    #: the folder's content digest, as a plan pins it for ``initial_base_model_ckpt_path``
    digest: str


@dataclass(frozen=True)
class Trained:
    folder: Path
    #: the verified lineage record; None for plain weights (``plain``)
    record: dict[str, Any] | None
    is_export: bool
    #: the folder's weights are a LoRA adapter, served on ``base``
    adapter: bool
    #: the base weights (a folder, or a model id for the published weights); None where not needed
    base: Path | str | None
    #: the spec's prompt format (None: the tokenizer's chat template, which an export always carries)
    prompt_format: PromptFormat | None
    stop_texts: list[str]
    model_id: str
    plan: Plan | None = None  # a checkpoint's own plan
    #: a classifier's labels in class order (its spec's ``classifier_config.label_tokens``, or what its export
    #: records); None for a model that answers in text
    labels: tuple[str, ...] | None = None
    #: plain weights scored with a spec (no record, no plan); None for a checkpoint or an export
    plain: PlainWeights | None = None
    #: each file verified (the folder's, its base's), as it was then
    read: ReadRecord = field(default_factory=ReadRecord, compare=False, repr=False)

    def check_unchanged(self) -> None:
        """Once its files are read: raise naming each one changed (written, replaced, removed or added) since it was
        verified, its own or its base weights', as what was read may not be what was verified: exit 12 for a model
        with a lineage, 6 for plain weights (``InputChanged``, as for an input of a run)."""
        changed = self.read.changed()
        if changed:
            error = InputChanged if self.plain is not None else LineageBroken
            raise error(
                f"{self.folder}: it or its base weights changed while ftc read them, after they were verified (a file "
                "written, replaced, removed or added): what was read may not be what was verified:\n"
                + "\n".join(f"    {path}" for path in changed)
                + "\n    fix: try again once nothing writes it"
            )  # fmt: skip

    def identity(self) -> dict[str, Any]:
        """What was scored, as ``ftc eval``'s JSON says it: the folder, what it is, and its record_id (plain
        weights: none; their content digest and the spec they were scored with instead)."""
        if self.plain is not None:
            return {
                "model": str(self.folder), "scored": "base weights, no lineage", "record_id": None,
                "digest": self.plain.digest, "spec": str(self.plain.spec_file),
            }  # fmt: skip
        return {
            "model": str(self.folder), "scored": "export" if self.is_export else "checkpoint",
            "record_id": self.record["record_id"],
        }  # fmt: skip

    @property
    def name(self) -> str:
        return self.record["checkpoint"]["name"]

    @property
    def base_parent(self) -> dict[str, Any] | None:
        """The lineage entry of the base weights (a checkpoint's base_model parent)."""
        return next((p for p in self.record["parents"] if p["role"] == "base_model"), None)


def open_trained(path: Path, *, need_base: bool = True) -> Trained:
    """The checkpoint or export at ``path`` (a run's output folder means its best, else latest, checkpoint),
    verified. ``need_base``: find and verify an adapter's base weights too."""
    from ftc.runtime.training.chat_template import stop_texts

    folder = checkpoint_folder(path).resolve()
    refuse_code(folder, "the checkpoint")  # before reading anything of it
    read = ReadRecord()
    record = verified_record(
        folder,
        "not what its lineage record says; nothing of it is loaded",
        "restore it (`ftc lineage verify` names every difference)",
        read=read,
    )
    adapter = record["checkpoint"]["kind"] == "adapter"
    if "export" in record:
        base = None
        if adapter and need_base:
            parent = _checkpoint_of(folder, record)
            base = parent.base
            if isinstance(base, Path):  # of the checkpoint it was exported from, only its base is read
                read.update(parent.read.within(base))
        classifier = record["export"].get("classifier")
        return Trained(
            folder, record, True, adapter, base, None, list(record["export"]["stop_strings"]),
            record["checkpoint"]["model_id"], labels=tuple(classifier["labels"]) if classifier else None, read=read,
        )  # fmt: skip
    plan = checkpoint_plan(folder, record)
    generation = plan.spec.generation_config
    classifier = plan.spec.classifier_config
    return Trained(
        folder, record, False, adapter, _base_weights(plan, folder, read) if adapter and need_base else None,
        generation.prompt_format, stop_texts(generation.prompt_format, generation.stopping_sequences),
        plan.architecture.model_id, plan, classifier.label_tokens if classifier else None, read=read,
    )  # fmt: skip


def _checkpoint_of(folder: Path, record: dict[str, Any]) -> Trained:
    """The checkpoint an (unmerged) export was made from, where its record locates it."""
    path = located(record["parents"][0]["source"]["location"], folder)  # never another user's home
    if not path.is_dir():
        raise InputUnresolvable(
            f"{folder} is an adapter; its base is named by the checkpoint it was exported from, which is not at "
            f"{path}\n    fix: export it with --merge, or serve it on the base its README.md names"
        )
    parent = open_trained(path)
    if parent.record["record_id"] != record["parents"][0]["record_id"]:
        raise LineageBroken(
            f"{folder} was exported from checkpoint record {record['parents'][0]['record_id']}, but {path} now holds "
            f"record {parent.record['record_id']}: its base may not be this adapter's\n    fix: restore the "
            "checkpoint it was exported from, or export it again with --merge"
        )
    return parent


def _base_weights(plan: Plan, folder: Path, read: ReadRecord) -> Path | str:
    """The adapter's base weights as the plan pinned them, located from the checkpoint and verified (``read`` gains
    each file as it was then)."""
    from ftc.runtime.training import refuse_code_in_inputs, verify_inputs

    refuse_code_in_inputs(plan, {"base_model"})
    try:
        refuse_foreign_endpoints(plan, {"base_model"})  # the checkpoint's plan says where; credentials stay here
        found = verify_inputs(plan, {"base_model"})
        base = found["base_model"]
        read.update(found.read)
    except (InputChanged, InputUnresolvable) as exc:
        exc.args = (f"the base weights {folder.name} was trained on: {exc}",)
        raise exc from None
    if isinstance(base, Path):  # downloaded from a store: whole only now
        refuse_code(base, f"the base weights {folder.name} was trained on")
    return base


def load_model(trained: Trained, *, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """The model (an adapter on its base, unmerged; or whole weights) in ``dtype`` on ``device``, and the
    tokenizer saved with it, for inference. Plain weights are loaded as a run of their spec loads its base (its
    tokenizer, a classifier's labels added as tokens, the RoPE scaling), so they score as the run's evaluation
    before training does."""
    import torch

    from ftc.runtime.training import pretrained_adapter, pretrained_causal_lm, pretrained_tokenizer
    from ftc.runtime.training.loop import quiet_library_warnings
    from ftc.runtime.training.progress import log
    from ftc.runtime.training.threads import use_cpu_threads

    quiet_library_warnings()  # the deprecation notices a run filters, about the libraries' own calls
    if device == "cpu":
        use_cpu_threads(1, say=log)  # one process: the cores other work leaves it, or OMP_NUM_THREADS
    what = "the export" if trained.is_export else "the checkpoint"
    torch_dtype = getattr(torch, dtype)
    if trained.plain is not None:
        from ftc.runtime.training.model import load_model as load_base

        loaded = load_base(trained.plain.spec, "full", trained.folder, None, dtype=torch_dtype, attention="sdpa")
        trained.check_unchanged()  # the digest eval reports is of what was loaded
        return loaded.model.to(device).eval(), loaded.tokenizer
    tokenizer = pretrained_tokenizer(trained.folder, what)
    try:
        if trained.adapter:
            rope = trained.plan.spec.rope_scaling if trained.plan is not None else None  # the base as trained
            base = pretrained_causal_lm(
                trained.base, "the base weights", rope=rope, dtype=torch_dtype, use_safetensors=True
            )
            model = pretrained_adapter(base, trained.folder, what)
        else:
            model = pretrained_causal_lm(trained.folder, what, dtype=torch_dtype, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise InputUnresolvable(f"{trained.folder}: the model does not load: {exc}") from None
    trained.check_unchanged()
    return model.to(device).eval(), tokenizer
