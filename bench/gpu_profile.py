"""Where ftc's training step spends its time on this machine: one command, stage by stage, within a time budget.

    python bench/gpu_profile.py --json FILE [--shape tiny|small|small-vocab|1b|8b-lora] [--budget-s 450]

Stages, in order (each in its own try: a failure is recorded and the next stage runs; a stage that would not fit in
the budget left is recorded as skipped; FILE is rewritten, temp file + rename, after every stage, so a run cut short
still tells what it measured):

1. ``environment``: the device, the versions of torch, transformers, peft, deepspeed, liger-kernel, flash-attn and
   triton, and which attention kernels and compilers import (torch's varlen_attn, flash_attn, FlexAttention,
   torch.compile).
2. ``attention``: a forward+backward microbenchmark over packed rows of the shape's heads and context (lognormal
   sample lengths, median ~230 tokens): transformers' dense block-diagonal-mask SDPA, ftc's ``sdpa_varlen``,
   per-sample SDPA (the reference), compiled FlexAttention with a block mask and the flat varlen kernels (GPU),
   each as median ms and max differences of output and query gradient (bench/_profile_attention.py).
3. ``step``: ftc's defaults with sample packing, through ``ftc compile`` and ``ftc run`` (bench/_profile_worker.py):
   the optimizer DeepSpeed built, ``engine.step()`` and ``engine.backward()`` ms, per-step wall time, host syncs per
   step, and a torch.profiler breakdown by kernel category with the GPU's idle time (bench/_profile_trace.py).
4. ``ablations``: one change at a time from those settings (SDPA's dense mask, PyTorch's kernels instead of Liger's,
   activation checkpointing, no packing), median real tokens/s per step after the warm-up steps.
5. ``lora``: the 8B LoRA shape (r=16 on all linear layers; on a CPU a LoRA of the profiled shape stands in):
   tokens/s and peak memory.

The shape defaults to ``1b`` on a GPU and ``tiny`` (hidden 64, 2 layers, vocabulary 640, context 256: how the
command is tested on a CPU) elsewhere. One line is printed per stage. Exit 0 when every stage ran or was skipped
for the budget or the device, 1 when a stage failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

from _profile_stages import STAGES, Context  # noqa: E402  (bench/ is not a package)

__all__ = ["main"]


class Report:
    """The command's JSON, rewritten after every stage."""

    def __init__(self, path: Path, head: dict) -> None:
        self.path, self.data = path, {**head, "stages": {}, "complete": False}

    def write(self) -> None:
        from ftc.stores.atomic import write_text_atomic

        write_text_atomic(self.path, json.dumps(self.data, indent=1, default=str) + "\n")

    def record(self, name: str, result: dict, line: str) -> None:
        self.data["stages"][name] = result
        self.write()
        print(f"[gpu_profile] {name}: {result['status']} ({result.get('seconds', 0):.1f} s) {line}", flush=True)


def run_stage(ctx: Context, report: Report, name: str, stage, need_s: float) -> None:
    """Run one stage unless the budget left is under ``need_s``; record what happened."""
    left = ctx.left()
    if left < need_s:
        reason = f"budget: {left:.0f} s left, the stage needs about {need_s:.0f} s"
        report.record(name, {"status": "skipped", "reason": reason}, reason)
        return
    started = time.perf_counter()
    try:
        result, line = stage(ctx)
    except Exception as exc:  # recorded; the next stage still runs
        tail = traceback.format_exc().strip().splitlines()[-12:]
        result, line = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": tail}, ""
        line = result["error"].splitlines()[0][:200]
    result.setdefault("status", "ok")
    result["seconds"] = time.perf_counter() - started
    report.record(name, result, line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="the results file (rewritten after each stage)")
    parser.add_argument("--shape", help="tiny, small, small-vocab, 1b or 8b-lora (default: 1b on a GPU, else tiny)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="the whole command's time (default 450)")
    parser.add_argument("--workdir", type=Path, help="keep the models, plans and logs here (default: a temp folder)")
    args = parser.parse_args(argv)
    started = time.time()
    import torch

    cuda = torch.cuda.is_available()
    shape = args.shape or ("1b" if cuda else "tiny")
    with tempfile.TemporaryDirectory(prefix="ftc-gpu-profile-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        ctx = Context(work=work, shape_name=shape, cuda=cuda, deadline=started + args.budget_s)
        report = Report(
            args.json.resolve(),
            {"command": "bench/gpu_profile.py", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "shape": shape,
             "budget_s": args.budget_s, "cuda": cuda},
        )  # fmt: skip
        report.write()
        for name, stage, need in STAGES:
            run_stage(ctx, report, name, stage, need(cuda))
        report.data["complete"] = True
        report.data["elapsed_s"] = time.time() - started
        report.write()
    failed = [n for n, r in report.data["stages"].items() if r["status"] == "failed"]
    print(
        f"[gpu_profile] done in {time.time() - started:.0f} s; "
        + (f"failed: {', '.join(failed)}" if failed else "no stage failed")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
