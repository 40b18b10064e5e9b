"""The stages of bench/gpu_profile.py (its docstring says what each measures), and the work folder they share.

Each stage is ``stage(ctx) -> (result, line)``: its JSON entry and the line printed for it. Training runs go through
the real CLI: a spec written here, ``python -m ftc.cli compile``, then ``ftc run`` inside bench/_profile_worker.py
(one process per run on a GPU, where a run's memory must not outlive it; one per stage on a CPU, where a process's
start costs more than the runs).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
STEP_WARMUP = 2
PROFILE_STEPS = STEP_WARMUP + 3 + 3 + 1 + 3  # warm-up, timing, host syncs, profiler warm-up, profiled (the worker's)
TINY = dict(
    model=dict(
        hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=640, max_position_embeddings=256,
    ),
    lora=None, context=256, ftc_rows=2, hf_padded_batch=4, hf_packed_rows=2, steps=8, warmup=2,
)  # fmt: skip
LORA = {"r": 16, "alpha": 32}
#: one change at a time from the profiled settings (ftc's defaults with sample packing); None: GPU only. No ZeRO stage
#: 0/1/2 variants: on one process ftc trains all three the same way (runtime/training/engine.py, engine_config)
ABLATIONS = {
    "default": {},
    "torch_compile": {"torch_compile": True},  # decoder layers compiled (its compile time falls in the warm-up)
    "attn_sdpa_dense_mask": {"attn_implementation": "sdpa"},
    "kernels_torch": None,
    "activation_checkpointing": {"activation_checkpointing": True},
    "sample_packing_false": {"sample_packing": False},
}
GPU_ONLY = {"kernels_torch": {"kernels": "torch"}}


def _train_bench():
    """bench/train_bench.py as a module: its shapes and its work folder (model, tokenizer, chat data)."""
    return importlib.import_module("train_bench")


@dataclass
class Context:
    """What the stages share: the work folder, the shape, the device and the deadline."""

    work: Path
    shape_name: str
    cuda: bool
    deadline: float
    built: dict = field(default_factory=dict)  # work folder name -> make_workdir's description of its data

    def left(self) -> float:
        return self.deadline - time.time()

    def shape(self, name: str) -> dict:
        return dict(TINY) if name == "tiny" else dict(_train_bench().SHAPES[name])

    def data(self, name: str, shape: dict) -> tuple[Path, dict]:
        """The folder holding ``shape``'s model and data (built once), and the data's description."""
        root = self.work / name
        if name not in self.built:
            root.mkdir(parents=True, exist_ok=True)
            examples = max(shape["ftc_rows"] * shape["context"] // 120, shape["hf_padded_batch"]) * (PROFILE_STEPS + 3)
            self.built[name] = _train_bench().make_workdir(root, {**shape, "steps": PROFILE_STEPS}, examples)
        return root, self.built[name]

    def plan(self, folder: str, shape: dict, name: str, steps: int, options: dict) -> dict:
        """A compiled plan of ftc's defaults with sample packing, ``options`` changed, on enough examples for
        ``steps`` steps (and one more: the worker stops the run after ``steps``)."""
        root, data = self.data(folder, shape)
        spec = {"sample_packing": True, **options}
        rows = shape["ftc_rows"] if spec["sample_packing"] else shape["hf_padded_batch"]
        wanted = (steps + 2) * rows
        lengths = data["lengths"]
        count = (
            int(np.searchsorted(np.cumsum(lengths), wanted * shape["context"])) + 1
            if spec["sample_packing"]
            else wanted
        )
        train = root / f"train-{name}.jsonl"
        train.write_text("".join((root / "train.jsonl").read_text().splitlines(keepends=True)[:count]))
        spec = {
            "model_id": "bench/llama", "initial_base_model_ckpt_path": "model", "train_path": train.name,
            "num_epochs": 1, "learning_rate": 1e-5, "seed": 0, "context_length": shape["context"],
            "train_batch_size_per_device": rows, "output_dir": f"out-{name}",
            "checkpoint_and_evaluation_frequency": {"unit": "steps", "frequency": 10**6},
            "training_mode": "lora" if shape["lora"] else "full", **spec,
        }  # fmt: skip
        if shape["lora"]:
            spec["lora_config"] = {
                "r": shape["lora"]["r"], "lora_alpha": shape["lora"]["alpha"], "target_modules": "all-linear",
                "lora_dropout": 0.0,
            }  # fmt: skip
        (root / f"{name}.json").write_text(json.dumps(spec))
        plan = root / f"{name}.plan.json"
        done = subprocess.run(
            [sys.executable, "-m", "ftc.cli", "compile", str(root / f"{name}.json"), "-o", str(plan)],
            env=self.env(), capture_output=True, text=True, cwd=root,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"ftc compile {name} exited {done.returncode}: {done.stderr.strip()[-1500:]}")
        zero = json.loads(plan.read_text())["deepspeed"].get("zero_optimization", {}).get("stage")
        return {"name": name, "plan": str(plan), "out": str(root / f"out-{name}"), "zero_stage": zero}

    def env(self) -> dict:
        return {**os.environ, "FTC_CACHE_DIR": os.environ.get("FTC_CACHE_DIR") or str(self.work / "cache")}

    def run_workers(self, stage: str, jobs: list[dict], *, one_process_each: bool) -> dict:
        """Run ``jobs`` (worker jobs) in bench/_profile_worker.py, killed at the deadline; name -> result."""
        results: dict = {}
        groups = [[job] for job in jobs] if one_process_each else [jobs]
        for i, group in enumerate(groups):
            base = self.work / f"{stage}-{i}"
            base.with_suffix(".jobs.json").write_text(json.dumps({"deadline": self.deadline, "runs": group}))
            result_file, log = base.with_suffix(".result.json"), base.with_suffix(".log")
            cut = False
            if self.left() < min(job["need_s"] for job in group):
                cut = True
            else:
                with log.open("w") as out:
                    try:
                        subprocess.run(
                            [sys.executable, str(BENCH / "_profile_worker.py"), str(base.with_suffix(".jobs.json")),
                             str(result_file)], stdout=out, stderr=subprocess.STDOUT, env=self.env(), cwd=self.work,
                            timeout=max(1.0, self.left()),
                        )  # fmt: skip
                    except subprocess.TimeoutExpired:
                        cut = True
            done = json.loads(result_file.read_text())["runs"] if result_file.exists() else {}
            logs = _per_run(log.read_text(errors="replace").splitlines() if log.exists() else [])
            for job in group:
                lines = logs.get(job["name"], logs[""])
                result = done.get(job["name"])
                if result is None:
                    result = {"status": "cut", "reason": "the budget ran out"} if cut else {"status": "failed"}
                if result["status"] == "failed":
                    result["log_tail"] = lines[-15:]
                    result.setdefault("error", next((ln for ln in reversed(lines) if "Error" in ln), "see log_tail"))
                said = [ln for ln in lines if "process(es) on" in ln or "] loss:" in ln]
                results[job["name"]] = {**result, "zero_stage_planned": job["zero_stage"], "ftc_said": said}
        return results


def _per_run(lines: list[str]) -> dict[str, list[str]]:
    """A worker's log split at its run marks: run name -> its lines ("": the lines before the first)."""
    from _profile_worker import RUN_MARK

    logs: dict[str, list[str]] = {"": []}
    current = logs[""]
    for line in lines:
        if line.startswith(RUN_MARK):
            current = logs.setdefault(line[len(RUN_MARK) :], [])
        else:
            current.append(line)
    return logs


