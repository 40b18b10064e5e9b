"""Where a profiled training step's time goes, from torch.profiler's Chrome trace: used by bench/_profile_worker.py.

On a GPU the time is the device's: every kernel, memcpy and memset, by category, and the idle time (the wall span
of the profiled steps minus the union of the device's busy intervals). On a CPU it is the self time of each
operator (an op's time less the ops it called), by category; idle time means nothing there.

Two categories come from where work was issued rather than from its name: ``loss`` (inside the ``ftc.loss`` range
the worker puts around ftc's chunked loss) and ``optimizer`` (inside ``ftc.engine_step``, DeepSpeed's
``engine.step()``: the update, gradient norms and clipping, copies back to the training dtype). A kernel belongs to
the range its launch was made in (matched by the trace's correlation ids).
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from typing import Any

__all__ = ["CATEGORIES", "LOSS_RANGE", "STEP_RANGE", "analyze", "category_of"]

LOSS_RANGE = "ftc.loss"
STEP_RANGE = "ftc.engine_step"
CATEGORIES = (
    "gemm/matmul",
    "attention",
    "elementwise/norm/rotary",
    "loss",
    "optimizer",
    "communication",
    "memcpy/memset",
    "other",
)
_DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
_BY_NAME = (  # the first that matches, after the ranges (the order matters: a loss softmax is not attention)
    ("communication", r"nccl|gloo|all_?reduce|all_?gather|reduce_?scatter|c10d"),
    ("memcpy/memset", r"memcpy|memset|direct_copy|aten::(copy_|_to_copy|fill_|zero_)$"),
    ("loss", r"cross_entropy|log_softmax|logsumexp|nll_loss"),
    ("optimizer", r"adam|foreach|multi_tensor|optimizer"),
    ("attention", r"attention|attn|flash|fmha|sdpa|softmax|flex|triton_tem|varlen"),
    ("gemm/matmul", r"gemm|matmul|aten::(mm|addmm|bmm|baddbmm|linear)$|cutlass|xmma|nvjet|cublas|s16816"),
    (
        "elementwise/norm/rotary",
        r"elementwise|vectorized|reduce|norm|rms|rotary|rope|silu|swiglu|gelu|liger|triton|embedding|catarray|"
        r"index|gather|scatter|"
        r"aten::(mul|add|sub|div|pow|rsqrt|mean|sum|neg|cat|exp|sigmoid|tanh|where|clamp|index|gather|scatter|"
        r"masked_fill|cumsum|max|min|sqrt|abs|lerp|addcmul|addcdiv|sort|topk|cos|sin)",
    ),
)
_PATTERNS = [(name, re.compile(pattern)) for name, pattern in _BY_NAME]


def category_of(name: str, *, in_loss: bool = False, in_step: bool = False) -> str:
    """The category of an operator or kernel named ``name``, issued inside the loss or ``engine.step()`` or not."""
    lowered = name.lower()
    if _PATTERNS[0][1].search(lowered):
        return "communication"
    if in_loss:
        return "loss"
    if in_step:
        return "optimizer"
    return next((category for category, pattern in _PATTERNS[1:] if pattern.search(lowered)), "other")


class _Ranges:
    """Sorted, possibly nested intervals: does one contain a time?"""

    def __init__(self, intervals: list[tuple[float, float]]) -> None:
        self.spans = sorted(intervals)
        self.starts = [s for s, _ in self.spans]

    def __contains__(self, t: float) -> bool:
        i = bisect.bisect_right(self.starts, t)
        return any(s <= t <= e for s, e in self.spans[max(0, i - 8) : i])  # ranges nest a few deep at most


def _self_times(ops: list[dict]) -> list[tuple[dict, float]]:
    """Each op with its self time: its duration less its direct children's (per thread, by nesting)."""
    out: list[tuple[dict, float]] = []
    by_thread: dict[Any, list[dict]] = defaultdict(list)
    for op in ops:
        by_thread[(op.get("pid"), op.get("tid"))].append(op)
    for thread in by_thread.values():
        thread.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[list] = []  # [op, end, children's time]
        for op in thread:
            while stack and stack[-1][1] <= op["ts"]:
                done = stack.pop()
                out.append((done[0], max(0.0, done[0]["dur"] - done[2])))
            if stack:
                stack[-1][2] += op["dur"]
            stack.append([op, op["ts"] + op["dur"], 0.0])
        out.extend((op, max(0.0, op["dur"] - children)) for op, _, children in stack)
    return out


