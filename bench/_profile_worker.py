"""`ftc run` of compiled plans in this process, measured from inside: used by bench/gpu_profile.py.

    python bench/_profile_worker.py JOBS.json RESULT.json

JOBS.json: {"deadline": UNIX_TIME, "runs": [{"name", "plan", "out", "steps", "warmup", "profile", "need_s"}, ...]}.
Each run trains its plan until ``steps`` optimizer steps are done and is then stopped (before its final checkpoint:
a full fine-tune's optimizer state is GBs, and writing it is no part of a step). DeepSpeed's ``engine.step()`` and
``engine.backward()`` are wrapped to see the optimizer DeepSpeed built, and, in a ``profile`` run, the steps after
``warmup`` go through three windows in turn:

1. timing: ``engine.step()`` and ``engine.backward()`` wall times, the device synchronized around each (GPU);
2. host syncs: tests/support/host_syncs.py's HostSyncs counting syncing calls per step (and on a GPU
   ``torch.cuda.set_sync_debug_mode("warn")``'s warnings);
3. torch.profiler: one warm-up step, then the profiled steps, nothing else added (bench/_profile_trace.py reads the
   trace).

RESULT.json is rewritten (temp file + rename) after each run: {"runs": {name: result}}.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
TIMED, COUNTED, PROFILED = 3, 3, 3  # steps in each window of a profile run
RUN_MARK = "[profile_worker] run "


class Enough(BaseException):
    """Raised in the forward pass after the last wanted step: not an Exception, so no layer of ftc handles it."""


class Probe:
    """What the wrapped DeepSpeed methods record during one run."""

    def __init__(self, job: dict, cuda: bool) -> None:
        self.job, self.cuda = job, cuda
        self.done = 0
        self.warmup = job["warmup"]
        self.stop_after = job["steps"]
        self.step_ms: list[float] = []
        self.backward_ms: list[float] = []
        self.optimizer: dict = {}
        self.syncs = None  # HostSyncs, from the counting window on
        self.counting = False
        self.sync_counts: list[int] = []
        self.sync_warnings: list | None = None
        self.sync_warning_counts: list[int] = []
        self._catch = None
        self.profiler = None
        self.trace = Path(job["out"]).with_name(f"{job['name']}.trace.json")  # beside the run's output folder
        self.notes: list[str] = []

    def window(self, step: int) -> str:
        """The window step ``step`` (1-based) falls in."""
        if not self.job["profile"] or step <= self.warmup:
            return "warmup" if step <= self.warmup else "measured"
        k = step - self.warmup
        return "timing" if k <= TIMED else "syncs" if k <= TIMED + COUNTED else "profile"

    def sync(self) -> None:
        if self.cuda and self.window(self.done + 1) == "timing":
            import torch

            torch.cuda.synchronize()

    def after_step(self) -> None:
        """Between steps: close the window that ends, open the one that starts."""
        self.done += 1
        now, following = self.window(self.done), self.window(self.done + 1)
        if now == "syncs" and self.counting:
            self.sync_counts.append(self.syncs.count - sum(self.sync_counts))
            if self.sync_warnings is not None:
                self.sync_warning_counts.append(self._synchronizing() - sum(self.sync_warning_counts))
        if self.profiler is not None:
            self.profiler.step()
        if now != "syncs" and following == "syncs":
            self._count_syncs()
        elif now == "syncs" and following != "syncs":
            self._stop_counting()
            if following == "profile":
                self._start_profiler()

    def _count_syncs(self) -> None:
        try:
            sys.path.insert(0, str(REPO / "tests"))
            from support.host_syncs import HostSyncs  # the tests' counter of syncing calls
        except ImportError as exc:
            self.notes.append(f"host syncs not counted: {exc}")
            return
        self.syncs = HostSyncs()
        self.syncs.__enter__()
        self.counting = True
        if self.cuda:
            import torch

            self._catch = warnings.catch_warnings(record=True)
            self.sync_warnings = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def _synchronizing(self) -> int:
        return sum("synchroniz" in str(w.message) for w in self.sync_warnings)

    def _stop_counting(self) -> None:
        if self.counting:
            self.syncs.__exit__(None, None, None)
            self.counting = False
        if self._catch is not None:
            import torch

            torch.cuda.set_sync_debug_mode(0)
            self._catch.__exit__(None, None, None)
            self._catch = None

    def _start_profiler(self) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.profiler = profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=1, active=PROFILED, repeat=1),
            on_trace_ready=lambda p: p.export_chrome_trace(str(self.trace)),
        )
        self.profiler.start()

    def finish(self) -> None:
        self._stop_counting()
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None


PROBE: list[Probe] = []  # the run's probe, read by the wrapped methods


def _wrap_deepspeed() -> None:
    """Wrap DeepSpeedEngine's forward (stops the run), backward and step (times, the optimizer) once a process."""
    from deepspeed.runtime.engine import DeepSpeedEngine
    from torch.profiler import record_function

    forward, backward, step = DeepSpeedEngine.forward, DeepSpeedEngine.backward, DeepSpeedEngine.step

    def timed_forward(self, *args, **kwargs):
        if PROBE and PROBE[0].done >= PROBE[0].stop_after:
            raise Enough
        return forward(self, *args, **kwargs)

    def timed_backward(self, *args, **kwargs):
        probe = PROBE[0]
        probe.sync()
        start = time.perf_counter()
        out = backward(self, *args, **kwargs)
        probe.sync()
        if probe.window(probe.done + 1) == "timing":
            probe.backward_ms.append(1e3 * (time.perf_counter() - start))
        return out

    def timed_step(self, *args, **kwargs):
        probe = PROBE[0]
        if not probe.optimizer:
            probe.optimizer = _optimizer_of(self)
        probe.sync()
        start = time.perf_counter()
        with record_function("ftc.engine_step"):
            out = step(self, *args, **kwargs)
        probe.sync()
        if probe.window(probe.done + 1) == "timing":
            probe.step_ms.append(1e3 * (time.perf_counter() - start))
        probe.after_step()
        return out

    DeepSpeedEngine.forward, DeepSpeedEngine.backward, DeepSpeedEngine.step = timed_forward, timed_backward, timed_step


