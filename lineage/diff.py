"""``ftc lineage diff A B``: why two checkpoints differ, from what their records and plans say: inputs (by pin),
settings (the spec key by key, from the plan each checkpoint carries), environment (package by package, Python, the
image), topology (processes, nodes, device, precision, ZeRO stage) and results (steps, tokens, eval losses side by
side, the exact match and a classifier's or a preference model's metrics at the last evaluation, which files
differ). A preference run's reference log-probabilities are compared by their pins too, and said to be the same when
they are. Reads the records as they are: ``ftc lineage verify`` says whether to trust them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.spec import lineage_schema
from ftc.spec.architectures import Architecture
from ftc.spec.canonical import ABSENT, differences, show_value
from ftc.spec.text import for_terminal

from . import checkpoint_folder, load
from .plan import PLAN_FILE, checkpoint_plan
from .show import source_name

__all__ = [
    "SECTIONS",
    "CheckpointDiff",
    "diff_checkpoints",
    "environment_differences",
    "input_differences",
    "recorded_differences",
    "reference_differences",
    "topology_differences",
]

SECTIONS = ("inputs", "settings", "environment", "topology", "results")
# where a run writes says nothing of what it trained: two runs to compare always write to different places
WHERE_ONLY = ("spec.output_dir",)


@dataclass
class CheckpointDiff:
    """What differs between checkpoints ``a`` and ``b``: lines by section (an empty section: the same), and in
    ``same`` what both share that a reader checks (a preference run's reference log-probabilities), said under its
    section and not counted as a difference."""

    a: str
    b: str
    sections: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SECTIONS})
    same: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SECTIONS})

    @property
    def identical(self) -> bool:
        return not any(self.sections.values())

    def text(self) -> str:
        head = [f"a: {self.a}", f"b: {self.b}"]
        if self.identical:
            same = "the histories are the same: inputs, settings, environment, topology, results"
            shared = [f"  {line}" for name in SECTIONS for line in self.same[name]]
            return "\n".join(for_terminal(line) for line in [*head, same, *shared])
        body = []
        for name in SECTIONS:
            lines = self.sections[name]
            body.append(f"{name}: " + ("the same" if not lines else f"{len(lines)} difference(s)"))
            body += [f"  {line}" for line in lines + self.same[name]]
        # names, locations and values come from records and plans (outside text): their control characters shown
        return "\n".join(for_terminal(line) for line in head + body)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "identical": self.identical, "sections": self.sections, "same": self.same}


def input_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Parents and datasets by role, compared by their pins (digests), with where each came from."""

    def by_role(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
        # a reproduction's original is what it is compared with, not one of its inputs
        entries = [*record.get("parents", []), *record.get("datasets", [])]
        return {e["role"]: e for e in entries if e.get("relation") != "reproduction-of"}

    def pin(entry: dict[str, Any]) -> str:
        files = entry.get("files")
        if isinstance(files, list) and files and all(isinstance(f, dict) and "sha256" in f for f in files):
            # a folder: its digest in this ftc's manifest format, so a record of an older ftc (format 1) compares
            from ftc.stores.hashing import FileDigest, manifest_digest

            return manifest_digest([FileDigest(str(f.get("path")), 0, str(f["sha256"])) for f in files])
        return entry.get("digest") or entry.get("sha256") or "(no digest)"  # parents: digest; datasets: sha256

    def pinned(entry: dict[str, Any]) -> bool:
        return bool(entry.get("digest") or entry.get("sha256"))

    ia, ib = by_role(a), by_role(b)
    lines = []
    for role in sorted(set(ia) | set(ib)):
        ea, eb = ia.get(role), ib.get(role)
        if ea is None or eb is None:
            only = "a" if eb is None else "b"
            entry = ea or eb
            lines.append(f"{role}: only in {only} ({pin(entry)} from {source_name(entry['source'])})")
        elif pin(ea) != pin(eb) or (not pinned(ea) and source_name(ea["source"]) != source_name(eb["source"])):
            # unpinned (hub weights by name): the name is all that says which weights they were
            lines.append(f"{role}: {pin(ea)} ({source_name(ea['source'])}) -> {pin(eb)} ({source_name(eb['source'])})")
        elif ea.get("relation") != eb.get("relation"):
            lines.append(f"{role}: relation {ea.get('relation')} -> {eb.get('relation')}")
    return lines + reference_differences(a, b)[0]


def reference_differences(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A preference run's reference log-probabilities, by the role of the data they score, compared by their
    digests: (the roles where they differ or only one record pins them, the roles where both pin the same)."""

    def pins(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {d["role"]: d["reference_logprobs"] for d in record.get("datasets", []) if d.get("reference_logprobs")}

    def text(pin: dict[str, Any]) -> str:
        return f"{pin.get('digest')} ({pin.get('pairs')} pairs)"

    pa, pb = pins(a), pins(b)
    differ, same = [], []
    for role in sorted(set(pa) | set(pb)):
        x, y = pa.get(role), pb.get(role)
        name = f"reference log-probs of {role}"
        if x is None or y is None:
            differ.append(f"{name}: only in {'a' if y is None else 'b'} ({text(x or y)})")
        elif x.get("digest") != y.get("digest"):
            differ.append(f"{name}: {text(x)} -> {text(y)}")
        else:
            same.append(f"{name}: the same in both, {text(x)}")
    return differ, same


#: what each record says of the model and how it was trained, compared whatever the plans say: a record names them
#: itself, and two records that agree on their spec digest may still disagree here
RECORDED = (("checkpoint", "model_id"), ("checkpoint", "kind"), ("plan", "mode"))


def recorded_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The model (``checkpoint.model_id``), the kind of weights and the training mode as each record states them,
    and an export's settings (merged, dtype, chat template, stop strings)."""
    lines = [
        f"{section}.{key}: {show_value(a.get(section, {}).get(key, ABSENT))} -> "
        f"{show_value(b.get(section, {}).get(key, ABSENT))}"
        for section, key in RECORDED
        if a.get(section, {}).get(key, ABSENT) != b.get(section, {}).get(key, ABSENT)
    ]
    lines += [
        f"{path}: {show_value(x)} -> {show_value(y)}"
        for path, x, y in differences(a.get("export", ABSENT), b.get("export", ABSENT), "export")
    ]
    return lines


def _settings(fa: Path, a: dict[str, Any], fb: Path, b: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What the records say of the model and mode, then the plans' spec and architecture, key by key (not where the
    runs wrote); when a checkpoint carries no plan, its spec digest. With what both share that a reader checks: LoRA
    targets written differently that reach the same modules (a stage 1 of all-linear, a stage 2 that inherited the
    modules it resolved to)."""
    lines = recorded_differences(a, b)
    pa, pb = a.get("plan", {}), b.get("plan", {})
    if pa.get("spec_digest") == pb.get("spec_digest") and pa.get("mode") == pb.get("mode"):
        return lines, []
    if not (fa / PLAN_FILE).exists() or not (fb / PLAN_FILE).exists():
        return [
            *lines,
            f"spec_digest: {pa.get('spec_digest')} -> {pb.get('spec_digest')} (a checkpoint carries no"
            f" {PLAN_FILE}: key by key needs both plans)",
        ], []
    da, db = checkpoint_plan(fa, a).to_dict(), checkpoint_plan(fb, b).to_dict()
    same: list[str] = []
    for section in ("spec", "architecture"):
        for path, x, y in differences(da.get(section), db.get(section), section):
            if path in WHERE_ONLY:
                continue
            if path != TARGETS:
                lines.append(f"{path}: {show_value(x)} -> {show_value(y)}")
                continue
            line, equal = _targets_line(x, da.get("architecture"), y, db.get("architecture"))
            (same if equal else lines).append(line)
    return lines, same


#: a LoRA's targets in a plan: compared by the modules they reach, not as written
TARGETS = "spec.lora_config.target_modules"
#: more layers than any model has: a plan that says so is compared as written
_MAX_LAYERS = 1024


def _reached(targets: Any, architecture: Any) -> set[str] | None:
    """The full names of the modules LoRA ``targets`` reach in a plan's architecture, by peft's rules (all-linear:
    every linear layer; a name: itself or a dotted suffix), or None where ftc does not know the architecture's
    layout, the targets are not names (a regular expression is compared as written, never run on a plan from a
    checkpoint), or the layout claims more than ``_MAX_LAYERS`` layers."""
    if not isinstance(architecture, dict) or not isinstance(architecture.get("config"), dict):
        return None
    layers = architecture["config"].get("num_hidden_layers")
    if not isinstance(layers, int) or not 0 < layers <= _MAX_LAYERS:
        return None  # a plan from a checkpoint is outside input: no billions of names built for it
    arch = Architecture(str(architecture.get("model_id")), architecture["config"], str(architecture.get("source")))
    names = arch.module_names()
    if names is None:
        return None
    if targets == "all-linear":
        return {n for n in names if n not in ("model.embed_tokens", "lm_head")}
    if isinstance(targets, str):
        return None  # a regular expression from a checkpoint's plan is never run here (one can take hours): as written
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        return {n for n in names if any(n == t or n.endswith("." + t) for t in targets)}
    return None


def _written(targets: Any) -> str:
    """Targets as written, a long list by its length (the modules themselves are the same on both sides)."""
    return f"a list of {len(targets)} names" if isinstance(targets, list) and len(targets) > 4 else show_value(targets)


def _targets_line(x: Any, arch_a: Any, y: Any, arch_b: Any) -> tuple[str, bool]:
    """The LoRA targets' line, and whether a and b reach the same modules (written differently: all-linear and
    the modules it resolved to, the same names in another order)."""
    ra, rb = _reached(x, arch_a), _reached(y, arch_b)
    written = f"{TARGETS}: {show_value(x)} -> {show_value(y)}"
    if ra is None or rb is None:
        return written, False
    if ra == rb:
        how = "as written" if isinstance(x, list) and isinstance(y, list) else "resolved in each plan's architecture"
        return (
            f"{TARGETS}: the same {len(ra)} modules in both ({_written(x)} in a, {_written(y)} in b, {how})",
            True,
        )
    only_a, only_b = sorted(ra - rb), sorted(rb - ra)
    parts = [f"only a's reach {', '.join(only_a[:8])}{'…' if len(only_a) > 8 else ''}"] if only_a else []
    parts += [f"only b's reach {', '.join(only_b[:8])}{'…' if len(only_b) > 8 else ''}"] if only_b else []
    return f"{written} ({len(ra)} modules -> {len(rb)}: {'; '.join(parts)})", False


def environment_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    ea, eb = a.get("environment", {}), b.get("environment", {})
    lines = [
        f"{key}: {show_value(x)} -> {show_value(y)}"
        for key in ("python", "platform")
        for _, x, y in differences(ea.get(key), eb.get(key), key)
    ]
    ia, ib = ea.get("image") or {}, eb.get("image") or {}
    if ia.get("id") != ib.get("id"):
        lines.append(f"image: {ia.get('requested', '(none)')} {ia.get('id', '')} -> {ib.get('requested', '(none)')} "
                     f"{ib.get('id', '')}".replace("  ", " ").strip())  # fmt: skip
    pa, pb = ea.get("packages", {}), eb.get("packages", {})
    lines += [f"package {name}: {show_value(x)} -> {show_value(y)}" for name, x, y in differences(pa, pb)]
    return lines


def topology_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    xa, xb = a.get("execution", {}), b.get("execution", {})
    return [f"{path}: {show_value(x)} -> {show_value(y)}" for path, x, y in differences(xa, xb)]


def _results(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    ra, rb = a.get("results", {}), b.get("results", {})
    lines = [
        f"{key}: {show_value(ra.get(key))} -> {show_value(rb.get(key))}"
        for key in ("status", "step", "total_steps", "tokens_trained", "train_loss", "eval_loss")
        if ra.get(key) != rb.get(key)
    ]
    evals_a = {e["step"]: e.get("eval_loss") for e in ra.get("evals", [])}
    evals_b = {e["step"]: e.get("eval_loss") for e in rb.get("evals", [])}
    for step in sorted(set(evals_a) | set(evals_b)):
        x, y = evals_a.get(step), evals_b.get(step)
        if x != y:
            lines.append(f"eval loss at step {step}: {show_value(x)} -> {show_value(y)}")
    lines += _last_evaluation(ra.get("evals", []), rb.get("evals", []))
    files_a = {f["path"]: f["sha256"] for f in a.get("checkpoint", {}).get("files", [])}
    files_b = {f["path"]: f["sha256"] for f in b.get("checkpoint", {}).get("files", [])}
    for path in sorted(set(files_a) | set(files_b)):
        if path not in files_b:
            lines.append(f"file {path}: only in a")
        elif path not in files_a:
            lines.append(f"file {path}: only in b")
        elif files_a[path] != files_b[path]:
            lines.append(f"file {path}: {files_a[path][:12]}… -> {files_b[path][:12]}…")
    return lines


#: an evaluation's fields that are not its scores at the last evaluation: where it is, and the losses compared above
_NOT_SCORES = ("step", "epoch", "eval_loss", "train_loss")


def _last_evaluation(evals_a: list[dict[str, Any]], evals_b: list[dict[str, Any]]) -> list[str]:
    """The scores as each history's last evaluation gave them (two stages' steps are not comparable): every scalar
    field the lineage schema gives an evaluation (the exact match of generated answers; a classifier's macro shares;
    a preference model's reward accuracy, margin, rewards and log-probabilities), then each class's. The records
    were read against the schema: each is in the shape it gives."""
    last_a, last_b = (evals[-1] if evals else {} for evals in (evals_a, evals_b))
    fields = lineage_schema()["properties"]["results"]["properties"]["evals"]["items"]["properties"]
    keys = [k for k, v in fields.items() if k not in _NOT_SCORES and _scalar(v)]
    pairs = [(key, last_a.get(key), last_b.get(key)) for key in keys]
    classes_a, classes_b = last_a.get("eval_classes") or {}, last_b.get("eval_classes") or {}
    for label in list(classes_a) + [c for c in classes_b if c not in classes_a]:
        x, y = classes_a.get(label, {}), classes_b.get(label, {})
        pairs += [(f"{name} of {label}", x.get(name), y.get(name)) for name in ("precision", "recall", "f1", "prauc")]
    return [f"{name} (last evaluation): {show_value(x)} -> {show_value(y)}" for name, x, y in pairs if x != y]


def _scalar(field: dict[str, Any]) -> bool:
    """Whether a schema field is one number (null allowed): a share (``$defs/share``) or a ``number``."""
    types = field.get("type")
    return field.get("$ref") == "#/$defs/share" or types == "number" or (isinstance(types, list) and "number" in types)


def diff_checkpoints(a: Path, b: Path) -> CheckpointDiff:
    """What differs between the histories of the checkpoints at ``a`` and ``b`` (checkpoint folders, or run output
    folders: their best checkpoint)."""
    fa, fb = checkpoint_folder(a), checkpoint_folder(b)
    ra, rb = load(fa), load(fb)
    out = CheckpointDiff(str(fa), str(fb))
    out.sections["inputs"] = input_differences(ra, rb)
    out.same["inputs"] = reference_differences(ra, rb)[1]
    out.sections["settings"], out.same["settings"] = _settings(fa, ra, fb, rb)
    out.sections["environment"] = environment_differences(ra, rb)
    out.sections["topology"] = topology_differences(ra, rb)
    out.sections["results"] = _results(ra, rb)
    return out
