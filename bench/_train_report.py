"""What bench/train_bench.py reports of its runs: each variant's counted steps (warm-up and partial steps left out),
their median tokens/s, MFU and memory, the ratios against HF Trainer's two layouts, the JSON report and the table
printed (the module docstring of train_bench.py says what each number is)."""

from __future__ import annotations

import platform
import time

import numpy as np

__all__ = ["flops_per_token", "print_table", "report", "summarize", "timed_steps"]


def timed_steps(raw: dict, *, warmup: int, packed: bool) -> tuple[list[tuple[int, float]], int]:
    """One run's counted steps, each (real tokens, seconds), and how many partial steps were left out. A step's time
    runs from the end of the step before, so the first step is never counted (``warmup`` >= 1)."""
    steps = raw["steps"]
    partial = set()
    if steps and len(steps[0]) > 2:  # rows recorded: a step with fewer than a full step's
        partial = {i for i, s in enumerate(steps) if s[2] < raw.get("rows_per_step", max(r for *_, r in steps))}
    elif packed and len(steps) > 1 and steps[-1][1] < 0.9 * np.median([s[1] for s in steps]):
        partial = {len(steps) - 1}
    counted = [
        (steps[i][1], steps[i][0] - steps[i - 1][0])
        for i in range(max(warmup, 1), len(steps))
        if i not in partial and steps[i][0] > steps[i - 1][0]
    ]
    return counted, len([i for i in partial if i >= max(warmup, 1)])


def summarize(
    raws: list[dict], *, warmup: int, packed: bool, flops_per_token: float | None, peak_flops: float | None
) -> dict:
    """A variant's numbers over its runs (see the module's docstring)."""
    counted, partial, medians = [], 0, []
    for raw in raws:
        steps, left_out = timed_steps(raw, warmup=warmup, packed=packed)
        counted += steps
        partial += left_out
        if steps:
            medians.append(float(np.median([n / t for n, t in steps])))
    summary: dict = {"steps": sum(len(raw["steps"]) for raw in raws), "runs": len(raws)}
    failed = [raw["failed"] for raw in raws if raw.get("failed")]
    if failed:
        summary["failed"] = failed[0] if len(raws) == 1 else failed
    if counted:
        tokens_per_s = float(np.median([n / t for n, t in counted]))
        summary.update(
            real_tokens_per_s=tokens_per_s,
            real_tokens_per_s_mean=sum(n for n, _ in counted) / sum(t for _, t in counted),
            real_tokens_per_step=float(np.median([n for n, _ in counted])),
            counted_steps=len(counted),
            warmup_steps_excluded=sum(min(max(warmup, 1), len(raw["steps"])) for raw in raws),
            partial_steps_excluded=partial,
            run_medians=medians,
            time_to_first_step_s=float(np.median([raw["steps"][0][0] - raw["start"] for raw in raws if raw["steps"]])),
        )
        if flops_per_token and peak_flops:
            summary["mfu"] = tokens_per_s * flops_per_token / peak_flops
    if any("peak_gpu_bytes" in raw for raw in raws):
        summary["peak_gpu_gib"] = max(raw.get("peak_gpu_bytes", 0) for raw in raws) / 2**30
    if any("peak_rss_kb" in raw for raw in raws):
        summary["peak_rss_gib"] = max(raw.get("peak_rss_kb", 0) for raw in raws) / 2**20
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


def print_table(report: dict, *, memory: str) -> None:
    versions = report["versions"]
    print(f"{report['machine']}; torch {versions['torch']}, transformers {versions['transformers']};", end=" ")
    print(f"shape {report['shape']}, {report['repeat']} run(s) of each variant, interleaved")
    data = report["data"]
    print(
        f"data: {data['examples']} examples, median {data['median_tokens']:.0f} tokens,"
        f" mean {data['mean_tokens']:.0f}, max {data['max_tokens']}"
    )
    print(f"steps: counted ({report['warmup']} warm-up steps a run and partial ones, 'part.', left out); tok/s: the")
    print("median of the counted steps' real tokens/s; mean: their tokens / their time; tok/step: median")
    print(
        f"{'run':<16} {'steps':>5} {'part.':>5} {'tok/step':>8} {'tok/s':>8} {'mean':>8} {'x HF':>5} {'x naive':>7}"
        f" {'MFU':>6} {'first step':>10} {'peak GiB':>8} {'x HF':>5}"
    )
    for name, r in report["results"].items():
        if "real_tokens_per_s" not in r:
            print(f"{name:<16} {r['steps']:>5}  failed: {r.get('failed')}")
            continue
        hf, naive = (report[f"ratios_vs_{base}"][name] for base in ("hf_padded", "hf_naive_packed"))
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(
            f"{name:<16} {r['counted_steps']:>5} {r['partial_steps_excluded']:>5} {r['real_tokens_per_step']:>8,.0f}"
            f" {r['real_tokens_per_s']:>8,.0f} {r['real_tokens_per_s_mean']:>8,.0f}"
            f" {_x(hf, 'real_tokens_per_s'):>5} {_x(naive, 'real_tokens_per_s'):>7} {mfu:>6}"
            f" {r['time_to_first_step_s']:>8.1f} s {r.get(memory, 0):>8.2f} {_x(hf, memory):>5}"
        )
    if report["repeat"] > 1:  # the noise between runs
        for name, r in report["results"].items():
            print(f"{name}: medians of the runs {', '.join(f'{m:,.0f}' for m in r.get('run_medians', []))}")


def _x(ratios: dict, measure: str) -> str:
    return f"{ratios[measure]:.2f}" if measure in ratios else "-"


def report(
    shape_name: str, repeat: int, shape: dict, machine: str, data: dict, fpt: float, peak, results: dict
) -> dict:
    """The JSON report of the runs so far."""
    import torch
    import transformers

    data = {k: v for k, v in data.items() if k != "lengths"}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "shape": shape_name,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "model": shape["model"],
        "lora": shape["lora"],
        "context": shape["context"],
        "rows": {k: shape[k] for k in ("ftc_rows", "hf_packed_rows", "hf_padded_batch")},
        "steps": shape["steps"],
        "warmup": shape["warmup"],
        "repeat": repeat,
        "timing": "real_tokens_per_s: median over the steps after the warm-up of each run, partial steps excluded, "
        "of each step's real tokens / its wall time; real_tokens_per_s_mean: their tokens / their time",
        "data": data,
        "flops_per_token": fpt,
        "peak_flops": peak,
        "results": results,
        **{f"ratios_vs_{base}": _ratios(results, base) for base in ("hf_padded", "hf_naive_packed")},
    }


def _ratios(results: dict, base_name: str) -> dict:
    base = results.get(base_name, {})
    return {
        k: {m: v[m] / base[m] for m in ("real_tokens_per_s", "peak_gpu_gib", "peak_rss_gib") if m in v and base.get(m)}
        for k, v in results.items()
    }