def environment(ctx: Context) -> tuple[dict, str]:
    """Versions, the device, and which kernels import."""
    import importlib.metadata as metadata
    import platform

    import torch

    versions = {}
    for dist in ("torch", "transformers", "peft", "deepspeed", "liger-kernel", "flash-attn", "triton", "accelerate"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    found = {
        "torch.nn.attention.varlen.varlen_attn": _importable("torch.nn.attention.varlen", "varlen_attn"),
        "flash_attn.flash_attn_varlen_func": _importable("flash_attn", "flash_attn_varlen_func"),
        "torch.nn.attention.flex_attention": _importable("torch.nn.attention.flex_attention", "flex_attention"),
        "torch.compile (dynamo, inductor)": _importable("torch._inductor", "config"),
        "triton": _importable("triton", "jit"),
        "liger_kernel": _importable("liger_kernel.transformers", "apply_liger_kernel_to_llama"),
    }
    result = {"python": platform.python_version(), "cpus": os.cpu_count(), "versions": versions, "importable": found}
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        result.update(
            device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
            cuda=torch.version.cuda, gpu_memory_gib=props.total_memory / 2**30, gpus=torch.cuda.device_count(),
        )  # fmt: skip
    else:
        result.update(device=f"{platform.machine()} CPU, no GPU", capability=None)
    have = [k.split(" ")[0] for k, v in found.items() if v is True]
    return result, f"{result['device']}; torch {versions['torch']}; importable: {', '.join(have) or 'none'}"


def _importable(module: str, name: str) -> bool | str:
    """True, or why not."""
    try:
        getattr(importlib.import_module(module), name)
        return True
    except Exception as exc:  # missing, or built for another torch or CUDA
        return f"{type(exc).__name__}: {exc}"[:300]


def attention(ctx: Context) -> tuple[dict, str]:
    from _profile_attention import REQUIRED, attention_benchmark

    shape = ctx.shape(ctx.shape_name)
    m = shape["model"]
    result = attention_benchmark(
        rows=shape["ftc_rows"], context=shape["context"], heads=m["num_attention_heads"],
        kv_heads=m["num_key_value_heads"], head_dim=m["hidden_size"] // m["num_attention_heads"],
        iters=20 if ctx.cuda else 10, warmup=5 if ctx.cuda else 2,
    )  # fmt: skip
    kernels = result["kernels"]
    required = REQUIRED + (("flex_compiled",) if ctx.cuda else ())
    broken = [k for k in required if kernels[k]["status"] == "failed"]
    if broken:
        result["status"] = "failed"
        result["error"] = f"{', '.join(broken)} failed"
    line = ", ".join(
        f"{k} {v['ms']:.2f} ms (diff {v['max_abs_diff_out']:.1e})" if v["status"] == "ok" else f"{k} {v['status']}"
        for k, v in kernels.items()
    )
    return result, line


def step(ctx: Context) -> tuple[dict, str]:
    shape = ctx.shape(ctx.shape_name)
    job = ctx.plan(ctx.shape_name, shape, "profiled", PROFILE_STEPS, {})
    job.update(steps=PROFILE_STEPS, warmup=STEP_WARMUP, profile=True, need_s=60 if ctx.cuda else 10)
    result = ctx.run_workers("step", [job], one_process_each=True)["profiled"]
    if result["status"] == "ok" and result["profile"]["status"] != "ok":
        result["status"], result["error"] = "failed", result["profile"]["error"]
    if result["status"] != "ok":
        return result, result.get("error") or result.get("reason") or "see log_tail"
    categories = result["profile"]["categories"]
    top = sorted(categories.items(), key=lambda kv: -kv[1]["pct"])[:4]
    idle = result["profile"]["idle"]
    optimizer = result["optimizer"].get("deepspeed")
    if result["optimizer"].get("torch"):  # a DeepSpeed wrapper over torch's optimizer
        optimizer = f"{optimizer} over {result['optimizer']['torch']}"
    line = (
        f"{optimizer}; engine.step"
        f" {result['engine_step_ms']['median']:.1f} ms; step {result['step_wall_ms']['median']:.1f} ms;"
        f" host syncs/step {result['host_syncs']['median_per_step']}; "
        + ", ".join(f"{k} {v['pct']:.0f}%" for k, v in top)
        + (f"; GPU idle {idle['idle_pct']:.0f}%" if idle.get("applicable") else "")
    )
    return result, line


def ablations(ctx: Context) -> tuple[dict, str]:
    shape = ctx.shape(ctx.shape_name)
    steps, warmup = (8, 3) if ctx.cuda else (6, 2)
    jobs, runs = [], {}
    for name, options in ABLATIONS.items():
        if options is None and not ctx.cuda:
            runs[name] = {"status": "skipped", "reason": "GPU only: on a CPU kernels auto is PyTorch's already"}
            continue
        job = ctx.plan(ctx.shape_name, shape, name, steps, options if options is not None else GPU_ONLY[name])
        # a run starts only with the time for it and for the LoRA stage after it left
        compiling = 60 if ctx.cuda and "torch_compile" in (options or {}) else 0  # its compile time, in the warm-up
        need = (40 if ctx.cuda else 3) + compiling + _lora_need(ctx.cuda)
        jobs.append({**job, "steps": steps, "warmup": warmup, "profile": False, "need_s": need})
    runs.update(ctx.run_workers("ablations", jobs, one_process_each=ctx.cuda))
    runs = {name: runs[name] for name in ABLATIONS}
    failed = [name for name, r in runs.items() if r["status"] == "failed"]
    result = {"status": "failed" if failed else "ok", "runs": runs}
    if failed:
        result["error"] = "; ".join(f"{name}: {runs[name].get('error')}" for name in failed)[:2000]
    base = runs["default"].get("tokens_per_s", {}).get("median")
    for r in runs.values():
        rate = r.get("tokens_per_s", {}).get("median")
        if rate and base:
            r["x_default"] = rate / base
    line = ", ".join(
        f"{k} {r['tokens_per_s']['median']:,.0f} tok/s" if r["status"] == "ok" else f"{k} {r['status']}"
        for k, r in runs.items()
    )
    return result, line


def lora(ctx: Context) -> tuple[dict, str]:
    name = "8b-lora" if ctx.cuda else ctx.shape_name
    shape = ctx.shape(name)
    if not shape["lora"]:
        shape["lora"] = LORA  # on a CPU: a LoRA of the profiled shape stands in for the 8B one
    steps, warmup = (8, 3) if ctx.cuda else (5, 2)
    job = ctx.plan(name, shape, "lora", steps, {})
    job.update(steps=steps, warmup=warmup, profile=False, need_s=90 if ctx.cuda else 5)
    result = ctx.run_workers("lora", [job], one_process_each=True)["lora"]
    result.update(shape=name, lora=shape["lora"])
    if result["status"] != "ok":
        return result, result.get("error") or result.get("reason") or "see log_tail"
    memory = f"peak GPU {result['peak_gpu_gib']:.1f} GiB" if ctx.cuda else f"peak RSS {result['peak_rss_gib']:.2f} GiB"
    return result, f"{name} r={shape['lora']['r']}: {result['tokens_per_s']['median']:,.0f} tok/s, {memory}"


def _lora_need(cuda: bool) -> float:
    return 150 if cuda else 10


#: name, stage, the least time it needs (GPU, CPU)
STAGES = [
    ("environment", environment, lambda cuda: 5),
    ("attention", attention, lambda cuda: 60 if cuda else 5),
    ("step", step, lambda cuda: 90 if cuda else 20),
    ("ablations", ablations, lambda cuda: (40 if cuda else 3) + _lora_need(cuda)),
    ("lora", lora, _lora_need),
]
