"""Correctness of ftc's GPU path, through the real CLI (`ftc compile` + `ftc run`), on the quickstart's model and data.

    python bench/gpu_checks.py --json FILE [--budget-s SECONDS]

Each check is a run (or two) of examples/quickstart with one setting changed, in a fresh folder:

- ``full``: full-parameter training (ZeRO 0; bf16 on a GPU): every loss finite, eval loss falls.
- ``packed``: ftc's packed rows of the quickstart's validation examples through each attention that can train packed
  rows (SDPA's block-diagonal mask and FlexAttention on a GPU; ftc's SDPA-per-sample and SDPA on a CPU), in the
  training dtype: the loss equals the sum of
  each sample run alone (SDPA) within bf16 tolerance, and its backward pass gives finite gradients (packing changes
  which tokens share a row, never what a token sees). ``packed_training``: a packed run trains (eval loss falls).
- ``lora``: a LoRA adapter trains (eval loss falls).
- ``zero2``, ``zero3``: ZeRO stages 2 and 3 on one device train to the ``full`` run's eval loss within tolerance.
- ``compiled``: decoder layers compiled (``torch_compile``) train to the ``full`` run's eval loss within tolerance.
- ``liger``: Liger's kernels (GPU only): the eval loss before training equals ``full``'s within tolerance.
- ``resume``: a 2-epoch run whose last checkpoint is removed, resumed with ``ftc run --resume``, ends where the
  uninterrupted run ended (bitwise on a CPU; within tolerance on a GPU, where kernels need not be deterministic).

Runs on a CPU too (the GPU-only checks say so), which is how this script is tested before it meets a GPU. Writes
the results as JSON (one entry a check: ok, seconds, the numbers compared) and exits 1 when any check fails.
Checks left when ``--budget-s`` is spent are reported as not run.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
BF16_RTOL = 2e-2  # one bf16 ulp is 2^-8 = 0.4%; a loss summed over thousands of tokens stays well within 2%
TRAINED_RTOL = 5e-2  # two trainings of 48 bf16 steps with different reduction orders


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _run(folder: Path, name: str, resume: bool = False, **settings) -> dict:
    """Compile and run the quickstart with ``settings`` into folder/name; its summary.json."""
    work = folder / name
    if not resume:
        shutil.copytree(QUICKSTART, work, ignore=shutil.ignore_patterns("output", "runs"))
        spec = yaml.safe_load((work / "job.yaml").read_text())
        spec["output_dir"] = "run"
        for key, value in settings.items():
            target = spec
            *path, last = key.split(".")
            for part in path:
                target = target.setdefault(part, {})
            target[last] = value
        (work / "job.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        _ftc("compile", work / "job.yaml", "-o", work / "plan.json")
    _ftc("run", work / "plan.json", *(["--resume"] if resume else []))
    return json.loads((work / "run" / "summary.json").read_text())


def _ftc(*args) -> None:
    done = subprocess.run([sys.executable, "-m", "ftc.cli", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ftc {' '.join(map(str, args[:1]))} exited {done.returncode}:\n{done.stderr[-4000:]}")


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * abs(b)


def _falls(summary: dict) -> bool:
    losses = [e["eval_loss"] for e in summary["evals"]]
    return all(map(_finite, losses)) and losses[-1] < losses[0]


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((folder / "run" / "best").resolve().glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _packed_loss_check(gpu: bool, attention: str) -> tuple[bool, dict]:
    """Packed rows (3 samples a row) through ``attention`` vs each sample alone (SDPA), on the quickstart's model and
    validation data."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftc.runtime.training.attention import register
    from ftc.runtime.training.batches import collate, to_device
    from ftc.runtime.training.render import render_prompt_format
    from ftc.runtime.training.tokens import tokenize_file
    from ftc.spec.model import PromptFormat

    register()
    device, dtype = ("cuda", torch.bfloat16) if gpu else ("cpu", torch.float32)
    spec = yaml.safe_load((QUICKSTART / "job.yaml").read_text())
    fmt = PromptFormat(**spec["generation_config"]["prompt_format"])
    tokenizer = AutoTokenizer.from_pretrained(QUICKSTART / "model", trust_remote_code=False)
    examples, _ = tokenize_file(
        QUICKSTART / "data" / "valid.jsonl",
        render=lambda m: render_prompt_format(m, fmt),
        tokenizer=tokenizer,
        cache_file=None,
    )
    n = min(12, len(examples.ids)) // 3 * 3
    rows = [tuple(range(i, i + 3)) for i in range(0, n, 3)]

    def model(kind):
        m = AutoModelForCausalLM.from_pretrained(
            QUICKSTART / "model", dtype=dtype, attn_implementation=kind, trust_remote_code=False
        )
        return m.to(device)

    def loss_sum(m, batch):
        inputs, labels, _ = to_device(batch, device)
        logits = m(**inputs, use_cache=False).logits.float()
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
        )

    reference = model("sdpa").eval()
    with torch.no_grad():
        alone = sum(float(loss_sum(reference, collate([(i,)], examples, pad_id=0, packed=False))) for i in range(n))
    import ftc.runtime.training.attention as kernels

    packed_model = model(attention).train()
    if attention == "sdpa_varlen":  # ftc's layout for it: the rows end to end, their samples' bounds with them
        batch = collate(rows, examples, pad_id=0, packed=True, flat=True)
    else:
        batch = collate(rows, examples, pad_id=0, packed=True, pad_to=spec["context_length"])
    calls = []
    found = kernels.varlen_kernel

    def counted():  # proves the varlen kernel (GPU, bf16) ran, not the per-sample fallback
        kernel = found()
        if kernel is None:
            return None

        @functools.wraps(kernel)  # its signature, which sdpa_varlen reads
        def call(*args, **kwargs):
            calls.append(1)
            return kernel(*args, **kwargs)

        return call

    kernels.varlen_kernel = counted
    try:
        loss = loss_sum(packed_model, batch)
        loss.backward()
    finally:
        kernels.varlen_kernel = found
    value = loss.detach().item()
    grads_finite = all(torch.isfinite(p.grad).all() for p in packed_model.parameters() if p.grad is not None)
    rtol = BF16_RTOL if gpu else 1e-5
    # on a GPU whose torch has the kernel, ftc's default must have used it
    kernel_ran = not (gpu and attention == "sdpa_varlen" and found() is not None) or bool(calls)
    return _close(value, alone, rtol) and grads_finite and kernel_ran, {
        "attention": attention,
        "dtype": str(dtype),
        "packed_loss_sum": value,
        "per_sample_loss_sum": alone,
        "rtol": rtol,
        "grads_finite": bool(grads_finite),
        "varlen_kernel_calls": len(calls),
    }


