"""DeepSpeed's training state (optimizer, scheduler, module) in safetensors and JSON: never pickle.

DeepSpeed hands its checkpoint engine nested state to save under a file name of its own (``*_model_states.pt``,
``*_optim_states.pt``): dicts, lists, tuples, numbers, strings, tensors, and three value types of its own. ftc's
engine (:func:`checkpoint_engine`) writes each as a safetensors file (``*.safetensors`` beside where DeepSpeed asked
for ``*.pt``): every tensor by its position, and the structure as JSON in the file's metadata, each tensor a reference
and each value JSON alone would lose tagged (a tuple, a key that is not a string, a float that is not finite, a torch
size or dtype, DeepSpeed's loss scaler, ZeRO stage and fragment address). Reading it back builds those types and no
other: a file that is not such a safetensors file (torch's pickle format: an earlier ftc's checkpoint, or a planted
one) is refused unread. Tensors are written one at a time, so saving holds no second copy of the state; a tensor
held twice (tied weights) is written once. Reading copies each tensor into the process's own memory: nothing stays
mapped from a file that could change under the run.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftc.errors import UsageError

__all__ = ["FORMAT", "NotStateFile", "checkpoint_engine", "deepspeed_view", "read_state_file", "write_state_file"]

FORMAT = "ftc-training-state/1"
SUFFIX = ".safetensors"  # beside DeepSpeed's .pt name
_MAX_DEPTH = 64  # DeepSpeed's state nests a few levels: anything deeper is not a state ftc wrote

#: DeepSpeed's value types a state may hold: the name a file gives -> (module, class)
_VALUE_TYPES = {
    "LossScaler": ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    "ZeroStageEnum": ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    "fragment_address": ("deepspeed.utils.tensor_fragment", "fragment_address"),
}


class NotStateFile(UsageError):
    """A training state file that is not ftc's format: refused before any of it is used."""


