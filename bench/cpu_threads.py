"""The quickstart on a busy machine: ftc's own choice of CPU threads against ``OMP_NUM_THREADS=1``.

    python bench/cpu_threads.py [--spinners 1] [--repeats 3] [--variants ftc,omp1] [--json FILE]

Starts ``--spinners`` processes that keep a core busy each (``while True: pass``, as another user's job would),
then runs the README's first command's run, ``ftc run`` of the quickstart (examples/quickstart, copied to a temporary
folder), in a fresh process per run, alternating the variants ``--repeats`` times so that whatever else the machine
does weighs on each alike:

- ``ftc``: no ``OMP_NUM_THREADS`` (ftc chooses; its "CPU threads:" line is printed);
- ``ompN``: ``OMP_NUM_THREADS=N`` set by the user (``omp1``: one thread per process).

Prints each run's wall time, each variant's median, and the ratio of each median to the last variant's (by default
``ftc`` / ``omp1``: at most 1.0 means ftc's choice is no slower), with the machine's cores and load averages before
and after. Without spinners (``--spinners 0``) it measures an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from _busy import spin, stop  # bench/, this script's folder, is on its path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"


def variant_env(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if name.startswith("omp"):
        env["OMP_NUM_THREADS"] = str(int(name[3:]))
    elif name != "ftc":
        raise SystemExit(f"unknown variant {name!r}: ftc or ompN")
    return env


def run_once(root: Path, name: str) -> tuple[float, str]:
    """``ftc run`` of the compiled quickstart into a fresh output folder: its wall time and its CPU threads line."""
    shutil.rmtree(root / "runs" / "quickstart" / "checkpoints", ignore_errors=True)
    for leftover in ("metrics.jsonl", "summary.json", "best", "latest"):
        path = root / "runs" / "quickstart" / leftover
        if path.is_symlink() or path.is_file():
            path.unlink()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "run", "runs/quickstart/plan.json"],
        cwd=root,
        env=variant_env(name),
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: ftc run exited {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "CPU threads:" in line]
    return elapsed, said[0].strip() if said else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spinners", type=int, default=1, help="busy processes beside the runs (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant (default 3)")
    parser.add_argument("--variants", default="ftc,omp1", help="comma-separated: ftc, ompN (default ftc,omp1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    variants = args.variants.split(",")
    for name in variants:
        variant_env(name)  # an unknown name stops here, before anything runs

    root = Path(tempfile.mkdtemp(prefix="ftc-bench-threads-"))
    spinners: list[subprocess.Popen] = []
    try:
        shutil.copytree(QUICKSTART, root / "examples" / "quickstart")
        compile_it = ["compile", "examples/quickstart/job.yaml", "-o", "runs/quickstart/plan.json"]
        compiled = subprocess.run(
            [sys.executable, "-m", "ftc.cli", *compile_it], cwd=root, capture_output=True, text=True
        )
        if compiled.returncode != 0:
            raise SystemExit(f"ftc compile exited {compiled.returncode}\n{compiled.stderr[-2000:]}")
        load_before = os.getloadavg()
        spinners = spin(args.spinners)
        time.sleep(1.0 if spinners else 0.0)  # the spinners running before the first run starts
        times: dict[str, list[float]] = {name: [] for name in variants}
        lines: dict[str, str] = {}
        for repeat in range(args.repeats):
            for name in variants if repeat % 2 == 0 else variants[::-1]:
                elapsed, line = run_once(root, name)
                times[name].append(elapsed)
                lines.setdefault(name, line)
                print(f"{name:>6}  run {repeat + 1}: {elapsed:6.2f} s  {line}", flush=True)
        load_after = os.getloadavg()
    finally:
        stop(spinners)
        shutil.rmtree(root, ignore_errors=True)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    baseline = variants[-1]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "versions": {name: metadata.version(name) for name in ("torch", "deepspeed", "transformers")},
        "cores": len(os.sched_getaffinity(0)),
        "spinners": args.spinners,
        "load_before": load_before,
        "load_after": load_after,
        "times_s": times,
        "median_s": medians,
        "ratio_to": baseline,
        "ratios": {name: medians[name] / medians[baseline] for name in variants},
        "threads_lines": lines,
    }
    print(f"cores {result['cores']}, spinners {args.spinners}, load average before {load_before}, after {load_after}")
    for name in variants:
        print(f"{name:>6}: median {medians[name]:6.2f} s  ratio to {baseline} {result['ratios'][name]:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
