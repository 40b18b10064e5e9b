"""Plans for people: ``describe_plan`` (what ``ftc plan show`` prints) and ``diff_plans`` (``ftc plan diff``)."""

from __future__ import annotations

import json
from typing import Any

from ftc.spec.canonical import differences, show_value
from ftc.spec.llmforge import NO_EFFECT
from ftc.spec.model import PreferenceConfig
from ftc.spec.plan import Plan, PlanFile, PlanImage, PlanInput
from ftc.spec.resources import describe_resources
from ftc.spec.tasks import TASKS
from ftc.spec.text import for_terminal
from ftc.stores.hashing import describe_changes
from ftc.stores.sources import SOURCES

__all__ = ["describe_plan", "diff_plans"]


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _short(digest: str) -> str:
    return digest[:19] + "…"


def _resources(worker: dict[str, float], trainer: dict[str, float]) -> str:
    said = [
        f"{who} {describe_resources(asked, braces=False)}"
        for who, asked in (("each worker", worker), ("trainer", trainer))
        if asked
    ]
    return "; ".join(said) + " (asked of the cluster by --backend ray; recorded by the others)"


def _pin(item: PlanInput) -> str:
    if not item.pinned:
        return "(unpinned)"
    if item.digest:
        return f"pinned {_short(item.digest)}"  # the digest `ftc lineage show` labels the same way
    return SOURCES[item.source].pin_text(item)  # a remote folder: sha256s come at download


def describe_plan(plan: Plan) -> str:
    """A readable summary of ``plan``: what will be trained on what, and how."""
    spec = plan.spec
    arch = plan.architecture
    cfg = arch.config
    launch = plan.launch
    lines = [
        f"plan      {plan.plan_id}",
        f"ftc       {plan.ftc_version}   spec {_short(plan.spec_digest)}",
        f"mode      {plan.mode} on {arch.model_id} (architecture from the {arch.source}: {cfg.get('model_type')}, "
        f"{cfg.get('num_hidden_layers')} layers, hidden {cfg.get('hidden_size')}, vocab {cfg.get('vocab_size')})",
        "inputs",
    ]
    given = spec.given_locations()
    for role, item in plan.inputs.items():
        what = [item.source, item.uri]
        as_given = given.get(role)
        if as_given is not None and as_given.rstrip("/") != item.uri.rstrip("/"):
            what.append(f"(given as {as_given})")
        if item.kind:
            files = f", {len(item.files)} files" if item.files else ""
            what.append(f"({item.kind}{files}, {_size(item.size)})")
        if item.records is not None:
            what.append(f"{item.records} {'pairs' if TASKS[spec.task].pairs else 'examples'}")
        what.append(_pin(item))
        lines.append(f"  {role:<17} " + "  ".join(what))
    lines.append(
        f"training  {spec.num_epochs} epoch(s), lr {spec.learning_rate:g} {spec.lr_scheduler_type}, warmup "
        f"{spec.num_warmup_steps}, batch {spec.train_batch_size_per_device} x {spec.gradient_accumulation_steps} "
        f"accum x {spec.num_devices} devices = {spec.global_batch_size}, context {spec.context_length}, padding "
        f"{spec.padding}{', packed' if spec.sample_packing else ''}, seed {spec.seed}"
        + (", decoder layers compiled (torch_compile)" if spec.torch_compile else "")
    )
    lines.append(f"task      {spec.task}: {TASKS[spec.task].loss}")
    if spec.classifier_config is not None:
        classifier = spec.classifier_config
        shown = ", ".join(repr(label) for label in classifier.label_tokens[:20])
        more = f" and {len(classifier.label_tokens) - 20} more" if len(classifier.label_tokens) > 20 else ""
        lines.append(
            f"labels    {len(classifier.label_tokens)}: {shown}{more}; metrics {', '.join(classifier.eval_metrics)}"
        )
    if spec.preference_tuning_config is not None:
        lines.append(f"dpo       {_preference(spec.preference_tuning_config, spec.eval_batch_size_per_device)}")
    if spec.rope_scaling is not None:  # the context extended past the model's own length
        lines.append(f"rope      {spec.rope_scaling.describe()}, applied at load and in config.json")
    lora = spec.lora_config
    if lora:
        targets = lora.target_modules if isinstance(lora.target_modules, str) else ",".join(lora.target_modules)
        lines.append(f"lora      r {lora.r}, alpha {lora.lora_alpha}, dropout {lora.lora_dropout}, targets {targets}")
    lines.append(f"deepspeed ZeRO {plan.zero_stage}, precision {spec.precision}")
    command = " ".join(launch.command)
    lines.append(f"launch    {launch.nodes} node(s) x {launch.processes_per_node} process(es): {command}")
    lines.append(f"image     {describe_image(plan.image)}")
    if spec.worker_resources or spec.trainer_resources:  # Ray's: asked of a cluster by --backend ray
        lines.append(f"ray       {_resources(spec.worker_resources, spec.trainer_resources)}")
    lines.append(f"output    {plan.output_dir}")
    lines += _llmforge_lines(plan)
    # a plan may come from a checkpoint (outside text): each line with its control characters shown, not obeyed
    return "\n".join(for_terminal(line) for line in lines)