def _wrap_loss(notes: list[str]) -> None:
    """Put ftc's chunked loss inside an ``ftc.loss`` profiler range (its ops then count as the loss's)."""
    from torch.profiler import record_function

    try:
        from ftc.runtime.training import loss
    except ImportError as exc:
        notes.append(f"the loss is not marked in the profile: {exc}")
        return
    original = getattr(loss, "linear_cross_entropy", None)
    if original is None:
        notes.append("the loss is not marked in the profile: ftc.runtime.training.loss has no linear_cross_entropy")
        return

    def marked(*args, **kwargs):
        with record_function("ftc.loss"):
            return original(*args, **kwargs)

    loss.linear_cross_entropy = marked


def _optimizer_of(engine) -> dict:
    """DeepSpeed's optimizer and the torch optimizer it wraps, as the engine holds them."""
    outer = engine.optimizer
    inner = getattr(outer, "optimizer", None)
    found = {"deepspeed": type(outer).__name__, "torch": type(inner).__name__ if inner is not None else None}
    for name, call in (("zero_stage", "zero_optimization_stage"), ("bf16", "bfloat16_enabled")):
        try:
            found[name] = getattr(engine, call)()
        except Exception:  # a DeepSpeed without the accessor: leave it out
            pass
    base = inner if inner is not None else outer
    defaults = getattr(base, "defaults", {})
    found["fused"], found["foreach"] = defaults.get("fused"), defaults.get("foreach")
    return found


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run_one(job: dict, cuda: bool) -> dict:
    """Train ``job``'s plan in this process as far as it asks; what was measured."""
    import torch

    from ftc.cli import main

    probe = Probe(job, cuda)
    PROBE[:] = [probe]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        code = main(["run", job["plan"]])
    except Enough:
        code = 0
    finally:
        probe.finish()
    result = {"exit_code": code, "seconds": time.perf_counter() - started, "optimizer": probe.optimizer}
    result.update(_per_step(Path(job["out"]) / "metrics.jsonl", job["warmup"]))
    if job["profile"]:
        result["engine_step_ms"] = {"median": _median(probe.step_ms), "each": probe.step_ms}
        result["backward_ms"] = {"median": _median(probe.backward_ms), "each": probe.backward_ms}
        result["host_syncs"] = {
            "per_step": probe.sync_counts,
            "median_per_step": _median(probe.sync_counts),
            "calls": dict(probe.syncs.calls) if probe.syncs is not None else {},
        }
        if probe.sync_warnings is not None:
            result["cuda_sync_warnings"] = {"per_step": probe.sync_warning_counts}
        result["profile"] = _profile(probe, cuda)
    if cuda:
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["notes"] = probe.notes
    return result


def _per_step(metrics: Path, warmup: int) -> dict:
    """Per-step wall time and real tokens/s from the run's metrics.jsonl (step k: its tokens over the time since
    step k-1's line), their medians over the steps after ``warmup``."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    steps = [r for r in records if r.get("type") == "train"]
    walls, rates = [], []
    for before, after in zip(steps, steps[1:]):
        seconds = after["time"] - before["time"]
        walls.append(1e3 * seconds)
        rates.append((after["tokens"] - before["tokens"]) / seconds if seconds > 0 else 0.0)
    kept = max(0, warmup - 1)  # walls[i] is step i+2's
    return {
        "steps": len(steps),
        "step_wall_ms": {"median": _median(walls[kept:]), "each": walls},
        "tokens_per_s": {"median": _median(rates[kept:]), "each": rates},
        "tokens_per_step": (steps[-1]["tokens"] / len(steps)) if steps else None,
    }


def _profile(probe: Probe, cuda: bool) -> dict:
    from _profile_trace import analyze

    if not probe.trace.exists():
        return {"status": "failed", "error": f"no trace: the run ended after {probe.done} steps"}
    events = json.loads(probe.trace.read_text()).get("traceEvents", [])
    probe.trace.unlink()
    return {"status": "ok", **analyze(events, device=cuda)}


def main() -> int:
    jobs_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    jobs = json.loads(jobs_path.read_text())
    import torch

    from ftc.stores.atomic import write_text_atomic

    cuda = torch.cuda.is_available()
    notes: list[str] = []
    _wrap_deepspeed()
    _wrap_loss(notes)
    results: dict = {"notes": notes, "runs": {}}
    for job in jobs["runs"]:
        print(f"{RUN_MARK}{job['name']}", flush=True)  # where this run's lines start in the log
        left = jobs["deadline"] - time.time()
        if left < job.get("need_s", 0):
            results["runs"][job["name"]] = {"status": "skipped", "reason": f"budget: {left:.0f} s left"}
        else:
            try:
                result = run_one(job, cuda)
                status = "ok" if result["exit_code"] == 0 else "failed"
                results["runs"][job["name"]] = {"status": status, **result}
            except Exception as exc:  # recorded; the next run still runs
                results["runs"][job["name"]] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
        write_text_atomic(result_path, json.dumps(results, indent=1) + "\n")
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
