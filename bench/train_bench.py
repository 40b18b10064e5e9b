"""Benchmark `ftc run` against a plain Hugging Face Trainer on the same model shape and the same chat data.

    python bench/train_bench.py [--examples 256] [--json results.json]

Runs, one after the other and each in a fresh process: the HF Trainer baseline (bench/hf_trainer_baseline.py:
padded batches, the way a typical user writes it), ftc with padded batches, and ftc with sample packing. Reports
real (non-padding) tokens/s over the steps after the first, time from process start to the first optimizer step,
and peak RSS; ratios are against the baseline of the same run. The model is a small random Llama shape (speed does
not depend on the values); example lengths are lognormal with a median of about 230 tokens, as chat SFT data looks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHAPE = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048)
CONTEXT = 1024


def make_workdir(root: Path, n: int, seed: int = 0) -> dict:
    from transformers import AutoTokenizer

    from ftc.testing import build_tiny_model, write_jsonl

    build_tiny_model(root / "model", **SHAPE)
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    rng = np.random.default_rng(seed)
    unit = "12 + 34 = 46, 7 + 8 = 15. "
    per_unit = len(tokenizer(unit, add_special_tokens=False).input_ids)
    records, lengths = [], []
    for target in np.clip(rng.lognormal(mean=np.log(230), sigma=0.6, size=n), 24, CONTEXT - 64).astype(int):
        prompt = unit * max(1, int(target * 0.6) // per_unit)
        answer = unit * max(1, int(target * 0.4) // per_unit)
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        records.append({"messages": messages})
        lengths.append(len(tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False).input_ids))
    write_jsonl(root / "train.jsonl", records)
    settings = {"batch_size": 8, "learning_rate": 1e-4, "seed": 0}
    (root / "settings.json").write_text(json.dumps(settings))
    return {"examples": n, "median_tokens": float(np.median(lengths)), "mean_tokens": float(np.mean(lengths)), "max_tokens": int(max(lengths))}


def ftc_spec(root: Path, name: str, packed: bool) -> Path:
    settings = json.loads((root / "settings.json").read_text())
    spec = {
        "model_id": "bench/small-llama",
        "initial_base_model_ckpt_path": "model",
        "train_path": "train.jsonl",
        "num_epochs": 1,
        "learning_rate": settings["learning_rate"],
        "seed": settings["seed"],
        "context_length": CONTEXT,
        "deepspeed": {"zero_stage": 0},
        "output_dir": f"out-{name}",
        "checkpoint_and_evaluation_frequency": {"unit": "steps", "frequency": 10**6},  # only the final checkpoint
    }
    if packed:
        spec.update(sample_packing=True, train_batch_size_per_device=2)  # 2 rows of 1024 ~ the tokens of 8 examples
    else:
        spec.update(train_batch_size_per_device=settings["batch_size"])
    path = root / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


_FTC_WRAPPER = """
import json, resource, sys, time
start = time.time()
from ftc.cli import main
code = main(["run", sys.argv[1]])
json.dump({"start": start, "code": code, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, open(sys.argv[2], "w"))
"""


def run_ftc(root: Path, name: str, packed: bool) -> dict:
    spec = ftc_spec(root, name, packed)
    env = {**os.environ, "FTC_CACHE_DIR": str(root / f"cache-{name}")}
    subprocess.run([sys.executable, "-m", "ftc.cli", "compile", str(spec), "-o", str(root / f"{name}.plan.json")], check=True, env=env, capture_output=True)
    out = root / f"{name}.result.json"
    subprocess.run([sys.executable, "-c", _FTC_WRAPPER, str(root / f"{name}.plan.json"), str(out)], check=True, env=env, capture_output=True)
    result = json.loads(out.read_text())
    steps = [json.loads(line) for line in (root / f"out-{name}" / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["type"] == "train"]
    times = [s["time"] for s in steps]
    tokens = [s["tokens"] for s in steps]
    return _summary(result["start"], times, tokens[-1] - tokens[0], result["peak_rss_kb"])


def run_hf(root: Path) -> dict:
    out = root / "hf.result.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "hf_trainer_baseline.py"), str(root), str(out)], check=True, capture_output=True)
    result = json.loads(out.read_text())
    times = [t for t, _ in result["steps"]]
    tokens_after_first = sum(n for _, n in result["steps"][1:])
    return _summary(result["start"], times, tokens_after_first, result["peak_rss_kb"])


def _summary(start: float, step_times: list[float], tokens_after_first: int, peak_rss_kb: int) -> dict:
    return {
        "steps": len(step_times),
        "real_tokens_per_s": tokens_after_first / (step_times[-1] - step_times[0]),
        "time_to_first_step_s": step_times[0] - start,
        "peak_rss_mb": peak_rss_kb / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_workdir(root, args.examples)
        results = {"hf_trainer_padded": run_hf(root), "ftc_padded": run_ftc(root, "padded", packed=False), "ftc_packed": run_ftc(root, "packed", packed=True)}
    base = results["hf_trainer_padded"]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "model": SHAPE,
        "data": data,
        "results": results,
        "ratios_vs_hf_trainer": {k: {"real_tokens_per_s": v["real_tokens_per_s"] / base["real_tokens_per_s"], "peak_rss": v["peak_rss_mb"] / base["peak_rss_mb"]} for k, v in results.items()},
    }
    print(f"{report['machine']}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"data: {data['examples']} examples, median {data['median_tokens']:.0f} tokens, mean {data['mean_tokens']:.0f}, max {data['max_tokens']}")
    print(f"{'run':<20} {'steps':>6} {'real tok/s':>11} {'x HF':>6} {'first step':>11} {'peak RSS':>10} {'x HF':>6}")
    for name, r in results.items():
        ratio = report["ratios_vs_hf_trainer"][name]
        print(f"{name:<20} {r['steps']:>6} {r['real_tokens_per_s']:>11,.0f} {ratio['real_tokens_per_s']:>6.2f} {r['time_to_first_step_s']:>9.1f} s {r['peak_rss_mb']:>7.0f} MB {ratio['peak_rss']:>6.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