def _preference(config: PreferenceConfig, eval_batch_size: int) -> str:
    """DPO's settings: beta, the loss and the reference pass (its batch: eval_batch_size_per_device unless given)."""
    reference = config.reference
    batch = f"{eval_batch_size} (eval_batch_size_per_device)" if reference.batch_size is None else reference.batch_size
    asked = f", Ray resources {describe_resources(reference.custom_resources, braces=False)}"
    return (
        f"beta {config.beta:g}, loss {config.loss_type}; reference log-probs: batch {batch}, concurrency "
        f"{reference.concurrency}{asked if reference.custom_resources else ''}"
    )


def _llmforge_lines(plan: Plan) -> list[str]:
    """llmforge's keys the spec gave (what each became), and where llmforge's defaults differ from the values this
    plan uses: each said once."""
    lines = []
    taken = [f"{key} -> {what['as']}" for key, what in plan.llmforge.items() if what["as"] is not None]
    if taken:
        lines.append("llmforge  taken as ftc's settings: " + ", ".join(taken))
    liger = plan.llmforge.get("liger_kernel", {}).get("given")
    if isinstance(liger, dict) and liger.get("enabled"):
        lines.append("          liger_kernel: Liger's loss kernels are not used (ftc computes the loss itself)")
    lines += [
        f"          no effect in ftc: {key} {json.dumps(what['given'])} ({NO_EFFECT[key]})"
        for key, what in plan.llmforge.items()
        if what["as"] is None
    ]
    spec, differ = plan.spec, []
    if not spec.activation_checkpointing:
        differ.append("activation checkpointing off (llmforge: on)")
    if spec.eval_batch_size_per_device == 4:
        differ.append("eval batch 4 (llmforge: 1)")
    native = plan.architecture.config.get("max_position_embeddings")
    if isinstance(native, int) and spec.context_length == min(2048, native) and spec.rope_scaling is None:
        differ.append(f"context_length {spec.context_length} (llmforge's null: from the data)")
    if spec.deepspeed.config_path is None and spec.deepspeed.zero_stage == 2:
        differ.append("DeepSpeed ZeRO 2 (llmforge without a deepspeed key: none)")
    if differ:
        head = "          " if lines else "llmforge  "
        lines.append(head + "its defaults differ here: " + ", ".join(differ))
    return lines


def describe_image(image: PlanImage | None) -> str:
    if image is None:
        return "none (the local Python environment)"
    if not image.pinned:
        return f"{image.ref} (NOT pinned: {image.note or 'not reproducible'})"
    how = "by registry digest" if image.pin_kind == "repo-digest" else "by local image ID"
    return f"{image.requested} pinned {how}: {image.ref}"


_DERIVED = ("plan_id", "spec_digest")  # hashes of the rest: the lines below say what changed


def _section(path: str) -> int:
    order = ("inputs", "spec", "image", "architecture")
    head = path.split(".", 1)[0]
    return order.index(head) if head in order else len(order)


def diff_plans(a: Plan, b: Plan) -> list[str]:
    """One line per difference between plans ``a`` and ``b``: inputs first, then settings, then the image (each
    line's control characters shown escaped)."""
    changes = differences(_comparable(a), _comparable(b))
    ordered = sorted(changes, key=lambda c: (_section(c[0]), c[0]))
    lines = [f"{path}: {show_value(old)} -> {show_value(new)}" for path, old, new in ordered]
    for role in sorted(set(a.inputs) & set(b.inputs)):
        lines += _file_changes(role, a.inputs[role].files or (), b.inputs[role].files or ())
    return [for_terminal(line) for line in lines]  # values and file names from plans: outside text


def _comparable(plan: Plan) -> dict[str, Any]:
    """The plan document without the hashes of the rest, and without file lists (compared file by file)."""
    document = plan.to_dict()
    inputs = {role: {k: v for k, v in item.items() if k != "files"} for role, item in document["inputs"].items()}
    return {k: v for k, v in {**document, "inputs": inputs}.items() if k not in _DERIVED}


def _ident(f: PlanFile) -> str:
    # a remote folder's files carry the store's pin instead of a sha256
    return f"{f.sha256[:12]}…" if f.sha256 else json.dumps(f.pin, sort_keys=True)


def _file_changes(role: str, a: tuple[PlanFile, ...], b: tuple[PlanFile, ...]) -> list[str]:
    return describe_changes(
        {f.path: _ident(f) for f in a},
        {f.path: _ident(f) for f in b},
        removed=f"inputs.{role}.files: {{path}} removed",
        added=f"inputs.{role}.files: {{path}} added",
        changed=f"inputs.{role}.files: {{path}} changed ({{before}} -> {{after}})",
    )