def _liger_probe() -> tuple[bool, dict]:
    """The quickstart's model with and without ftc's Liger patch (``ftc.runtime.training.apply_liger``), on the same
    tokens: the patched modules must report Liger's classes and the logits must differ (Liger's kernels ran, not
    torch's) by no more than bf16 rounding."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftc.runtime.training.model import apply_liger

    torch.manual_seed(0)
    ids = torch.randint(3, 512, (2, 96), device="cuda")

    def logits(patch: bool):
        m = (
            AutoModelForCausalLM.from_pretrained(QUICKSTART / "model", dtype=torch.bfloat16, trust_remote_code=False)
            .cuda()
            .eval()
        )
        if patch:
            apply_liger(m)
        with torch.no_grad():
            return m(input_ids=ids).logits.float(), {
                type(x).__name__ if not hasattr(x, "_get_name") else x._get_name() for x in m.modules()
            }

    plain, _ = logits(False)
    liger, names = logits(True)
    diff = float((liger - plain).abs().max())
    scale = float(plain.abs().max())
    patched = {"LigerRMSNorm", "LigerSwiGLUMLP"} <= names
    return patched and 0 < diff <= BF16_RTOL * scale * 4, {
        "liger_modules": sorted(n for n in names if n.startswith("Liger")),
        "logits_max_abs_diff": diff,
        "logits_max_abs": scale,
    }


def checks(folder: Path, gpu: bool) -> dict:
    """name -> a function that runs the check and returns (ok, details)."""
    ran: dict[str, dict] = {}

    def full():
        s = ran["full"] = _run(folder, "full")
        return _falls(s), {"evals": [e["eval_loss"] for e in s["evals"]]}

    def packed():
        # ftc's default for packed rows (sdpa_varlen: on a GPU in bf16 the varlen kernel over the flat row) and the
        # others (SDPA with transformers' block-diagonal mask, FlexAttention on GPUs)
        kinds = ("sdpa_varlen", "sdpa", "flex_attention") if gpu else ("sdpa_varlen", "sdpa")
        results = [_packed_loss_check(gpu, a) for a in kinds]
        return all(ok for ok, _ in results), {d["attention"]: d for _, d in results}

    def packed_training():
        s = _run(folder, "packed", sample_packing=True)
        return _falls(s), {"evals": [e["eval_loss"] for e in s["evals"]]}

    def lora():
        s = _run(folder, "lora", lora_config={"r": 8, "lora_alpha": 16, "target_modules": "all-linear"})
        return _falls(s), {"evals": [e["eval_loss"] for e in s["evals"]]}

    def zero(stage):
        def check():
            s = _run(folder, f"zero{stage}", **{"deepspeed.zero_stage": stage})
            a, b = s["eval_loss"], ran["full"]["eval_loss"]
            return _close(a, b, TRAINED_RTOL) and _falls(s), {"eval_loss": a, "zero0": b, "rtol": TRAINED_RTOL}

        return check

    def compiled():
        s = _run(folder, "compiled", torch_compile=True)
        a, b = s["eval_loss"], ran["full"]["eval_loss"]
        return _close(a, b, TRAINED_RTOL) and _falls(s), {"eval_loss": a, "uncompiled": b, "rtol": TRAINED_RTOL}

    def liger():
        if not gpu:
            return None, {"skipped": "Liger's kernels run only on a GPU"}
        patched, probe = _liger_probe()
        s = _run(folder, "liger", kernels="liger")
        a, b = s["evals"][0]["eval_loss"], ran["full"]["evals"][0]["eval_loss"] if "full" in ran else None
        same_start = b is None or _close(a, b, BF16_RTOL)
        return patched and same_start and _falls(s), {"eval_loss_step0": a, "torch_kernels": b, **probe}

    def resume():
        whole = _run(folder, "uninterrupted", num_epochs=2)
        _run(folder, "resumed", num_epochs=2)
        run = folder / "resumed" / "run"
        steps = sorted((run / "checkpoints").glob("step-*"))
        shutil.rmtree(steps[-1])
        (run / "summary.json").unlink()
        s = _run(folder, "resumed", resume=True)
        a, b = s["eval_loss"], whole["eval_loss"]
        same = _weights_digest(folder / "resumed") == _weights_digest(folder / "uninterrupted")
        ok = same if not gpu else _close(a, b, TRAINED_RTOL)
        return ok, {"eval_loss": a, "uninterrupted": b, "bitwise": same, "resumed_from": steps[-2].name}

    return {
        "full": full,
        "packed": packed,
        "packed_training": packed_training,
        "lora": lora,
        "zero2": zero(2),
        "zero3": zero(3),
        "compiled": compiled,
        "liger": liger,
        "resume": resume,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--only", help="comma-separated check names (default: all)")
    args = parser.parse_args()
    import torch

    gpu = _gpu()
    device = torch.cuda.get_device_name(0) if gpu else platform.processor() or platform.machine()
    started = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory(prefix="ftc-gpu-checks-") as tmp:
        for name, check in checks(Path(tmp), gpu).items():
            if args.only and name not in args.only.split(","):
                continue
            if time.monotonic() - started > args.budget_s:
                results[name] = {"ok": None, "not_run": f"budget of {args.budget_s:.0f} s spent"}
                continue
            t = time.monotonic()
            try:
                ok, details = check()
            except Exception as exc:  # a failed run is a failed check, reported with its error
                ok, details = False, {"error": str(exc)[-2000:]}
            results[name] = {"ok": ok, "seconds": round(time.monotonic() - t, 1), **details}
            print(f"[gpu-checks] {name}: {'ok' if ok else 'skipped' if ok is None else 'FAILED'} {details}", flush=True)
    report = {
        "device": device,
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d"),
        "checks": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = [n for n, r in results.items() if r["ok"] is False]
    counts = {
        "ok": sum(r["ok"] is True for r in results.values()),
        "skipped": sum(r["ok"] is None and "not_run" not in r for r in results.values()),
        "not run (budget)": sum("not_run" in r for r in results.values()),
        "failed": len(failed),
    }
    print(f"[gpu-checks] {', '.join(f'{v} {k}' for k, v in counts.items())}; results in {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
