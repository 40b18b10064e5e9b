"""What in a weights folder would make a loader run code, found before anything of it is loaded.

transformers imports Python files shipped beside the weights when a config names them (``auto_map``, and
``custom_pipelines`` for pipelines) and the caller trusts remote code; without ``trust_remote_code`` it asks on stdin,
where a stray "y" is enough. ftc passes ``trust_remote_code=False`` everywhere, and refuses a folder that holds such a
key or any Python file at all, so no answer, no flag and no future loader default can make it run one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ftc.errors import InputUnresolvable
from ftc.spec.reading import MiB, NotReadable, read_bounded_text
from ftc.spec.text import for_terminal

__all__ = [
    "CODE_FIX",
    "CODE_KEYS",
    "WEIGHT_SUFFIXES",
    "code_in_folder",
    "code_in_names",
    "code_message",
    "describe_code",
    "refuse_code",
]

#: files of a weights folder that hold weights (not needed to read its tokenizer or config)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx")

#: config keys with which transformers loads classes from Python files instead of its own
CODE_KEYS = ("auto_map", "custom_pipelines")
#: file names Python imports (a symlink or a folder so named counts too: it is what a loader would import)
_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyd")
#: the recovery scripts DeepSpeed copies beside the optimizer state of every checkpoint ftc writes: nothing imports
#: them (a loader imports only what a config's auto_map names, from the folder itself, and that is refused)
_DEEPSPEED_SCRIPTS = ("training_state/zero_to_fp32.py", "training_state/zero_to_torch.py")
#: entries walked in a folder before it is refused as too large to be a weights folder
_MAX_ENTRIES = 100_000
_CONFIG_LIMIT = 16 * MiB


def _is_code(name: str) -> bool:
    return name.lower().endswith(_CODE_SUFFIXES)


def _is_code_at(relative: str) -> bool:
    """Whether the entry at ``relative`` (a path in the folder, with "/") is code that is refused."""
    return relative not in _DEEPSPEED_SCRIPTS and any(_is_code(part) for part in relative.split("/"))


def _is_config(name: str) -> bool:
    """config.json, tokenizer_config.json, adapter_config.json, generation_config.json, processor_config.json,
    preprocessor_config.json, ...: the files in which transformers and peft look for ``auto_map``."""
    return name.lower().endswith("config.json")


def _keys_at(value: Any, path: str = "$") -> Iterable[str]:
    """The JSON paths of every CODE_KEYS key in ``value``, at any depth."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if key in CODE_KEYS:
                    yield f"{where}.{key}"
                stack.append((item, f"{where}.{key}"))
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node))


def code_in_names(names: Iterable[str]) -> list[str]:
    """The Python files among ``names`` (paths relative to a folder, as a store lists them)."""
    return sorted(n for n in names if _is_code_at(Path(n).as_posix()))


def code_in_folder(folder: Path) -> list[str]:
    """What in ``folder`` (and its subfolders) a loader could run, each as one line: a Python file (symlinks and
    folders by their names, never followed; DeepSpeed's recovery scripts in a checkpoint's training_state/ aside), a
    CODE_KEYS key in a config file, or a config file that cannot be read (a loader would read it anyway). Empty when
    there is nothing."""
    found: list[str] = []
    configs: list[Path] = []
    seen = 0
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted([*dirs, *files]):
            seen += 1
            relative = Path(os.path.relpath(os.path.join(top, name), folder)).as_posix()
            if seen > _MAX_ENTRIES:
                return [*found, f"more than {_MAX_ENTRIES:,} files and folders: not a weights folder"]
            if _is_code_at(relative):
                found.append(f"a Python file: {relative}")
            elif name in files and _is_config(name):
                configs.append(Path(top) / name)
        dirs[:] = sorted(d for d in dirs if not _is_code(d))  # walked in order: the same message every time
    for path in sorted(configs):
        relative = os.path.relpath(path, folder)
        try:
            config = json.loads(read_bounded_text(path, limit=_CONFIG_LIMIT, what="config"))
        except (NotReadable, ValueError, RecursionError) as exc:
            found.append(f"{relative} cannot be read ({exc})")
            continue
        found += [f"`{key.removeprefix('$.')}` in {relative}" for key in _keys_at(config)]
    return found


def refuse_code(folder: Path, what: str) -> None:
    """Raise :class:`InputUnresolvable` (exit 4) when ``folder`` (``what``: "the base weights", "the checkpoint")
    holds anything a loader could run (:func:`code_in_folder`)."""
    found = code_in_folder(folder)
    if found:
        raise InputUnresolvable(code_message(folder, what, found))


#: what to do about a folder holding code
CODE_FIX = (
    "use weights whose configs name only classes built into transformers: remove the `auto_map`/`custom_pipelines` "
    "keys and the Python files (if you trust that code, convert the model with it once and save_pretrained the result)"
)


def describe_code(found: list[str]) -> str:
    """What :func:`code_in_folder` found, as the middle of a message (shown escaped: the names are outside text)."""
    shown = "; ".join(for_terminal(line) for line in found[:5]) + (
        f"; and {len(found) - 5} more" if len(found) > 5 else ""
    )
    return f"holds code that loading it could run: {shown}; ftc never runs code from a weights folder"


def code_message(folder: Path | str, what: str, found: list[str]) -> str:
    """The one message for a folder holding code: where, what was found, and the fix."""
    where = f"{for_terminal(str(folder))} ({what})"
    return f"{where} {describe_code(found)}, and loads nothing of this one\n    fix: {CODE_FIX}"
