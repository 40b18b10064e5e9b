"""spec file -> pinned run plan: ``compile_spec`` reads top to bottom as load, resolve, check, build."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ftc
from ftc.errors import _UNSET, PlanInvalid
from ftc.spec import JobSpec, LoadedSpec, load_spec
from ftc.spec.architectures import Architecture
from ftc.spec.canonical import digest_of
from ftc.spec.llmforge import NO_EFFECT
from ftc.spec.plan import Plan, valid_plan
from ftc.spec.plan_format import PLAN_VERSION, STORE_SCHEMES, launch_command, seal_plan
from ftc.spec.text import redact
from ftc.stores.atomic import write_text_atomic
from ftc.stores.downloads import run_downloads
from ftc.stores.hashing import StatCache, cache_dir
from ftc.stores.sources import InputNotFound, ResolveContext, ResolvedInput, hub_input, resolve_location

from ._data_checks import check_chat_data, check_context_length
from ._deepspeed import deepspeed_config
from ._model_checks import check_adapter, check_architecture, check_target_modules
from ._parent_checks import check_parent_lineage

__all__ = ["CheckedSpec", "CompileResult", "build_plan", "check_inputs", "compile_spec", "resolve_inputs", "write_plan"]

# where each input's location is written in the spec
INPUT_KEYS: dict[str, tuple[str, ...]] = {
    "base_model": ("initial_base_model_ckpt_path",),
    "adapter": ("initial_adapter_model_ckpt_path",),
    "train": ("train_path",),
    "valid": ("valid_path",),
    "deepspeed_config": ("deepspeed", "config_path"),
}


@dataclass
class CompileResult:
    plan: Plan
    warnings: list[str] = field(default_factory=list)
    #: files whose digest came from the stat cache / were hashed
    cache_hits: int = 0
    cache_misses: int = 0


def compile_spec(
    spec_path: str | Path,
    plan_dir: str | Path | None = None,
    *,
    cache: StatCache | None = None,
    allow_unpinned: bool = False,
) -> CompileResult:
    """Validate the spec at ``spec_path``, pin every input and the image, and build the plan.

    ``plan_dir`` is the folder the plan will be written to (relative paths in the plan are relative to it; default:
    the current folder). Raises :class:`~ftc.errors.SpecInvalid` with every problem found, and the engine's errors
    when the spec's image cannot be pinned (unless ``allow_unpinned``: then the plan says it is not reproducible).
    """
    loaded = load_spec(spec_path, remember_valid_in=cache_dir() / "validated")
    if loaded.spec is None:
        loaded.raise_if_problems()
    own_cache = cache is None
    cache = StatCache() if cache is None else cache
    try:
        ctx = ResolveContext(base_dir=loaded.source.base_dir, plan_dir=Path(plan_dir or "."), cache=cache)
        inputs = resolve_inputs(loaded, ctx)
        checked = check_inputs(loaded, inputs, cache)
        _check_output_dir(loaded, ctx)
        loaded.raise_if_problems()
        image = pin_spec_image(checked.spec.image, allow_unpinned=allow_unpinned)
        out = checked.spec.output_dir
        output_dir = out.rstrip("/") + "/" if out.startswith(STORE_SCHEMES) else ctx.plan_location(out)
        plan = build_plan(checked, inputs, output_dir=output_dir, image=image, folder=ctx.plan_dir)
        return CompileResult(plan, _warnings(plan, checked.arch), cache.hits, cache.misses)
    finally:
        if own_cache:
            cache.close()


def resolve_inputs(loaded: LoadedSpec, ctx: ResolveContext) -> dict[str, ResolvedInput]:
    """Pin every input the spec names; an input that cannot be found becomes a problem, not an exception."""
    spec = loaded.spec
    locations = {
        "base_model": spec.initial_base_model_ckpt_path,
        "adapter": spec.initial_adapter_model_ckpt_path,
        "train": spec.train_path,
        "valid": spec.valid_path,
        "deepspeed_config": spec.deepspeed.config_path,
    }
    inputs: dict[str, ResolvedInput] = {}
    given = {role: location for role, location in locations.items() if location is not None}
    # at once: a store that does not answer costs one time-out, not one per input (every problem is still listed;
    # Ctrl-C stops the downloads)
    jobs = {role: functools.partial(resolve_location, location, ctx) for role, location in given.items()}
    results = run_downloads(jobs, first_failure_stops=False)
    for role, result in results.items():  # problems in the spec's order
        location = given[role]
        try:
            if isinstance(result, BaseException):
                raise result
            inputs[role] = result
        except InputNotFound as exc:
            at = INPUT_KEYS[role] + (("dvc",) if not isinstance(location, str) else ())
            value = redact(location) if isinstance(location, str) else _UNSET
            loaded.problems.append(loaded.problem(at, str(exc), exc.hint, kind=exc.reason, value=value))
    if spec.initial_base_model_ckpt_path is None:
        inputs["base_model"] = hub_input(spec.model_id)
    return inputs


@dataclass(frozen=True)
class CheckedSpec:
    """A spec checked against its inputs, with what the checks derived (context length, the adapter's LoRA config)."""

    spec: JobSpec
    arch: Architecture | None
    mode: str  # full | lora-new | lora-continue
    deepspeed: dict[str, Any]
    #: the llmforge keys given and what each became (the plan's ``llmforge`` section; empty: none)
    llmforge: dict[str, Any] = field(default_factory=dict)


def check_inputs(loaded: LoadedSpec, inputs: dict[str, ResolvedInput], cache: StatCache | None) -> CheckedSpec:
    """Check the spec against its inputs, adding to ``loaded.problems``; fill in what the inputs decide."""
    spec = loaded.spec
    arch = check_architecture(loaded, inputs["base_model"]) if "base_model" in inputs else None
    lora = spec.lora_config
    if "adapter" in inputs:
        lora = check_adapter(loaded, inputs["adapter"])
    if arch is not None and lora is not None:
        check_target_modules(loaded, arch, lora)
    for role in ("base_model", "adapter"):
        if role in inputs:
            check_parent_lineage(loaded, INPUT_KEYS[role], inputs[role])
    for role in ("train", "valid"):
        if role in inputs:
            inputs[role] = check_chat_data(loaded, INPUT_KEYS[role], inputs[role], cache)
    context_length, rope_scaling = check_context_length(loaded, arch)
    if spec.initial_adapter_model_ckpt_path is not None:
        mode = "lora-continue"
    elif lora is not None:
        mode = "lora-new"
    else:
        mode = "full"
    spec = spec.replace(
        lora_config=lora,
        context_length=context_length,
        rope_scaling=rope_scaling,
        training_mode="full" if mode == "full" else "lora",
    )
    loaded.spec = spec
    ds_file = inputs.get("deepspeed_config")
    hidden_size = arch.config.get("hidden_size") if arch is not None else None
    ds = deepspeed_config(
        loaded, spec.num_devices, ds_file.local_path if ds_file is not None else None,
        hidden_size=hidden_size if type(hidden_size) is int else None,
        digest=ds_file.entry.digest if ds_file is not None else None,
    )  # fmt: skip
    return CheckedSpec(spec, arch, mode, ds, loaded.llmforge)


def build_plan(
    checked: CheckedSpec,
    inputs: dict[str, ResolvedInput],
    *,
    output_dir: str,
    image: dict[str, Any] | None,
    folder: Path = Path("."),
) -> Plan:
    """The sealed plan for a checked spec and its pinned inputs, to be written in ``folder``."""
    spec, arch = checked.spec, checked.arch
    nodes, per_node = spec.num_nodes, spec.processes_per_node
    normalized = spec.to_dict()
    plan = {
        "plan_version": PLAN_VERSION,
        "ftc_version": ftc.__version__,
        "spec_digest": digest_of(normalized),
        "spec": normalized,
        "mode": checked.mode,
        "architecture": {"model_id": arch.model_id, "source": arch.source, "config": dict(arch.config)},
        "inputs": {role: item.entry.to_dict() for role, item in sorted(inputs.items())},
        "image": image,
        "launch": {
            "nodes": nodes,
            "processes_per_node": per_node,
            "world_size": spec.num_devices,
            "command": launch_command(nodes, per_node),
        },
        "deepspeed": checked.deepspeed,
        "output": {"dir": output_dir},
    }
    if checked.llmforge:
        plan["llmforge"] = checked.llmforge
    found = credential_in({"inputs": plan["inputs"], "output": plan["output"], "image": plan["image"]})
    if found is not None:  # every location was checked when read: this is the plan writer's own last look
        raise PlanInvalid(
            f"the plan would hold a credential at {found[0]} ({redact(found[1])}); nothing was written"
            "\n    fix: remove it from the spec or the input's configuration; credentials come from the environment"
        )
    # the same check every reader of a plan makes (a recompile remembers the schema part, as for the spec)
    return valid_plan(seal_plan(plan), folder, remember_in=cache_dir() / "validated")


def credential_in(value: Any, path: str = "$") -> tuple[str, str] | None:
    """(JSON path, string) of the first string in ``value`` that holds a credential (what
    :func:`ftc.spec.text.redact` would change: a URL's user-info, a secret query parameter), or None."""
    if isinstance(value, str):
        return (path, value) if redact(value) != value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = credential_in(item, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]")
        if found is not None:
            return found
    return None


def _check_output_dir(loaded: LoadedSpec, ctx: ResolveContext) -> None:
    """The output folder may not exist yet, but it must not be a file (nor a device: /dev/null). A store prefix
    needs a bucket and a name under it (the run's checkpoints go under it)."""
    out = loaded.spec.output_dir
    if redact(out) != out:
        loaded.problems.append(
            loaded.problem(
                ("output_dir",),
                f"{redact(out)} holds a credential (user:secret@ or a secret parameter), which would be written into "
                "the plan and every checkpoint's record",
                "remove it; store credentials come from the environment (AWS_*, GOOGLE_*) at run time",
                value=redact(out),
            )
        )
        return
    if out.startswith(STORE_SCHEMES):
        bucket, _, name = out.split("://", 1)[1].partition("/")
        if not bucket or not name.strip("/") or "//" in name or any(p in (".", "..") for p in name.split("/")):
            loaded.problems.append(
                loaded.problem(
                    ("output_dir",),
                    f"{out} is not a prefix in a bucket",
                    f"name one, e.g. {out.split('://')[0]}://BUCKET/runs/NAME/",
                    value=out,
                )
            )
        return
    if "://" in out:
        loaded.problems.append(
            loaded.problem(
                ("output_dir",), f"{out}: not a folder, s3:// or gs:// prefix", "name one of those", value=out
            )
        )
        return
    path = ctx.spec_path(out)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        loaded.problems.append(
            loaded.problem(
                ("output_dir",),
                f"{path} exists and is not a folder",
                "name a folder (it is made when the run starts), or move the file away",
                value=loaded.spec.output_dir,
            )
        )


def write_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan`` to ``path`` atomically (temp file in the same folder, then rename)."""
    return write_text_atomic(path, plan.text())


UNPINNED_NOTE = "not reproducible: the image is named by a tag that can move"


def pin_spec_image(ref: str | None, *, allow_unpinned: bool) -> dict[str, Any] | None:
    """The plan's ``image``: the spec's reference pinned by digest (asking the engine or the registry)."""
    if ref is None:
        return None
    from ftc.errors import EngineUnavailable, InputUnresolvable
    from ftc.images.engine import pin_image

    try:
        return pin_image(ref)
    except (EngineUnavailable, InputUnresolvable) as exc:
        if not allow_unpinned:
            exc.args = (f"{exc}\n    or compile with --allow-unpinned (the plan will say the run is not reproducible)",)
            raise
        return {"ref": ref, "requested": ref, "pinned": False, "note": UNPINNED_NOTE}


def _warnings(plan: Plan, arch: Architecture) -> list[str]:
    out = []
    base = plan.inputs["base_model"]
    if not base.pinned:
        out.append(
            f"base weights {base.uri} are not pinned (no revision is known at compile time); "
            "give initial_base_model_ckpt_path for a reproducible plan"
        )
    for role in ("train", "valid"):
        data = plan.inputs.get(role)
        if data is not None and data.bad_records:
            out.append(f"{role}: {data.bad_records} bad line(s) in {data.uri} will be skipped (skip_bad_examples)")
    fmt = plan.spec.generation_config.prompt_format
    if fmt is not None and not fmt.assistant.partition("{instruction}")[2]:
        out.append(
            "generation_config.prompt_format.assistant ends with {instruction}: no end-of-turn text is trained, so "
            "the model never learns to stop; add the tokenizer's end of turn (its eos token) after {instruction}"
        )
    image = plan.image
    if image is not None and not image.pinned:
        out.append(
            f"image {image.ref} is not pinned by digest (--allow-unpinned): runs of this plan are not reproducible"
        )
    elif image is not None and image.pin_kind == "image-id":
        out.append(
            f"image {image.requested} is pinned by its local image ID {image.digest[:19]}: only an engine that has "
            "this image can run the plan; push it to a registry for a plan that runs anywhere"
        )
    for key, what in plan.llmforge.items():
        if what["as"] is None:
            out.append(f"{key}: no effect in ftc ({NO_EFFECT[key]}); recorded in the plan")
    if plan.spec.lora_config is not None and arch.module_names() is None:
        out.append(
            f"ftc does not know the module names of model_type {arch.model_type!r}; "
            "lora_config.target_modules is checked only when training starts"
        )
    return out
