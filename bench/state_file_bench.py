"""Measure saving and loading training state in ftc's format (``runtime/training/state_file.py``: safetensors with
its structure as JSON, tensors written one at a time) against safetensors' own ``save_file``/``load_file`` of the
same tensors as one flat dict (what a script saving its state safely would use), same run, same disk.

    python bench/state_file_bench.py [--params 50_000_000] [--repeat 3] [--json PATH]

The state is shaped as DeepSpeed's for a full fine-tune in bf16 of ``--params`` parameters split into 200 tensors:
the module's bf16 weights, and the optimizer's fp32 master weights and two moments (14 bytes a parameter). Reports
the median seconds of each (a load includes reading every page of every tensor), the ratio, MB/s, and the peak
resident memory above the state after each writer (ftc's writes one tensor at a time and syncs the file to disk).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _state(params: int, pieces: int = 200):
    import torch

    n = params // pieces
    module = OrderedDict((f"layers.{i}.weight", torch.randn(n).to(torch.bfloat16)) for i in range(pieces))
    state = {
        i: {"step": torch.tensor(10.0), "exp_avg": torch.randn(n), "exp_avg_sq": torch.rand(n)} for i in range(pieces)
    }
    groups = [{"lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8, "params": list(range(pieces))}]
    return {
        "module": module,
        "optimizer": {"state": state, "param_groups": groups},
        "fp32_master": [torch.randn(n) for _ in range(pieces)],
        "global_steps": 10,
    }


def _flat(state) -> dict:
    """The same tensors as one dict of names, for safetensors' own writer."""
    out = {f"module.{k}": v for k, v in state["module"].items()}
    for i, s in state["optimizer"]["state"].items():
        out.update({f"state.{i}.{k}": v for k, v in s.items()})
    out.update({f"master.{i}": t for i, t in enumerate(state["fp32_master"])})
    return out


def _touched(tensors: dict) -> int:
    """One byte of every 4 KiB page of every tensor read: a loaded file mapped lazily is read whole."""
    import torch

    return sum(int(t.reshape(-1).view(torch.uint8)[::4096].sum()) for t in tensors.values() if t.numel())


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (KiB on Linux)


def _timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=int, default=50_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch
    from safetensors.torch import load_file, save_file

    from ftc.runtime.training.state_file import read_state_file, write_state_file

    torch.manual_seed(0)
    state = _state(args.params)
    flat = _flat(state)
    size = sum(t.numel() * t.element_size() for t in flat.values())
    with tempfile.TemporaryDirectory(prefix="state-bench-") as folder:
        ours, theirs = Path(folder) / "ftc.safetensors", Path(folder) / "flat.safetensors"
        before = _peak_mib()
        save_ftc = _timed(lambda: write_state_file(state, ours), args.repeat)
        peak_ftc = _peak_mib() - before  # the high-water mark: ftc's writer first, then safetensors' on top of it
        save_flat = _timed(lambda: save_file(flat, str(theirs)), args.repeat)
        peak_flat = _peak_mib() - before
        load_ftc = _timed(lambda: _touched(_flat(read_state_file(ours))), args.repeat)
        load_flat = _timed(lambda: _touched(load_file(str(theirs))), args.repeat)
        sizes = {"ftc": ours.stat().st_size, "safetensors_flat": theirs.stat().st_size}
    result = {
        "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__, "params": args.params, "state_bytes": size, "repeat": args.repeat,
        "save_s": {"ftc": save_ftc, "safetensors_flat": save_flat},
        "load_s": {"ftc": load_ftc, "safetensors_flat": load_flat},
        "save_ratio_ftc_over_flat": save_ftc / save_flat, "load_ratio_ftc_over_flat": load_ftc / load_flat,
        "file_bytes": sizes,
        "peak_rss_added_mib": {"after_ftc_save": peak_ftc, "after_safetensors_flat_save": peak_flat},
    }  # fmt: skip
    mb = size / 1e6
    print(f"state: {mb:,.0f} MB in {len(flat)} tensors ({args.params:,} parameters)")
    print(f"save: ftc {save_ftc:.2f} s ({mb / save_ftc:,.0f} MB/s), safetensors flat {save_flat:.2f} s: "
          f"{save_ftc / save_flat:.2f}x")  # fmt: skip
    print(f"load: ftc {load_ftc:.2f} s, safetensors flat {load_flat:.2f} s: {load_ftc / load_flat:.2f}x")
    print(
        f"peak memory above the state: {peak_ftc:,.0f} MiB after ftc's saves, {peak_flat:,.0f} MiB after safetensors'"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
