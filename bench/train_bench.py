"""Training throughput and memory: `ftc run` against a plain Hugging Face Trainer, same model shape, same data.

    python bench/train_bench.py [--shape small|small-vocab|1b|8b-lora] [--variants a,b,..] [--steps N]
                                [--repeat N] [--json FILE]

Each variant in a fresh process, on identical synthetic chat data (lognormal lengths around 230 tokens before the
chat template, as chat SFT data looks; the report gives the tokenized median) and the same random-weight model
(speed does not depend on the values). With ``--repeat N`` the list runs N times interleaved (A B C A B C), so the
noise of a loaded machine shows as the spread of each variant's per-run medians.

- ``hf_padded``: HF Trainer, batches padded to their longest example (bench/hf_trainer_baseline.py), the default.
- ``hf_naive_packed``: HF Trainer on examples concatenated and cut into full rows (samples see each other: wrong,
  but the fastest thing a Trainer user can do).
- ``ftc_packed``: ftc with sample_packing (per-sample attention, chunked loss); ``ftc_padded``: ftc, padded;
  ``ftc_packed_sdpa``: packed with transformers' dense-mask SDPA; ``ftc_packed_ckpt``: with activation
  checkpointing; ``ftc_packed_compiled``: with its decoder layers compiled (torch_compile); ``ftc_packed_accum2``:
  a step's rows one micro-batch at a time (two accumulated: half the activation memory).

What is measured, per optimizer step: its wall time (from the end of the step before to its own end: ftc's
metrics.jsonl "time" of each step record, the HF Trainer's clock after each ``training_step``, synchronized on a
GPU) and its real (non-padding) tokens (ftc's "tokens" counter; HF: the attention mask's sum). Steps counted: those
after the first ``warmup`` of each run, less partial steps: where a step's rows are recorded (HF), one with fewer
rows than a full step; else, in packed layouts (ftc trains whole epochs, so its last step holds what is left), a
last step with under 90% of the median step's tokens. ftc padded is given a whole number of steps' examples.

Reported per variant: ``real_tokens_per_s``, the median over the counted steps (all runs) of each step's tokens/s;
``real_tokens_per_s_mean`` (their tokens over their time) for reference; ``real_tokens_per_step`` (median), the
steps counted and excluded; MFU from the median (GPU: model FLOPs, 6N per token for full fine-tuning, 4N for LoRA,
plus causal attention over the actual sample lengths, the same count for every variant although ftc skips the
output layer for prompt tokens; peak 989e12 bf16 for SXM H100/H200), peak memory (GPU allocated, or the process's
RSS on CPU; the largest of the runs), time from process start to the first step done (median of the runs). Ratios:
"x HF" against ``hf_padded``, "x naive" against ``hf_naive_packed``, of the same run. Shapes: ``small`` and
``small-vocab`` (CPU), ``1b`` (Llama-3.2-1B, full), ``8b-lora`` (Llama-3-8B, LoRA r=16 on all linear layers), seq
2048 and bf16 on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _train_report import flops_per_token, print_table, report, summarize

REPO = Path(__file__).resolve().parents[1]
LEARNING_RATE = 1e-5  # both sides
# dense bf16, by device name (the first that the name contains): the PCIe and NVL parts run lower clocks
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H200 NVL": 835e12, "H100": 989e12, "H200": 989e12}

_LLAMA3 = dict(
    num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192
)
# a small Llama shape for CPUs, context 1024 (its settings below)
_SMALL = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4)
_CPU = dict(lora=None, context=1024, ftc_rows=2, hf_padded_batch=8, hf_packed_rows=2, steps=24, warmup=2)
_CPU_VARIANTS = ["hf_padded", "hf_naive_packed", "ftc_packed", "ftc_padded"]  # ftc_packed_sdpa: by --variants
# Rows per step give every variant about the same real tokens per step, so per-step costs (the optimizer step above
# all) weigh alike: ftc_rows (ftc's packed rows of `context` tokens), hf_packed_rows (HF's naive rows, always full)
# and hf_padded_batch (examples per padded batch, ftc's and HF's), with the data's mean of ~260 tokens an example.
# CPU (context 1024): 2 x 1024 = 2,048 naive, 8 x ~260 = ~2,100 padded, 2 rows = 1,655 ftc packed (next-fit fills
# 81% of a 1024-token row: measured), the most apart 1.24x. GPU (context 2048): 2 x 2048 = 4,096 naive, 16 x ~260 =
# ~4,200 padded, 2 rows = ~3,600 ftc packed (~88% full, from ftc's 44 steps of 4 rows over the same tokens in
# bench/results/gpu-h200-train-1b-2026-11-30.json). HF padded cannot go higher on 1b (16 examples peaked at 90.9 GiB
# on an H200, same file), so ftc's rows went from 4 (~1.7x the others' tokens a step) to 2.
SHAPES = {
    # its output layer is ~a quarter of the matmul work, as in real small models
    "small": dict(model=dict(_SMALL, vocab_size=4096, max_position_embeddings=2048), variants=_CPU_VARIANTS, **_CPU),
    # the same with a vocabulary as small as the tokenizer's: the output layer is cheap, so attention and per-step
    # overheads decide (where the chunked loss saves nothing)
    "small-vocab": dict(
        model=dict(_SMALL, vocab_size=640, max_position_embeddings=2048), variants=_CPU_VARIANTS, **_CPU
    ),
    "1b": dict(
        model=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, tie_word_embeddings=True, **_LLAMA3),
        lora=None,
        context=2048,
        ftc_rows=2,
        hf_padded_batch=16,
        hf_packed_rows=2,
        steps=40,
        warmup=5,
        variants=["hf_padded", "hf_naive_packed", "ftc_packed", "ftc_packed_compiled", "ftc_packed_sdpa"],
    ),
    "8b-lora": dict(
        model=dict(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, tie_word_embeddings=False, **_LLAMA3
        ),
        lora=dict(r=16, alpha=32),
        context=2048,
        ftc_rows=2,
        hf_padded_batch=16,
        hf_packed_rows=2,
        steps=20,
        warmup=4,
        # 2 rows of 2,048 tokens keep ~5.4 MB of bf16 activations a token (32 layers, LoRA without dropout): ~22 GB
        # beside 15 GiB of weights, at the 40 GiB line; accum2 keeps half of that, ckpt a layer's input only
        variants=[
            "hf_padded",
            "hf_naive_packed",
            "ftc_packed",
            "ftc_packed_accum2",
            "ftc_packed_compiled",
            "ftc_packed_ckpt",
        ],
    ),
}
FTC_VARIANTS = {
    "ftc_packed": dict(sample_packing=True),
    "ftc_packed_sdpa": dict(sample_packing=True, attn_implementation="sdpa"),
    "ftc_packed_torch": dict(sample_packing=True, kernels="torch"),  # no Liger kernels
    "ftc_packed_ckpt": dict(sample_packing=True, activation_checkpointing=True),
    "ftc_packed_compiled": dict(sample_packing=True, torch_compile=True),
    # the same rows a step, one at a time: half the activation memory
    "ftc_packed_accum2": dict(sample_packing=True, train_batch_size_per_device=1, gradient_accumulation_steps=2),
    "ftc_padded": dict(sample_packing=False),
}
HF_VARIANTS = {"hf_padded": "padded", "hf_naive_packed": "naive-packed"}

_BUILD_MODEL = """
import sys, json, torch
from transformers import LlamaConfig, LlamaForCausalLM
config = LlamaConfig(**json.loads(sys.argv[2]), bos_token_id=1, eos_token_id=2, pad_token_id=0)
torch.manual_seed(0)
with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
    model = LlamaForCausalLM(config)
