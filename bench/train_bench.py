"""Training throughput and memory: `ftc run` against a plain Hugging Face Trainer, same model shape, same data.

    python bench/train_bench.py [--shape small|1b|8b-lora] [--variants a,b,..] [--steps N] [--json FILE]

One after the other, each in a fresh process, on identical synthetic chat data (lognormal lengths around 230
tokens before the chat template, as chat SFT data looks; the report gives the tokenized median) and the same
random-weight model (speed does not depend on the values):

- ``hf_padded``: HF Trainer, batches padded to their longest example (bench/hf_trainer_baseline.py), the default.
- ``hf_naive_packed``: HF Trainer on examples concatenated and cut into full rows (samples see each other: wrong,
  but the fastest thing a Trainer user can do).
- ``ftc_packed``: ftc with sample_packing (per-sample attention, chunked loss); ``ftc_padded``: ftc, padded;
  ``ftc_packed_sdpa``: packed with SDPA instead of FlexAttention (GPU); ``ftc_packed_ckpt``: with activation
  checkpointing.

Reported per variant: real (non-padding) tokens/s over the steps after the first ``--warmup``, MFU (GPU: model
FLOPs, 6N per token for full fine-tuning, 4N for LoRA, plus causal attention over the actual sample lengths, the
same count for every variant although ftc skips the output layer for prompt tokens; peak 989e12 bf16 for SXM
H100/H200), peak memory (GPU allocated, or the process's RSS on CPU), time from process start to the first step
done. Ratios are against ``hf_padded`` of the same run. Shapes: ``small`` (CPU), ``1b`` (Llama-3.2-1B, full),
``8b-lora`` (Llama-3-8B, LoRA r=16 on all linear layers), seq 2048 and bf16 on a GPU.
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
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LEARNING_RATE = 1e-5  # both sides
# dense bf16, by device name (the first that the name contains): the PCIe and NVL parts run lower clocks
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H200 NVL": 835e12, "H100": 989e12, "H200": 989e12}

_LLAMA3 = dict(
    num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192
)
SHAPES = {
    # a small Llama shape for CPUs; its output layer is ~a quarter of the matmul work, as in real small models
    "small": dict(
        model=dict(
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=4,
            vocab_size=4096,
            max_position_embeddings=2048,
        ),
        lora=None,
        context=1024,
        ftc_rows=2,
        hf_padded_batch=8,
        hf_packed_rows=2,
        steps=24,
        warmup=2,
        variants=["hf_padded", "hf_naive_packed", "ftc_packed", "ftc_packed_sdpa", "ftc_padded"],
    ),
    # the same with a vocabulary as small as the tokenizer's: the output layer is cheap, so attention and per-step
    # overheads decide (where the chunked loss saves nothing)
    "small-vocab": dict(
        model=dict(
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=4,
            vocab_size=640,
            max_position_embeddings=2048,
        ),
        lora=None,
        context=1024,
        ftc_rows=2,
        hf_padded_batch=8,
        hf_packed_rows=2,
        steps=24,
        warmup=2,
        variants=["hf_padded", "hf_naive_packed", "ftc_packed", "ftc_packed_sdpa", "ftc_padded"],
    ),
    "1b": dict(
        model=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, tie_word_embeddings=True, **_LLAMA3),
        lora=None,
        context=2048,
        ftc_rows=4,
        hf_padded_batch=16,
        hf_packed_rows=2,
        steps=40,
        warmup=5,
        variants=["hf_padded", "hf_naive_packed", "ftc_packed", "ftc_packed_sdpa"],
    ),
    "8b-lora": dict(
        model=dict(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, tie_word_embeddings=False, **_LLAMA3
        ),
        lora=dict(r=16, alpha=32),
        context=2048,
        ftc_rows=4,
        hf_padded_batch=16,
        hf_packed_rows=2,
        steps=20,
        warmup=4,
        variants=["hf_padded", "hf_naive_packed", "ftc_packed", "ftc_packed_ckpt"],
    ),
}
FTC_VARIANTS = {
    "ftc_packed": dict(sample_packing=True),
    "ftc_packed_sdpa": dict(sample_packing=True, attn_implementation="sdpa"),
    "ftc_packed_torch": dict(sample_packing=True, kernels="torch"),  # no Liger kernels
    "ftc_packed_ckpt": dict(sample_packing=True, activation_checkpointing=True),
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


def run_ftc(root: Path, shape: dict, name: str, lengths: np.ndarray) -> dict:
    """ftc on the first examples of the same file: as many as make ``steps`` steps (ftc trains whole epochs)."""
    options = FTC_VARIANTS[name]
    rows = shape["ftc_rows"] if options["sample_packing"] else shape["hf_padded_batch"]
    wanted = (shape["steps"] + 1) * rows
    count = (
        int(np.searchsorted(np.cumsum(lengths), wanted * shape["context"] * 0.97)) + 1
        if options["sample_packing"]
        else wanted
    )
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
        **options,
    }
    if shape["lora"]:
        spec["lora_config"] = {
            "r": shape["lora"]["r"],
            "lora_alpha": shape["lora"]["alpha"],
            "target_modules": "all-linear",
            "lora_dropout": 0.0,
        }
    (root / f"{name}.json").write_text(json.dumps(spec))
    env = {**os.environ, "FTC_CACHE_DIR": str(root / f"cache-{name}")}
    plan = root / f"{name}.plan.json"
    subprocess.run(
        [sys.executable, "-m", "ftc.cli", "compile", str(root / f"{name}.json"), "-o", str(plan)],
        check=True,
        env=env,
        capture_output=True,
        cwd=root,
    )
    result = _measured(root, name, [str(REPO / "bench" / "_ftc_run.py"), str(plan)], env)
    metrics = root / f"out-{name}" / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    steps = [r for r in records if r["type"] == "train"]
    tokens = np.diff([0] + [r["tokens"] for r in steps]).tolist()
    shutil.rmtree(
        root / f"out-{name}", ignore_errors=True
    )  # a full fine-tune's checkpoint holds GBs of optimizer state
    return {**result, "steps": [[r["time"], n] for r, n in zip(steps, tokens)]}


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
    run = subprocess.run(
        [sys.executable, *command, str(out), *options], env=env, capture_output=True, text=True, cwd=root
    )
    result = json.loads(out.read_text()) if out.exists() else {"start": 0.0}
    if run.returncode != 0:
        result["failed"] = (run.stdout + run.stderr).strip().splitlines()[-1:] or [f"exit {run.returncode}"]
    return result


def summarize(raw: dict, *, warmup: int, flops_per_token: float | None, peak_flops: float | None) -> dict:
    steps = raw["steps"]
    summary: dict = {"steps": len(steps)}
    if raw.get("failed"):
        summary["failed"] = raw["failed"]
    if len(steps) > warmup + 1:
        timed = steps[warmup:]
        tokens_per_s = sum(n for _, n in timed[1:]) / (timed[-1][0] - timed[0][0])
        summary["real_tokens_per_s"] = tokens_per_s
        summary["time_to_first_step_s"] = steps[0][0] - raw["start"]
        if flops_per_token and peak_flops:
            summary["mfu"] = tokens_per_s * flops_per_token / peak_flops
    if "peak_gpu_bytes" in raw:
        summary["peak_gpu_gib"] = raw["peak_gpu_bytes"] / 2**30
    if "peak_rss_kb" in raw:
        summary["peak_rss_gib"] = raw["peak_rss_kb"] / 2**20
    return summary


def flops_per_token(shape: dict, mean_square_over_mean: float) -> float:
    """Training FLOPs per real token: 6N (full) or 4N (LoRA: no weight gradients) for the matmul weights N, plus
    causal attention over whole samples (forward 2 x layers x width x L^2 per sample, backward twice that)."""
    m = shape["model"]
    d, layers, head = m["hidden_size"], m["num_hidden_layers"], m["hidden_size"] // m["num_attention_heads"]
    kv = m["num_key_value_heads"] * head
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * m["intermediate_size"]
    n = layers * per_layer + d * m["vocab_size"]
    attention = 6 * layers * d * mean_square_over_mean
    return (4 if shape["lora"] else 6) * n + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--variants", help="comma-separated; default: the shape's")
    parser.add_argument("--steps", type=int, help="optimizer steps per variant (default: the shape's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch
    import transformers

    shape = dict(SHAPES[args.shape])
    if args.steps:
        shape["steps"] = args.steps
    variants = args.variants.split(",") if args.variants else shape["variants"]
    cuda = torch.cuda.is_available()
    machine = torch.cuda.get_device_name() if cuda else f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU"
    peak = next((v for k, v in PEAK_FLOPS.items() if k in machine), None)
    # enough examples for the variant that reads the most: HF padded batches, or full packed rows
    examples = max(
        shape["hf_padded_batch"],
        shape["hf_packed_rows"] * shape["context"] // 200,
        shape["ftc_rows"] * shape["context"] // 200,
    ) * (shape["steps"] + 2)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_workdir(root, shape, examples)
        fpt = flops_per_token(shape, data["mean_square_over_mean"])
        for name in variants:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            raw = run_hf(root, name) if name in HF_VARIANTS else run_ftc(root, shape, name, data["lengths"])
            results[name] = summarize(raw, warmup=shape["warmup"], flops_per_token=fpt, peak_flops=peak)
            if args.json:  # after every variant: a run stopped by a time budget keeps what it measured
                partial = _report(args, shape, machine, data, fpt, peak, results)
                args.json.write_text(json.dumps({**partial, "complete": False}, indent=2) + "\n")
    report = _report(args, shape, machine, data, fpt, peak, results)
    print(f"{machine}; torch {torch.__version__}, transformers {transformers.__version__}; shape {args.shape}")
    print(
        f"data: {data['examples']} examples, median {data['median_tokens']:.0f} tokens,"
        f" mean {data['mean_tokens']:.0f}, max {data['max_tokens']}"
    )
    memory = "peak_gpu_gib" if cuda else "peak_rss_gib"
    print(
        f"{'run':<18} {'steps':>5} {'real tok/s':>11} {'x HF':>6} {'MFU':>6}"
        f" {'first step':>10} {'peak GiB':>9} {'x HF':>6}"
    )
    for name, r in results.items():
        ratio = report["ratios_vs_hf_padded"][name]
        if "real_tokens_per_s" not in r:
            print(f"{name:<18} {r['steps']:>5}  failed: {r.get('failed')}")
            continue
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        x = {m: f"{ratio[m]:.2f}" if m in ratio else "-" for m in ("real_tokens_per_s", memory)}
        print(
            f"{name:<18} {r['steps']:>5} {r['real_tokens_per_s']:>11,.0f} {x['real_tokens_per_s']:>6} {mfu:>6}"
            f" {r['time_to_first_step_s']:>8.1f} s"
            f" {r.get(memory, 0):>9.2f} {x[memory]:>6}"
        )
    if args.json:
        args.json.write_text(json.dumps({**report, "complete": True}, indent=2) + "\n")


def _report(args, shape: dict, machine: str, data: dict, fpt: float, peak, results: dict) -> dict:
    """The JSON report of the variants run so far."""
    import torch
    import transformers

    data = {k: v for k, v in data.items() if k != "lengths"}
    base = results.get("hf_padded", {})
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "shape": args.shape,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "model": shape["model"],
        "lora": shape["lora"],
        "context": shape["context"],
        "steps": shape["steps"],
        "warmup": shape["warmup"],
        "data": data,
        "flops_per_token": fpt,
        "peak_flops": peak,
        "results": results,
        "ratios_vs_hf_padded": {
            k: {
                m: v[m] / base[m]
                for m in ("real_tokens_per_s", "peak_gpu_gib", "peak_rss_gib")
                if m in v and base.get(m)
            }
            for k, v in results.items()
        },
    }


if __name__ == "__main__":
    main()
