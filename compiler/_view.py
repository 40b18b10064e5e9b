"""Plans for people: ``describe_plan`` (what ``ftc plan show`` prints) and ``diff_plans`` (``ftc plan diff``)."""

from __future__ import annotations

import json
from typing import Any

from ftc._hashing import file_changes

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


def _pin(item: dict[str, Any]) -> str:
    if not item["pinned"]:
        return "(unpinned)"
    if item.get("digest"):
        return _short(item["digest"])
    if item["source"] == "dvc":
        return f"md5 {item['pin']['md5'][:12]}… (each file by md5)"
    return f"(pinned per object by the {item['source']} store)"  # a remote folder: sha256s come at download


def describe_plan(plan: dict[str, Any]) -> str:
    """A readable summary of ``plan``: what will be trained on what, and how."""
    spec = plan["spec"]
    arch = plan["architecture"]
    cfg = arch["config"]
    launch = plan["launch"]
    lines = [
        f"plan      {plan['plan_id']}",
        f"ftc       {plan['ftc_version']}   spec {_short(plan['spec_digest'])}",
        f"mode      {plan['mode']} on {arch['model_id']} (architecture from the {arch['source']}: {cfg.get('model_type')}, "
        f"{cfg.get('num_hidden_layers')} layers, hidden {cfg.get('hidden_size')}, vocab {cfg.get('vocab_size')})",
        "inputs",
    ]
    for role, item in plan["inputs"].items():
        what = [item["source"], item["uri"]]
        if item.get("kind"):
            files = f", {len(item['files'])} files" if item.get("files") else ""
            what.append(f"({item['kind']}{files}, {_size(item.get('size'))})")
        if item.get("records") is not None:
            what.append(f"{item['records']} examples")
        what.append(_pin(item))
        lines.append(f"  {role:<17} " + "  ".join(what))
    batch = spec["train_batch_size_per_device"] * spec["gradient_accumulation_steps"] * spec["num_devices"]
    lines.append(
        f"training  {spec['num_epochs']} epoch(s), lr {spec['learning_rate']:g} {spec['lr_scheduler_type']}, warmup "
        f"{spec['num_warmup_steps']}, batch {spec['train_batch_size_per_device']} x {spec['gradient_accumulation_steps']} "
        f"accum x {spec['num_devices']} devices = {batch}, context {spec['context_length']}, padding {spec['padding']}"
        f"{', packed' if spec['sample_packing'] else ''}, seed {plan['seed']}"
    )
    lora = spec.get("lora_config")
    if lora:
        targets = lora["target_modules"] if isinstance(lora["target_modules"], str) else ",".join(lora["target_modules"])
        lines.append(f"lora      r {lora['r']}, alpha {lora['lora_alpha']}, dropout {lora['lora_dropout']}, targets {targets}")
    zero = plan["deepspeed"].get("zero_optimization", {}).get("stage", 0)
    lines.append(f"deepspeed ZeRO {zero}, precision {plan['precision']}")
    lines.append(f"launch    {launch['nodes']} node(s) x {launch['processes_per_node']} process(es): {' '.join(launch['command'])}")
    image = plan["image"]
    lines.append(f"image     {describe_image(image)}")
    lines.append(f"output    {plan['output']['dir']}")
    return "\n".join(lines)


def describe_image(image: dict[str, Any] | None) -> str:
    if image is None:
        return "none (the local Python environment)"
    if not image["pinned"]:
        return f"{image['ref']} (NOT pinned: {image.get('note', 'not reproducible')})"
    how = "by registry digest" if image["pin_kind"] == "repo-digest" else "by local image ID"
    return f"{image['requested']} pinned {how}: {image['ref']}"


_ABSENT = object()
_DERIVED = ("plan_id", "spec_digest")  # hashes of the rest: the lines below say what changed


def _walk(a: Any, b: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _walk(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{path}.{key}" if path else key, out)
    elif a != b:
        out.append((path, a, b))


def _section(path: str) -> int:
    order = ("inputs", "spec", "image", "architecture")
    head = path.split(".", 1)[0]
    return order.index(head) if head in order else len(order)


def diff_plans(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """One line per difference between plans ``a`` and ``b``: inputs first, then settings, then the image."""
    changes: list[tuple[str, Any, Any]] = []
    strip = lambda plan: {k: v for k, v in _without_file_lists(plan).items() if k not in _DERIVED}  # noqa: E731
    _walk(strip(a), strip(b), "", changes)
    lines = [f"{path}: {_show(old)} -> {_show(new)}" for path, old, new in sorted(changes, key=lambda c: (_section(c[0]), c[0]))]
    for role in sorted(set(a.get("inputs", {})) & set(b.get("inputs", {}))):
        lines += _file_changes(role, a["inputs"][role].get("files") or [], b["inputs"][role].get("files") or [])
    return lines


def _without_file_lists(plan: dict[str, Any]) -> dict[str, Any]:
    inputs = {role: {k: v for k, v in item.items() if k != "files"} for role, item in plan.get("inputs", {}).items()}
    return {**plan, "inputs": inputs}


def _file_changes(role: str, a: list[dict], b: list[dict]) -> list[str]:
    out = []
    # a remote folder's files carry the store's pin instead of a sha256
    ident = lambda f: f"{f['sha256'][:12]}…" if f.get("sha256") else json.dumps(f.get("pin"), sort_keys=True)  # noqa: E731
    for path, old, new in file_changes({f["path"]: ident(f) for f in a}, {f["path"]: ident(f) for f in b}):
        if new is None:
            out.append(f"inputs.{role}.files: {path} removed")
        elif old is None:
            out.append(f"inputs.{role}.files: {path} added")
        else:
            out.append(f"inputs.{role}.files: {path} changed ({old} -> {new})")
    return out


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value, ensure_ascii=False, sort_keys=True)