def write_state_file(state: Any, path: str | Path) -> None:
    """``state`` as a safetensors file at ``path``: the tensors one after another, its structure in the header."""
    import torch

    if sys.byteorder != "little":  # safetensors is little-endian
        raise UsageError("ftc writes training state on little-endian machines only")
    written: dict[Any, tuple[int, Any]] = {}  # one entry per distinct tensor (tied weights share one): its index
    structure = _encode(state, written, 0)
    tensors = [tensor for _, tensor in written.values()]
    header: dict[str, Any] = {"__metadata__": {"format": FORMAT, "structure": json.dumps(structure, allow_nan=False)}}
    offset = 0
    for i, tensor in enumerate(tensors):
        size = tensor.numel() * tensor.element_size()
        header[f"t{i}"] = {
            "dtype": _dtype_name(tensor.dtype),
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for tensor in tensors:
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            if flat.numel():
                f.write(flat.view(torch.uint8).numpy().data)
        f.flush()
        os.fsync(f.fileno())


def read_state_file(path: str | Path) -> Any:
    """The state :func:`write_state_file` wrote at ``path``, its tensors on the CPU. Anything else is refused
    (:class:`NotStateFile`), a pickle unread."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise NotStateFile(f"{path}: a safetensors file, but not training state ftc wrote")
            structure = json.loads(metadata["structure"])
            if not isinstance(structure, dict) or set(structure) - {"$dict", "$odict"}:
                raise ValueError("not a dict at the top")  # (DeepSpeed's states are dicts)
            return _decode(structure, _Tensors(f), 0)
    except SafetensorError:
        raise NotStateFile(f"{path}: {_what_it_is(path)}, not training state ftc wrote") from None
    except OSError as exc:
        raise NotStateFile(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise NotStateFile(f"{path}: its structure is not one ftc writes ({type(exc).__name__})") from None


def _what_it_is(path: Path) -> str:
    """What a file that safetensors cannot open is, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return "not a readable file"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch's pickle format (ftc never unpickles)"
    return "not a safetensors file"


def checkpoint_engine() -> Any:
    """A DeepSpeed checkpoint engine that writes and reads training state through this module."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    class SafetensorsCheckpointEngine(TorchCheckpointEngine):
        def save(self, state_dict: Any, path: str) -> None:
            write_state_file(state_dict, _renamed(path))

        def load(self, path: str, map_location: Any = None) -> Any:
            # the file the view's link names, by its own path (DeepSpeed moves what it loads where it belongs)
            return read_state_file(os.path.realpath(path))

    return SafetensorsCheckpointEngine()


@contextmanager
def deepspeed_view(state_dir: Path) -> Iterator[Path]:
    """A folder that shows ``state_dir``'s state files under the ``.pt`` names DeepSpeed looks for (links into it),
    for ``engine.load_checkpoint``; removed afterwards."""
    from ftc.stores.scratch import scratch

    with scratch("resume") as view:
        # (a checkpoint fetched from a store may be links into the download cache: verified like files)
        for tag in [p for p in (state_dir.iterdir() if state_dir.is_dir() else ()) if p.is_dir()]:
            (view / tag.name).mkdir()
            for file in tag.iterdir():
                if file.name.endswith(SUFFIX) and file.is_file():
                    (view / tag.name / (file.name.removesuffix(SUFFIX) + ".pt")).symlink_to(file.absolute())
        yield view


def _renamed(path: str) -> str:
    return path.removesuffix(".pt") + SUFFIX


def _encode(value: Any, tensors: dict[Any, tuple[int, Any]], depth: int) -> Any:
    import enum

    import torch

    if depth > _MAX_DEPTH:
        raise ValueError("training state nested too deep to save")
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, torch.Tensor):  # the same tensor (the same view of the same storage) is written once
        key = (value.device, value.untyped_storage().data_ptr(), value.storage_offset(), value.dtype,
               tuple(value.shape), tuple(value.stride())) if value.numel() else len(tensors)  # fmt: skip
        return {"$tensor": tensors.setdefault(key, (len(tensors), value))[0]}
    if isinstance(value, torch.Size):
        return {"$size": list(value)}
    if isinstance(value, torch.dtype):
        return {"$dtype": str(value).removeprefix("torch.")}
    if type(value) in (dict, OrderedDict):
        items = [[_encode(k, tensors, depth + 1), _encode(v, tensors, depth + 1)] for k, v in value.items()]
        return {"$odict" if type(value) is OrderedDict else "$dict": items}
    if type(value) in (list, tuple):
        items = [_encode(v, tensors, depth + 1) for v in value]
        return items if type(value) is list else {"$tuple": items}
    name = type(value).__name__
    if name in _VALUE_TYPES and _value_type(name) is type(value):
        kept = value.value if isinstance(value, enum.Enum) else vars(value)
        return {"$value": name, "state": _encode(kept, tensors, depth + 1)}
    raise TypeError(f"training state holds a {type(value).__module__}.{name}, which ftc does not save")


def _decode(value: Any, f: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deep")
    if isinstance(value, list):
        return [_decode(v, f, depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    if "$value" in value:
        if set(value) != {"$value", "state"}:
            raise ValueError("a value type's entry holds more than its state")
        return _rebuild(value["$value"], _decode(value["state"], f, depth + 1))
    if len(value) != 1:
        raise ValueError("an entry with more than one tag")
    ((tag, inner),) = value.items()
    if tag == "$tensor":
        return f.get(int(inner))
    if tag == "$float":
        return float({"inf": "inf", "-inf": "-inf", "nan": "nan"}[inner])
    if tag in ("$size", "$dtype"):
        import torch

        if tag == "$size":
            return torch.Size(int(n) for n in inner)
        dtypes = {str(d).removeprefix("torch."): d for d in (*_dtype_names(), torch.complex64, torch.complex128)}
        return dtypes[inner]  # (a name of the table only: never an attribute of torch, which may import a module)
    if tag in ("$dict", "$odict"):
        pairs = [(_key(_decode(k, f, depth + 1)), _decode(v, f, depth + 1)) for k, v in inner]
        return OrderedDict(pairs) if tag == "$odict" else dict(pairs)
    if tag == "$tuple":
        return tuple(_decode(v, f, depth + 1) for v in inner)
    raise ValueError(f"unknown tag {tag!r}")


class _Tensors:
    """The tensors of an open state file, by their position: each read once into memory of its own (not left mapped
    from the file, which could change under the run), a tensor named twice given twice as the one tensor."""

    def __init__(self, f: Any) -> None:
        self.f, self.names, self.read = f, set(f.keys()), {}

    def get(self, i: int) -> Any:
        if f"t{i}" not in self.names:
            raise ValueError("no such tensor")
        if i not in self.read:
            self.read[i] = self.f.get_tensor(f"t{i}").clone()
        return self.read[i]


def _key(key: Any) -> Any:
    if isinstance(key, list):  # (a list cannot be a key: a tuple can)
        raise ValueError("a list as a key")
    return key


def _rebuild(name: str, state: Any) -> Any:
    """One of DeepSpeed's value types from what was kept of it."""
    if name not in _VALUE_TYPES:
        raise ValueError(f"not a value type ftc keeps: {name!r}")
    cls = _value_type(name)
    if not isinstance(state, dict):
        return cls(state)  # an enum, by its value
    obj = cls.__new__(cls)
    obj.__dict__.update({str(k): v for k, v in state.items()})
    return obj


def _value_type(name: str) -> type:
    import importlib

    module, cls = _VALUE_TYPES[name]
    return getattr(importlib.import_module(module), cls)


def _dtype_names() -> dict[Any, str]:
    """torch dtype -> safetensors' name, for the dtypes a training state's tensors have."""
    import torch

    return {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
        torch.bool: "BOOL",
    }  # fmt: skip


def _dtype_name(dtype: Any) -> str:
    names = _dtype_names()
    if dtype not in names:
        raise TypeError(f"training state holds a {dtype} tensor, which ftc does not save")
    return names[dtype]