def _union_length(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    total, end = 0.0, lo
    for s, e in sorted(intervals):
        s, e = max(s, end), min(e, hi)
        if e > s:
            total += e - s
            end = e
    return total


def analyze(events: list[dict], *, device: bool, top: int = 20) -> dict:
    """The breakdown of a trace's ``traceEvents``: per category ms and % of device time (``device``) or of self CPU
    time, the ``top`` largest kernels or ops by name, and (``device``) the idle time of the profiled steps."""
    spans = [e for e in events if e.get("ph") == "X" and isinstance(e.get("dur"), (int, float))]
    annotations = [e for e in spans if e.get("cat") == "user_annotation"]
    ranges = {
        name: _Ranges([(e["ts"], e["ts"] + e["dur"]) for e in annotations if e["name"] == name])
        for name in (LOSS_RANGE, STEP_RANGE)
    }
    steps = [(e["ts"], e["ts"] + e["dur"]) for e in annotations if e["name"].startswith("ProfilerStep#")]
    if device:
        launches = {
            e["args"]["correlation"]: e["ts"]
            for e in spans
            if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})
        }
        work = [e for e in spans if e.get("cat") in _DEVICE_CATS]
        items = [(e, e["dur"], launches.get(e.get("args", {}).get("correlation"), e["ts"])) for e in work]
    else:
        items = [(e, self_time, e["ts"]) for e, self_time in _self_times([e for e in spans if e["cat"] == "cpu_op"])]
    totals: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)
    names: dict[str, list] = {}
    for event, duration, issued in items:
        name = event["name"]
        if event.get("cat") in ("gpu_memcpy", "gpu_memset"):
            kind = "memcpy/memset"
        else:
            kind = category_of(name, in_loss=issued in ranges[LOSS_RANGE], in_step=issued in ranges[STEP_RANGE])
        totals[kind] += duration
        entry = names.setdefault(name, [0.0, 0, kind])
        entry[0] += duration
        entry[1] += 1
    whole = sum(totals.values())
    result: dict[str, Any] = {
        "basis": "device time (kernels, memcpy, memset)" if device else "self CPU time of operators",
        "profiled_steps": len(steps),
        "total_ms": whole / 1e3,
        "categories": {
            k: {"ms": v / 1e3, "pct": 100 * v / whole if whole else 0.0} for k, v in totals.items() if v > 0
        },
        "top": [
            {"name": n[:160], "ms": v[0] / 1e3, "calls": v[1], "category": v[2]}
            for n, v in sorted(names.items(), key=lambda kv: -kv[1][0])[:top]
        ],
    }
    if not device:
        result["idle"] = {"applicable": False, "reason": "a CPU runs the ops itself: there is no device to wait"}
    elif not items:
        result["idle"] = {"applicable": False, "reason": "the trace holds no device activity"}
    else:
        intervals = [(e["ts"], e["ts"] + d) for e, d, _ in items]
        lo, hi = (min(s for s, _ in steps), max(e for _, e in steps)) if steps else (
            min(s for s, _ in intervals), max(e for _, e in intervals))  # fmt: skip
        busy = _union_length(intervals, lo, hi)
        result["idle"] = {
            "applicable": True,
            "span": "the profiled steps (ProfilerStep ranges)" if steps else "first to last device activity",
            "span_ms": (hi - lo) / 1e3,
            "busy_ms": busy / 1e3,
            "idle_ms": (hi - lo - busy) / 1e3,
            "idle_pct": 100 * (hi - lo - busy) / (hi - lo) if hi > lo else 0.0,
        }
    return result
