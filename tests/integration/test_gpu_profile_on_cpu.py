"""bench/gpu_profile.py, the command a GPU call starts with, run end to end on a CPU (the tiny shape): every stage
runs through the real CLI and its JSON holds what the GPU call will be read for."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ["environment", "attention", "step", "ablations", "lora"]


def _profile(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "profile.json"
    env = {**os.environ, "FTC_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_profile.py"), "--shape", "tiny", "--json", str(out), *options],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(out.read_text())


def test_the_gpu_profile_command_runs_every_stage_on_a_cpu_and_says_what_it_measured(tmp_path):
    done, report = _profile(tmp_path, "--budget-s", "120")
    stages = report["stages"]
    assert list(stages) == STAGES and report["complete"] is True
    failed = {k: (s.get("error"), s.get("log_tail")) for k, s in stages.items() if s["status"] != "ok"}
    assert failed == {}, failed
    assert done.returncode == 0, done.stdout[-3000:]
    assert [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith("[gpu_profile] ")][:5] == [
        f"[gpu_profile] {s}" for s in STAGES
    ]

    assert (
        stages["environment"]["versions"]["torch"]
        and "flash_attn.flash_attn_varlen_func" in (stages["environment"]["importable"])
    )
    kernels = stages["attention"]["kernels"]
    for name in ("dense_mask_sdpa", "sdpa_varlen", "per_sample_sdpa"):
        assert kernels[name]["status"] == "ok" and kernels[name]["ms"] > 0, kernels[name]
        assert kernels[name]["max_abs_diff_out"] < 1e-4 and kernels[name]["max_abs_diff_grad_q"] < 1e-4, kernels[name]
    assert kernels["flex_compiled"]["status"] == "skipped" and "GPU only" in kernels["flex_compiled"]["reason"]

    step = stages["step"]
    assert step["engine_step_ms"]["median"] > 0 and step["step_wall_ms"]["median"] > 0
    assert step["optimizer"]["deepspeed"], step["optimizer"]
    syncs = step["host_syncs"]
    assert len(syncs["per_step"]) == 3 and math.isfinite(syncs["median_per_step"]), syncs
    profile = step["profile"]
    assert profile["categories"] and profile["profiled_steps"] == 3
    assert abs(sum(c["pct"] for c in profile["categories"].values()) - 100) < 1e-6
    assert {"gemm/matmul", "attention", "optimizer"} <= set(profile["categories"])
    assert profile["idle"]["applicable"] is False and profile["idle"]["reason"]

    runs = stages["ablations"]["runs"]
    assert runs["kernels_torch"]["status"] == "skipped" and "GPU only" in runs["kernels_torch"]["reason"]
    for name, run in runs.items():
        if name != "kernels_torch":
            assert run["status"] == "ok" and run["tokens_per_s"]["median"] > 0, (name, run)
    assert stages["lora"]["tokens_per_s"]["median"] > 0 and stages["lora"]["peak_rss_gib"] > 0


def test_a_stage_that_does_not_fit_the_budget_is_recorded_as_skipped_and_the_command_succeeds(tmp_path):
    done, report = _profile(tmp_path, "--budget-s", "0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list(report["stages"]) == STAGES
    for stage in report["stages"].values():
        assert stage["status"] == "skipped" and stage["reason"].startswith("budget:"), stage


def test_the_trace_reader_attributes_device_time_by_where_it_was_launched_and_finds_the_idle_time():
    """The GPU half of bench/_profile_trace.py, on a made-up trace in torch.profiler's Chrome format."""
    sys.path.insert(0, str(REPO / "bench"))
    from _profile_trace import analyze

    def x(cat, name, ts, dur, **args):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": 1, "args": args}

    events = [
        x("user_annotation", "ProfilerStep#1", 0, 100),
        x("user_annotation", "ftc.loss", 10, 10),
        x("user_annotation", "ftc.engine_step", 60, 20),
        x("cuda_runtime", "cudaLaunchKernel", 12, 1, correlation=1),  # inside the loss
        x("cuda_runtime", "cudaLaunchKernel", 30, 1, correlation=2),
        x("cuda_runtime", "cudaLaunchKernel", 61, 1, correlation=3),  # inside engine.step
        x("kernel", "sm90_xmma_gemm_bf16", 20, 10, correlation=1),
        x("kernel", "sm90_xmma_gemm_bf16", 30, 20, correlation=2),
        x("kernel", "multi_tensor_apply_kernel", 70, 10, correlation=3),
        x("gpu_memcpy", "Memcpy HtoD", 45, 10),  # overlaps the second gemm by 5
    ]
    result = analyze(events, device=True)
    categories = {k: v["ms"] * 1e3 for k, v in result["categories"].items()}
    assert categories == {"loss": 10, "gemm/matmul": 20, "optimizer": 10, "memcpy/memset": 10}
    assert result["idle"]["span_ms"] * 1e3 == 100 and result["idle"]["busy_ms"] * 1e3 == 45
    assert result["idle"]["idle_pct"] == 55
