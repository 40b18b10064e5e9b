"""Counting the calls that make the host wait for the device, on any device.

On a GPU a training step should queue its work and let the host go on; every ``.item()``, ``.tolist()``, ``.cpu()``,
``nonzero()``, ``bool(tensor)`` and the like waits for everything queued before it. On a CPU nothing waits, but
the same calls are made: intercepting them (a torch function mode sees every tensor method and function call)
counts on the CPU what would wait on the GPU, so a test here holds the step to its designed number of syncs.

    with HostSyncs() as syncs:
        step()
    syncs.count, syncs.calls   # how many, and which (name: count; "synchronize": an explicit wait)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch.overrides import TorchFunctionMode

__all__ = ["SYNCING", "HostSyncs"]

#: tensor methods and functions whose result the host must have: each waits for the device
SYNCING = frozenset({
    "item", "tolist", "cpu", "numpy", "nonzero", "argwhere", "__bool__", "__int__", "__float__", "__index__",
    "masked_select", "unique", "unique_consecutive", "repeat_interleave", "equal", "allclose", "any", "all",
})  # fmt: skip


class HostSyncs(TorchFunctionMode):
    """A torch function mode counting the calls in ``SYNCING`` made while it is active (``any``/``all`` only when
    their result is turned into a Python value, which the ``__bool__`` that follows counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self._restore: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> HostSyncs:
        """Also counts explicit waits (``torch.cuda.synchronize``, DeepSpeed's accelerator's ``synchronize``), which
        no tensor call shows: on a CPU DeepSpeed's does nothing, but is called where a GPU's would wait."""
        import torch

        targets = [(torch.cuda, "synchronize")]
        try:
            from deepspeed.accelerator import get_accelerator

            targets.append((get_accelerator(), "synchronize"))
        except ImportError:
            pass
        for owner, name in targets:
            original = getattr(owner, name)
            self._restore.append((owner, name, original))
            setattr(owner, name, self._counting(original))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> Any:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()
        return super().__exit__(*exc)

    def _counting(self, original: Any) -> Any:
        def synchronize(*args: Any, **kwargs: Any) -> Any:
            self.calls["synchronize"] += 1
            return original(*args, **kwargs)

        return synchronize

    @property
    def count(self) -> int:
        return sum(self.calls.values())

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in SYNCING and name not in ("any", "all") and not _shape_only(name, args):
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def _shape_only(name: str, args: Any) -> bool:
    """``repeat_interleave`` with an int repeat count needs no device value."""
    return name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], int)
