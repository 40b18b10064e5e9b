"""Checks of the spec against its weights: the architecture of the base weights, the adapter, the LoRA targets.

Each function appends :class:`~ftc.errors.Problem` s to the loaded spec (so every problem is reported at once)
and returns what the plan needs.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ftc.spec import LoadedSpec, LoraConfig
from ftc.spec.architectures import (
    COMPARED_FIELDS,
    Architecture,
    closest_model_ids,
    config_mismatches,
    known_architecture,
    known_model_ids,
)
from ftc.spec.reading import ChangedSincePinned, MiB, NotReadable, read_pinned_text
from ftc.stores.safetensors_header import BadSafetensors, TensorInfo, read_safetensors_header
from ftc.stores.sources import SOURCES, ResolvedInput
from ftc.stores.weights_folder import CODE_FIX, code_in_folder, code_in_names, describe_code

__all__ = ["check_adapter", "check_architecture", "check_target_modules"]

_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _read_json(loaded: LoadedSpec, at: tuple, item: ResolvedInput, name: str, *, cannot: str, fix: str) -> dict | None:
    """The JSON object of the folder ``item``'s file ``name``, as the plan pins it; else None and a problem, located at
    ``at``: ``cannot`` (a template, "{}" the reason) with ``fix``."""
    try:
        text = read_pinned_text(
            item.local_path / name, sha256=item.entry.file_sha256.get(name), limit=16 * MiB, what="JSON"
        )
        data = json.loads(text)
    except ChangedSincePinned as exc:
        loaded.problems.append(loaded.problem(at, str(exc), exc.fix, kind="changed"))
        return None
    except (NotReadable, json.JSONDecodeError, RecursionError) as exc:
        loaded.problems.append(loaded.problem(at, cannot.format(exc), fix, kind="input"))
        return None
    if not isinstance(data, dict):
        loaded.problems.append(loaded.problem(at, cannot.format("not a JSON object"), fix, kind="input"))
        return None
    return data


def _weights_tensors(loaded: LoadedSpec, at: tuple, item: ResolvedInput) -> dict[str, TensorInfo] | None:
    """Every tensor the folder's safetensors files hold, each file's header checked against the file (a bad file is a
    problem). None when a file is bad, or not on this machine (a remote folder's weights are read at run time)."""
    if item.local_path is None:
        return None
    tensors: dict[str, TensorInfo] = {}
    for name in item.names:
        path = item.local_path / name
        if not name.endswith(".safetensors") or not path.is_file():
            if name.endswith(".safetensors"):
                return None
            continue
        try:
            tensors.update(read_safetensors_header(path).tensors)
        except (BadSafetensors, OSError) as exc:
            loaded.problems.append(
                loaded.problem(
                    at, f"not a valid safetensors file: {exc}", "replace it with the file as saved", kind="input"
                )
            )
            return None
    return tensors


def _shape_problems(loaded: LoadedSpec, at: tuple, arch: Architecture, tensors: dict[str, TensorInfo]) -> None:
    """The weights hold every tensor of the architecture, each of its shape (a config.json that lies is caught)."""
    expected = arch.tensor_shapes()
    if expected is None:
        return
    wrong = [
        f"{n} {list(tensors[n].shape)} (expected {list(s)})"
        for n, s in expected.items()
        if n in tensors and tensors[n].shape != s
    ]
    missing = [n for n in expected if n not in tensors]
    if wrong or missing:
        what = (
            [f"{len(wrong)} tensor(s) of another shape: " + ", ".join(wrong[:3]) + (" ..." if len(wrong) > 3 else "")]
            if wrong
            else []
        )
        what += (
            [f"{len(missing)} tensor(s) missing: " + ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")]
            if missing
            else []
        )
        loaded.problems.append(
            loaded.problem(
                at,
                f"the weights do not match the architecture of {arch.model_id} ({arch.source}): " + "; ".join(what),
                "check that config.json describes these weights, and that the folder holds all of their files",
                kind="input",
            )
        )


def _code_problems(loaded: LoadedSpec, at: tuple, item: ResolvedInput) -> list:
    """A weights folder holding Python files, or a config naming classes in them (``auto_map``), is refused: loading
    it could run that code. A folder in a store is judged by its listing and its small JSON files here (those are
    what this machine holds of it), and whole again when a run downloads it."""
    found = code_in_folder(item.local_path) if item.local_path is not None else []
    found += [line for line in (f"a Python file: {name}" for name in code_in_names(item.names)) if line not in found]
    return [loaded.problem(at, describe_code(found), CODE_FIX, kind="input")] if found else []


def _weights_problems(loaded: LoadedSpec, at: tuple, item: ResolvedInput, wanted: str) -> list:
    """A weights folder must hold safetensors; pickled checkpoints are refused (loading them runs code)."""
    names = item.names
    if any(n.endswith(".safetensors") for n in names):
        return []
    pickled = [n for n in names if n.endswith(_PICKLED)]
    if pickled:
        return [
            loaded.problem(
                at,
                f"only pickled weights here ({', '.join(pickled[:3])}): ftc loads safetensors only, because loading a "
                "pickle can run arbitrary code",
                "convert once, where you trust the file: load it with transformers and save_pretrained(..., "
                "safe_serialization=True)",
                kind="input",
            )
        ]
    return [loaded.problem(at, f"no {wanted} in this folder", f"point at the folder that holds {wanted}", kind="input")]


def check_architecture(loaded: LoadedSpec, base: ResolvedInput) -> Architecture | None:
    """The architecture to train: model_id's published config, compared with the weights' config.json."""
    spec = loaded.spec
    model_id = spec.model_id
    registry = known_architecture(model_id)
    at = ("initial_base_model_ckpt_path",)
    if SOURCES[base.source].names_a_model:  # named by its model id: no files to read here
        if registry is None:
            close = closest_model_ids(model_id)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            hint += (
                "For other architectures, give initial_base_model_ckpt_path with a config.json (ftc model ids: "
                + ", ".join(known_model_ids()[:4])
                + ", ...)"
            )
            loaded.problems.append(
                loaded.problem(
                    ("model_id",),
                    "unknown model_id, and no initial_base_model_ckpt_path whose config.json would describe it",
                    hint,
                    value=model_id,
                )
            )
            return None
        return Architecture(model_id, registry, "registry")
    if base.local_path is None:
        return Architecture(model_id, registry, "registry") if registry else None
    if base.kind != "dir":
        loaded.problems.append(
            loaded.problem(
                at,
                "must be a folder (config.json and *.safetensors), not a file",
                "point at the folder that holds the weights",
                kind="input",
                value=spec.initial_base_model_ckpt_path,
            )
        )
        return None
    loaded.problems += _code_problems(loaded, at, base)
    loaded.problems += _weights_problems(loaded, at, base, "*.safetensors weights")
    tensors = _weights_tensors(loaded, at, base)
    arch = _base_architecture(loaded, base, registry)
    if arch is not None and tensors:
        _shape_problems(loaded, at, arch, tensors)
    return arch


def _base_architecture(loaded: LoadedSpec, base: ResolvedInput, registry: dict | None) -> Architecture | None:
    """The architecture of the weights folder ``base``: its config.json, compared with model_id's when ftc knows it."""
    model_id = loaded.spec.model_id
    at = ("initial_base_model_ckpt_path",)
    config_path = base.local_path / "config.json"
    if not config_path.is_file():
        if registry is None:
            loaded.problems.append(
                loaded.problem(
                    ("model_id",),
                    "unknown model_id, and the weights folder has no config.json to describe it",
                    "add the model's config.json to the weights folder, or use a model_id ftc knows",
                    value=model_id,
                )
            )
            return None
        return Architecture(model_id, registry, "registry")
    config = _read_json(
        loaded, at, base, "config.json", cannot="config.json cannot be read: {}", fix="fix or replace config.json"
    )
    if config is None:
        return None
    if registry is not None:
        mismatches = config_mismatches(config, registry)  # the family's own fields too (experts, soft-capping)
        if mismatches:
            matching = [
                i
                for i in known_model_ids()
                if all(known_architecture(i).get(f) == config.get(f) for f in COMPARED_FIELDS)
                and not config_mismatches(config, known_architecture(i))
            ]
            hint = (
                f"set model_id to one that matches the weights ({', '.join(matching[:3])})"
                if matching
                else "set model_id to the architecture of these weights, "
                "or check that the folder holds the weights you meant"
            )
            for f, found in mismatches:
                loaded.problems.append(
                    loaded.problem(
                        at, f"the weights' config.json has {found} but {model_id} has {registry.get(f)!r}", hint
                    )
                )
    return Architecture(model_id, config, "checkpoint")


# adapter_config.json keys that define the adapter's shape and meaning: they must agree with the spec
_ADAPTER_FIXED = (
    "r",
    "lora_alpha",
    "target_modules",
    "use_rslora",
    "use_dora",
    "bias",
    "modules_to_save",
    "fan_in_fan_out",
)


def check_adapter(loaded: LoadedSpec, adapter: ResolvedInput) -> LoraConfig | None:
    """The LoRA config to train with when continuing ``adapter``: the adapter's own, with the keys the spec sets
    (which must agree on every shape-defining key)."""
    spec = loaded.spec
    at = ("initial_adapter_model_ckpt_path",)
    if adapter.local_path is None:
        return spec.lora_config
    if adapter.kind != "dir":
        loaded.problems.append(
            loaded.problem(
                at,
                "must be a folder (adapter_config.json and adapter_model.safetensors), not a file",
                "point at the adapter's folder",
                kind="input",
            )
        )
        return None
    loaded.problems += _code_problems(loaded, at, adapter)
    loaded.problems += _weights_problems(loaded, at, adapter, "adapter_model.safetensors")
    _weights_tensors(loaded, at, adapter)  # every safetensors file checked against its header
    config = _read_json(
        loaded, at, adapter, "adapter_config.json", cannot="no readable adapter_config.json ({})",
        fix="point at a folder saved by peft's save_pretrained",
    )  # fmt: skip
    if config is None:
        return None
    if config.get("peft_type", "LORA") != "LORA":
        loaded.problems.append(
            loaded.problem(
                at,
                f"the adapter is {config.get('peft_type')}, not LORA",
                "continue a LoRA adapter, or train a new one with lora_config",
            )
        )
        return None
    base_name = config.get("base_model_name_or_path")
    if spec.initial_base_model_ckpt_path is None and _looks_like_hub_id(base_name) and base_name != spec.model_id:
        loaded.problems.append(
            loaded.problem(
                at,
                f"the adapter was trained on {base_name}, but model_id is {spec.model_id}",
                f"set model_id: {base_name}, or give the adapter's base weights as initial_base_model_ckpt_path",
            )
        )
    from_adapter = _lora_from_adapter(config)
    written = loaded.source.data.get("lora_config") if isinstance(loaded.source.data, dict) else None
    written = written if isinstance(written, dict) else {}
    if spec.lora_config is None:
        return from_adapter
    differ = []
    for key in _ADAPTER_FIXED:
        if key in written and not _same(key, getattr(spec.lora_config, key), getattr(from_adapter, key)):
            differ.append(key)
            loaded.problems.append(
                loaded.problem(
                    ("lora_config", key),
                    f"the spec says {key} = {_show(getattr(spec.lora_config, key))}"
                    f" but the adapter has {_show(getattr(from_adapter, key))}",
                    f"remove {key} from lora_config to keep the adapter's, or train a new adapter",
                )
            )
    chosen = {
        key: getattr(spec.lora_config, key) if key in written else getattr(from_adapter, key)
        for key in LoraConfig.__dataclass_fields__
    }
    return LoraConfig(**chosen)


def _looks_like_hub_id(name: Any) -> bool:
    return (
        isinstance(name, str)
        and name.count("/") == 1
        and not name.startswith((".", "/", "~"))
        and not os.path.exists(name)
    )


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "modules_to_save":  # [] and null both save no module (llmforge writes [], peft null)
        return set(a or ()) == set(b or ())
    if key == "target_modules" and not isinstance(a, str) and not isinstance(b, str) and a and b:
        return set(a) == set(b)
    return a == b


def _show(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _lora_from_adapter(config: dict) -> LoraConfig:
    targets = config.get("target_modules") or "all-linear"
    if isinstance(targets, list):
        targets = tuple(sorted(targets))
    modules_to_save = config.get("modules_to_save")
    return LoraConfig(
        r=int(config.get("r", 8)),
        lora_alpha=config.get("lora_alpha", 8),
        lora_dropout=float(config.get("lora_dropout", 0.0)),
        target_modules=targets,
        modules_to_save=tuple(modules_to_save) if modules_to_save else None,
        bias=config.get("bias", "none"),
        use_rslora=bool(config.get("use_rslora", False)),
        use_dora=bool(config.get("use_dora", False)),
        fan_in_fan_out=bool(config.get("fan_in_fan_out", False)),
        init_lora_weights=True,
        task_type="CAUSAL_LM",
    )


def check_target_modules(loaded: LoadedSpec, arch: Architecture, lora: LoraConfig) -> None:
    unmatched = arch.unmatched_targets(lora.target_modules)
    if unmatched is None:
        return  # a model_type whose module layout ftc does not know: peft itself will check at run time
    reached = arch.adapted_as_parameters(lora.target_modules)
    if reached and lora.lora_dropout:
        loaded.problems.append(
            loaded.problem(
                ("lora_config", "lora_dropout"),
                f"{arch.model_id} ({arch.model_type}): the targets reach {', '.join(reached)}, which peft adapts as "
                "parameters, not linear layers, and those take no dropout",
                "set lora_dropout: 0, or target linear layers only (q_proj, k_proj, v_proj, o_proj)",
                value=lora.lora_dropout,
            )
        )
    has = ", ".join(arch.leaf_names())
    for target in unmatched:
        loaded.problems.append(
            loaded.problem(
                ("lora_config", "target_modules"),
                f"{arch.model_id} ({arch.model_type}) has no module matching {target!r}",
                f"choose from: {has}, or all-linear",
                value=target,
            )
        )
    for target in arch.unmatched_targets(lora.modules_to_save or ()) or []:
        loaded.problems.append(
            loaded.problem(
                ("lora_config", "modules_to_save"),
                f"{arch.model_id} ({arch.model_type}) has no module matching {target!r}",
                f"choose from: {has}",
                value=target,
            )
        )
