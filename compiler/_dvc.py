"""``ftc compile SPEC -o PLAN --emit dvc``: the spec as a stage of a DVC pipeline (``dvc.yaml``), so ``dvc repro``
reruns it when the spec, its local data or weights, or a parent stage's checkpoints change, and only then.

The stage compiles the spec, trains the plan and verifies the chain of its checkpoint: its dependencies are the spec
and every local input; its outputs the plan and the checkpoints, its metrics ``summary.json``; the pipeline's eval
loss plot gains the run's curve. A local input inside another stage's run (``runs/stage1/best``) depends on that
stage's checkpoints, which is what chains stages. Written from the validated spec alone: a parent checkpoint need
not exist yet (the stage's own ``ftc compile`` pins it when DVC runs it). Inputs in stores are pinned by the plan, not
tracked by DVC.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from ftc.errors import UsageError
from ftc.spec import SPEC_LIMIT, JobSpec, load_spec
from ftc.spec.plan_format import STORE_SCHEMES
from ftc.spec.reading import read_bounded_text
from ftc.spec.text import for_terminal, redact

__all__ = ["HEADER", "dvc_stage", "write_dvc_stage"]

HEADER = (
    "# Written by `ftc compile SPEC -o PLAN --emit dvc` (one stage per spec; run it again to update a stage).\n"
    "# `dvc repro` compiles, trains and verifies each stage whose spec, local inputs or parent stage changed;\n"
    "# `dvc metrics show` lists each run's eval losses, `dvc plots show` draws their eval loss curves.\n"
)
_PLOT = "eval loss"


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()


def _local_inputs(spec: JobSpec, spec_dir: Path) -> list[Path]:
    found = []
    for location in (spec.initial_base_model_ckpt_path, spec.initial_adapter_model_ckpt_path, spec.train_path,
                     spec.valid_path):  # fmt: skip
        if isinstance(location, str) and "://" not in location:
            path = Path(os.path.expanduser(location))
            found.append(path if path.is_absolute() else spec_dir / path)
    return found


def _literal(text: str) -> str:
    """``text`` as a literal in dvc.yaml: DVC reads ``${...}`` in every string of a stage (keys too) as a variable
    (from params.yaml or vars), and ``\\${`` as the two characters ``${`` (checked with ``dvc repro``)."""
    return text.replace("${", "\\${")


def _one_line(text: str, what: str, fix: str) -> str:
    """``text``, refused when it holds a control character: DVC runs each line of a command as a command of its
    own, so a newline in a path would split the stage's command in two."""
    if for_terminal(text) != text:
        raise UsageError(
            f"{what} '{for_terminal(text)}' holds a control character (a newline, a tab, an escape, or one that "
            f"hides text): it cannot be written into a DVC stage's command\n    fix: {fix}"
        )
    return text


# DVC addresses a stage as dvc.yaml:NAME and refuses names with punctuation other than _ and - (dvc stage add)
_STAGE_NAME = re.compile(r"\w[\w-]{0,127}")


def _stage_name(name: str, given: bool) -> str:
    if not _STAGE_NAME.fullmatch(name):
        fix = "give another name with --dvc-stage NAME" if given else "name the stage with --dvc-stage NAME"
        raise UsageError(
            f"'{for_terminal(name)}' cannot name a DVC stage: DVC addresses stages as dvc.yaml:NAME, so a name is "
            f"letters, digits, _ and - (at most 128, not starting with -)\n    fix: {fix}"
        )
    return name


def _path_of(entry: Any) -> str | None:
    """The path of an ``outs`` entry of a stage as DVC takes it: ``path`` or ``{path: options}``; None otherwise."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1 and isinstance(next(iter(entry)), str):
        return next(iter(entry))
    return None


def _check_existing(document: dict[str, Any], dvc_file: Path) -> None:
    """The parts of an existing pipeline file that writing a stage reads: each stage a mapping whose ``outs`` is a
    list of paths; ``plots`` a list. Anything else is named, not a traceback."""
    fix = "correct it (see https://dvc.org/doc/user-guide/project-structure/dvcyaml-files), or give another --dvc-file"
    for name, stage in document["stages"].items():
        shown = for_terminal(str(name))
        if not isinstance(stage, dict):
            raise UsageError(f"{dvc_file}: stage '{shown}' is not a mapping (cmd, deps, outs)\n    fix: {fix}")
        outs = stage.get("outs") or []
        wrong = [e for e in outs if _path_of(e) is None] if isinstance(outs, list) else [outs]
        if wrong:
            raise UsageError(
                f"{dvc_file}: stage '{shown}': outs is not a list of paths (or path: options): found "
                f"{for_terminal(repr(wrong[0]))[:80]}\n    fix: {fix}"
            )
    plots = document.get("plots", [])
    if plots is not None and not isinstance(plots, list):
        raise UsageError(f"{dvc_file}: plots is not a list of plot definitions\n    fix: {fix}")
    for plot in plots or []:
        if isinstance(plot, dict) and _PLOT in plot:
            curve = plot[_PLOT]
            if not isinstance(curve, dict) or not isinstance(curve.get("y", {}), dict):
                raise UsageError(
                    f"{dvc_file}: the plot {_PLOT!r} is not one ftc wrote (x, y: {{file: field}})\n    fix: {fix}"
                )


def _produced_by(dep: str, stages: dict[str, Any], own: str) -> str | None:
    """The output of another stage that ``dep`` lies in: itself or below it, or a run folder (or its best/latest
    link) whose ``checkpoints`` another stage writes."""
    for name, stage in stages.items():
        if name == own:
            continue
        for entry in stage.get("outs") or []:
            out = _path_of(entry)
            if dep == out or dep.startswith(out.rstrip("/") + "/"):
                return out
            run = out.rsplit("/", 1)[0] if out.endswith("/checkpoints") else None
            if run is not None and (dep == run or dep.rsplit("/", 1)[0] == run):
                return out
    return None


def dvc_stage(spec_path: Path, plan_path: Path, root: Path, stages: dict[str, Any], name: str) -> dict[str, Any]:
    """The stage of the spec at ``spec_path`` (compiled to ``plan_path``) in the pipeline at ``root``."""
    loaded = load_spec(spec_path)
    loaded.raise_if_problems()
    spec = loaded.spec
    spec_dir = spec_path.resolve().parent
    if spec.output_dir.startswith(STORE_SCHEMES):
        raise UsageError(
            f"{spec_path}: output_dir {redact(spec.output_dir)} is in a store, but a DVC stage's outputs are files in"
            " the repository (what `dvc repro` checks and the next stage depends on)"
            "\n    fix: give the stage a folder as output_dir, or run it with `ftc run` outside the pipeline"
        )
    out = Path(os.path.expanduser(spec.output_dir))
    out = _relative(out if out.is_absolute() else spec_dir / out, root)
    spec_rel, plan_rel = _relative(spec_path, root), _relative(plan_path, root)
    _one_line(out, "output_dir", "give the run a folder whose name is one line of printable characters")
    _one_line(spec_rel, "the spec's path", "rename the spec file (or its folder)")
    _one_line(plan_rel, "the plan's path (-o)", "give -o a path of printable characters")
    deps = [_literal(spec_rel)]  # every string in dvc.yaml as a literal: a ${ in a path is no variable
    for path in _local_inputs(spec, spec_dir):
        dep = _literal(_one_line(_relative(path, root), "the input", "rename it, or give its path without it"))
        dep = _produced_by(dep, stages, name) or dep
        if dep not in deps:
            deps.append(dep)
    q = shlex.quote  # the paths as one shell word each, whatever they hold
    command = f"ftc compile {q(spec_rel)} -o {q(plan_rel)} && ftc run {q(plan_rel)} && ftc lineage verify {q(out)}"
    out, plan_rel = _literal(out), _literal(plan_rel)
    return {
        "cmd": _literal(command),
        "deps": deps,
        "outs": [{plan_rel: {"cache": False}}, {f"{out}/checkpoints": {"cache": False}}],
        "metrics": [{f"{out}/summary.json": {"cache": False}}],
    }


def write_dvc_stage(spec_path: Path, plan_path: Path, dvc_file: Path, name: str | None = None) -> tuple[Path, str]:
    """Add (or replace) the spec's stage in ``dvc_file`` (made if absent); return the file and the stage's name."""
    if plan_path is None or str(plan_path) == "-":
        raise UsageError("--emit dvc writes a stage that compiles to a plan file: give -o PLAN (a file)")
    given = name is not None
    name = name or (spec_path.stem if spec_path.stem not in ("job", "spec") else spec_path.resolve().parent.name)
    name = _stage_name(name, given)
    root = dvc_file.resolve().parent
    document: dict[str, Any] = {}
    if dvc_file.exists() or dvc_file.is_symlink():
        text = read_bounded_text(dvc_file, limit=SPEC_LIMIT, what="DVC pipeline file", example="dvc.yaml")
        try:
            document = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"{dvc_file}: not YAML ({str(exc).splitlines()[0]}); give another --dvc-file") from None
        if not isinstance(document, dict) or not isinstance(document.get("stages", {}), dict):
            raise UsageError(f"{dvc_file}: not a DVC pipeline file (no stages mapping); give another --dvc-file")
    stages = document.setdefault("stages", {})
    _check_existing(document, dvc_file)
    stages[name] = dvc_stage(spec_path, plan_path, root, stages, name)
    summary = next(iter(stages[name]["metrics"][0]))
    if document.get("plots") is None:
        document["plots"] = []
    plots = document["plots"]
    curve = next((p for p in plots if isinstance(p, dict) and _PLOT in p), None)
    if curve is None:
        curve = {_PLOT: {"x": "step", "y": {}}}
        plots.append(curve)
    curve[_PLOT].setdefault("y", {})[summary] = "eval_loss"
    ordered = {"stages": stages, "plots": plots, **{k: v for k, v in document.items() if k not in ("stages", "plots")}}
    text = HEADER + yaml.safe_dump(ordered, sort_keys=False, width=120)
    from ftc.stores.atomic import write_text_atomic

    write_text_atomic(dvc_file, text)
    return dvc_file, name
