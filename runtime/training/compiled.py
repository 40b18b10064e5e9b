"""``torch_compile: true``: each decoder layer compiled by ``torch.compile``, the way the fastest single-GPU
fine-tuning loops do it (per layer, not the whole model: one layer's graph serves every layer, so compiling costs
one layer's time, and the loss and the optimizer stay as they are).

A layer is compiled in place (``nn.Module.compile``), so its parameters keep their names and checkpoints are the
same files. Shapes are dynamic: a flat micro-batch's length changes every step, and one graph serves every length.
The attention inside a layer is not compiled (``attention.register`` registers ftc's kernels uncompiled): it reads
the batch's host-side sample bounds and calls its own kernels, so the layer's graph breaks around it, into the part
before attention (norm, projections, rotary embedding) and the part after (output projection, norm, MLP), which is
where compiling fuses elementwise work. Decoding with a KV cache (evaluation's generation) runs the layers uncompiled
(``eager_layers``): its shapes change every token and it is not what is being trained. PyTorch's compiled code is
kept in a folder of the process's own, its pickled caches off: nothing another process left is loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["RECOMPILE_LIMIT", "compile_layers", "eager_layers"]

#: graphs the compiled layers may have (each kind of call compiles one)
RECOMPILE_LIMIT = 32


def compile_layers(model: Any) -> int:
    """Compile every decoder layer of ``model`` (transformers' layers, LoRA's modules inside them included) in
    place, with dynamic shapes; the number compiled. Compiling happens at the first forward pass."""
    import torch._dynamo.config as dynamo
    from transformers.modeling_layers import GradientCheckpointingLayer

    _private_compile_cache()

    # the layers share their graphs, one per kind of call (training, evaluation, padded or flat rows, ...): room for
    # more kinds than PyTorch's default 8, past which a call runs uncompiled (PyTorch warns once, on stderr)
    limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, limit, max(getattr(dynamo, limit), RECOMPILE_LIMIT))
    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


@functools.cache
def _private_compile_cache() -> str:
    """PyTorch's compiled code in a folder of this process's own, and its pickled caches off. By default inductor
    keeps generated code and pickled graphs in a folder shared by every process of the user (/tmp/torchinductor_*),
    and loads what it finds there by name: bytes ftc has not pinned, and pickle. A run compiles afresh instead."""
    import atexit
    import os
    import shutil

    import torch._functorch.config as functorch
    import torch._inductor.config as inductor

    from ftc.stores.scratch import scratch_folder

    folder = str(scratch_folder("compiled"))  # mode 0700; its compile workers inherit the variables
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    os.environ["TRITON_CACHE_DIR"] = os.path.join(folder, "triton")
    inductor.fx_graph_cache = inductor.autotune_local_cache = False
    inductor.fx_graph_remote_cache = inductor.autotune_remote_cache = False
    functorch.enable_autograd_cache = False
    return folder


@contextmanager
def eager_layers() -> Iterator[None]:
    """Compiled layers run uncompiled meanwhile (nothing changes where none is compiled)."""
    import torch

    with torch.compiler.set_stance("force_eager"):
        yield
