"""The two-process ZeRO-3 LoRA run, again and again, with every core kept busy: does each run end cleanly?

    python bench/stress_shutdown.py [--runs 50] [--spinners CORES] [--timeout 600] [--json FILE]

The run is tests/integration/test_distributed.py::test_zero3_lora_adapter_is_saved_whole's (its spec and tiny model
from tests/support: ``zero3_lora``, ``models``), compiled once and run ``--runs`` times with ``ftc run``, each into a
fresh output folder, while ``--spinners`` processes (default: one per core) keep the cores busy, as other work on a
shared machine does. A run is clean when it exits 0, leaves its final checkpoint, and says no failure after it (a
process that fails once the last checkpoint is written leaves the run complete, which ftc says as a warning: counted
here as not clean). Prints each run's time and result, the count of clean runs, the total time, and the end of the
output of every run that was not clean; exits 1 when one was not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _busy import spin, stop  # bench/, this script's folder, is on its path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' builders: tests/support/

from support.models import build_tiny_model  # noqa: E402
from support.zero3_lora import write_zero3_lora_job  # noqa: E402

#: the last checkpoint of the run (16 examples / (4 x 2 processes), one epoch)
FINAL = Path("output") / "checkpoints" / "step-000002"
#: what ftc says of a process that failed after the run's last checkpoint (runtime/launch/outcome.py)
AFTER_THE_END = "a process failed after the run's last checkpoint"


def run_once(root: Path, timeout: float) -> tuple[int, float, str]:
    """One ``ftc run`` of the plan into a fresh output folder: its exit code (-1: timed out), time and output."""
    shutil.rmtree(root / "output", ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftc.cli", "run", "plan.json"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        code = -1
    return code, time.perf_counter() - start, out


def others() -> list[str]:
    """The processes other than this script's keeping the machine busy now (for the record: it is shared)."""
    mine = {str(os.getpid())}
    listing = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True)
    busy = []
    for line in listing.stdout.splitlines()[1:]:
        pid, ppid, pcpu, args = line.split(None, 3)
        if float(pcpu) >= 10 and pid not in mine and ppid not in mine and "while True: pass" not in args:
            busy.append(f"{pcpu}% {args[:120]}")
    return busy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="how many runs (default 50)")
    parser.add_argument("--spinners", type=int, default=len(os.sched_getaffinity(0)), help="busy processes")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one run may take (default 600)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ftc-stress-shutdown-"))
    spinners: list[subprocess.Popen] = []
    results: list[dict] = []
    started = time.perf_counter()
    try:
        build_tiny_model(root / "model")
        write_zero3_lora_job(root, root / "model")
        # as the tests run it: nothing from a hub, a cache of its own
        os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", FTC_CACHE_DIR=str(root / "cache"))
        compiled = subprocess.run(
            [sys.executable, "-m", "ftc.cli", "compile", "job.yaml", "-o", "plan.json"], cwd=root, capture_output=True,
            text=True,
        )  # fmt: skip
        if compiled.returncode != 0:
            raise SystemExit(f"ftc compile exited {compiled.returncode}\n{compiled.stderr[-2000:]}")
        spinners = spin(args.spinners)
        load_before = os.getloadavg()
        busy_before = others()
        for i in range(args.runs):
            code, elapsed, out = run_once(root, args.timeout)
            whole = (root / FINAL / "adapter_model.safetensors").is_file()
            clean = code == 0 and whole and AFTER_THE_END not in out
            results.append({"run": i + 1, "code": code, "seconds": round(elapsed, 1), "clean": clean,
                            "tail": "" if clean else out[-3000:]})  # fmt: skip
            print(f"run {i + 1:>3}/{args.runs}: exit {code}, {elapsed:6.1f} s, {'clean' if clean else 'NOT CLEAN'}",
                  flush=True)  # fmt: skip
            if not clean:  # now, too: a long series may be stopped before its end
                print(f"--- the end of run {i + 1}'s output:\n{out[-3000:]}\n---", flush=True)
        load_after = os.getloadavg()
    finally:
        stop(spinners)
        shutil.rmtree(root, ignore_errors=True)

    total = time.perf_counter() - started
    clean = sum(r["clean"] for r in results)
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cores": len(os.sched_getaffinity(0)),
        "spinners": args.spinners,
        "runs": len(results),
        "clean": clean,
        "exited_0": sum(r["code"] == 0 for r in results),
        "total_s": round(total, 1),
        "median_run_s": statistics.median(r["seconds"] for r in results) if results else None,
        "load_before": load_before,
        "load_after": load_after,
        "other_busy_processes_at_start": busy_before,
        "runs_detail": results,
    }
    for r in results:
        if not r["clean"]:
            print(f"\n--- run {r['run']}: exit {r['code']}; the end of its output (above too):\n{r['tail']}")
    print(f"\n{clean} of {len(results)} runs clean ({summary['exited_0']} exited 0), {args.spinners} spinners on "
          f"{summary['cores']} cores; {total / 60:.1f} min in all, median run {summary['median_run_s']} s; load "
          f"average at start {load_before}, at end {load_after}")  # fmt: skip
    if busy_before:
        print("other processes busy at the start: " + "; ".join(busy_before))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if clean == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