model.to(torch.bfloat16 if torch.cuda.is_available() else torch.float32).save_pretrained(sys.argv[1])
"""


def make_workdir(root: Path, shape: dict, examples: int, seed: int = 0) -> dict:
    """The model, its tokenizer, ``examples`` chat examples and the settings both sides read."""
    from transformers import AutoTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' builders: tests/support/
    from support.models import build_tokenizer, write_jsonl

    model_dir = root / "model"
    subprocess.run([sys.executable, "-c", _BUILD_MODEL, str(model_dir), json.dumps(shape["model"])], check=True)
    build_tokenizer(model_dir, max_length=shape["context"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    rng = np.random.default_rng(seed)
    unit = "12 + 34 = 46, 7 + 8 = 15. "
    per_unit = len(tokenizer(unit, add_special_tokens=False).input_ids)
    records, lengths = [], []
    for target in np.clip(rng.lognormal(mean=np.log(230), sigma=0.6, size=examples), 24, shape["context"] - 64).astype(
        int
    ):
        prompt = unit * max(1, int(target * 0.6) // per_unit)
        answer = unit * max(1, int(target * 0.4) // per_unit)
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        records.append({"messages": messages})
        lengths.append(
            len(tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False).input_ids)
        )
    write_jsonl(root / "train.jsonl", records)
    lengths = np.asarray(lengths)
    settings = {k: shape[k] for k in ("lora", "context", "hf_padded_batch", "hf_packed_rows", "steps")}
    (root / "settings.json").write_text(json.dumps({**settings, "learning_rate": LEARNING_RATE, "seed": 0}))
    return {
        "examples": examples,
        "median_tokens": float(np.median(lengths)),
        "mean_tokens": float(lengths.mean()),
        "max_tokens": int(lengths.max()),
        "mean_square_over_mean": float((lengths.astype(float) ** 2).mean() / lengths.mean()),
        "lengths": lengths,
    }


def rows_filled(lengths: np.ndarray, context: int, rows: int) -> int:
    """How many of the first examples fill ``rows`` rows of ``context`` tokens, packed next-fit as ftc packs them
    (ftc packs a seeded permutation: about as many rows)."""
    filled, used = 0, 0
    for i, n in enumerate(lengths):
        if used and used + n > context:
            filled, used = filled + 1, 0
            if filled == rows:
                return i
        used += int(n)
    return len(lengths)


def run_ftc(root: Path, shape: dict, name: str, lengths: np.ndarray) -> dict:
    """ftc on the first examples of the same file: as many as make ``steps`` + 1 full steps (ftc trains whole epochs:
    in packed layouts the last step holds what is left, and counts as partial when it is)."""
    options = FTC_VARIANTS[name]
    rows = shape["ftc_rows"] if options["sample_packing"] else shape["hf_padded_batch"]
    wanted = (shape["steps"] + 1) * rows
    count = rows_filled(lengths, shape["context"], wanted) if options["sample_packing"] else wanted
    env = {**os.environ, "FTC_CACHE_DIR": str(root / f"cache-{name}")}
    plan = root / f"{name}.plan.json"
    if not plan.exists():  # a repeated variant runs the same plan
        _compile_ftc(root, shape, name, count, rows, env, plan)
    result = _measured(root, name, [str(REPO / "bench" / "_ftc_run.py"), str(plan)], env)
    metrics = root / f"out-{name}" / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    steps = [r for r in records if r["type"] == "train"]
    tokens = np.diff([0] + [r["tokens"] for r in steps]).tolist()
    # a full fine-tune's checkpoint holds GBs of optimizer state
    shutil.rmtree(root / f"out-{name}", ignore_errors=True)
    return {**result, "steps": [[r["time"], n] for r, n in zip(steps, tokens)]}


def _compile_ftc(root: Path, shape: dict, name: str, count: int, rows: int, env: dict, plan: Path) -> None:
    train = root / f"train-{name}.jsonl"
    train.write_text("".join((root / "train.jsonl").read_text().splitlines(keepends=True)[:count]))
    spec = {
        "model_id": "bench/llama",
        "initial_base_model_ckpt_path": "model",
        "train_path": train.name,
        "num_epochs": 1,
        "learning_rate": LEARNING_RATE,
        "seed": 0,
        "context_length": shape["context"],
        "train_batch_size_per_device": rows,
        "deepspeed": {"zero_stage": 0},
        "output_dir": f"out-{name}",
        "checkpoint_and_evaluation_frequency": {"unit": "steps", "frequency": 10**6},  # only the final checkpoint
        "training_mode": "lora" if shape["lora"] else "full",
        **FTC_VARIANTS[name],
    }
    if shape["lora"]:
        spec["lora_config"] = {
            "r": shape["lora"]["r"],
            "lora_alpha": shape["lora"]["alpha"],
            "target_modules": "all-linear",
            "lora_dropout": 0.0,
        }
    (root / f"{name}.json").write_text(json.dumps(spec))
    subprocess.run(
        [sys.executable, "-m", "ftc.cli", "compile", str(root / f"{name}.json"), "-o", str(plan)],
        check=True,
        env=env,
        capture_output=True,
        cwd=root,
    )


def run_hf(root: Path, name: str) -> dict:
    return {
        "steps": [],
        **_measured(
            root, name, [str(REPO / "bench" / "hf_trainer_baseline.py"), str(root)], None, "--layout", HF_VARIANTS[name]
        ),
    }


def _measured(root: Path, name: str, command: list[str], env: dict | None, *options: str) -> dict:
    """Run ``python COMMAND... RESULT.json OPTIONS...`` in a fresh process; its result, with the last line of its
    output under "failed" when it exits non-zero."""
    out = root / f"{name}.result.json"
    out.unlink(missing_ok=True)  # a repeat reads its own result, never the run's before
    run = subprocess.run(
        [sys.executable, *command, str(out), *options], env=env, capture_output=True, text=True, cwd=root
    )
    result = json.loads(out.read_text()) if out.exists() else {"start": 0.0}
    if run.returncode != 0:
        result["failed"] = (run.stdout + run.stderr).strip().splitlines()[-1:] or [f"exit {run.returncode}"]
    return result


def _packed(name: str) -> bool:
    return name == "hf_naive_packed" or FTC_VARIANTS.get(name, {}).get("sample_packing", False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--variants", help="comma-separated; default: the shape's")
    parser.add_argument("--steps", type=int, help="optimizer steps per variant and run (default: the shape's)")
    parser.add_argument("--repeat", type=int, default=1, help="run the variant list N times, interleaved")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    shape = dict(SHAPES[args.shape])
    if args.steps:
        shape["steps"] = args.steps
    variants = args.variants.split(",") if args.variants else shape["variants"]
    unknown = [v for v in variants if v not in FTC_VARIANTS and v not in HF_VARIANTS]
    if unknown or args.repeat < 1 or shape["steps"] <= shape["warmup"]:
        parser.error(f"unknown variants {unknown}" if unknown else "--repeat >= 1 and --steps > the warm-up steps")
    cuda = torch.cuda.is_available()
    machine = torch.cuda.get_device_name() if cuda else f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU"
    peak = next((v for k, v in PEAK_FLOPS.items() if k in machine), None)
    # enough examples for the variant that reads the most: HF padded batches, or full packed rows (~85% full on CPU)
    per_packed_step = max(shape["hf_packed_rows"], shape["ftc_rows"]) * shape["context"] // 150
    examples = max(shape["hf_padded_batch"], per_packed_step) * (shape["steps"] + 2)
    raws: dict[str, list[dict]] = {name: [] for name in variants}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_workdir(root, shape, examples)
        fpt = flops_per_token(shape, data["mean_square_over_mean"])
        for repeat in range(args.repeat):
            for name in variants:
                print(f"running {name} ({repeat + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
                raw = run_hf(root, name) if name in HF_VARIANTS else run_ftc(root, shape, name, data["lengths"])
                raws[name].append(raw)
                results[name] = summarize(
                    raws[name], warmup=shape["warmup"], packed=_packed(name), flops_per_token=fpt, peak_flops=peak
                )
                if args.json:  # after every run: a run stopped by a time budget keeps what it measured
                    so_far = report(args.shape, args.repeat, shape, machine, data, fpt, peak, results)
                    args.json.write_text(json.dumps({**so_far, "complete": False}, indent=2) + "\n")
    final = report(args.shape, args.repeat, shape, machine, data, fpt, peak, results)
    print_table(final, memory="peak_gpu_gib" if cuda else "peak_rss_gib")
    if args.json:
        args.json.write_text(json.dumps({**final, "complete": True}, indent=2) + "\n")


if __name__ == "__main__":
    main()
